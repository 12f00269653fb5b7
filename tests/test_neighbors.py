import numpy as np
import pytest

from common.errors import InputError
from data.datasets.items import Document
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
    assert cand0 == {3, 4, 5}   # not itself, not d1 (same image), not x, not d2 (distance 0)


def test_pool_is_the_first_qualifying_entries_and_none_at_all_reported(capsys):
    docs = docs_for(5)
    ids = [d.id for d in docs]
    nb = [[0, 0, 0, 3, 4], [1, 0, 2, 3, 4], [2, 2, 2, 2, 2], [3, 0, 1, 2, 4], [4, 0, 1, 2, 3]]
    dist = [[0, 0, 0, .5, .6], [0, .1, .2, .3, .4], [0] * 5, [0, .1, .2, .3, .4], [0, .1, .2, .3, .4]]
    s = NeighborSampler(knn_rows(ids, nb, dist), docs, pool=2)
    assert s.counts.tolist() == [2, 2, 0, 2, 2]
    # Row 0: nothing qualifies among its first 2 positions; the pool is the first 2 that do.
    assert s.candidates[s.offsets[0]:s.offsets[0] + 2].tolist() == [3, 4]
    assert s.candidates[s.offsets[1]:s.offsets[1] + 2].tolist() == [0, 2]
    for epoch in range(5):
        assert s.sample(0, epoch)[2] == -1
    assert s.missing == ["d2"]
    s.report()
    assert "1 training documents have no usable neighbour" in capsys.readouterr().out


def reference_pools(knn, docs, pool):
    """The rule written plainly, one row and one entry at a time."""
    position = {d.id: i for i, d in enumerate(docs)}
    row_of = {position[i]: r for r, i in enumerate(knn["ids"]) if i in position}
    pools = []
    for i, d in enumerate(docs):
        chosen = []
        if i in row_of:
            r = row_of[i]
            for j, dist in zip(knn["neighbors"][r], knn["distances"][r]):
                other = position.get(knn["ids"][j])
                if other is None or dist <= 0 or docs[other].item == d.item:
                    continue
                chosen.append(other)
                if len(chosen) == pool:
                    break
        pools.append(chosen)
    return pools


def random_knn(rng, n_docs, captions, k, foreign=0, dup_share=0.1):
    """A kNN file over n_docs documents (captions per image) plus `foreign` ids not in training,
    with duplicate texts (distance 0) sprinkled in."""
    docs = docs_for(n_docs, texts_per_image=captions)
    ids = [d.id for d in docs] + [f"gone{j}" for j in range(foreign)]
    n = len(ids)
    nb = np.stack([np.concatenate([[r], rng.choice(np.delete(np.arange(n), r), k - 1, replace=False)])
                   for r in range(n)])
    dist = np.sort(rng.random((n, k)), axis=1)
    dist[:, 0] = 0
    dist[rng.random((n, k)) < dup_share] = 0
    dist = np.sort(dist, axis=1)
    rng.shuffle(ids)   # kNN rows in another order than the documents
    return docs, knn_rows(ids, nb, dist)


@pytest.mark.parametrize("captions,pool,foreign", [(1, 10, 0), (5, 10, 7), (2, 3, 40), (5, 1, 0)])
def test_table_equals_the_plain_rule(captions, pool, foreign, monkeypatch):
    rng = np.random.default_rng(captions * 100 + pool)
    docs, knn = random_knn(rng, 300, captions, 25, foreign)
    monkeypatch.setattr("training.neighbors.CHUNK_ROWS", 64)   # several chunks
    s = NeighborSampler(knn, docs, pool=pool)
    want = reference_pools(knn, docs, pool)
    got = [s.candidates[o:o + c].tolist() for o, c in zip(s.offsets, s.counts)]
    assert got == want
    assert s.missing == [d.id for d, w in zip(docs, want) if not w]


def test_draws_are_uniform_over_the_pool():
    rng = np.random.default_rng(5)
    docs, knn = random_knn(rng, 60, 5, 40)
    s = NeighborSampler(knn, docs, pool=10)
    want = reference_pools(knn, docs, 10)
    epochs = 2000
    draws = np.stack([s.sample(1, e) for e in range(epochs)])        # [epochs, docs]
    for i, pool in enumerate(want):
        counts = np.array([(draws[:, i] == c).sum() for c in pool])
        assert counts.sum() == epochs                                 # only pool members drawn
        expected = epochs / len(pool)
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < 40, (i, counts)   # 9 degrees of freedom: p < 1e-5 under uniformity


def test_coco_five_captions_pool_has_ten_real_neighbours():
    # 40 images x 5 captions; each row's 5 nearest are the document and its 4 sibling captions
    # (the old rule drew from row positions 1-9, which left 5 entries of other images at most).
    captions, n_img = 5, 40
    docs = docs_for(n_img * captions, texts_per_image=captions)
    rng = np.random.default_rng(0)
    nb, dist = [], []
    for i in range(len(docs)):
        img = i // captions
        own = [i] + [img * captions + j for j in range(captions) if img * captions + j != i]
        others = [j for j in rng.permutation(len(docs)) if j // captions != img][:45]
        nb.append(own + others)
        dist.append(np.concatenate([[0], np.linspace(.01, .04, 4), np.linspace(.1, 1, 45)]))
    s = NeighborSampler(knn_rows([d.id for d in docs], nb, dist), docs, pool=10)
    assert (s.counts == 10).all()
    for i in (0, 7, 199):
        pool = s.candidates[s.offsets[i]:s.offsets[i] + 10]
        assert pool.tolist() == nb[i][5:15]
        assert len({docs[j].item for j in pool} & {docs[i].item}) == 0
    image = np.array([d.item for d in docs])
    draws = np.stack([s.sample(0, e) for e in range(200)])
    assert (image[draws] != image[None, :]).all()
    assert len(set(draws[:, 0].tolist())) == 10


def test_foreign_knn_file_is_an_error():
    docs = docs_for(4)
    knn = knn_rows(["a", "b", "c", "d"], [[0, 1]] * 4, [[0, 1]] * 4)
    with pytest.raises(InputError, match="re-run"):
        NeighborSampler(knn, docs, source="work/document_feats_knn.pickle")


@pytest.mark.parametrize("captions,foreign", [(1, 0), (5, 7)])
def test_table_read_from_the_file_in_blocks_equals_the_table_from_arrays(tmp_path, monkeypatch,
                                                                          captions, foreign):
    from common.workdir import save_pickle
    from data.neighbors.knn_file import Rows, load_knn
    rng = np.random.default_rng(captions)
    docs, knn = random_knn(rng, 3000, captions, 120, foreign)
    knn["ids"][5] = knn["ids"][2900]   # a repeated id: its last row counts
    save_pickle(knn, tmp_path / "document_feats_knn.pickle")
    lazy = load_knn(tmp_path)
    assert isinstance(lazy["neighbors"], Rows) and isinstance(lazy["distances"], Rows)
    monkeypatch.setattr("training.neighbors.CHUNK_ROWS", 700)   # several blocks, one short
    a, b = NeighborSampler(knn, docs, pool=10), NeighborSampler(lazy, docs, pool=10)
    for name in ("counts", "offsets", "candidates"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    want = reference_pools(knn, docs, 10)
    assert [b.candidates[o:o + c].tolist() for o, c in zip(b.offsets, b.counts)] == want


def test_tables_of_another_length_than_the_ids_are_an_error():
    docs = docs_for(4)
    knn = knn_rows([d.id for d in docs], [[0, 1]] * 3, [[0, .1]] * 3)
    with pytest.raises(InputError, match="3 rows of neighbours for 4 ids"):
        NeighborSampler(knn, docs)


def test_knn_file_reader_refuses_cut_and_crafted_files(tmp_path):
    import os
    import pickle

    from common.workdir import save_pickle
    from data.neighbors.knn_file import load_knn
    nb = np.arange(600_000, dtype=np.int32).reshape(3000, 200)
    save_pickle({"ids": [str(i) for i in range(3000)], "neighbors": nb,
                 "distances": nb.astype(np.float32), "space": "l2"},
                tmp_path / "document_feats_knn.pickle")
    path = tmp_path / "document_feats_knn.pickle"
    knn = load_knn(tmp_path)
    np.testing.assert_array_equal(knn["neighbors"][2990:], nb[2990:])
    np.testing.assert_array_equal(np.asarray(knn["distances"]), nb.astype(np.float32))
    with open(path, "rb") as f:                       # still a plain pickle
        np.testing.assert_array_equal(pickle.load(f)["neighbors"], nb)
    os.truncate(path, os.path.getsize(path) - 100)   # cut inside the last table
    with pytest.raises(InputError, match="document_feats_knn.pickle: unreadable pickle"):
        load_knn(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo crafted",))
    with open(path, "wb") as f:
        pickle.dump({"ids": [], "neighbors": Evil()}, f)
    with pytest.raises(InputError, match="posix.system|os.system"):
        load_knn(tmp_path)
