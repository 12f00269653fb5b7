"""train_doc2vec.py, extract_doc2vec_vectors.py and knn_document_features.py end to end, and the
one-line error (exit status 2) every bad input gets from them."""
import json
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
from gensim.models.doc2vec import Doc2Vec

from cli import parser
from conftest import cli, one_line_error
from data.datasets.items import documents
from data.datasets.readers import load_dataset
from data.text.corpus import drop_empty, tokenized_documents
from data.text.doc2vec import infer_vectors
from fixtures import write_topic_manifest

ROOT = Path(__file__).resolve().parent.parent
TRAIN, EXTRACT, KNN = "train_doc2vec.py", "extract_doc2vec_vectors.py", "knn_document_features.py"
SMALL = ["--min-count", "2", "--epochs", "20", "--vector-size", "50", "--workers", "1"]


def run_subprocess(script: str, *args: str, hash_seed: str = "random") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONHASHSEED": hash_seed})




@pytest.fixture(scope="module")
def corpus(module_tmp):
    """A topic corpus plus an item with an empty text, items whose text leaves no token and a
    test item whose word occurs nowhere else; Doc2Vec trained and vectors extracted."""
    folder = module_tmp("pipeline")
    manifest = write_topic_manifest(folder / "data", n=300, seed=0)
    extra = [{"id": "empty", "image": "e.png", "text": "  ", "split": "train"},
             {"id": "stop1", "image": "s1.png", "text": "It is as it was.", "split": "train"},
             {"id": "stop2", "image": "s2.png", "text": "The of and.", "split": "train"},
             {"id": "stop3", "image": "s3.png", "text": "Is it?", "split": "train"},
             {"id": "only-test", "image": "t.png", "text": "Zyzzyva zyzzyva zyzzyva.", "split": "test"}]
    with open(manifest, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in extra)
    work = folder / "work"
    train = run_subprocess(TRAIN, "--dataset", manifest, "--work-dir", work, *SMALL)
    assert train.returncode == 0, train.stderr
    # A fixed hash seed, surely not this process's: vectors must not depend on it.
    extract = run_subprocess(EXTRACT, "--dataset", manifest, "--work-dir", work, "--workers", "1",
                             hash_seed="12345")
    assert extract.returncode == 0, extract.stderr
    items = load_dataset(manifest)
    return dict(manifest=manifest, work=work, items=items, train_out=train.stdout,
                extract_out=extract.stdout, labels={it.id: it.label for it in items})


def test_doc2vec_and_features_see_training_documents_only(corpus):
    items = corpus["items"]
    assert {it.split for it in items} == {"train", "val", "test"}
    stop_in_train = [it.id for it in items if it.id.startswith("stop") and it.split == "train"]
    assert stop_in_train
    expected = [d.id for d in documents(items) if not d.id.startswith("stop")]
    for out in (corpus["train_out"], corpus["extract_out"]):
        assert "dropped 1 empty texts" in out
        assert f"dropped {len(stop_in_train)} training documents with no tokens" in out
    assert f"training corpus: {len(expected)} documents" in corpus["train_out"]

    model = Doc2Vec.load(str(corpus["work"] / "doc2vec_model.gensim"))
    assert model.corpus_count == len(expected) and model.vector_size == 50
    assert "zyzzyva" not in model.wv and "football" in model.wv
    assert f"vocabulary: {len(model.wv)} words" in corpus["train_out"]

    with open(corpus["work"] / "doc2vec_features.pickle", "rb") as f:
        feats = pickle.load(f)
    assert set(feats) == {"ids", "vectors", "provenance"}
    assert feats["ids"] == expected
    held_out = {it.id for it in items if it.split != "train"}
    assert held_out and not held_out & set(feats["ids"])
    assert feats["vectors"].dtype == np.float32 and feats["vectors"].shape == (len(expected), 50)

    # The same vectors again in this process (another hash seed, another worker count).
    args = parser("x").parse_args(["--dataset", str(corpus["manifest"]), "--workers", "2"])
    docs, tokens = drop_empty(*tokenized_documents(items, ["train"], args), "training")
    assert [d.id for d in docs] == expected
    again = infer_vectors(str(corpus["work"] / "doc2vec_model.gensim"), tokens * 6, workers=2)
    np.testing.assert_array_equal(again[:len(tokens)], feats["vectors"])


def check_knn_file(path: Path, feats_ids: list, labels: dict, k: int, space: str, backend: str,
                   min_share: float = 0.8) -> None:
    with open(path, "rb") as f:
        knn = pickle.load(f)
    n = len(feats_ids)
    assert knn["ids"] == feats_ids and knn["space"] == space and knn["backend"] == backend
    nb, d = knn["neighbors"], knn["distances"]
    assert nb.dtype == np.int32 and nb.shape == (n, k)
    assert d.dtype == np.float32 and d.shape == (n, k)
    assert nb.min() >= 0 and nb.max() < n
    assert (np.diff(d, axis=1) >= 0).all()
    assert (nb[:, 0] == np.arange(n)).all() and np.abs(d[:, 0]).max() < 1e-6
    assert (d[:, 1:] > 0).all()
    topic = np.array([labels[i.split("#")[0]] for i in feats_ids])
    share = (topic[nb[:, 1:11]] == topic[:, None]).mean(1)
    assert share.mean() >= 0.9 and share.min() >= min_share, np.sort(share)[:10]


@pytest.mark.parametrize("backend, space, how", [("exact", "l2", "subprocess"),
                                                 ("hnsw", "cosinesimil", "subprocess"),
                                                 ("hnsw", "l2", "in-process"),
                                                 ("exact", "cosinesimil", "in-process"),
                                                 ("faiss-ivf", "cosinesimil", "in-process"),
                                                 ("faiss-ivfpq", "l2", "in-process"),
                                                 ("faiss-hnsw", "l2", "in-process")])
def test_neighbours_share_the_topic(corpus, tmp_path, backend, space, how):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(corpus["work"] / "doc2vec_features.pickle", work)
    args = ["--dataset", corpus["manifest"], "--work-dir", work, "--k", "20", "--backend", backend,
            "--space", space, "--workers", "1"]
    if how == "subprocess":
        r = run_subprocess(KNN, *args)
        code, out = r.returncode, r.stdout
        assert code == 0, r.stderr
    else:
        code, out, _ = astuple(cli(KNN, *args, check=False))
        assert code == 0
    if backend != "exact":
        recall = float(out.split("recall@10 against exact on")[1].split(":")[1].split()[0])
        assert recall >= 0.95
    with open(work / "doc2vec_features.pickle", "rb") as f:
        ids = pickle.load(f)["ids"]
    check_knn_file(work / "document_feats_knn.pickle", ids, corpus["labels"], 20, space, backend)


def test_several_texts_per_image_are_documents(tmp_path):
    manifest = write_topic_manifest(tmp_path / "data", n=80, seed=1, texts_per_item=3)
    work = tmp_path / "work"
    common = ["--dataset", manifest, "--work-dir", work]
    for script, extra in [(TRAIN, SMALL), (EXTRACT, []), (KNN, ["--k", "15", "--backend", "exact"])]:
        code, _, err = astuple(cli(script, *common, *extra, check=False))
        assert code == 0, err
    items = load_dataset(manifest)
    with open(work / "doc2vec_features.pickle", "rb") as f:
        ids = pickle.load(f)["ids"]
    train = [it.id for it in items if it.split == "train"]
    assert ids == [f"{i}#{j}" for i in train for j in range(3)]
    labels = {it.id: it.label for it in items}
    # A small corpus (about 150 documents): a few documents sit between topics.
    check_knn_file(work / "document_feats_knn.pickle", ids, labels, 15, "l2", "exact", min_share=0.5)


def test_large_model_is_one_loadable_file(tmp_path):
    # 14,000 training documents of 800 dimensions: document vectors over gensim's limit for a
    # separate .npy (10 * 2**20 elements), which once landed beside the temporary name and broke
    # every later step (at 200 dimensions, from about 52,000 documents on).
    rows = [json.dumps({"id": str(i), "image": f"{i}.jpg", "text": f"alpha beta gamma w{i % 50}x"})
            for i in range(14_000)]
    rows += [json.dumps({"id": f"{split}{i}", "image": f"{split}{i}.jpg", "text": "alpha",
                         "split": split}) for split in ("test", "val") for i in range(10)]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(rows) + "\n")
    work = tmp_path / "work"
    code, _, err = astuple(cli(TRAIN, "--dataset", manifest, "--work-dir", work, "--min-count", "1",
                               "--epochs", "1", "--workers", "1", "--vector-size", "800", check=False))
    assert code == 0, err
    assert sorted(p.name for p in work.iterdir()) == ["doc2vec_model.gensim"]
    shutil.move(str(work), str(tmp_path / "moved"))   # nothing refers to files beside it
    model = Doc2Vec.load(str(tmp_path / "moved" / "doc2vec_model.gensim"))
    assert model.dv.vectors.shape == (14_000, 800)


@pytest.mark.parametrize("script, flags", [
    (TRAIN, ["--vector-size", "--window", "--min-count", "--epochs"]),
    (EXTRACT, []),
    (KNN, ["--k", "--backend", "--space", "--M", "--ef-construction", "--ef-search", "--nlist",
           "--nprobe", "--ivf-train-size", "--refine", "faiss-exact", "faiss-ivf", "faiss-ivfpq",
           "faiss-hnsw"]),
])
def test_help_lists_the_flags(script, flags):
    code, out, _ = astuple(cli(script, "--help", check=False))
    assert code == 0
    shared = ["--dataset", "--dataset-format", "--image-root", "--work-dir", "--workers", "--seed",
              "--val-size", "--max-sentences", "--doc2vec-max-sentences"]
    for flag in shared + flags:
        assert flag in out
    assert "(default:" in out


def bad_manifests(folder: Path) -> list[tuple[Path, list[str]]]:
    good = '{"id": "a", "image": "a.jpg", "text": "Rockets launched today."}\n'
    cases = {"not_json": ('{"id": "b", "image": ', ["not_json.jsonl:2", "not valid JSON"]),
             "no_image": ('{"id": "b", "text": "Fine."}', ["no_image.jsonl:2", '"image"']),
             "no_text": ('{"id": "b", "image": "b.jpg"}', ["no_text.jsonl:2", '"text"']),
             "duplicate": ('{"id": "a", "image": "b.jpg", "text": "Again."}', ["duplicate.jsonl",
                                                                                 "duplicate id 'a'"])}
    out = []
    for name, (line, words) in cases.items():
        path = folder / f"{name}.jsonl"
        path.write_text(good + line + "\n")
        out.append((path, words))
    return out


def test_bad_datasets_give_one_line_errors(tmp_path):
    cases = bad_manifests(tmp_path)
    cases.append((tmp_path / "missing.jsonl", ["missing.jsonl", "not found", "--dataset"]))
    politics = tmp_path / "politics"
    politics.mkdir()
    (politics / "db.pickle").write_bytes(b"not a pickle at all")
    with open(politics / "train_test_paths.pickle", "wb") as f:
        pickle.dump({"train": ["a.jpg"], "test": []}, f)
    cases.append((politics, ["db.pickle: unreadable pickle", "re-create"]))
    unsplit = tmp_path / "unsplit"
    unsplit.mkdir()
    with open(unsplit / "db.pickle", "wb") as f:
        pickle.dump([("a.jpg", "Some text.")], f)
    with open(unsplit / "train_test_pths.pickle", "wb") as f:
        pickle.dump({"train": ["a.jpg", "b.jpg"], "test": []}, f)
    cases.append((unsplit, ["train_test_pths.pickle", "'b.jpg' has no text"]))
    for dataset, words in cases:
        for script in (TRAIN, EXTRACT):
            work = tmp_path / "work"
            if script == EXTRACT:  # a model is present, so the dataset is what fails
                work.mkdir(exist_ok=True)
                (work / "doc2vec_model.gensim").write_bytes(b"")
            r = cli(script, "--dataset", dataset, "--work-dir", work, check=False)
            one_line_error(r, *words)


def test_scripts_run_out_of_order_name_the_script_to_run(corpus, tmp_path):
    common = ["--dataset", corpus["manifest"], "--work-dir", tmp_path / "w"]
    r = cli(EXTRACT, *common, check=False)
    one_line_error(r, "doc2vec_model.gensim: not found", "run train_doc2vec.py")
    r = cli(KNN, *common, check=False)
    one_line_error(r, "doc2vec_features.pickle: not found", "run extract_doc2vec_vectors.py")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "doc2vec_features.pickle").write_bytes(b"\x80\x05truncated")
    r = cli(KNN, *common, check=False)
    one_line_error(r, "doc2vec_features.pickle: unreadable", "extract_doc2vec_vectors.py")


def test_k_larger_than_the_corpus(corpus, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(corpus["work"] / "doc2vec_features.pickle", work)
    n = len(pickle.loads((work / "doc2vec_features.pickle").read_bytes())["ids"])
    r = cli(KNN, "--work-dir", work, "--k", n + 1, "--backend", "exact", check=False)
    one_line_error(r, f"--k {n + 1} is larger than the corpus ({n} documents",
                   f"pass --k {n} or less")
    code, _, err = astuple(cli(KNN, "--work-dir", work, "--k", "0", check=False))
    assert code == 2 and "--k 0" in err


def test_empty_vocabulary(corpus, tmp_path):
    r = cli(TRAIN, "--dataset", corpus["manifest"], "--work-dir", tmp_path,
            "--min-count", "100000", "--workers", "1", check=False)
    one_line_error(r, "Doc2Vec vocabulary is empty", "--min-count")
    assert not (tmp_path / "doc2vec_model.gensim").exists()


def test_exit_status_and_stderr_of_a_real_process(tmp_path):
    r = run_subprocess(EXTRACT, "--dataset", tmp_path / "m.jsonl", "--work-dir", tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"error: {tmp_path / 'doc2vec_model.gensim'}: not found: run "
                                f"train_doc2vec.py with --work-dir {tmp_path} first")
