"""kNN speed: exact all-pairs search on the GPU (or CPU), nmslib HNSW on the CPU cores, and
every backend of knn_document_features.py side by side.

    python benchmarks/knn_throughput.py [--n 1000000] [--dim 200] [--k 200] [--hnsw-n 100000]
    python benchmarks/knn_throughput.py --compare-sizes 100000,250000,1000000 \
        --vectors WORK/doc2vec_features.pickle [--backends hnsw,exact,faiss-exact,faiss-ivf,faiss-ivfpq,faiss-hnsw]

On random unit vectors, times:
  exact  data.neighbors.knn.exact_knn on all pairs of --n vectors (what knn_document_features.py
         --backend exact runs), with the peak device memory, and checks its distances against a
         float64 brute force on --check sample queries
  probe  optionally (--probe-blocks), exact search of --probe-queries queries with each block size
  hnsw   data.neighbors.knn.hnsw_knn (the authors' backend) on --hnsw-n vectors over --workers threads,
         build and query time, and its recall@10 against exact search on 1,000 sample queries
  compare  (--compare-sizes) knn_document_features.py itself with each --backends entry, each
         in a fresh process, on a seeded sample of N vectors of --vectors (default: generated
         clustered vectors): its search time, the whole step's wall time, its recall@10 against
         exact search on 1,000 sampled queries (what the script prints; exact backends are exact)
         and the peak memory of the process (as benchmarks/text_scale.py measures it). All-pairs
         exact search runs up to --exact-max documents; nmslib's default graph up to --hnsw-max,
         above it its cheap graph (efConstruction 20, efSearch 200), labelled so.
Goals: (issue 6) 1,000,000 documents, 200 dimensions, k = 200, exact on the GPU in under 60 s;
(issue 17) the kNN step at 1,000,000 documents on 2 cores in at most 10 minutes at recall@10
>= 0.98, peak memory under 6 GB.
"""
from __future__ import annotations

import argparse
import os
import pickle
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import config  # noqa: E402
from benchmarks.common import report, save, setup, sync  # noqa: E402
from cli import HelpFormatter  # noqa: E402
from data.neighbors.knn import exact_knn, hnsw_knn, recall_at  # noqa: E402

BACKENDS = ("hnsw", "exact", "faiss-exact", "faiss-ivf", "faiss-ivfpq", "faiss-hnsw")
CHEAP_GRAPH = ["--ef-construction", "20", "--ef-search", "200"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="vectors of the exact all-pairs search")
    p.add_argument("--dim", type=int, default=config.VECTOR_SIZE, help="vector dimension")
    p.add_argument("--k", type=int, default=config.K, help="neighbours per vector, itself included")
    p.add_argument("--space", choices=("l2", "cosinesimil"), default=config.SPACE, help="distance")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="of the exact search (None: cuda when present)")
    p.add_argument("--check", type=int, default=20, help="sample queries checked against float64 brute force")
    p.add_argument("--probe-blocks", default="",
                   help="comma-separated block sizes to time, e.g. 512,2048,8192 (empty: none)")
    p.add_argument("--probe-queries", type=int, default=32_768, help="queries of each block size probe")
    p.add_argument("--hnsw-n", type=int, default=100_000, help="vectors of the HNSW run (0: skip)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="HNSW threads")
    p.add_argument("--seed", type=int, default=0, help="of the random vectors and the samples")
    p.add_argument("--out", default=None, help="write the results as JSON here and as markdown beside")
    g = p.add_argument_group("every backend side by side (--compare-sizes)")
    g.add_argument("--compare-sizes", default="",
                   help="comma-separated corpus sizes; with it only the comparison runs")
    g.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated, in run order")
    g.add_argument("--vectors", default=None,
                   help="a doc2vec_features.pickle to sample from (default: generated clustered vectors)")
    g.add_argument("--exact-max", type=int, default=250_000,
                   help="largest size the all-pairs exact backends run at (exact, faiss-exact)")
    g.add_argument("--hnsw-max", type=int, default=250_000,
                   help="largest size nmslib runs its default graph at; above it, the cheap graph")
    g.add_argument("--work-dir", default="/tmp/knn_compare", help="the sampled vectors and kNN files")
    args = p.parse_args(argv)
    try:
        args.compare_sizes = [int(x) for x in args.compare_sizes.split(",") if x.strip()]
    except ValueError:
        p.error(f"--compare-sizes {args.compare_sizes!r}: pass comma-separated integers")
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown:
        p.error(f"--backends: unknown backend {unknown[0]!r}; the backends: {', '.join(BACKENDS)}")
    if args.compare_sizes:
        if min(args.compare_sizes) <= args.k:
            p.error(f"--compare-sizes: every size must be above --k {args.k}")
        return args
    if not 1 <= args.k <= args.n:
        p.error(f"--k {args.k} must be between 1 and --n {args.n}")
    if args.hnsw_n and args.hnsw_n < args.k:
        p.error(f"--hnsw-n {args.hnsw_n} must be 0 or at least --k {args.k}")
    return args


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1).numpy()


def brute_force_error(vectors: np.ndarray, dists: np.ndarray, sample: np.ndarray, k: int,
                      space: str, device: torch.device) -> float:
    """Largest |exact_knn distance - float64 brute-force distance| over the sample's rows."""
    base = torch.as_tensor(vectors, dtype=torch.float64, device=device)
    q = base[torch.as_tensor(sample, device=device)]
    if space == "cosinesimil":
        base = torch.nn.functional.normalize(base, dim=1)
        q = torch.nn.functional.normalize(q, dim=1)
        ref = 1 - q @ base.T
    else:
        ref = torch.cdist(q, base)
    want = torch.topk(ref, k, dim=1, largest=False).values.clamp_(min=0).cpu().numpy()
    want[:, 0] = 0   # the query itself, as exact_knn puts it first
    return float(np.abs(dists[sample] - want).max())


def run_exact(vectors: np.ndarray, args, device: torch.device) -> dict:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t = time.perf_counter()
    _, dists = exact_knn(vectors, args.k, args.space, str(device), progress=False)
    sync(device)
    seconds = time.perf_counter() - t
    out = {"n": len(vectors), "seconds": seconds, "queries_per_s": len(vectors) / seconds}
    if device.type == "cuda":
        out["peak_device_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    sample = np.random.default_rng(args.seed).choice(len(vectors), min(args.check, len(vectors)), replace=False)
    out["max_error_vs_float64"] = brute_force_error(vectors, dists, sample, args.k, args.space, device)
    return out


def run_probe(vectors: np.ndarray, args, device: torch.device) -> dict:
    queries = vectors[:min(args.probe_queries, len(vectors))]
    out = {}
    for rows in [int(b) for b in args.probe_blocks.split(",") if b.strip()]:
        exact_knn(vectors, args.k, args.space, str(device), queries=queries[:rows], progress=False,
                  block_rows=rows)   # warm-up at this block's shapes
        sync(device)
        t = time.perf_counter()
        exact_knn(vectors, args.k, args.space, str(device), queries=queries, progress=False, block_rows=rows)
        sync(device)
        out[rows] = len(queries) / (time.perf_counter() - t)
    return out


def run_hnsw(args, device: torch.device) -> dict:
    vectors = unit_vectors(args.hnsw_n, args.dim, args.seed + 1)
    timings: dict = {}
    t = time.perf_counter()
    _, dists = hnsw_knn(vectors, args.k, args.space, config.M, config.EF_CONSTRUCTION,
                        config.EF_SEARCH, args.workers, timings)
    seconds = time.perf_counter() - t
    sample = np.random.default_rng(args.seed).choice(len(vectors), min(1000, len(vectors)), replace=False)
    k10 = min(10, args.k)
    _, exact_d = exact_knn(vectors, k10, args.space, str(device), queries=vectors[sample], progress=False)
    return {"n": len(vectors), "seconds": seconds, "queries_per_s": len(vectors) / timings["query_s"],
            **timings, f"recall_at_{k10}": recall_at(dists[sample], exact_d, k10),
            "M": config.M, "ef_construction": config.EF_CONSTRUCTION, "ef_search": config.EF_SEARCH}


def table(results: dict) -> str:
    s = results["settings"]
    lines = [f"k = {s['k']}, {s['dim']} dimensions, space {s['space']}", "",
             "| backend | where | documents | seconds | queries/s | notes |", "|---|---|---|---|---|---|"]
    e = results["exact"]
    mem = f", peak {e['peak_device_gib']:.1f} GiB on the device" if "peak_device_gib" in e else ""
    lines.append(f"| exact (all pairs) | {s['device']} | {e['n']:,} | {e['seconds']:.1f} | "
                 f"{e['queries_per_s']:,.0f} | max error vs float64 {e['max_error_vs_float64']:.1e}{mem} |")
    for rows, rate in results.get("probe", {}).items():
        lines.append(f"| exact, blocks of {rows} | {s['device']} | {s['probe_queries']:,} queries | - | {rate:,.0f} | |")
    h = results.get("hnsw")
    if h:
        recall = next(v for key, v in h.items() if key.startswith("recall_at_"))
        lines.append(f"| nmslib HNSW | {s['workers']} CPU threads | {h['n']:,} | {h['seconds']:.1f} | "
                     f"{h['queries_per_s']:,.0f} | build {h['build_s']:.1f}s, query {h['query_s']:.1f}s, "
                     f"recall@10 {recall:.4f} (M {h['M']}, efC {h['ef_construction']}, efS {h['ef_search']}) |")
    elif "hnsw_skipped" in results:
        lines.append(f"| nmslib HNSW | - | - | - | - | skipped: {results['hnsw_skipped']} |")
    lines.append(f"\npeak host memory: {results['peak_host_gib']:.1f} GiB")
    return "\n".join(lines)


def sample_vectors(args, n: int) -> tuple[list, np.ndarray, dict]:
    """(ids, vectors, provenance record) of a seeded sample of n vectors of --vectors, or n
    generated clustered vectors (a Gaussian mixture: 200 topics, as Doc2Vec vectors of a
    topical corpus crowd around their topics)."""
    if args.vectors:
        from common.workdir import read_pickle
        feats = read_pickle(args.vectors, "pass a doc2vec_features.pickle")
        total = len(feats["vectors"])
        if n > total:
            raise SystemExit(f"error: --compare-sizes {n}: {args.vectors} holds {total} vectors")
        rows = np.sort(np.random.default_rng(args.seed).choice(total, n, replace=False))
        return [feats["ids"][i] for i in rows], feats["vectors"][rows], feats["provenance"]
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((200, args.dim)).astype(np.float32) * 2
    x = centres[rng.integers(0, 200, n)] + rng.standard_normal((n, args.dim), dtype=np.float32)
    from data.datasets import provenance
    return [str(i) for i in range(n)], x, provenance.new_record({"items": n}, "vectors", {})


def compare(args) -> list[dict]:
    """knn_document_features.py with each backend at each size, each in a fresh process."""
    from benchmarks.text_scale import parse_knn_output, run_measured
    from common.workdir import DOC2VEC_FEATURES
    rows = []
    for n in args.compare_sizes:
        work = Path(args.work_dir) / f"n{n}"
        work.mkdir(parents=True, exist_ok=True)
        ids, vectors, record = sample_vectors(args, n)
        with open(work / DOC2VEC_FEATURES, "wb") as f:
            pickle.dump({"ids": ids, "vectors": vectors, "provenance": record}, f, protocol=5)
        del ids, vectors
        for backend in args.backends:
            extra, label = [], ""
            if backend in ("exact", "faiss-exact") and n > args.exact_max:
                rows.append({"n": n, "backend": backend, "skipped": f"above --exact-max {args.exact_max:,}"})
                continue
            if backend == "exact":
                extra = ["--device", args.device or "cpu"]
            if backend == "hnsw" and n > args.hnsw_max:
                extra, label = CHEAP_GRAPH, "cheap graph: efConstruction 20, efSearch 200"
            cmd = [sys.executable, "knn_document_features.py", "--dataset", str(work / "none.jsonl"),
                   "--work-dir", str(work), "--workers", str(args.workers), "--k", str(args.k),
                   "--space", args.space, "--seed", str(args.seed), "--backend", backend, *extra]
            print(f"[{n:,}] {backend} {label}...", file=sys.stderr, flush=True)
            log = Path(args.work_dir) / "log.txt"
            start = len(log.read_text()) if log.exists() else 0
            row = {"n": n, "backend": backend, "label": label, **run_measured(cmd, None, log)}
            row.update(parse_knn_output(log.read_text()[start:], backend))
            print(f"[{n:,}] {backend}: {_compare_line(row)}", file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def _compare_line(r: dict) -> str:
    recall = f"recall@10 {r['recall']:.4f}" if "recall" in r else "recall -"
    return (f"kNN {r.get('knn_s', float('nan')):.1f}s, step {r['seconds']:.1f}s (CPU "
            f"{r['cpu_s']:.0f}s), {recall}, peak {r['peak_mib']:,.0f} MiB")


def compare_table(results: dict) -> str:
    s = results["settings"]
    lines = [f"k = {s['k']}, space {s['space']}, {s['workers']} threads, {s['cpus']} CPUs, vectors: "
             f"{s['vectors'] or 'generated clustered'}", "",
             "| documents | backend | kNN s | step s | step CPU s | recall@10 | peak MiB | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["compare"]:
        if "skipped" in r:
            lines.append(f"| {r['n']:,} | {r['backend']} | - | - | - | - | - | not run: {r['skipped']} |")
            continue
        exact = r["backend"] in ("exact", "faiss-exact")
        recall = "exact" if exact else (f"{r['recall']:.4f}" if "recall" in r else "-")
        lines.append(f"| {r['n']:,} | {r['backend']} | {r.get('knn_s', float('nan')):.1f} | "
                     f"{r['seconds']:.1f} | {r['cpu_s']:.0f} | {recall} | {r['peak_mib']:,.0f} | "
                     f"{r.get('label', '')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device, settings = setup(args)
    results: dict = {"settings": settings}
    if args.compare_sizes:
        results["compare"] = compare(args)
        report(results, compare_table(results), args.out)
        return results
    vectors = unit_vectors(args.n, args.dim, args.seed)
    exact_knn(vectors[:max(args.k, 1000)], args.k, args.space, str(device), progress=False)  # warm-up
    results["exact"] = run_exact(vectors, args, device)
    e = results["exact"]
    print(f"exact on {device}: {e['n']:,} x {e['n']:,}, k={args.k}: {e['seconds']:.1f}s "
          f"({e['queries_per_s']:,.0f} queries/s), max error vs float64 {e['max_error_vs_float64']:.1e}",
          flush=True)
    save(results, args.out)
    if args.probe_blocks:
        results["probe"] = run_probe(vectors, args, device)
        print("block size -> queries/s: " + ", ".join(f"{b}: {r:,.0f}" for b, r in results["probe"].items()),
              flush=True)
        save(results, args.out)
    del vectors
    if args.hnsw_n:
        try:
            import nmslib  # noqa: F401
        except ImportError:
            results["hnsw_skipped"] = "nmslib is not installed"
        else:
            results["hnsw"] = run_hnsw(args, device)
    results["peak_host_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    report(results, table(results), args.out)
    return results


if __name__ == "__main__":
    main()
