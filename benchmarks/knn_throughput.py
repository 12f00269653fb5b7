"""kNN speed: exact all-pairs search on the GPU (or CPU) and nmslib HNSW on the CPU cores.

    python benchmarks/knn_throughput.py [--n 1000000] [--dim 200] [--k 200] [--hnsw-n 100000]

On random unit vectors, times:
  exact  data.knn.exact_knn on all pairs of --n vectors (what knn_document_features.py
         --backend exact runs), with the peak device memory, and checks its distances against a
         float64 brute force on --check sample queries
  probe  optionally (--probe-blocks), exact search of --probe-queries queries with each block size
  hnsw   data.knn.hnsw_knn (the authors' backend) on --hnsw-n vectors over --workers threads,
         build and query time, and its recall@10 against exact search on 1,000 sample queries
Goal (issue 6): 1,000,000 documents, 200 dimensions, k = 200, exact on the GPU in under 60 s.
"""
from __future__ import annotations

import argparse
import os
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
from data.knn import exact_knn, hnsw_knn, recall_at  # noqa: E402


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
    args = p.parse_args(argv)
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


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device, settings = setup(args)
    results: dict = {"settings": settings}
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
