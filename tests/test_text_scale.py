"""The text-side scale benchmark: its memory measurement, its corpus, and a tiny run's table."""
import json
import sys
from collections import Counter

import pytest

from data.text.preprocess import preprocess
from test_benchmarks import load

KNN_STEPS = ["knn hnsw", "knn exact", "knn faiss-exact", "knn faiss-ivf", "knn faiss-ivfpq",
             "knn faiss-hnsw"]
STEPS = ["preprocess", "doc2vec", "infer", *KNN_STEPS, "sampler", "trainer prep"]
BARE = {"preprocess", "doc2vec", "infer", "knn hnsw", "knn exact"}

# Two children of the measured process, each holding 150 MiB at the same time: the step's
# peak is their sum, which no single process's peak RSS shows.
TWO_CHILDREN = """
import subprocess, sys
hold = "b = bytearray(150 << 20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(1.5)"
ps = [subprocess.Popen([sys.executable, "-c", hold]) for _ in range(2)]
[p.wait() for p in ps]
"""


def test_peak_memory_counts_the_descendants_together(tmp_path):
    bench = load("text_scale")
    r = bench.run_measured([sys.executable, "-c", TWO_CHILDREN], None, tmp_path / "log.txt")
    assert 300 <= r["peak_mib"] < 450
    assert 1.4 < r["seconds"] < 30


def test_peak_memory_of_a_step_shorter_than_the_slow_sampling_interval(tmp_path):
    # A quick step (the sampler takes 0.2 s at tiny sizes) must still be seen at its peak.
    bench = load("text_scale")
    quick = "b = bytearray(120 << 20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(0.1)"
    r = bench.run_measured([sys.executable, "-c", quick], None, tmp_path / "log.txt")
    assert 120 <= r["peak_mib"] < 250


def test_failing_step_names_its_log(tmp_path):
    bench = load("text_scale")
    with pytest.raises(RuntimeError, match="log.txt"):
        bench.run_measured([sys.executable, "-c", "raise SystemExit(3)"], None, tmp_path / "log.txt")


def test_corpus_is_seeded_with_realistic_lengths_and_splits():
    corpus = load("text_corpus")
    a, b = corpus.generate(3000, seed=1), corpus.generate(3000, seed=1)
    assert a == b and a != corpus.generate(3000, seed=2)
    words = [len(r["text"].split()) for r in a]
    assert 36 <= sum(words) / len(words) <= 44
    assert all(r["text"].count(".") == 2 for r in a)
    splits = Counter(r["split"] for r in a)
    assert splits["train"] > 0.95 * 3000 and splits["test"] > 5 and splits["val"] > 5
    tokens = [preprocess(r["text"]) for r in a[:200]]
    assert all(10 <= len(t) <= 60 for t in tokens)   # stopwords gone, content words kept
    assert 20 <= sum(map(len, tokens)) / len(tokens) <= 32
    assert len({r["text"] for r in a}) < 3000          # a few exact duplicates, as scraped news
    long = corpus.generate(50, seed=1, kind="article")
    assert 500 <= sum(len(r["text"].split()) for r in long) / 50 <= 700


@pytest.mark.slow
def test_tiny_run_measures_every_step_against_the_bare_library(tmp_path, capsys):
    bench = load("text_scale")
    out = tmp_path / "out" / "scale.json"
    results = bench.main(["--sizes", "400,800", "--k", "10", "--epochs", "1", "--min-count", "2",
                          "--workers", "2", "--work-dir", str(tmp_path / "work"), "--out", str(out)])
    rows = {(r["n"], r["step"]): r for r in results["rows"]}
    assert set(rows) == {(n, s) for n in (400, 800) for s in STEPS}
    for (n, step), r in rows.items():
        o = r["ours"]
        assert o["seconds"] > 0 and 20 < o["peak_mib"] < 4000
        assert ("bare" in r) == (step in BARE)
        if "bare" in r:
            assert r["ratio"] == pytest.approx(o["seconds"] / r["bare"]["seconds"])
    for n in (400, 800):
        # The bare programs work on the very same documents and token lists.
        pre = rows[n, "preprocess"]
        assert pre["ours"]["reported_tokens"] == pre["bare"]["reported_tokens"] > 0
        assert pre["ours"]["reported_documents"] == rows[n, "doc2vec"]["bare"]["reported_documents"]
        assert rows[n, "doc2vec"]["bare"]["reported_tokens"] == pre["ours"]["reported_tokens"]
        for step in ("doc2vec", "infer", *KNN_STEPS):
            assert rows[n, step]["ours"]["written_mib"] > 0
        for step in KNN_STEPS:   # every backend's search time and recall, side by side
            o = rows[n, step]["ours"]
            # (product codes on a few hundred near-random 1-epoch vectors: about 0.8 to 0.87)
            low = 0.7 if step == "knn faiss-ivfpq" else 0.9
            assert 0 < o["knn_s"] < o["seconds"] and low <= o["recall"] <= 1
            assert ("recall_queries" in o) == (step not in ("knn exact", "knn faiss-exact"))
        assert rows[n, "preprocess"]["ours"]["written_mib"] == 0
        sampler = rows[n, "sampler"]["ours"]
        assert 0 < sampler["reported_mean_pool"] <= 10 and sampler["reported_table_s"] >= 0
        prep = rows[n, "trainer prep"]["ours"]
        assert prep["reported_documents"] == pre["ours"]["reported_documents"]
        assert 32 < prep["reported_batch"] <= 64   # 32 documents and their neighbours
    # Vectors are 200-d float32 for each training document (plus the pickle's ids).
    n_docs = rows[800, "preprocess"]["ours"]["reported_documents"]
    assert rows[800, "infer"]["ours"]["written_mib"] * 2**20 > n_docs * 200 * 4

    table = (tmp_path / "out" / "scale.md").read_text()
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(results["rows"]))
    r = rows[800, "doc2vec"]
    assert (f"| 800 | doc2vec | {r['ours']['seconds']:.1f} | {r['bare']['seconds']:.1f} | "
            f"{r['ratio']:.2f} | {r['ours']['peak_mib']:,.0f} | {r['bare']['peak_mib']:,.0f} | ") in table
    assert "| 400 | sampler |" in table and "| 800 | trainer prep |" in table
    for knn in KNN_STEPS:
        total = sum(rows[800, s]["ours"]["seconds"] for s in ("doc2vec", "infer", knn, "trainer prep"))
        assert f"| 800 | whole text side (doc2vec + infer + {knn} + trainer prep) | {total:.1f} |" in table
    ivf = rows[400, "knn faiss-ivf"]["ours"]
    assert f"| {ivf['written_mib']:,.1f} | {ivf['recall']:.4f} |" in table
    growth = rows[800, "infer"]["ours"]["seconds"] / rows[400, "infer"]["ours"]["seconds"]
    assert f"| infer | {growth:.1f}x (N log N 2.2x) |" in table
    worst = max(x["ratio"] for x in results["rows"] if "ratio" in x)
    assert f"largest ours / bare: {worst:.2f} (goal <= 1.25)" in table
    assert table in capsys.readouterr().out


def _run(sizes, seconds, **settings):
    base = {"kind": "short", "epochs": 5, "min_count": 20, "k": 200, "workers": 2, "seed": 0, "cpus": 2}
    rows = [{"n": n, "step": "infer", "ours": {"seconds": s, "peak_mib": 100.0, "written_mib": 1.0},
             "bare": {"seconds": s / 2, "peak_mib": 90.0}, "ratio": 2.0} for n, s in zip(sizes, seconds)]
    return {"settings": {**base, **settings, "sizes": sizes}, "rows": rows}


def test_runs_made_side_by_side_merge_into_one_table(tmp_path, capsys):
    bench = load("text_scale")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_run([250_000], [50.0])))
    b.write_text(json.dumps(_run([10_000, 100_000], [2.0, 20.0])))
    merged = bench.main(["--table", f"{a},{b}"])
    assert [r["n"] for r in merged["rows"]] == [10_000, 100_000, 250_000]
    out = capsys.readouterr().out
    assert out.index("| 10,000 | infer | 2.0 |") < out.index("| 100,000 | infer | 20.0 |") \
        < out.index("| 250,000 | infer | 50.0 |")
    assert "| infer | 10.0x (N log N 12.5x) | 2.5x (N log N 2.7x) |" in out
    b.write_text(json.dumps(_run([10_000], [2.0], epochs=50)))
    with pytest.raises(SystemExit, match="differ in epochs"):
        bench.main(["--table", f"{a},{b}"])


def test_a_run_can_take_some_steps_and_time_some_against_the_bare_library(tmp_path, capsys):
    bench = load("text_scale")
    args = bench.parse_args(["--sizes", "1000", "--steps", "infer,knn hnsw,sampler",
                             "--bare-steps", "knn hnsw", "--work-dir", str(tmp_path)])
    plan = bench.steps(args, 1000, tmp_path / "m.jsonl", tmp_path)
    assert [name for name, *_ in plan] == ["infer", "knn hnsw", "sampler"]
    assert [bare is not None for _, _, bare, _ in plan] == [False, True, False]
    assert "knn_document_features.py" in plan[1][1][1] and "bare-hnsw" in plan[1][2]
    # Each kNN backend writes beside the others; --train-knn's file is the one training reads.
    args = bench.parse_args(["--sizes", "2000", "--steps", "knn hnsw,knn faiss-ivf,knn exact",
                             "--train-knn", "faiss-ivf", "--exact-max", "1000", "--hnsw-max",
                             "1500", "--work-dir", str(tmp_path)])
    plan = bench.steps(args, 2000, tmp_path / "m.jsonl", tmp_path)
    assert [(name, folder) for name, _, _, folder in plan] == [
        ("knn hnsw", tmp_path / "hnsw"), ("knn faiss-ivf", tmp_path)]
    assert plan[0][1][-4:] == ["--ef-construction", "20", "--ef-search", "200"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "knn,infer"])
    assert "--steps: unknown step 'knn'" in capsys.readouterr().err


def test_the_transformer_step_is_opt_in_and_writes_beside_the_doc2vec_files(tmp_path):
    bench = load("text_scale")
    assert "transformer" not in bench.parse_args(["--sizes", "1000"]).steps
    args = bench.parse_args(["--sizes", "1000", "--steps", "transformer", "--work-dir", str(tmp_path)])
    [(name, ours, bare, writes)] = bench.steps(args, 1000, tmp_path / "m.jsonl", tmp_path)
    assert name == "transformer" and writes == tmp_path / "transformer"
    assert "extract_transformer_vectors.py" in ours[1] and ours[ours.index("--work-dir") + 1] == str(writes)
    assert "bare-transformer" in bare and bare[bare.index("--text-model") + 1] == "minilm"
    assert ours[ours.index("--batch-size") + 1] == bare[bare.index("--batch-size") + 1]


@pytest.mark.slow
def test_transformer_step_and_the_bare_loop_make_the_same_vectors(tmp_path, capsys):
    from test_transformer_vectors import tiny_bert
    bench = load("text_scale")
    model = tiny_bert(tmp_path / "tiny-bert")
    out = tmp_path / "out.json"
    results = bench.main(["--sizes", "150", "--k", "10", "--steps", "transformer", "--workers", "1",
                          "--text-model", str(model), "--work-dir", str(tmp_path / "work"), "--out", str(out)])
    [row] = results["rows"]
    assert row["step"] == "transformer" and row["ratio"] > 0 and row["ours"]["written_mib"] > 0
    assert row["compared"] > 140 and row["max_abs_diff"] < 1e-5
    assert row["bare"]["reported_max_length"] == 16   # the tokenizer's limit, as the script's
    table = bench.main(["--table", str(out)]) and capsys.readouterr().out
    assert f"ours and the bare loop's vectors differ by at most {row['max_abs_diff']:.2e}" in table
