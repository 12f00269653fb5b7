"""faiss kNN backends: exact (IndexFlatL2), IVF (IndexIVFFlat), IVF with 4-bit product codes
re-ranked exactly (IndexIVFPQFastScan inside IndexRefineFlat) and HNSW (IndexHNSWFlat).

Same output as knn.py's backends: int32 ids and float32 distances [N, k], nearest first, each
row starting with the document itself at distance 0; Euclidean for "l2", 1 - cosine for
"cosinesimil" (searched as l2 between unit vectors: |a - b|^2 / 2 = 1 - cos(a, b)).

faiss's IVF and HNSW indexes measure each candidate by differences, so their distances are
exact (faiss-ivfpq ranks by its codes, then measures the best k x refine candidates exactly);
its flat index scores with the dot-product expansion (BLAS), which loses ~1e-3 to cancellation,
so "faiss-exact" takes a few candidates beyond k and re-ranks them by differences, as the torch
exact backend does. Queries run in blocks written straight into the result, so the
only memory beyond the vectors and the [N, k] result is the index and one block's answers.
"""
from __future__ import annotations

import math
import os
import time

import numpy as np
from tqdm import tqdm

from data.neighbors.knn import _check_arguments, _exact_distances_np, exact_knn_np, put_self_first

BACKENDS = ("faiss-exact", "faiss-ivf", "faiss-ivfpq", "faiss-hnsw")
QUERY_ROWS = 16_384         # queries per faiss search call (~40 MiB of answers at k = 200)
GPU_MAX_K = 2048            # faiss's GPU k-selection limit
MIN_POINTS_PER_LIST = 39    # faiss warns below this many training vectors per list
TRAIN_PER_LIST = 50         # the default k-means sample: this many vectors per list
KMEANS_ITERATIONS = 10      # k-means passes over the sample (faiss's own default is 25)
PQ_PROBE_PERCENT = 8        # faiss-ivfpq visits this share of its lists by default
PQ_BITS = 4                 # fast-scan codes: 16 centroids per sub-vector


class SettingsError(ValueError):
    """An IVF setting that cannot work with this corpus (found before any search)."""


def ivf_settings(n: int, nlist: int | None = None, nprobe: int | None = None,
                 train_size: int | None = None, pq: bool = False) -> tuple[int, int, int]:
    """(nlist, nprobe, train_size) for N vectors: each given one checked, each missing one from N.

    Defaults: nlist 4 sqrt(N) (at most N / 39, so that every list gets the training vectors
    k-means needs), nprobe 16 lists (at most nlist) and 50 training vectors per list (at most N).
    Measured (benchmarks/RESULTS.md): recall@10 0.9996 against exact at 97,998 Doc2Vec vectors,
    but 0.59 at 980,105, whose neighbours lie nearly as far as the rest. With `pq` (faiss-ivfpq,
    whose codes make a visited list several times cheaper to scan) nprobe defaults to 8% of the
    lists, at least 16: recall@10 0.988 at 980,105 with 320 of 4,000 (and --refine 2)."""
    if nlist is not None and not 1 <= nlist <= n:
        raise SettingsError(f"--nlist {nlist}: pass a number of lists from 1 to the number of "
                            f"documents ({n}); about 4 sqrt(N) = {_nlist(n)} is the default")
    nlist = nlist or _nlist(n)
    if nprobe is not None and not 1 <= nprobe <= nlist:
        raise SettingsError(f"--nprobe {nprobe}: pass from 1 to --nlist ({nlist}) lists to visit "
                            "per query")
    nprobe = nprobe or min(max(16, -(-nlist * PQ_PROBE_PERCENT // 100)) if pq else 16, nlist)
    if train_size is not None and not nlist <= train_size <= n:
        raise SettingsError(f"--ivf-train-size {train_size}: pass from --nlist ({nlist}) to the "
                            f"number of documents ({n}); k-means needs a vector per list at least")
    train_size = train_size or min(n, TRAIN_PER_LIST * nlist)
    if pq and train_size < 2 ** PQ_BITS:
        raise SettingsError(f"faiss-ivfpq trains {2 ** PQ_BITS} centroids per sub-vector on "
                            f"--ivf-train-size vectors ({train_size}): pass at least "
                            f"{2 ** PQ_BITS} (and a corpus that large), or use faiss-ivf")
    return nlist, nprobe, train_size


def pq_parts(dim: int) -> int:
    """Sub-vectors of faiss-ivfpq's codes: two dimensions each (one where the dimension is odd).
    Fewer, longer sub-vectors rank too coarsely for the re-ranking to recover: at 980,105
    Doc2Vec vectors (dim 200), 50 parts gave recall@10 0.84 where 100 gave 0.98."""
    return dim // 2 if dim % 2 == 0 else dim


def _nlist(n: int) -> int:
    return max(1, min(round(4 * math.sqrt(n)), n // MIN_POINTS_PER_LIST))


def faiss_gpu_count() -> int:
    """GPUs the installed faiss can use: 0 for a CPU-only build (faiss-cpu)."""
    import faiss
    if not hasattr(faiss, "StandardGpuResources") or not hasattr(faiss, "get_num_gpus"):
        return 0
    return int(faiss.get_num_gpus())


def cuda_present() -> bool:
    """An NVIDIA driver is loaded (checked without importing torch, which the faiss path avoids)."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def faiss_knn(vectors: np.ndarray, k: int, space: str = "l2", backend: str = "faiss-ivf", *,
              nlist: int | None = None, nprobe: int | None = None, train_size: int | None = None,
              refine: int = 2, M: int = 16, ef_construction: int = 200, ef_search: int = 400,
              threads: int = 1, build_threads: int | None = None, seed: int = 0, gpu: bool = False,
              timings: dict | None = None, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """All-pairs neighbours of `vectors` with a faiss index, self first.

    Index building (k-means and adding for IVF, the graph for HNSW) runs on `build_threads`
    (default `threads`); queries on `threads`. Rows the index answers short (an IVF query whose
    lists hold fewer than k vectors) are searched exactly. `timings`, when given, receives the
    build and query seconds."""
    import faiss
    if backend not in BACKENDS:
        raise ValueError(f"unknown faiss backend {backend!r}: use one of {', '.join(BACKENDS)}")
    n = len(vectors)
    _check_arguments(n, k, space)
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    if space == "cosinesimil":
        data = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)
    dim = data.shape[1]
    pool, gpu_resources = k, None
    t = time.time()
    faiss.omp_set_num_threads(max(1, build_threads or threads))
    if backend == "faiss-exact":
        index = faiss.IndexFlatL2(dim)
        # Candidates beyond k: a near tie at the k-th place misordered by the expansion's
        # scores is still re-ranked by its exact distance.
        pool = min(n, k + max(8, k // 8))
        if gpu:
            if pool > GPU_MAX_K:
                raise SettingsError(f"--k {k}: faiss on the GPU returns at most {GPU_MAX_K} "
                                    "neighbours (k plus a few to re-rank): pass a smaller --k "
                                    "or --device cpu")
            # (the resources must outlive the index: kept until the search is done)
            gpu_resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(gpu_resources, 0, index)
    elif backend in ("faiss-ivf", "faiss-ivfpq"):
        pq = backend == "faiss-ivfpq"
        if pq and refine < 1:
            raise SettingsError(f"--refine {refine}: pass 1 or more (candidates re-ranked "
                                "exactly per neighbour)")
        nlist, nprobe, train_size = ivf_settings(n, nlist, nprobe, train_size, pq=pq)
        quantizer = faiss.IndexFlatL2(dim)
        if pq:
            ivf = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, pq_parts(dim), PQ_BITS,
                                           faiss.METRIC_L2)
            ivf.pq.cp.seed = seed
            wanted = MIN_POINTS_PER_LIST * 2 ** PQ_BITS
            if train_size < wanted:   # one line here, not faiss's warning once per sub-vector
                print(f"faiss-ivfpq: {train_size} training vectors, fewer than the {wanted} its "
                      "code books want: the codes are coarser (the recall check says how much)")
            ivf.pq.cp.min_points_per_centroid = 1
        else:
            ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_L2)
        ivf.cp.seed = seed
        ivf.cp.niter = KMEANS_ITERATIONS
        ivf.cp.max_points_per_centroid = max(1, -(-train_size // nlist))
        sample = np.sort(np.random.default_rng(seed).choice(n, size=train_size, replace=False))
        ivf.train(data[sample])
        ivf.nprobe = nprobe
        index = ivf
        if pq:   # the codes choose k x refine candidates; their exact distances pick the k
            index = faiss.IndexRefineFlat(ivf)
            index.k_factor = float(refine)
    else:
        index = faiss.IndexHNSWFlat(dim, M, faiss.METRIC_L2)
        index.hnsw.efConstruction = ef_construction
    index.add(data)
    if backend == "faiss-hnsw":
        index.hnsw.efSearch = max(ef_search, k)
    built = time.time() - t
    if backend != "faiss-exact":
        print(f"{backend} index of {n} vectors built in {built:.1f}s")
    faiss.omp_set_num_threads(max(1, threads))
    t = time.time()
    ids = np.empty((n, k), dtype=np.int32)
    dists = np.empty((n, k), dtype=np.float32)
    short: list[np.ndarray] = []
    for s in tqdm(range(0, n, QUERY_ROWS), desc=f"{backend} queries", unit="block",
                  disable=not progress or n <= QUERY_ROWS, mininterval=1.0):
        q = data[s:s + QUERY_ROWS]
        d2, found = index.search(q, pool)
        if backend == "faiss-exact":
            d2 = _exact_distances_np(q, data, found, space)   # by differences, in the units
            order = np.argsort(d2, axis=1, kind="stable")[:, :k]
            found, d2 = np.take_along_axis(found, order, 1), np.take_along_axis(d2, order, 1)
        elif space == "l2":
            np.sqrt(np.maximum(d2, 0, out=d2), out=d2)
        else:   # l2 between unit vectors: |a - b|^2 / 2 = 1 - cos(a, b)
            np.multiply(np.maximum(d2, 0, out=d2), 0.5, out=d2)
        ids[s:s + len(q)] = found
        dists[s:s + len(q)] = d2
        missing = (found < 0).any(1)
        if missing.any():
            short.append(s + np.flatnonzero(missing))
    if timings is not None:
        timings.update(build_s=built, query_s=time.time() - t)
    del index
    gpu_resources = None  # noqa: F841  (freed after the index)
    rows = np.concatenate(short) if short else np.empty(0, dtype=np.int64)
    if len(rows):
        print(f"{backend} returned fewer than {k} neighbours for {len(rows)} documents (first: "
              f"{rows[:3].tolist()}); those rows were searched exactly")
        ids[rows], dists[rows] = exact_knn_np(vectors, k, space, queries=vectors[rows])
    put_self_first(ids, dists, np.arange(n))
    return ids, dists
