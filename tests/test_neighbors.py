import numpy as np
import pytest

from data.items import InputError, Document
from training.neighbors import NeighborSampler


def docs_for(n, texts_per_image=1):
    return [Document(f"d{i}", i // texts_per_image, i % texts_per_image) for i in range(n)]


def knn_rows(ids, neighbors, distances):
    return {"ids": ids, "neighbors": np.array(neighbors, dtype=np.int32),
            "distances": np.array(distances, dtype=np.float32)}


def test_candidates_exclude_self_duplicates_same_image_and_non_training():
    # d0..d5; d0/d1 share an image; "x" is in the kNN file but not a training document.
    docs = docs_for(6, texts_per_image=2)[:6]
    ids = ["d0", "d1", "d2", "d3", "d4", "d5", "x"]
    nb = [[0, 1, 6, 2, 3, 4, 5]] + [[i] + [j for j in range(7) if j != i] for i in range(1, 7)]
    dist = [[0, .1, .2, .3, .3, .4, .5]] + [[0, .1, .2, .3, .4, .5, .6]] * 6
    dist[0][3] = 0.0  # d2 is a duplicate text of d0
    s = NeighborSampler(knn_rows(ids, nb, dist), docs, pool=6)
    cand0 = set(s.candidates[s.offsets[0]:s.offsets[0] + s.counts[0]].tolist())
    assert cand0 == {3, 4}   # not itself, not d1 (same image), not x, not d2 (distance 0)


def test_fallback_beyond_pool_and_none_at_all_reported(capsys):
    docs = docs_for(5)
    ids = [d.id for d in docs]
    nb = [[0, 0, 0, 3, 4], [1, 0, 2, 3, 4], [2, 2, 2, 2, 2], [3, 0, 1, 2, 4], [4, 0, 1, 2, 3]]
    dist = [[0, 0, 0, .5, .6], [0, .1, .2, .3, .4], [0] * 5, [0, .1, .2, .3, .4], [0, .1, .2, .3, .4]]
    s = NeighborSampler(knn_rows(ids, nb, dist), docs, pool=2)
    assert s.counts.tolist() == [1, 1, 0, 1, 1]
    assert s.candidates[s.offsets[0]] == 3          # nothing in the pool: nearest further down
    for epoch in range(5):
        assert s.sample(0, epoch)[2] == -1
    s.report()
    assert "1 training documents have no usable neighbour" in capsys.readouterr().out


def test_sampling_uniform_reproducible_and_valid():
    rng = np.random.default_rng(0)
    n, k = 200, 30
    docs = docs_for(n, texts_per_image=2)
    vecs = rng.normal(size=(n, 8)).astype(np.float32)
    d = np.linalg.norm(vecs[:, None] - vecs[None], axis=2)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    knn = knn_rows([x.id for x in docs], order, np.take_along_axis(d, order, 1))
    s = NeighborSampler(knn, docs, pool=10)
    a, b = s.sample(3, 1), s.sample(3, 1)
    assert (a == b).all() and not (a == s.sample(3, 2)).all()
    image = np.arange(n) // 2
    assert (a != np.arange(n)).all() and (image[a] != image).all()
    pool = set(order[0, :10].tolist()) - {0, 1}
    draws = np.array([s.sample(0, e)[0] for e in range(600)])
    assert set(draws.tolist()) == pool
    counts = np.bincount(draws, minlength=n)[sorted(pool)]
    assert counts.min() > 600 / len(pool) * 0.6   # roughly uniform


def test_foreign_knn_file_is_an_error():
    docs = docs_for(4)
    knn = knn_rows(["a", "b", "c", "d"], [[0, 1]] * 4, [[0, 1]] * 4)
    with pytest.raises(InputError, match="re-run"):
        NeighborSampler(knn, docs, source="work/document_feats_knn.pickle")
