"""The text side at scale, each step against the bare library doing the same work.

    python benchmarks/text_scale.py [--sizes 10000,100000,1000000] [--epochs 50] [--kind short]

For each size N it writes a seeded topic-model corpus of N documents (benchmarks/text_corpus.py;
image paths, no images) and runs, each in a fresh process, through the scripts' own code:
  preprocess      load_items + doc2vec_documents (what the text scripts run first)
  doc2vec         train_doc2vec.py                   bare: gensim Doc2Vec, same tokens/settings/threads
  infer           extract_doc2vec_vectors.py         bare: infer_vector in a process pool, all cores
  knn hnsw        knn_document_features.py           bare: nmslib build + knnQueryBatch, all threads
  knn exact       knn_document_features.py --backend exact --device cpu   bare: torch matmul + topk
  knn faiss-exact, knn faiss-ivf, knn faiss-ivfpq, knn faiss-hnsw: --backend faiss-*
                  (no bare program: faiss is the library; its recall against exact is printed)
  sampler         NeighborSampler's table + one draw (training/neighbors.py)
  trainer prep    training.prepare.prepare up to the first batch (images replaced, see the steps file)
  transformer     extract_transformer_vectors.py --text-model minilm (opt-in: name it in --steps;
                  it writes into its own folder)   bare: transformers AutoTokenizer + AutoModel
                  from the same folder, same texts/batch/length, mean pooling, L2 norm, no_grad;
                  the largest difference between the two files' vectors is printed
The bare programs (benchmarks/text_scale_steps.py) read the same manifest and include their own
reading and preprocessing, so a ratio compares the whole step with the libraries alone.

Measured per step: wall time of the process (start-up included); peak memory of the process and
all its descendants together, as the largest sum of their proportional set sizes (PSS, from
/proc/PID/smaps_rollup, sampled every 0.01 s for 2 s, then every 0.2 s; PSS counts a page
shared by forked workers once rather than once per process), or the largest single process's exact peak RSS (VmHWM) when that
is larger; and the bytes of the files the step writes. Goals (issue 13): every step within
1.25x of the bare library; time growing no faster than N log N; peak memory at 1M documents with
k = 200 under 6 GB; the whole text side at 250,000 documents finishing on 2 cores. Issue 17:
every kNN backend side by side with its recall@10 against exact search on 1,000 sampled
queries; at 1,000,000 documents the kNN step in at most 10 minutes at recall@10 >= 0.98 and the
whole text side (Doc2Vec 5 epochs) in at most 45 minutes. Each kNN backend writes into its own
folder except --train-knn's, whose file the sampler and the trainer's preparation then read.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import config  # noqa: E402
from benchmarks.text_corpus import KINDS, write_manifest  # noqa: E402
from cli import HelpFormatter  # noqa: E402
from common.workdir import DOC2VEC_FEATURES  # noqa: E402

STEPS_PY = str(ROOT / "benchmarks" / "text_scale_steps.py")
KNN_BACKENDS = ("hnsw", "exact", "faiss-exact", "faiss-ivf", "faiss-ivfpq", "faiss-hnsw")
DEFAULT_STEPS = ("preprocess", "doc2vec", "infer", *(f"knn {b}" for b in KNN_BACKENDS), "sampler",
                 "trainer prep")
# Opt-in: a transformer over the corpus costs far more than the Doc2Vec side on CPUs.
STEP_NAMES = (*DEFAULT_STEPS, "transformer")
TRANSFORMER_DIR = "transformer"   # the transformer step's folder, beside the Doc2Vec files
CHEAP_GRAPH = ["--ef-construction", "20", "--ef-search", "200"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated corpus sizes")
    p.add_argument("--kind", choices=sorted(KINDS), default="short",
                   help="short: two sentences of ~40 words (Politics as used); article: ~600 words "
                        "(GoodNews), preprocessed whole (--max-sentences 0)")
    p.add_argument("--epochs", type=int, default=config.EPOCHS,
                   help="Doc2Vec epochs, for ours and the bare gensim alike (inference uses them too)")
    p.add_argument("--min-count", type=int, default=config.MIN_COUNT)
    p.add_argument("--k", type=int, default=config.K)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes / threads")
    p.add_argument("--exact-max", type=int, default=250_000,
                   help="largest size the exact kNN backends (CPU, all pairs) run at")
    p.add_argument("--hnsw-max", type=int, default=None,
                   help="above this size nmslib builds its cheap graph (efConstruction 20, "
                        "efSearch 200), labelled so (default: the default graph at every size)")
    p.add_argument("--train-knn", choices=KNN_BACKENDS, default="hnsw",
                   help="the backend whose kNN file the sampler and the trainer's preparation read")
    p.add_argument("--steps", default=",".join(DEFAULT_STEPS),
                   help="comma-separated steps to run (each needs the earlier steps' files in "
                        "--work-dir; `transformer` needs none and runs only when named)")
    p.add_argument("--bare-steps", default=",".join(STEP_NAMES),
                   help="of those, the ones timed against the bare library too (for a run short of time)")
    p.add_argument("--text-model", default="minilm",
                   help="the transformer step's model: minilm or a Hugging Face model folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "text_scale"),
                   help="corpora and outputs, one folder per size (corpora are reused)")
    p.add_argument("--out", default=None, help="write the results as JSON here and the table beside (.md)")
    p.add_argument("--table", default=None, metavar="JSON[,JSON...]",
                   help="only print the table of earlier runs' --out files (also ones cut short); "
                        "several runs at the same settings, e.g. the sizes run side by side, merge")
    args = p.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error(f"--sizes {args.sizes!r}: pass comma-separated integers")
    for flag in ("steps", "bare_steps"):
        names = [x.strip() for x in getattr(args, flag).split(",") if x.strip()]
        unknown = [x for x in names if x not in STEP_NAMES]
        if unknown:
            p.error(f"--{flag.replace('_', '-')}: unknown step {unknown[0]!r}; the steps: {', '.join(STEP_NAMES)}")
        setattr(args, flag, names)
    if not args.sizes or min(args.sizes) < 2 * args.k:
        p.error(f"--sizes: every size must be at least 2 x --k ({2 * args.k})")
    return args


# --- measuring one process tree ---------------------------------------------------------------

def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree_memory_kib(pid: int) -> tuple[int, int]:
    """(sum of the PSS of `pid` and all its descendants now, the largest VmHWM among them), KiB.

    VmHWM is a process's own peak RSS since it started its program (exact, unlike a sample);
    wait4's ru_maxrss is not used because Linux carries the parent's RSS over the exec into it.
    """
    kids, todo, total, hwm = _children(), [pid], 0, 0
    while todo:
        p = todo.pop()
        todo.extend(kids.get(p, []))
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
            with open(f"/proc/{p}/status") as f:
                hwm = max(hwm, next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")))
        except (OSError, StopIteration, ValueError):
            pass   # exited meanwhile
    return total, hwm


def run_measured(cmd: list[str], writes: Path | None, log: Path) -> dict:
    """Run `cmd` (stdout to `log`, stderr and its progress bars through); wall time, CPU time
    (user + system of the process and the children it waited for: on a busy machine the wall
    time says how long the step waited too, its CPU time does not), peak memory, bytes written
    under `writes`, and the last JSON line it printed, if any."""
    before = _files(writes)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        start = out.tell()
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=None)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, *tree_memory_kib(proc.pid))
            # Densely at first: a step done in a fraction of a second would otherwise be seen
            # only while the interpreter is still starting.
            time.sleep(0.01 if time.perf_counter() - t < 2 else 0.2)
        wall = time.perf_counter() - t
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime
    text = log.read_text()[start:]
    if proc.returncode:
        raise RuntimeError(f"{cmd[1]} failed ({proc.returncode}); its output is in {log}:\n{text[-2000:]}")
    after = _files(writes)
    last = next((json.loads(x) for x in reversed(text.splitlines()) if x.startswith("{")), {})
    return {"seconds": wall, "cpu_s": cpu, "peak_mib": peak / 1024,
            "written_mib": sum(s for p, (s, m) in after.items() if before.get(p) != (s, m)) / 2**20,
            **{f"reported_{k}": v for k, v in last.items() if k != "step"}}


def _files(folder: Path | None) -> dict[str, tuple[int, float]]:
    if folder is None or not folder.exists():
        return {}
    return {str(p): (p.stat().st_size, p.stat().st_mtime) for p in folder.iterdir() if p.is_file()}


# --- the steps --------------------------------------------------------------------------------

def steps(args: argparse.Namespace, n: int, manifest: Path, work: Path) -> list[tuple[str, list, list | None, Path]]:
    """(name, our command, the bare command or None, the folder our step writes to)."""
    py = sys.executable
    sentences = "0" if args.kind == "article" else str(config.MAX_SENTENCES)
    shared = ["--dataset", str(manifest), "--work-dir", str(work), "--workers", str(args.workers),
              "--seed", str(args.seed), "--max-sentences", sentences]
    d2v = ["--epochs", str(args.epochs), "--min-count", str(args.min_count)]
    bare = work / "bare"

    def b(step: str, out: str | None = None, extra: list | None = None) -> list:
        return [py, STEPS_PY, step, *shared, *(extra or []), *(["--out", str(bare / out)] if out else [])]

    plan = [
        ("preprocess", [py, STEPS_PY, "preprocess", *shared], b("bare-preprocess"), work),
        ("doc2vec", [py, "train_doc2vec.py", *shared, *d2v], b("bare-doc2vec", "d2v.gensim", d2v), work),
        ("infer", [py, "extract_doc2vec_vectors.py", *shared], b("bare-infer", "vectors.pickle"), work),
    ]
    bare_knn = {"hnsw": b("bare-hnsw", "hnsw.pickle", ["--k", str(args.k)]),
                "exact": b("bare-exact", "exact.pickle", ["--k", str(args.k)])}
    for backend in KNN_BACKENDS:
        if backend in ("exact", "faiss-exact") and n > args.exact_max:
            continue
        folder = knn_folder(args, work, backend)
        extra = ["--device", "cpu"] if backend in ("exact", "faiss-exact") else []
        if backend == "hnsw" and args.hnsw_max is not None and n > args.hnsw_max:
            extra = CHEAP_GRAPH
        ours = [py, "knn_document_features.py", *shared[:2], "--work-dir", str(folder), *shared[4:],
                "--k", str(args.k), "--backend", backend, *extra]
        plan.append((f"knn {backend}", ours, bare_knn.get(backend), folder))
    plan += [("sampler", [py, STEPS_PY, "sampler", *shared], None, work),
             ("trainer prep", [py, STEPS_PY, "trainer-prep", *shared], None, work)]
    folder, model = work / TRANSFORMER_DIR, ["--text-model", args.text_model]
    plan.append(("transformer",
                 [py, "extract_transformer_vectors.py", *shared[:2], "--work-dir", str(folder),
                  *shared[4:], *model, "--batch-size", str(config.TEXT_BATCH_SIZE)],
                 b("bare-transformer", "transformer.pickle",
                   [*model, "--batch-size", str(config.TEXT_BATCH_SIZE)]), folder))
    return [(name, ours, bare if name in args.bare_steps else None, writes)
            for name, ours, bare, writes in plan if name in args.steps]


def knn_folder(args: argparse.Namespace, work: Path, backend: str) -> Path:
    """Where a kNN backend writes: --train-knn's into the work folder, the others beside."""
    return work if backend == args.train_knn else work / backend


def parse_knn_output(text: str, backend: str) -> dict:
    """The search's own seconds and its recall, from knn_document_features.py's output."""
    out: dict = {}
    m = re.search(r"kNN, k=\d+, \d+ documents: ([0-9.]+)s", text)
    if m:
        out["knn_s"] = float(m.group(1))
    m = re.search(r"recall@(\d+) against exact on (\d+) queries: ([0-9.]+)", text)
    if m:
        out.update(recall_k=int(m.group(1)), recall_queries=int(m.group(2)), recall=float(m.group(3)))
    elif backend in ("exact", "faiss-exact"):
        out["recall"] = 1.0   # exact by construction (tests/test_knn_faiss.py checks it)
    return out


def run_size(args: argparse.Namespace, n: int, results: dict) -> None:
    """Every step at size n, appended to results["rows"] and saved after each one."""
    work = Path(args.work_dir) / f"{args.kind}_{n}"
    manifest = write_manifest(Path(args.work_dir) / f"corpus_{args.kind}_{n}_seed{args.seed}.jsonl",
                              n, args.seed, args.kind)
    (work / "bare").mkdir(parents=True, exist_ok=True)
    log = Path(args.work_dir) / f"log_{args.kind}_{n}.txt"   # outside `work`: not counted as written
    for name, ours, bare, writes in steps(args, n, manifest, work):
        if name == "transformer":
            writes.mkdir(exist_ok=True)
        if name.startswith("knn") and writes != work:   # its own folder, beside the vectors
            writes.mkdir(exist_ok=True)
            link = writes / DOC2VEC_FEATURES
            link.unlink(missing_ok=True)
            link.symlink_to(work / DOC2VEC_FEATURES)
        print(f"[{n:,}] {name} ...", file=sys.stderr, flush=True)
        start = log.stat().st_size if log.exists() else 0
        row = {"n": n, "step": name, "ours": run_measured(ours, writes, log)}
        if name.startswith("knn"):
            with open(log, "rb") as f:
                f.seek(start)
                row["ours"].update(parse_knn_output(f.read().decode("utf-8", "replace"), name[4:]))
            if "--ef-construction" in ours:
                row["label"] = "cheap graph: efConstruction 20, efSearch 200"
        if bare:
            row["bare"] = run_measured(bare, None, log)
            row["ratio"] = row["ours"]["seconds"] / row["bare"]["seconds"]
            if name == "transformer":
                row.update(vector_difference(writes / DOC2VEC_FEATURES, work / "bare" / "transformer.pickle"))
        print(f"[{n:,}] {name}: {_line(row)}", file=sys.stderr, flush=True)
        results["rows"].append(row)
        save(results, args.out)   # a run cut short still leaves what it measured


def vector_difference(ours: Path, bare: Path) -> dict:
    """The largest absolute difference between two vector files' vectors of the same documents
    (matched by id; the bare program does not drop documents without a Doc2Vec token)."""
    import pickle
    import numpy as np
    with open(ours, "rb") as f:
        a = pickle.load(f)
    with open(bare, "rb") as f:
        b = pickle.load(f)
    where = {d: i for i, d in enumerate(b["ids"])}
    rows = [where[d] for d in a["ids"]]
    diff = np.abs(np.asarray(a["vectors"], np.float64) - np.asarray(b["vectors"], np.float64)[rows])
    return {"max_abs_diff": float(diff.max()) if diff.size else 0.0, "compared": len(rows),
            "bare_only": len(b["ids"]) - len(rows)}


def _line(r: dict) -> str:
    o = r["ours"]
    s = f"ours {o['seconds']:.1f}s, peak {o['peak_mib']:.0f} MiB"
    if "recall" in o:
        s += f", recall@10 {o['recall']:.4f}"
    if "bare" in r:
        s += f"; bare {r['bare']['seconds']:.1f}s, peak {r['bare']['peak_mib']:.0f} MiB; ratio {r['ratio']:.2f}"
    if "max_abs_diff" in r:
        s += f"; vectors: max abs difference {r['max_abs_diff']:.2e} over {r['compared']:,} documents"
    return s


# The whole text side as a user runs it: the three scripts (with one kNN backend) and the
# trainer's preparation (the preprocessing and the sampler happen inside those).
WHOLE = ("doc2vec", "infer", "trainer prep")


def table(results: dict) -> str:
    s, rows = results["settings"], results["rows"]
    lines = [f"{s['kind']} texts, Doc2Vec {s['epochs']} epochs (min_count {s['min_count']}), k = {s['k']}, "
             f"{s['workers']} workers, {s['cpus']} CPUs", "",
             "| documents | step | ours s | bare s | ours / bare | ours peak MiB | bare peak MiB "
             "| writes MiB | kNN recall@10 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o, b = r["ours"], r.get("bare")
        recall = ("exact" if r["step"] in ("knn exact", "knn faiss-exact") else
                  f"{o['recall']:.4f}" if "recall" in o else "")
        step = r["step"] + (f" ({r['label']})" if r.get("label") else "")
        lines.append(f"| {r['n']:,} | {step} | {o['seconds']:.1f} | "
                     + (f"{b['seconds']:.1f} | {r['ratio']:.2f} | " if b else "- | - | ")
                     + f"{o['peak_mib']:,.0f} | " + (f"{b['peak_mib']:,.0f}" if b else "-")
                     + f" | {o['written_mib']:,.1f} | {recall} |")
    sizes = sorted({r["n"] for r in rows})
    for n in sizes:
        done = {r["step"]: r["ours"]["seconds"] for r in rows if r["n"] == n}
        if any(step not in done for step in WHOLE):   # a run cut short: no total of part of the steps
            continue
        for knn in [step for step in done if step.startswith("knn")]:
            total = sum(done[step] for step in WHOLE) + done[knn]
            lines.append(f"| {n:,} | whole text side (doc2vec + infer + {knn} + trainer prep) "
                         f"| {total:.1f} | | | | | | |")
    if len(sizes) > 1:
        lines += ["", "Growth between sizes: time ratio against the N log N ratio (goal: not above it)", "",
                  "| step | " + " | ".join(f"{a:,} -> {c:,}" for a, c in zip(sizes, sizes[1:])) + " |",
                  "|---|" + "---|" * (len(sizes) - 1)]
        by = {(r["n"], r["step"]): r["ours"]["seconds"] for r in rows}
        for step in dict.fromkeys(r["step"] for r in rows):
            cells = []
            for a, c in zip(sizes, sizes[1:]):
                if (a, step) in by and (c, step) in by:
                    cells.append(f"{by[c, step] / by[a, step]:.1f}x (N log N {c * math.log(c) / (a * math.log(a)):.1f}x)")
                else:
                    cells.append("-")
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    top = max(sizes)
    same = [r for r in rows if "max_abs_diff" in r]
    if same:
        lines.append("")
    for r in same:
        lines.append(f"{r['n']:,} documents, {r['step']}: ours and the bare loop's vectors differ by at most "
                     f"{r['max_abs_diff']:.2e} (over {r['compared']:,} documents"
                     + (f"; {r['bare_only']:,} more in the bare file only)" if r["bare_only"] else ")"))
    lines += ["", f"largest ours / bare: {max(ratios):.2f} (goal <= 1.25)" if ratios else "",
              f"largest peak at {top:,} documents: "
              f"{max(r['ours']['peak_mib'] for r in rows if r['n'] == top) / 1024:.2f} GiB"]
    return "\n".join(x for x in lines if x is not None)


# Settings that must agree for rows of several runs to share one table.
SAME = ("kind", "epochs", "min_count", "k", "workers", "seed", "cpus")


def merge(runs: list[dict]) -> dict:
    """One results dict from several runs at the same settings, rows in size order."""
    first = runs[0]["settings"]
    for r in runs[1:]:
        differ = [key for key in SAME if r["settings"].get(key) != first.get(key)]
        if differ:
            raise SystemExit(f"error: --table: the runs differ in {', '.join(differ)}; "
                             "merge only runs made with the same settings")
    rows = sorted((row for r in runs for row in r["rows"]), key=lambda row: row["n"])
    sizes = sorted({row["n"] for row in rows})
    return {"settings": {**first, "sizes": sizes}, "rows": rows}


def save(results: dict, out: str | None) -> None:
    # Not benchmarks.common's: that imports torch, and a step process started from a parent of
    # ~700 MiB reports that parent's RSS as its own peak (Linux keeps the pre-exec high-water mark).
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=2, default=str))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.table:
        results = merge([json.loads(Path(f).read_text()) for f in args.table.split(",")])
        print(table(results))
        return results
    settings = {**vars(args), "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    results: dict = {"settings": settings, "rows": []}
    for n in args.sizes:
        run_size(args, n, results)
    text = table(results)
    print(text)
    save(results, args.out)
    if args.out:
        Path(args.out).with_suffix(".md").write_text(text + "\n")
    return results


if __name__ == "__main__":
    main()
