"""kNN backends against a brute-force float64 reference, HNSW recall, self-first rows."""
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import config
from data.datasets import provenance
from data.neighbors.knn import (by_distance_then_index, exact_knn, exact_knn_np, hnsw_knn,
                                put_self_first, recall_at, sampled_recall)


def brute_force(base: np.ndarray, queries: np.ndarray, space: str) -> np.ndarray:
    """All query-to-base distances in float64: Euclidean, or 1 - cosine."""
    b, q = base.astype(np.float64), queries.astype(np.float64)
    if space == "cosinesimil":
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        return 1 - q @ b.T
    return np.sqrt(np.maximum(((q[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0))


def check_against_reference(ids, dists, ref, k, self_first):
    n_q = ref.shape[0]
    assert ids.shape == dists.shape == (n_q, k)
    assert ids.dtype == np.int32 and dists.dtype == np.float32
    assert (np.diff(dists, axis=1) >= 0).all()
    want = np.sort(ref, axis=1)[:, :k]
    if self_first:  # the reference's own distance 0 may come out as ~1e-16
        want[:, 0] = 0
    np.testing.assert_allclose(dists, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(ref, ids.astype(np.int64), 1), want, rtol=1e-4, atol=1e-5)
    # Indices must match at every position whose reference distance has no near-tie.
    order = np.argsort(ref, axis=1, kind="stable")
    s = np.take_along_axis(ref, order, 1)
    s = np.concatenate([np.full((n_q, 1), -np.inf), s, np.full((n_q, 1), np.inf)], axis=1)
    gap = np.diff(s, axis=1)
    clear = np.minimum(gap[:, :-1], gap[:, 1:])[:, :k] > 1e-4
    assert clear.mean() > 0.8
    np.testing.assert_array_equal(ids[clear], order[:, :k][clear])


@pytest.mark.parametrize("space", ["l2", "cosinesimil"])
def test_exact_matches_brute_force_over_several_blocks(space):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((300, 16)) * 3 + 1).astype(np.float32)
    ids, dists = exact_knn(x, 12, space, "cpu", block_rows=64, progress=False)
    check_against_reference(ids, dists, brute_force(x, x, space), 12, self_first=True)
    assert (ids[:, 0] == np.arange(300)).all() and (dists[:, 0] == 0).all()
    one_block = exact_knn(x, 12, space, "cpu", block_rows=1000, progress=False)
    np.testing.assert_array_equal(one_block[0], ids)


@pytest.mark.parametrize("space", ["l2", "cosinesimil"])
def test_exact_with_separate_queries(space):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 10)).astype(np.float32)
    q = rng.standard_normal((70, 10)).astype(np.float32)
    ids, dists = exact_knn(x, 200, space, "cpu", queries=q, block_rows=16, progress=False)
    check_against_reference(ids, dists, brute_force(x, q, space), 200, self_first=False)


def test_exact_l2_is_precise_for_large_vectors_and_near_duplicates():
    # Far from the origin the dot-product expansion alone would lose these distances.
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((50, 8)) + 100).astype(np.float32)
    x[1] = x[0] + np.float32(0.01)
    ids, dists = exact_knn(x, 5, "l2", "cpu", progress=False)
    ref = brute_force(x, x, "l2")
    assert ids[0, 1] == 1 and dists[0, 1] == pytest.approx(ref[0, 1], rel=1e-3)
    np.testing.assert_allclose(dists[:, 1:], np.sort(ref, 1)[:, 1:5], rtol=1e-3)


@pytest.mark.parametrize("space", ["l2", "cosinesimil"])
def test_hnsw_recall_with_config_defaults(space):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 50)).astype(np.float32)
    ids, dists = hnsw_knn(x, 10, space, config.M, config.EF_CONSTRUCTION, config.EF_SEARCH, workers=2)
    e_ids, e_dists = exact_knn(x, 10, space, "cpu", progress=False)
    assert ids.dtype == np.int32 and dists.dtype == np.float32
    assert recall_at(dists, e_dists, 10) >= 0.95
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, e_ids)]) >= 0.95
    assert (ids[:, 0] == np.arange(3000)).all() and (dists[:, 0] == 0).all()
    # Same units as the exact backend (nmslib's own l2 is squared).
    same = ids == e_ids
    np.testing.assert_allclose(dists[same], e_dists[same], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["exact", "hnsw"])
@pytest.mark.parametrize("space", ["l2", "cosinesimil"])
def test_duplicates_tie_at_zero_and_self_comes_first(backend, space):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((60, 6)).astype(np.float32)
    x[10:14] = x[10]  # four identical documents (the same text infers the same vector)
    ids, dists = (exact_knn(x, 6, space, "cpu", progress=False) if backend == "exact"
                  else hnsw_knn(x, 6, space, workers=1))
    assert (ids[:, 0] == np.arange(60)).all() and (dists[:, 0] == 0).all()
    for i in range(10, 14):
        assert sorted(ids[i, :4]) == [10, 11, 12, 13]
        assert (dists[i, :4] <= 1e-6).all() and dists[i, 4] > 0.01


def test_put_self_first_moves_or_inserts_self():
    ids = np.array([[3, 0, 1], [5, 6, 7], [2, 9, 8]], dtype=np.int32)
    d = np.array([[0.0, 0.0, 0.5], [0.1, 0.2, 0.3], [0.0, 0.4, 0.6]], dtype=np.float32)
    put_self_first(ids, d, np.array([0, 1, 2]))
    np.testing.assert_array_equal(ids, [[0, 3, 1], [1, 5, 6], [2, 9, 8]])
    np.testing.assert_array_equal(d, np.array([[0, 0, 0.5], [0, 0.1, 0.2], [0, 0.4, 0.6]], dtype=np.float32))


def test_put_self_first_in_blocks_equals_a_row_by_row_reference(monkeypatch):
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 40, (40, 6)).astype(np.int32)
    d = np.sort(rng.random((40, 6)).astype(np.float32), axis=1)
    expect_ids, expect_d = ids.copy(), d.copy()
    for r in range(40):   # the rule spelled out: self out of its place, then in front
        row = list(zip(ids[r], d[r]))
        own = [i for i, _ in row].index(r) if r in ids[r] else 5   # else the last one goes
        row = [(r, 0.0)] + row[:own] + row[own + 1:]
        expect_ids[r], expect_d[r] = [i for i, _ in row], [x for _, x in row]
    monkeypatch.setattr("data.neighbors.knn.SELF_FIRST_ROWS", 7)   # blocks that do not divide the rows
    put_self_first(ids, d, np.arange(40))
    np.testing.assert_array_equal(ids, expect_ids)
    np.testing.assert_array_equal(d, expect_d)


def test_recall_counts_ties_by_distance():
    exact = np.array([[0.0, 1.0, 2.0]])
    assert recall_at(np.array([[0.0, 1.0, 2.0]]), exact, 3) == 1.0
    assert recall_at(np.array([[0.0, 2.0, 3.0]]), exact, 3) == pytest.approx(2 / 3)


def test_bad_arguments():
    x = np.zeros((5, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="unknown space 'ip'"):
        exact_knn(x, 2, "ip")
    with pytest.raises(ValueError, match="k=6"):
        exact_knn(x, 6, "l2", "cpu")
    with pytest.raises(ValueError, match="k=0"):
        hnsw_knn(x, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize("space", ["l2", "cosinesimil"])
def test_exact_on_gpu_matches_cpu(space):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2000, 32)).astype(np.float32)
    c_ids, c_d = exact_knn(x, 20, space, "cpu", block_rows=300, progress=False)
    g_ids, g_d = exact_knn(x, 20, space, "cuda", block_rows=300, progress=False)
    np.testing.assert_allclose(g_d, c_d, rtol=1e-4, atol=1e-5)
    assert (g_ids == c_ids).mean() > 0.99


def test_hnsw_rows_returned_short_are_completed_exactly():
    x = np.random.default_rng(6).standard_normal((40, 5)).astype(np.float32)
    ids, dists = hnsw_knn(x, 40, "l2", ef_search=10)  # k = N: nmslib returns some rows short
    e_ids, e_dists = exact_knn(x, 40, "l2", "cpu", progress=False)
    np.testing.assert_array_equal(ids, e_ids)
    np.testing.assert_allclose(dists, e_dists, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("space", ["l2", "cosinesimil"])
@pytest.mark.parametrize("k", [7, 120])   # 120: the candidate pool is every vector
def test_numpy_exact_matches_brute_force_and_the_torch_backend(space, k):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((120, 12)) * 2 + 3).astype(np.float32)
    q = rng.standard_normal((90, 12)).astype(np.float32) * 2 + 3
    ids, dists = exact_knn_np(x, k, space, queries=q)
    check_against_reference(ids, dists, brute_force(x, q, space), k, self_first=False)
    t_ids, t_dists = exact_knn(x, k, space, "cpu", queries=q, block_rows=32, progress=False)
    np.testing.assert_allclose(dists, t_dists, rtol=1e-5, atol=1e-6)
    assert (ids == t_ids).mean() > 0.99


def test_numpy_exact_is_precise_for_near_duplicates_and_ties_them_at_zero():
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((80, 8)) + 100).astype(np.float32)
    x[20:23] = x[20]
    x[1] = x[0] + np.float32(0.01)
    ids, dists = exact_knn_np(x, 4, "l2", queries=x[[0, 20]])
    assert ids[0, 0] == 0 and ids[0, 1] == 1 and dists[0, 0] == 0
    assert dists[0, 1] == pytest.approx(brute_force(x, x[:1], "l2")[0, 1], rel=1e-3)
    assert sorted(ids[1, :3]) == [20, 21, 22] and (dists[1, :3] == 0).all() and dists[1, 3] > 1


def test_sampled_recall_is_the_recall_of_a_seeded_sample():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((500, 10)).astype(np.float32)
    e_ids, e_dists = exact_knn(x, 10, "l2", "cpu", progress=False)
    assert sampled_recall(x, e_dists, 10, "l2", queries=100, seed=3) == (1.0, 100)
    # Half of the rows get their 6th..10th neighbours replaced by farther ones.
    worse = e_dists.copy()
    worse[::2, 5:] += 1.0
    recall, size = sampled_recall(x, worse, 10, "l2", queries=10_000, seed=3)
    assert size == 500 and recall == pytest.approx(recall_at(worse, e_dists, 10)) == pytest.approx(0.75)
    a = sampled_recall(x, worse, 10, "l2", queries=50, seed=4)
    assert a == sampled_recall(x, worse, 10, "l2", queries=50, seed=4) and 0.5 <= a[0] <= 1


def test_the_hnsw_step_does_not_load_torch(tmp_path):
    # torch's start-up and resident libraries are most of this step's fixed cost at 10,000
    # documents; only the exact backend needs it.
    rng = np.random.default_rng(10)
    with open(tmp_path / "doc2vec_features.pickle", "wb") as f:
        pickle.dump({"ids": [str(i) for i in range(300)],
                     "vectors": rng.standard_normal((300, 16)).astype(np.float32),
                     provenance.KEY: provenance.new_record({}, "vectors", {})}, f)
    root = Path(__file__).resolve().parent.parent
    probe = ("import runpy, sys; sys.argv = ['knn_document_features.py'] + sys.argv[1:]; "
             "runpy.run_path('knn_document_features.py', run_name='__main__')")
    probe += "\nprint('torch loaded:', 'torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", probe, "--dataset", str(tmp_path / "none.jsonl"),
                        "--work-dir", str(tmp_path), "--k", "5", "--workers", "1"],
                       cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "recall@5 against exact on 300 queries: " in r.stdout
    assert r.stdout.rstrip().endswith("torch loaded: False")
    with open(tmp_path / "document_feats_knn.pickle", "rb") as f:
        assert pickle.load(f)["neighbors"].shape == (300, 5)


def test_hnsw_orders_equal_distances_by_index():
    """Duplicate texts tie: their order is by index, not whatever the graph's traversal gave, so
    the same vectors give the same table run after run (the demo's fingerprints rely on it)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((80, 6)).astype(np.float32)
    x[20:30] = x[40]          # eleven identical documents, all at one distance from the others
    ids, dists = hnsw_knn(x, 15, "l2", workers=2)
    for row in range(len(x)):
        d = dists[row, 1:]    # after the document itself
        for a in range(len(d) - 1):
            if d[a] == d[a + 1]:
                assert ids[row, a + 1] < ids[row, a + 2], (row, ids[row])
    for row in (0, 55):
        tied = [i for i in ids[row] if 20 <= i < 30 or i == 40]
        assert tied == sorted(tied)
    # Whatever order the search returns ties in, they come out by index.
    got_ids, got_d = by_distance_then_index(np.array([[7, 5, 3, 9, 1]], dtype=np.int32),
                                            np.array([[0.2, 0.2, 0.2, 0.1, 0.3]], dtype=np.float32))
    assert got_ids.tolist() == [[9, 3, 5, 7, 1]] and got_d.tolist()[0] == sorted(got_d.tolist()[0])
