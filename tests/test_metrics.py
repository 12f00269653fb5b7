"""Retrieval and neighbourhood metrics against slow, obviously-correct python-loop references."""
import math

import pytest
import torch

from evaluation.metrics import (fold_metrics, rank_parts, recall_summary, retrieval_metrics,
                                retrieval_ranks)
from evaluation.neighborhood import knn_overlap, label_precision

BLOCKS = (1, 3, 10_000)


# --- references -------------------------------------------------------------------------------

def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def ref_ranks(images, texts, text_image, ties="stable"):
    """Worst: count the incorrect candidates scoring >= the correct one. Stable: sort every
    candidate by (score descending, index ascending) and take the first correct one's place."""
    imgs, txts, owner = images.tolist(), texts.tolist(), text_image.tolist()
    i2t = []
    for i, im in enumerate(imgs):
        scores = [dot(im, t) for t in txts]
        if ties == "worst":
            best = max(s for s, o in zip(scores, owner) if o == i)
            i2t.append(sum(1 for s, o in zip(scores, owner) if o != i and s >= best))
        else:
            ordered = sorted(range(len(txts)), key=lambda j: (-scores[j], j))
            i2t.append(next(p for p, j in enumerate(ordered) if owner[j] == i))
    t2i = []
    for t, tx in enumerate(txts):
        scores = [dot(tx, im) for im in imgs]
        right = scores[owner[t]]
        if ties == "worst":
            t2i.append(sum(1 for j, s in enumerate(scores) if j != owner[t] and s >= right))
        else:
            ordered = sorted(range(len(imgs)), key=lambda j: (-scores[j], j))
            t2i.append(ordered.index(owner[t]))
    return i2t, t2i


def ref_ties(images, texts, text_image):
    """Queries with an incorrect candidate scoring exactly as the (best) correct one."""
    imgs, txts, owner = images.tolist(), texts.tolist(), text_image.tolist()
    i2t = 0
    for i, im in enumerate(imgs):
        scores = [dot(im, t) for t in txts]
        best = max(s for s, o in zip(scores, owner) if o == i)
        i2t += any(s == best and o != i for s, o in zip(scores, owner))
    t2i = 0
    for t, tx in enumerate(txts):
        scores = [dot(tx, im) for im in imgs]
        t2i += any(s == scores[owner[t]] and j != owner[t] for j, s in enumerate(scores))
    return {"i2t": i2t, "t2i": t2i}


def ref_summary(ranks):
    """VSE++: medr = floor(median of the 0-based ranks) + 1."""
    n = len(ranks)
    ordered = sorted(ranks)
    mid = n // 2
    median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    out = {f"r{k}": 100.0 * sum(1 for r in ranks if r < k) / n for k in (1, 5, 10)}
    out.update(medr=float(math.floor(median) + 1), meanr=sum(r + 1 for r in ranks) / n)
    return out


def ref_metrics(images, texts, text_image, ties="stable"):
    i2t, t2i = ref_ranks(images, texts, text_image, ties)
    out = {"i2t": ref_summary(i2t), "t2i": ref_summary(t2i)}
    out["rsum"] = sum(out[d][f"r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    return out


def ref_folds(images, texts, text_image, fold_size, ties="stable"):
    per_fold = []
    for f in range(images.shape[0] // fold_size):
        lo, hi = f * fold_size, (f + 1) * fold_size
        keep = [t for t, o in enumerate(text_image.tolist()) if lo <= o < hi]
        sub_owner = torch.tensor([text_image[t].item() - lo for t in keep])
        per_fold.append(ref_metrics(images[lo:hi], texts[keep], sub_owner, ties))
    out = {d: {key: sum(m[d][key] for m in per_fold) / len(per_fold) for key in per_fold[0][d]}
           for d in ("i2t", "t2i")}
    out["rsum"] = sum(m["rsum"] for m in per_fold) / len(per_fold)
    return out


def ref_top(query, gallery, k, skip=None):
    scores = [(dot(query, g), j) for j, g in enumerate(gallery) if j != skip]
    return [j for _, j in sorted(scores, reverse=True)[:k]]


def ref_knn_overlap(reference, learned, k):
    unit = lambda rows: [[x / math.sqrt(dot(r, r)) for x in r] for r in rows]
    ref, lrn = unit(reference.tolist()), unit(learned.tolist())
    total = 0.0
    for i in range(len(ref)):
        a = set(ref_top(ref[i], ref, k, skip=i))
        b = set(ref_top(lrn[i], lrn, k, skip=i))
        total += len(a & b) / k
    return total / len(ref)


def ref_label_precision(queries, gallery, q_labels, g_labels, k, exclude_self):
    q, g = queries.tolist(), gallery.tolist()
    total = 0.0
    for i in range(len(q)):
        top = ref_top(q[i], g, k, skip=i if exclude_self else None)
        total += sum(1 for j in top if g_labels[j] == q_labels[i]) / k
    return total / len(q)


# --- data -------------------------------------------------------------------------------------

def unit(x):
    return x / x.norm(dim=1, keepdim=True)


def paired(n_images, texts_per_image, dim=8, seed=0, quantised=False):
    """Texts near their image, in shuffled order; `texts_per_image` an int or a list of counts."""
    g = torch.Generator().manual_seed(seed)
    counts = ([texts_per_image] * n_images if isinstance(texts_per_image, int)
              else list(texts_per_image))
    owner = torch.repeat_interleave(torch.arange(n_images), torch.tensor(counts))
    owner = owner[torch.randperm(len(owner), generator=g)]
    if quantised:
        # Entries +-0.5 in 4 dims: unit vectors whose dot products are exact multiples of 0.25,
        # so many scores tie exactly.
        images = (torch.randint(0, 2, (n_images, 4), generator=g).double() - 0.5)
        flip = torch.rand(len(owner), 4, generator=g) < 0.3
        texts = torch.where(flip, -images[owner], images[owner])
        return images, texts, owner
    images = unit(torch.randn(n_images, dim, generator=g, dtype=torch.float64))
    texts = unit(images[owner] + 0.8 * torch.randn(len(owner), dim, generator=g,
                                                   dtype=torch.float64))
    return images, texts, owner


def assert_close_dicts(got, want):
    assert got.keys() == want.keys()
    for key in want:
        if isinstance(want[key], dict):
            assert_close_dicts(got[key], want[key])
        else:
            assert isinstance(got[key], float)
            assert got[key] == pytest.approx(want[key], abs=1e-9), key


# --- retrieval ranks --------------------------------------------------------------------------

@pytest.mark.parametrize("ties", ["stable", "worst"])
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("case", ["five", "ragged", "quantised", "one_each"])
def test_ranks_match_reference(case, block, ties):
    if case == "five":
        images, texts, owner = paired(20, 5, seed=1)
    elif case == "ragged":
        images, texts, owner = paired(17, [1, 4, 2, 3, 1, 5, 2, 1, 1, 3, 2, 4, 1, 1, 2, 3, 1], seed=2)
    elif case == "quantised":
        images, texts, owner = paired(15, [1, 2, 3] * 5, seed=3, quantised=True)
    else:
        images, texts, owner = paired(25, 1, seed=4)
    i2t, t2i = retrieval_ranks(images, texts, owner, block=block, ties=ties)
    want_i2t, want_t2i = ref_ranks(images, texts, owner, ties)
    assert i2t.dtype == torch.long and t2i.dtype == torch.long
    assert i2t.tolist() == want_i2t
    assert t2i.tolist() == want_t2i
    assert rank_parts(images, texts, owner, block=block).tie_counts() == ref_ties(images, texts, owner)


def test_quantised_case_really_has_ties():
    images, texts, owner = paired(15, [1, 2, 3] * 5, seed=3, quantised=True)
    scores = (images @ texts.T).flatten()
    assert scores.unique().numel() <= 9
    # ... ties that matter: the two rules disagree on some queries of each direction.
    stable, worst = (retrieval_ranks(images, texts, owner, ties=t) for t in ("stable", "worst"))
    for a, b in zip(stable, worst):
        assert (a <= b).all() and (a < b).any()
    counts = rank_parts(images, texts, owner).tie_counts()
    assert 0 < counts["i2t"] <= 15 and 0 < counts["t2i"] <= 30


def test_constant_embeddings_give_the_worst_rank_under_worst():
    counts = [5, 1, 3] * 4
    owner = torch.repeat_interleave(torch.arange(12), torch.tensor(counts))
    images = unit(torch.ones(12, 6))
    texts = unit(torch.ones(len(owner), 6))
    i2t, t2i = retrieval_ranks(images, texts, owner, block=5, ties="worst")
    assert i2t.tolist() == [len(owner) - c for c in counts]
    assert t2i.tolist() == [11] * len(owner)
    m = retrieval_metrics(images, texts, owner, ties="worst")
    assert m["rsum"] == 0.0
    assert m["t2i"]["medr"] == 12.0 and m["t2i"]["meanr"] == 12.0
    assert rank_parts(images, texts, owner).tie_counts() == {"i2t": 12, "t2i": len(owner)}


@pytest.mark.parametrize("n", [40, 41])
def test_constant_embeddings_score_like_chance_under_stable(n):
    # Every candidate ties, so each query's rank is its answer's place in the index order: over
    # the queries, exactly the ranks a random model has on average, never a perfect score.
    owner = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    images, texts = unit(torch.ones(n, 6)), unit(torch.ones(n, 6))
    i2t, t2i = retrieval_ranks(images, texts, owner, block=7)
    assert sorted(t2i.tolist()) == sorted(i2t.tolist()) == list(range(n))
    m = retrieval_metrics(images, texts, owner)
    for d in ("i2t", "t2i"):
        assert m[d]["r1"] == pytest.approx(100 / n) and m[d]["r10"] == pytest.approx(1000 / n)
        assert m[d]["meanr"] == pytest.approx((n + 1) / 2)
        assert m[d]["medr"] == (n - 1) // 2 + 1
    assert m["rsum"] == pytest.approx(2 * 100 * (1 + 5 + 10) / n)


def test_constant_embeddings_with_several_texts_rank_each_image_after_earlier_texts():
    counts = [5, 1, 3] * 4
    owner = torch.repeat_interleave(torch.arange(12), torch.tensor(counts))
    images, texts = unit(torch.ones(12, 6)), unit(torch.ones(len(owner), 6))
    i2t, t2i = retrieval_ranks(images, texts, owner)
    # Image i's first text comes after every text of images 0..i-1.
    assert i2t.tolist() == torch.cumsum(torch.tensor([0] + counts[:-1]), 0).tolist()
    assert t2i.tolist() == owner.tolist()


def test_a_correct_text_with_an_identical_twin_counts_under_stable_only():
    # Items 1 and 2 share one text (so one embedding); image 2 sits between e1 and e2.
    images = torch.eye(4, dtype=torch.float64)
    images[2] = unit(images[1:2] + images[2:3])[0]
    texts = torch.eye(4, dtype=torch.float64)
    texts[2] = texts[1]
    owner = torch.arange(4)
    stable = retrieval_ranks(images, texts, owner)
    worst = retrieval_ranks(images, texts, owner, ties="worst")
    # Image 1's query ties its own text 1 with text 2: under stable text 1 (lower) comes first.
    # Image 2's query ties its own text 2 with text 1, which comes first under either rule.
    assert worst[0].tolist() == [0, 1, 1, 0] and stable[0].tolist() == [0, 0, 1, 0]
    assert worst[1].tolist() == stable[1].tolist() == [0, 0, 1, 0]
    assert retrieval_metrics(images, texts, owner)["i2t"]["r1"] == 75.0
    assert retrieval_metrics(images, texts, owner, ties="worst")["i2t"]["r1"] == 50.0
    assert rank_parts(images, texts, owner).tie_counts() == {"i2t": 2, "t2i": 0}


def test_perfect_embeddings_give_rank_zero():
    images = torch.eye(6)
    owner = torch.tensor([0, 0, 1, 2, 3, 3, 3, 4, 5])
    i2t, t2i = retrieval_ranks(images, images[owner], owner)
    assert i2t.tolist() == [0] * 6 and t2i.tolist() == [0] * 9
    assert retrieval_metrics(images, images[owner], owner)["rsum"] == 600.0


def test_half_precision_and_float32_inputs_work():
    images, texts, owner = paired(12, 2, seed=5)
    i2t, t2i = retrieval_ranks(images.float(), texts.float(), owner)
    assert i2t.shape == (12,) and t2i.shape == (24,)
    i2t_h, _ = retrieval_ranks(images.bfloat16(), texts.bfloat16(), owner, block=4)
    assert i2t_h.shape == (12,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    images, texts, owner = paired(40, 5, seed=6)
    cpu = retrieval_ranks(images, texts, owner, block=7)
    gpu = retrieval_ranks(images.cuda(), texts.cuda(), owner, block=7)
    assert all(torch.equal(a, b) for a, b in zip(cpu, gpu))
    assert knn_overlap(images, images.cuda().flip(1), 5) == knn_overlap(images, images.flip(1), 5)


# --- summaries and metrics --------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 7, 8, 50])
def test_recall_summary_matches_reference(n):
    ranks = torch.randint(0, 15, (n,), generator=torch.Generator().manual_seed(n))
    assert_close_dicts(recall_summary(ranks), ref_summary(ranks.tolist()))


def test_recall_summary_known_values():
    s = recall_summary(torch.tensor([0, 1, 2, 3]))
    # The median of the 0-based ranks is 1.5: VSE++ and open_clip report floor(1.5) + 1 = 2.
    assert s == {"r1": 25.0, "r5": 100.0, "r10": 100.0, "medr": 2.0, "meanr": 2.5}
    s = recall_summary(torch.tensor([0, 4, 9, 10, 30]))
    assert s == {"r1": 20.0, "r5": 40.0, "r10": 60.0, "medr": 10.0, "meanr": pytest.approx(11.6)}
    assert recall_summary(torch.tensor([3, 8]))["medr"] == 6.0


@pytest.mark.parametrize("ties", ["stable", "worst"])
@pytest.mark.parametrize("block", BLOCKS)
def test_retrieval_metrics_match_reference(block, ties):
    images, texts, owner = paired(30, [1, 5, 2] * 10, seed=7, quantised=ties == "stable")
    assert_close_dicts(retrieval_metrics(images, texts, owner, block=block, ties=ties),
                       ref_metrics(images, texts, owner, ties))


# --- 1K folds ---------------------------------------------------------------------------------

@pytest.mark.parametrize("ties", ["stable", "worst"])
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("n_images", [20, 25, 39])
def test_folds_match_reference(n_images, block, ties):
    counts = [(i * 7) % 4 + 1 for i in range(n_images)]
    images, texts, owner = paired(n_images, counts, seed=n_images, quantised=n_images == 25)
    got = fold_metrics(images, texts, owner, fold_size=10, block=block, ties=ties)
    assert_close_dicts(got, ref_folds(images, texts, owner, 10, ties))


def test_folds_differ_from_full_split():
    images, texts, owner = paired(30, 5, dim=4, seed=8)
    folds = fold_metrics(images, texts, owner, fold_size=10)
    full = retrieval_metrics(images, texts, owner)
    # Smaller galleries make retrieval easier, never harder.
    assert folds["rsum"] > full["rsum"]


@pytest.mark.parametrize("n_images", [5, 10, 19])
def test_folds_need_two_full_folds(n_images):
    images, texts, owner = paired(n_images, 2, seed=9)
    assert fold_metrics(images, texts, owner, fold_size=10) is None


# --- bad input --------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    images, texts, owner = paired(6, 2, seed=10)
    with pytest.raises(ValueError, match="image 5 has no text"):
        retrieval_ranks(images, texts[owner != 5], owner[owner != 5])
    with pytest.raises(ValueError, match="one image index per text"):
        retrieval_ranks(images, texts, owner[:-1])
    with pytest.raises(ValueError, match="outside"):
        retrieval_ranks(images, texts, owner + 1)
    with pytest.raises(ValueError, match="same joint space"):
        retrieval_ranks(images, texts[:, :3], owner)
    with pytest.raises(ValueError, match="block"):
        retrieval_ranks(images, texts, owner, block=0)
    with pytest.raises(ValueError, match="NaN"):
        retrieval_ranks(images * float("nan"), texts, owner)
    with pytest.raises(ValueError, match="non-negative"):
        recall_summary(torch.tensor([-1, 2]))
    with pytest.raises(ValueError, match="ties must be one of"):
        retrieval_ranks(images, texts, owner, ties="best")
    with pytest.raises(ValueError, match="k must be"):
        knn_overlap(images, images, k=6)
    with pytest.raises(ValueError, match="all zeros"):
        knn_overlap(images, images * 0, k=2)
    labels = torch.zeros(6, dtype=torch.long)
    with pytest.raises(ValueError, match="exclude_self"):
        label_precision(images, texts, labels, torch.zeros(12, dtype=torch.long), exclude_self=True)


# --- neighbourhood ----------------------------------------------------------------------------

@pytest.mark.parametrize("block", BLOCKS)
def test_knn_overlap_matches_reference(block):
    g = torch.Generator().manual_seed(11)
    reference = torch.randn(40, 6, generator=g, dtype=torch.float64)
    learned = reference[:, :3] + 0.7 * torch.randn(40, 3, generator=g, dtype=torch.float64)
    got = knn_overlap(reference, learned, k=5, block=block)
    assert got == pytest.approx(ref_knn_overlap(reference, learned, 5), abs=1e-12)
    assert 0.0 < got < 1.0


def test_knn_overlap_is_one_on_equal_spaces():
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(12))
    assert knn_overlap(x, x, k=10, block=64) == 1.0
    assert knn_overlap(x, x.clone(), k=1, block=7) == 1.0


def test_knn_overlap_is_chance_on_random_spaces():
    g = torch.Generator().manual_seed(13)
    a = torch.randn(500, 32, generator=g)
    b = torch.randn(500, 24, generator=g)
    assert knn_overlap(a, b, k=10, block=128) == pytest.approx(10 / 499, abs=0.01)


def test_knn_overlap_is_invariant_to_scaling():
    g = torch.Generator().manual_seed(14)
    a = torch.randn(150, 8, generator=g, dtype=torch.float64)
    b = a + 0.5 * torch.randn(150, 8, generator=g, dtype=torch.float64)
    scales = torch.rand(150, 1, generator=g, dtype=torch.float64) * 10 + 0.1
    base = knn_overlap(a, b, k=10)
    assert knn_overlap(a * 3.7, b * scales, k=10, block=16) == pytest.approx(base, abs=1e-12)


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("exclude_self", [False, True])
def test_label_precision_matches_reference(exclude_self, block):
    g = torch.Generator().manual_seed(15)
    labels = torch.randint(0, 4, (35,), generator=g)
    centres = torch.randn(4, 5, generator=g, dtype=torch.float64)
    queries = unit(centres[labels] + torch.randn(35, 5, generator=g, dtype=torch.float64))
    if exclude_self:
        gallery, g_labels = queries, labels
    else:
        g_labels = torch.randint(0, 4, (50,), generator=g)
        gallery = unit(centres[g_labels] + torch.randn(50, 5, generator=g, dtype=torch.float64))
    got = label_precision(queries, gallery, labels, g_labels, k=10,
                          exclude_self=exclude_self, block=block)
    want = ref_label_precision(queries, gallery, labels.tolist(), g_labels.tolist(), 10,
                               exclude_self)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0.0 < got <= 1.0


def test_label_precision_exclude_self_skips_the_query():
    # Every item has a unique label, so only the query itself could ever match.
    x = unit(torch.randn(12, 4, generator=torch.Generator().manual_seed(16)))
    labels = torch.arange(12)
    assert label_precision(x, x, labels, labels, k=1) == 1.0
    assert label_precision(x, x, labels, labels, k=1, exclude_self=True) == 0.0
