"""k-nearest-neighbour backends: nmslib HNSW (the authors') and exact chunked search with torch.

Both report distances in the same units: Euclidean for "l2" (nmslib's own l2 space returns the
square, which hnsw_knn undoes) and 1 - cosine for "cosinesimil".

torch is imported only by the exact backend: the HNSW path (the default), its recall check and
its completion of short rows use numpy alone, so knn_document_features.py does not pay torch's
start-up (seconds) and resident libraries (~0.5 GiB) for a search nmslib does.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from common.devices import pick_device

if TYPE_CHECKING:
    import torch

SPACES = ("l2", "cosinesimil")
QUERY_CHUNK = 50_000   # HNSW queries per knnQueryBatch call
SELF_FIRST_ROWS = 65_536   # rows reordered at once by put_self_first (~100 MiB at k = 200)


def _check_arguments(n: int, k: int, space: str) -> None:
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}: use one of {', '.join(SPACES)}")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and the number of vectors ({n})")


def _block_rows(n: int, device: "torch.device") -> int:
    # One block of scores: on a GPU an eighth of the free memory, at most 8 GiB (topk's
    # temporaries take a few times more; big blocks keep the matmul and topk kernels full),
    # ~256 MiB on the CPU.
    if device.type == "cuda":
        import torch
        budget = min(8 << 30, torch.cuda.mem_get_info(device)[0] // 8)
    else:
        budget = 256 << 20
    return int(max(1, min(8192, budget // (4 * max(n, 1)))))


def _exact_distances(q: "torch.Tensor", base: "torch.Tensor", idx: "torch.Tensor", space: str) -> "torch.Tensor":
    """Distances of each query row to its candidates, from differences, not a dot-product expansion:
    the expansion loses ~1e-3 to cancellation, enough to misorder near ties and to give a
    duplicate text a distance above 0. On the CPU numpy does it (about 3x faster than torch's
    reductions over a short last axis there)."""
    import torch
    if q.device.type == "cpu":
        return torch.from_numpy(_exact_distances_np(q.numpy(), base.numpy(), idx.numpy(), space))
    out = torch.empty(idx.shape, dtype=torch.float32, device=q.device)
    step = max(1, (64 << 20) // (4 * max(1, idx.shape[1] * base.shape[1])))
    for s in range(0, len(q), step):
        diff = q[s:s + step, None, :] - base[idx[s:s + step]]
        out[s:s + step] = (diff * diff).sum(-1)
    # For unit vectors |a - b|^2 / 2 = 1 - cos(a, b), exactly 0 for identical ones.
    return out.sqrt_() if space == "l2" else out.mul_(0.5)


def _exact_distances_np(q: np.ndarray, base: np.ndarray, idx: np.ndarray, space: str) -> np.ndarray:
    """_exact_distances in numpy, float32, in chunks of ~4 MiB of gathered rows (small chunks
    stay in cache: measured faster than 16 or 64 MiB)."""
    out = np.empty(idx.shape, dtype=np.float32)
    step = max(1, (4 << 20) // (4 * max(1, idx.shape[1] * base.shape[1])))
    for s in range(0, len(q), step):
        diff = base[idx[s:s + step]]
        diff -= q[s:s + step, None, :]
        out[s:s + step] = np.einsum("bkd,bkd->bk", diff, diff)
    return np.sqrt(out, out=out) if space == "l2" else np.multiply(out, 0.5, out=out)


def exact_knn_np(vectors: np.ndarray, k: int, space: str, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact neighbours of a few `queries` among `vectors` with numpy alone (no torch start-up),
    the same rules as exact_knn: candidates by a dot product, then exact distances, nearest first.
    Meant for samples (the recall check) and leftovers (HNSW's short rows): an argpartition per
    query row is slower than torch's topk for all pairs."""
    n = len(vectors)
    _check_arguments(n, k, space)
    base = np.ascontiguousarray(vectors, dtype=np.float32)
    q_all = np.ascontiguousarray(queries, dtype=np.float32)
    if space == "cosinesimil":
        base = base / np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-12)
        q_all = q_all / np.maximum(np.linalg.norm(q_all, axis=1, keepdims=True), 1e-12)
    base_sq = np.einsum("nd,nd->n", base, base)[None]
    pool = min(n, k + max(8, k // 8))
    ids = np.empty((len(q_all), k), dtype=np.int32)
    dists = np.empty((len(q_all), k), dtype=np.float32)
    # One block of ~128 MiB of scores (argpartition adds twice that in int64 positions): under
    # the search's own peak (the recall check runs after it), and enough queries per block that
    # reading the N vectors is shared: 16 MiB (4 queries a block at 980,105 vectors) made the
    # 1,000-query check take 45 s.
    step = max(1, (128 << 20) // (4 * n))
    for s in range(0, len(q_all), step):
        q = q_all[s:s + step]
        # Smaller is nearer: |x|^2 - 2 q.x (l2, up to the query's own norm), or -q.x (cosine).
        score = q @ base.T
        if space == "l2":
            score *= -2
            score += base_sq
        else:
            np.negative(score, out=score)
        # (a copy of the first columns, so the n-wide int64 positions are freed at once)
        idx = np.argpartition(score, pool - 1, axis=1)[:, :pool].copy() if pool < n else \
            np.broadcast_to(np.arange(n), (len(q), n)).copy()
        del score
        d = _exact_distances_np(q, base, idx, space)
        # Stable on (distance, position in the candidates): ties keep a deterministic order.
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
        ids[s:s + len(q)] = np.take_along_axis(idx, order, 1)
        dists[s:s + len(q)] = np.take_along_axis(d, order, 1)
    return ids, dists


def exact_knn(vectors: np.ndarray, k: int, space: str = "l2", device: str | None = None,
              queries: np.ndarray | None = None, progress: bool = True,
              block_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact neighbours of each query among `vectors`, nearest first, self included.

    Distances: Euclidean for "l2", 1 - cosine for "cosinesimil". Memory stays bounded: scores
    are computed one block of `block_rows` queries at a time (default: from the memory budget).
    Without `queries` (all pairs) each row starts with the document itself at distance 0.
    """
    import torch
    n = len(vectors)
    _check_arguments(n, k, space)
    dev = pick_device(device)
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
    cols = np.arange(k)[None, :]
    # In blocks of rows: the int64 gather positions and the copies are 3x the result's own size
    # for all rows at once (about 3 GB at a million documents, k = 200).
    for s in range(0, len(ids), SELF_FIRST_ROWS):
        r_ids, r_d = ids[s:s + SELF_FIRST_ROWS], dists[s:s + SELF_FIRST_ROWS]
        own = self_ids[s:s + SELF_FIRST_ROWS]
        hit = r_ids == own[:, None]
        pos = np.where(hit.any(1), hit.argmax(1), k - 1)
        src = np.where(cols <= pos[:, None], np.maximum(cols - 1, 0), cols)
        r_ids[:] = np.take_along_axis(r_ids, src, 1)
        r_d[:] = np.take_along_axis(r_d, src, 1)
        r_ids[:, 0] = own
        r_d[:, 0] = 0


def by_distance_then_index(ids: np.ndarray, dists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row sorted by distance, equal distances (duplicate texts) by index: nmslib's own
    order among ties varied from run to run, and with it the neighbours a seed draws."""
    order = np.lexsort((ids, dists), axis=1)
    return np.take_along_axis(ids, order, 1), np.take_along_axis(dists, order, 1)


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
            r_ids, r_d = by_distance_then_index(np.stack([results[i][0] for i in full]),
                                                np.stack([results[i][1] for i in full]))
            ids[s + np.array(full)] = r_ids
            dists[s + np.array(full)] = r_d
    if timings is not None:
        timings.update(build_s=built, query_s=time.time() - t)
    del index   # its copy of the vectors and its graph, before the result is finished
    if space == "l2":  # nmslib's l2 space gives squared distances
        np.sqrt(np.maximum(dists, 0, out=dists), out=dists)
    if short:
        print(f"HNSW returned fewer than {k} neighbours for {len(short)} documents "
              f"(first: {short[:3]}); those rows were searched exactly")
        ids[short], dists[short] = exact_knn_np(data, k, space, queries=data[short])
    put_self_first(ids, dists, np.arange(len(data)))
    return ids, dists


def recall_at(approx_dists: np.ndarray, exact_dists: np.ndarray, k: int = 10) -> float:
    """Share of the approximate top-k that are within the exact k-th distance.

    Counting by distance rather than by index makes exact ties (duplicate texts) count as hits.
    """
    bound = exact_dists[:, k - 1:k] * (1 + 1e-5) + 1e-6
    return float((approx_dists[:, :k] <= bound).mean())


def sampled_recall(vectors: np.ndarray, dists: np.ndarray, k: int, space: str, queries: int = 1000,
                   seed: int = 0) -> tuple[float, int]:
    """recall_at(k) of an all-pairs result `dists` on a seeded sample of `queries` rows, against
    exact_knn_np: (recall, sample size). Its cost, queries x N dot products, is a small share of
    the HNSW search itself (N x efSearch x log N distance evaluations)."""
    n = len(vectors)
    sample = np.sort(np.random.default_rng(seed).choice(n, size=min(queries, n), replace=False))
    _, exact_d = exact_knn_np(vectors, k, space, queries=vectors[sample])
    return recall_at(dists[sample], exact_d, k), len(sample)
