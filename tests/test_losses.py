"""The losses against slow float64 python-loop references, plus the objective's "clean" negative
sets (the release's sets: test_objective.py)."""
import math
from functools import partial

import pytest
import torch

from losses import CrossModalObjective, LossConfig, Weights, angular_loss, negative_mask, triplet_loss
import losses.objective as objective

# Both pure losses with their hyper-parameter fixed, for the tests that apply to each.
ANGULAR = partial(angular_loss, tan2_alpha=1.0)
TRIPLET = partial(triplet_loss, margin=0.2)
BOTH = pytest.mark.parametrize("fn", [ANGULAR, TRIPLET], ids=["angular", "triplet"])


def cross_modal_loss(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, w_sym, w_img, w_text,
                     loss="angular", tan2_alpha=1.0, margin=0.2, hardest=False):
    """The objective under the clean negatives, called as one function."""
    config = LossConfig.for_training(weights=Weights(w_sym, w_img, w_text), loss=loss,
                                     tan2_alpha=tan2_alpha, margin=margin, hardest_negative=hardest,
                                     negatives="clean")
    return CrossModalObjective(config)(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb)


def unit(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    return torch.nn.functional.normalize(x, dim=-1).to(dtype)


def random_mask(*shape, seed=0, p=0.6):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g) < p


def dot(u, v):
    return sum(float(x) * float(y) for x, y in zip(u, v))


def ref_angular(a, p, n, valid, t=1.0, mask=None):
    """Direct formula per anchor; log(1 + sum exp) with the max pulled out by hand."""
    losses = []
    for i in range(len(a)):
        if mask is not None and not mask[i]:
            continue
        ap = [float(x) + float(y) for x, y in zip(a[i], p[i])]
        logits = [4 * t * dot(ap, n[j]) - 2 * (1 + t) * dot(a[i], p[i])
                  for j in range(len(n)) if valid[i][j]]
        top = max([0.0] + logits)
        losses.append(top + math.log(math.exp(-top) + sum(math.exp(x - top) for x in logits)))
    return sum(losses) / len(losses) if losses else 0.0


def ref_triplet(a, p, n, valid, margin=0.2, hardest=False, mask=None):
    losses = []
    for i in range(len(a)):
        if mask is not None and not mask[i]:
            continue
        hinges = [max(0.0, margin - dot(a[i], p[i]) + dot(a[i], n[j]))
                  for j in range(len(n)) if valid[i][j]]
        losses.append((max(hinges) if hinges else 0.0) if hardest else sum(hinges))
    return sum(losses) / len(losses) if losses else 0.0


def ref_negatives(anchor_id, positive_id, candidate_ids):
    return [j for j, c in enumerate(candidate_ids) if c != anchor_id and c != positive_id]


def ref_objective(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, w_sym, w_img, w_text, t=1.0):
    ids, nb_ids, has_nb = ids.tolist(), nb_ids.tolist(), has_nb.tolist()
    b = len(ids)
    pair = [[j in ref_negatives(ids[i], ids[i], ids) for j in range(b)] for i in range(b)]
    nb = [[j in ref_negatives(ids[i], nb_ids[i], ids) for j in range(b)] for i in range(b)]
    parts = {
        "l_i2t": ref_angular(img, txt, txt, pair, t),
        "l_sym": ref_angular(txt, img, img, pair, t),
        "l_img": ref_angular(img, nb_img, img, nb, t, has_nb),
        "l_text": ref_angular(txt, nb_txt, txt, nb, t, has_nb),
    }
    total = (parts["l_i2t"] + w_sym * parts["l_sym"] + w_img * parts["l_img"]
             + w_text * parts["l_text"])
    return total, parts


def batch(b=6, d=8, seed=0, ids=None, nb_ids=None, has_nb=None):
    img, txt, nb_img, nb_txt = (unit(b, d, seed=seed + k) for k in range(4))
    ids = torch.arange(b) if ids is None else torch.tensor(ids)
    nb_ids = (ids.roll(1) if nb_ids is None else torch.tensor(nb_ids))
    has_nb = torch.ones(b, dtype=torch.bool) if has_nb is None else torch.tensor(has_nb)
    return img, txt, nb_img, nb_txt, ids, nb_ids, has_nb


# --- angular and triplet against the references ----------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("t", [1.0, 0.3])
def test_angular_matches_reference(seed, t):
    a, p, n = unit(5, 7, seed=seed), unit(5, 7, seed=seed + 10), unit(9, 7, seed=seed + 20)
    valid = random_mask(5, 9, seed=seed)
    mask = random_mask(5, seed=seed + 1, p=0.7)
    mask[0] = True
    for m in (None, mask):
        got = angular_loss(a, p, n, valid, t, m)
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(ref_angular(a, p, n, valid, t, m), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("hardest", [False, True])
def test_triplet_matches_reference(seed, hardest):
    a, p, n = unit(5, 7, seed=seed), unit(5, 7, seed=seed + 10), unit(9, 7, seed=seed + 20)
    valid = random_mask(5, 9, seed=seed)
    mask = random_mask(5, seed=seed + 1, p=0.7)
    mask[0] = True
    for m in (None, mask):
        got = triplet_loss(a, p, n, valid, margin=0.5, hardest=hardest, anchor_mask=m)
        want = ref_triplet(a, p, n, valid, margin=0.5, hardest=hardest, mask=m)
        assert want > 0
        assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_float64_inputs_stay_float64_and_pass_gradcheck():
    a, p, n = (unit(3, 4, seed=s, dtype=torch.float64).requires_grad_() for s in (0, 1, 2))
    valid = torch.tensor([[True, False, True], [False, False, False], [True, True, True]])
    assert angular_loss(a, p, n, valid, 1.0).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda *x: angular_loss(*x, valid, 0.7), (a, p, n))
    assert torch.autograd.gradcheck(lambda *x: triplet_loss(*x, valid, 0.9), (a, p, n))


@BOTH
def test_gradients_finite(fn):
    a, p, n = (unit(6, 8, seed=s).requires_grad_() for s in (0, 1, 2))
    fn(a, p, n, random_mask(6, 6)).backward()
    for x in (a, p, n):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("scale, t", [(1e3, 1.0), (1.0, 1e4), (30.0, 50.0)])
def test_angular_huge_logits_do_not_overflow(scale, t):
    a, p, n = unit(4, 6, seed=3), unit(4, 6, seed=4), unit(5, 6, seed=5)
    a, p, n = (x * scale for x in (a, p, n))
    valid = random_mask(4, 5, seed=6)
    valid[0] = True
    leaves = [x.clone().requires_grad_() for x in (a, p, n)]
    got = angular_loss(*leaves, valid, t)
    got.backward()
    assert torch.isfinite(got) and got.item() > 1e3
    assert got.item() == pytest.approx(ref_angular(a, p, n, valid, t), rel=1e-4)
    assert all(torch.isfinite(x.grad).all() for x in leaves)


@BOTH
def test_anchor_without_valid_negatives_contributes_zero(fn):
    a, p, n = unit(3, 5, seed=0), unit(3, 5, seed=1), unit(4, 5, seed=2)
    valid = random_mask(3, 4)
    valid[1] = False
    valid[0] = valid[2] = True
    per_row = [fn(a[i:i + 1], p[i:i + 1], n, valid[i:i + 1]).item() for i in range(3)]
    assert per_row[1] == 0.0
    assert fn(a, p, n, valid).item() == pytest.approx(sum(per_row) / 3, rel=1e-6)


@BOTH
def test_no_valid_anchor_gives_connected_zero(fn):
    a, p, n = (unit(3, 5, seed=s).requires_grad_() for s in (0, 1, 2))
    nobody = torch.zeros(3, dtype=torch.bool)
    got = fn(a, p, n, torch.ones(3, 3, dtype=torch.bool), anchor_mask=nobody)
    assert got.item() == 0.0 and got.grad_fn is not None
    got.backward()
    assert a.grad is not None and torch.all(a.grad == 0)


def test_angular_decreases_as_positive_moves_toward_anchor():
    a, p0, n = unit(8, 64, seed=0), unit(8, 64, seed=1), unit(16, 64, seed=2)
    valid = torch.ones(8, 16, dtype=torch.bool)
    values = []
    for s in (0.0, 0.25, 0.5, 0.75, 1.0):
        p = torch.nn.functional.normalize((1 - s) * p0 + s * a, dim=1)
        values.append(angular_loss(a, p, n, valid, 1.0).item())
    assert all(x > y for x, y in zip(values, values[1:]))
    # The gradient at the positive points toward the anchor (descent pulls p to a).
    p = p0.clone().requires_grad_()
    angular_loss(a, p, n, valid, 1.0).backward()
    assert (-p.grad * (a - p0)).sum() > 0


@BOTH
def test_bf16_autocast_on_cpu_gives_finite_float32(fn):
    a, p, n = unit(6, 16, seed=0), unit(6, 16, seed=1), unit(6, 16, seed=2)
    layer = torch.nn.Linear(16, 16)
    valid = random_mask(6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a16, p16, n16 = layer(a), layer(p), layer(n)
        assert a16.dtype == torch.bfloat16
        got = fn(a16, p16, n16, valid)
    assert got.dtype == torch.float32 and torch.isfinite(got)
    # Autocast must not touch the loss itself: same bf16 inputs, same value without it.
    assert got.item() == pytest.approx(fn(a16, p16, n16, valid).item(), rel=1e-6)
    got.backward()
    assert torch.isfinite(layer.weight.grad).all()


@BOTH
def test_bad_inputs_raise(fn):
    a, p, n = unit(3, 5), unit(3, 5, seed=1), unit(4, 5, seed=2)
    ok = torch.ones(3, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="valid"):
        fn(a, p, n, ok.float())
    with pytest.raises(ValueError, match="valid"):
        fn(a, p, n, ok[:, :3])
    with pytest.raises(ValueError, match="positive"):
        fn(a, p[:2], n, ok)
    with pytest.raises(ValueError, match="candidates"):
        fn(a, p, n[:, :4], ok)
    with pytest.raises(ValueError, match="anchor_mask"):
        fn(a, p, n, ok, anchor_mask=torch.ones(2, dtype=torch.bool))


# --- negatives of the objective ----------------------------------------------------------------

def test_own_positive_is_never_a_negative():
    img, txt, *_ = batch(b=5, d=6, seed=3)
    ids = torch.arange(5)
    mask = negative_mask(ids, ids, ids)
    assert not mask.diagonal().any()
    assert mask.sum() == 5 * 4
    ours = angular_loss(img, txt, txt, mask, 1.0)
    reference = ref_angular(img, txt, txt, [[j != i for j in range(5)] for i in range(5)])
    # The release put every batch row, the anchor's own positive included, in the negative set.
    authors = angular_loss(img, txt, txt, torch.ones(5, 5, dtype=torch.bool), 1.0)
    assert ours.item() == pytest.approx(reference, rel=1e-5)
    assert abs(authors.item() - reference) > 0.1


def test_negative_mask_excludes_anchor_and_positive_images():
    anchor_ids = torch.tensor([0, 1, 2])
    positive_ids = torch.tensor([3, 1, 0])
    candidate_ids = torch.tensor([0, 1, 2, 3, 0])
    want = [[c not in (a, p) for c in candidate_ids.tolist()]
            for a, p in zip(anchor_ids.tolist(), positive_ids.tolist())]
    assert negative_mask(anchor_ids, positive_ids, candidate_ids).tolist() == want
    with pytest.raises(ValueError, match="negative_mask"):
        negative_mask(anchor_ids, positive_ids[:2], candidate_ids)


def test_shared_image_ids_exclude_same_image_captions():
    # Rows 0, 1 and 3 are captions of image 7: none is a negative of another.
    ids = [7, 7, 2, 7, 5]
    img, txt, nb_img, nb_txt, ids_t, nb_ids, has_nb = batch(b=5, seed=4, ids=ids,
                                                            nb_ids=[2, 5, 7, 2, 7])
    img = img[[0, 0, 2, 0, 4]]  # one image tensor per image id
    mask = negative_mask(ids_t, ids_t, ids_t)
    for i in (0, 1, 3):
        assert mask[i].tolist() == [False, False, True, False, True]
    total, parts = cross_modal_loss(img, txt, nb_img, nb_txt, ids_t, nb_ids, has_nb, 0.3, 0.2, 0.1)
    want_total, want = ref_objective(img, txt, nb_img, nb_txt, ids_t, nb_ids, has_nb, 0.3, 0.2, 0.1)
    assert total.item() == pytest.approx(want_total, rel=1e-5)
    for name in want:
        assert parts[name].item() == pytest.approx(want[name], rel=1e-5, abs=1e-6)
    # The neighbour's image is no negative of l_img / l_text either: row 2's neighbour shows 7.
    nb_mask = negative_mask(ids_t, nb_ids, ids_t)
    assert nb_mask[2].tolist() == [False, False, False, False, True]


@pytest.mark.parametrize("seed", [0, 1])
def test_objective_matches_reference(seed):
    args = batch(b=6, d=8, seed=seed, nb_ids=[3, 0, 5, 1, 1, 2],
                 has_nb=[True, False, True, True, False, True])
    total, parts = cross_modal_loss(*args, w_sym=1.0, w_img=0.3, w_text=0.2)
    want_total, want = ref_objective(*args, 1.0, 0.3, 0.2)
    assert total.item() == pytest.approx(want_total, rel=1e-5)
    for name in want:
        assert parts[name].item() == pytest.approx(want[name], rel=1e-5, abs=1e-6)
        assert parts[name].grad_fn is None


def test_rows_without_neighbour_contribute_nothing():
    img, txt, nb_img, nb_txt, ids, nb_ids, _ = batch(b=6, seed=5)
    has_nb = torch.tensor([True, False, True, False, True, True])
    _, clean = cross_modal_loss(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, 1.0, 1.0, 1.0)
    nb_img, nb_txt = (x.clone().requires_grad_() for x in (nb_img, nb_txt))
    with torch.no_grad():
        for x in (nb_img, nb_txt):
            x[~has_nb] = float("nan")
    nb_ids = nb_ids.clone()
    nb_ids[~has_nb] = 123
    total, filler = cross_modal_loss(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, 1.0, 1.0, 1.0)
    for name in ("l_img", "l_text"):
        assert filler[name].item() == pytest.approx(clean[name].item(), rel=1e-6)
    total.backward()
    for x in (nb_img, nb_txt):
        assert torch.isfinite(x.grad).all() and torch.all(x.grad[~has_nb] == 0)
    _, none = cross_modal_loss(img, txt, nb_img, nb_txt, ids, nb_ids,
                               torch.zeros(6, dtype=torch.bool), 1.0, 1.0, 1.0)
    assert none["l_img"].item() == 0.0 and none["l_text"].item() == 0.0


def test_zero_weight_terms_are_computed_and_logged_without_a_graph(monkeypatch):
    """Every term is computed at every step whatever its weight (the release logs all four); a
    zero-weight one runs under no_grad, so it costs no backward."""
    img, txt, nb_img, nb_txt, ids, nb_ids, has_nb = batch(seed=6)
    grad_on = []

    def recording(anchor, positive, *args):
        grad_on.append((positive, torch.is_grad_enabled()))
        return angular_loss(anchor, positive, *args)

    monkeypatch.setattr(objective, "angular_loss", recording)
    img, txt, nb_img, nb_txt = (x.clone().requires_grad_() for x in (img, txt, nb_img, nb_txt))
    total, parts = cross_modal_loss(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, 0.0, 0.0, 0.0)
    want_total, want = ref_objective(img.detach(), txt.detach(), nb_img.detach(), nb_txt.detach(),
                                     ids, nb_ids, has_nb, 0.0, 0.0, 0.0)
    assert [g for _, g in grad_on] == [True, False, False, False]
    for name in want:
        assert parts[name].item() == pytest.approx(want[name], rel=1e-5) and want[name] > 0
    assert total.item() == pytest.approx(parts["l_i2t"].item())
    total.backward()
    assert nb_img.grad is None and nb_txt.grad is None
    grad_on.clear()
    total, parts = cross_modal_loss(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, 0.0, 0.5, 0.0)
    assert [g for _, g in grad_on] == [True, False, True, False] and grad_on[2][0] is nb_img
    total.backward()
    assert nb_img.grad is not None and nb_txt.grad is None
    want = parts["l_i2t"].item() + 0.5 * parts["l_img"].item()
    assert total.item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("hardest", [False, True])
def test_objective_triplet_option(hardest):
    args = batch(b=5, seed=7)
    total, parts = cross_modal_loss(*args, 0.0, 0.0, 0.0, loss="triplet", margin=0.4,
                                    hardest=hardest)
    img, txt, _, _, ids, _, _ = args
    pair = [[j != i for j in range(5)] for i in range(5)]
    assert total.item() == pytest.approx(ref_triplet(img, txt, txt, pair, 0.4, hardest), rel=1e-5)


def test_objective_bad_inputs_raise():
    img, txt, nb_img, nb_txt, ids, nb_ids, has_nb = batch()
    with pytest.raises(ValueError, match="loss must be one of"):
        cross_modal_loss(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, 1, 0, 0,
                         loss="contrastive")
    with pytest.raises(ValueError, match="neg_txt is given"):
        CrossModalObjective(LossConfig.for_training(
                weights=Weights(1, 0, 0), loss="angular", tan2_alpha=1.0, margin=0.2,
                hardest_negative=False, negatives="clean"))(
            img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, txt)
    with pytest.raises(ValueError, match="image_ids"):
        cross_modal_loss(img, txt, nb_img, nb_txt, ids.float(), nb_ids, has_nb, 1, 0, 0)
    with pytest.raises(ValueError, match="has_nb"):
        cross_modal_loss(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb.long(), 1, 0, 0)
    with pytest.raises(ValueError, match="nb_txt"):
        cross_modal_loss(img, txt, nb_img, nb_txt[:, :3], ids, nb_ids, has_nb, 1, 0, 0)
    with pytest.raises(ValueError, match="w_img"):
        cross_modal_loss(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, 1, -1, 0)
