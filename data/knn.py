"""k-nearest-neighbour backends: nmslib HNSW (the authors') and exact chunked search with torch.

Both report distances in the same units: Euclidean for "l2" (nmslib's own l2 space returns the
square, which hnsw_knn undoes) and 1 - cosine for "cosinesimil".
"""
from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm

SPACES = ("l2", "cosinesimil")
QUERY_CHUNK = 50_000   # HNSW queries per knnQueryBatch call


def _check_arguments(n: int, k: int, space: str) -> None:
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}: use one of {', '.join(SPACES)}")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and the number of vectors ({n})")


def _block_rows(n: int, device: torch.device) -> int:
    # One block of scores: on a GPU an eighth of the free memory, at most 8 GiB (topk's
    # temporaries take a few times more; big blocks keep the matmul and topk kernels full),
    # ~256 MiB on the CPU.
    if device.type == "cuda":
        budget = min(8 << 30, torch.cuda.mem_get_info(device)[0] // 8)
    else:
        budget = 256 << 20
    return int(max(1, min(8192, budget // (4 * max(n, 1)))))


def _exact_distances(q: torch.Tensor, base: torch.Tensor, idx: torch.Tensor, space: str) -> torch.Tensor:
    """Distances of each query row to its candidates, from differences, not a dot-product expansion:
    the expansion loses ~1e-3 to cancellation, enough to misorder near ties and to give a
    duplicate text a distance above 0."""
    out = torch.empty(idx.shape, dtype=torch.float32, device=q.device)
    step = max(1, (64 << 20) // (4 * max(1, idx.shape[1] * base.shape[1])))
    for s in range(0, len(q), step):
        diff = q[s:s + step, None, :] - base[idx[s:s + step]]
        out[s:s + step] = (diff * diff).sum(-1)
    # For unit vectors |a - b|^2 / 2 = 1 - cos(a, b), exactly 0 for identical ones.
    return out.sqrt_() if space == "l2" else out.mul_(0.5)


def exact_knn(vectors: np.ndarray, k: int, space: str = "l2", device: str | None = None,
              queries: np.ndarray | None = None, progress: bool = True,
              block_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact neighbours of each query among `vectors`, nearest first, self included.

    Distances: Euclidean for "l2", 1 - cosine for "cosinesimil". Memory stays bounded: scores
    are computed one block of `block_rows` queries at a time (default: from the memory budget).
    Without `queries` (all pairs) each row starts with the document itself at distance 0.
    """
    n = len(vectors)
    _check_arguments(n, k, space)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    base = torch.as_tensor(np.ascontiguousarray(vectors), dtype=torch.float32, device=dev)
    q_all = base if queries is None else torch.as_tensor(np.ascontiguousarray(queries),
                                                         dtype=torch.float32, device=dev)
    if space == "cosinesimil":
        base = torch.nn.functional.normalize(base, dim=1)
        q_all = base if queries is None else torch.nn.functional.normalize(q_all, dim=1)
    neg_base_sq = -(base * base).sum(1, keepdim=True).T   # [1, n]
    n_q = q_all.shape[0]
    ids = np.empty((n_q, k), dtype=np.int32)
    dists = np.empty((n_q, k), dtype=np.float32)
    step = block_rows or _block_rows(base.shape[0], dev)
    # A few candidates beyond k: a near tie at the k-th place that the fast scores misorder is
    # still re-ranked by its exact distance.
    pool = min(n, k + max(8, k // 8))
    for start in tqdm(range(0, n_q, step), desc=f"exact kNN on {dev.type}", unit="block",
                      disable=not progress or n_q <= step, mininterval=1.0):
        q = q_all[start:start + step]
        # l2: 2 q.x - |x|^2 = -|q - x|^2 up to the query's own norm, which does not change the
        # order; one addmm instead of a matmul and two passes over the block.
        score = torch.addmm(neg_base_sq, q, base.T, alpha=2) if space == "l2" else q @ base.T
        idx = torch.topk(score, pool, dim=1).indices
        del score   # before the re-ranking allocates: the block's scores are the big buffer
        dist = _exact_distances(q, base, idx, space)
        dist, order = torch.sort(dist, dim=1, stable=True)
        ids[start:start + len(q)] = torch.gather(idx, 1, order[:, :k]).int().cpu().numpy()
        dists[start:start + len(q)] = dist[:, :k].cpu().numpy()
    if queries is None:
        put_self_first(ids, dists, np.arange(n_q))
    return ids, dists


def put_self_first(ids: np.ndarray, dists: np.ndarray, self_ids: np.ndarray) -> None:
    """In place: row r starts with self_ids[r] at distance 0, the others keep their order.

    Duplicate texts tie with the document itself at distance 0, so search order alone does not
    put it first; a row that lacks it (an approximate search missed it) loses its last entry.
    """
    k = ids.shape[1]
    hit = ids == self_ids[:, None]
    pos = np.where(hit.any(1), hit.argmax(1), k - 1)
    cols = np.arange(k)[None, :]
    src = np.where(cols <= pos[:, None], np.maximum(cols - 1, 0), cols)
    ids[:] = np.take_along_axis(ids, src, 1)
    dists[:] = np.take_along_axis(dists, src, 1)
    ids[:, 0] = self_ids
    dists[:, 0] = 0


def hnsw_knn(vectors: np.ndarray, k: int, space: str = "l2", M: int = 16, ef_construction: int = 200,
             ef_search: int = 400, workers: int = 1, timings: dict | None = None,
             build_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All-pairs neighbours with nmslib HNSW, self first. Rows nmslib returns short are completed
    exactly. `timings`, when given, receives the build and query seconds.

    The graph is built over `build_threads` threads (default: `workers`); only a one-thread
    build gives the same graph every run. Queries over `workers` threads are deterministic."""
    import nmslib
    _check_arguments(len(vectors), k, space)
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    index = nmslib.init(method="hnsw", space=space)
    index.addDataPointBatch(data)
    t = time.time()
    index.createIndex({"M": M, "efConstruction": ef_construction, "post": 2,
                       "indexThreadQty": max(1, build_threads or workers)}, print_progress=False)
    built = time.time() - t
    print(f"HNSW index of {len(data)} vectors built in {built:.1f}s")
    index.setQueryTimeParams({"efSearch": ef_search})
    t = time.time()
    ids = np.empty((len(data), k), dtype=np.int32)
    dists = np.empty((len(data), k), dtype=np.float32)
    short = []
    # Queried in chunks written straight into the two arrays: nmslib answers with a pair of small
    # arrays per query, a million of which would take more memory than the result itself.
    for s in tqdm(range(0, len(data), QUERY_CHUNK), desc="HNSW queries", unit="chunk",
                  disable=len(data) <= QUERY_CHUNK, mininterval=1.0):
        results = index.knnQueryBatch(data[s:s + QUERY_CHUNK], k=k, num_threads=max(1, workers))
        full = [i for i, (r_ids, _) in enumerate(results) if len(r_ids) == k]
        short += [s + i for i, (r_ids, _) in enumerate(results) if len(r_ids) < k]
        if full:
            r_ids = np.stack([results[i][0] for i in full])
            r_d = np.stack([results[i][1] for i in full])
            order = np.argsort(r_d, axis=1, kind="stable")
            ids[s + np.array(full)] = np.take_along_axis(r_ids, order, 1)
            dists[s + np.array(full)] = np.take_along_axis(r_d, order, 1)
    if timings is not None:
        timings.update(build_s=built, query_s=time.time() - t)
    if space == "l2":  # nmslib's l2 space gives squared distances
        np.sqrt(np.maximum(dists, 0, out=dists), out=dists)
    if short:
        print(f"HNSW returned fewer than {k} neighbours for {len(short)} documents "
              f"(first: {short[:3]}); those rows were searched exactly")
        ids[short], dists[short] = exact_knn(data, k, space, "cpu", queries=data[short], progress=False)
    put_self_first(ids, dists, np.arange(len(data)))
    return ids, dists


def recall_at(approx_dists: np.ndarray, exact_dists: np.ndarray, k: int = 10) -> float:
    """Share of the approximate top-k that are within the exact k-th distance.

    Counting by distance rather than by index makes exact ties (duplicate texts) count as hits.
    """
    bound = exact_dists[:, k - 1:k] * (1 + 1e-5) + 1e-6
    return float((approx_dists[:, :k] <= bound).mean())
