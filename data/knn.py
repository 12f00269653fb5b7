"""k-nearest-neighbour backends: nmslib HNSW (the authors') and exact chunked search with torch."""
from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm

SPACES = ("l2", "cosinesimil")


def _block_rows(n: int, device: torch.device) -> int:
    # Keep one block of distances under ~1 GiB on a GPU and ~256 MiB on the CPU.
    budget = (1 << 30) if device.type == "cuda" else (256 << 20)
    return int(max(1, min(8192, budget // (4 * max(n, 1)))))


def exact_knn(vectors: np.ndarray, k: int, space: str = "l2", device: str | None = None,
              queries: np.ndarray | None = None, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Exact neighbours of each query among `vectors`, nearest first, self included.

    Distances are in nmslib's units: Euclidean for "l2", 1 - cosine for "cosinesimil".
    Memory stays bounded: distances are computed one block of queries at a time.
    """
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}: use one of {', '.join(SPACES)}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    base = torch.as_tensor(np.ascontiguousarray(vectors), dtype=torch.float32, device=dev)
    q_all = base if queries is None else torch.as_tensor(np.ascontiguousarray(queries),
                                                         dtype=torch.float32, device=dev)
    if space == "cosinesimil":
        base = torch.nn.functional.normalize(base, dim=1)
        q_all = base if queries is None else torch.nn.functional.normalize(q_all, dim=1)
    base_sq = (base * base).sum(1)
    n_q = q_all.shape[0]
    ids = np.empty((n_q, k), dtype=np.int32)
    dists = np.empty((n_q, k), dtype=np.float32)
    step = _block_rows(base.shape[0], dev)
    for start in tqdm(range(0, n_q, step), desc=f"exact kNN on {dev.type}", unit="block",
                      disable=not progress or n_q <= step, mininterval=1.0):
        q = q_all[start:start + step]
        dot = q @ base.T
        if space == "l2":
            score = dot.mul_(2).sub_(base_sq).sub_((q * q).sum(1, keepdim=True))  # = -|q - x|^2
        else:
            score = dot
        top, idx = torch.topk(score, k, dim=1)
        dist = (-top).clamp_min_(0).sqrt_() if space == "l2" else (1 - top).clamp_min_(0)
        ids[start:start + len(q)] = idx.cpu().numpy()
        dists[start:start + len(q)] = dist.cpu().numpy()
    return ids, dists


def hnsw_knn(vectors: np.ndarray, k: int, space: str = "l2", M: int = 16, ef_construction: int = 200,
             ef_search: int = 400, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """All-pairs neighbours with nmslib HNSW. Rows nmslib returns short are completed exactly."""
    import nmslib
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    index = nmslib.init(method="hnsw", space=space)
    index.addDataPointBatch(data)
    t = time.time()
    index.createIndex({"M": M, "efConstruction": ef_construction, "post": 2,
                       "indexThreadQty": max(1, workers)}, print_progress=False)
    print(f"HNSW index of {len(data)} vectors built in {time.time() - t:.1f}s")
    index.setQueryTimeParams({"efSearch": ef_search})
    results = index.knnQueryBatch(data, k=k, num_threads=max(1, workers))
    ids = np.empty((len(data), k), dtype=np.int32)
    dists = np.empty((len(data), k), dtype=np.float32)
    short = []
    for i, (r_ids, r_d) in enumerate(results):
        if len(r_ids) < k:
            short.append(i)
            continue
        order = np.argsort(r_d, kind="stable")
        ids[i], dists[i] = r_ids[order], r_d[order]
    if short:
        print(f"HNSW returned fewer than {k} neighbours for {len(short)} documents "
              f"(first: {short[:3]}); those rows were searched exactly")
        ids[short], dists[short] = exact_knn(data, k, space, "cpu", queries=data[short], progress=False)
    return ids, dists


def recall_at(approx_dists: np.ndarray, exact_dists: np.ndarray, k: int = 10) -> float:
    """Share of the approximate top-k that are within the exact k-th distance.

    Counting by distance rather than by index makes exact ties (duplicate texts) count as hits.
    """
    bound = exact_dists[:, k - 1:k] * (1 + 1e-5) + 1e-6
    return float((approx_dists[:, :k] <= bound).mean())
