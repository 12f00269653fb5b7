"""The objective under the release's negatives, against a literal transcription of the release's
tiled computation; the hinge form; how the two negative modes differ."""
import math
from dataclasses import replace

import pytest
import torch

from losses import (CrossModalObjective, LossConfig, Weights, angular_hinge_loss, angular_loss,
                    pick_negative, triplet_loss)


def unit(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    return torch.nn.functional.normalize(x, dim=-1).to(dtype)


def config(w_sym=1.0, w_img=0.3, w_text=0.2, negatives="release", loss="angular", t=1.0,
           margin=0.2, hardest=False):
    return LossConfig.for_training(weights=Weights(w_sym, w_img, w_text), loss=loss, tan2_alpha=t,
                                   margin=margin, hardest_negative=hardest, negatives=negatives)


def inputs(b=6, d=8, seed=0, has_nb=None, m=None):
    """A batch: img, txt, nb_img, nb_txt, image ids, neighbour image ids, has_nb, random texts."""
    img, txt, nb_img, nb_txt = (unit(b, d, seed=seed + k) for k in range(4))
    ids = torch.arange(b)
    has = torch.ones(b, dtype=torch.bool) if has_nb is None else torch.tensor(has_nb)
    rand = unit(m or b, d, seed=seed + 9)
    return img, txt, nb_img, nb_txt, ids, ids.roll(1), has, rand


def release_tiled(anchor, positive, negatives, t, rows=None):
    """The release's loss, transcribed literally: every anchor (and its positive) repeated B
    times, the B negatives tiled B times into one B^2-row list that every row is scored against,
    the N-pair angular loss with the row maximum subtracted, the mean over rows. `rows` keeps
    only the rows of those anchors (an anchor without a neighbour is no anchor of L_img)."""
    a64, p64, n64 = anchor.double(), positive.double(), negatives.double()
    b = len(a64)
    a = a64.repeat_interleave(b, dim=0)                  # [B^2, D]: a0 x B, a1 x B, ...
    p = p64.repeat_interleave(b, dim=0)
    n = n64.repeat(b, 1)                                 # [B^2, D]: n0..n(B-1), n0..n(B-1), ...
    f = 4 * t * (a + p) @ n.t() - 2 * (1 + t) * (a * p).sum(dim=1, keepdim=True)   # [B^2, B^2]
    top = f.max(dim=1, keepdim=True).values
    per_row = (torch.log(torch.exp(-top) + torch.exp(f - top).sum(dim=1, keepdim=True)) + top)[:, 0]
    if rows is not None:
        per_row = per_row.view(b, b)[rows]                # anchor i owns rows i*B .. i*B+B-1
    return per_row.mean().item()


def release_untiled(anchor, positive, negatives, t):
    """The release's validation loss: the same N-pair loss without the tiling."""
    total = 0.0
    for i in range(len(anchor)):
        a, p = anchor[i].double(), positive[i].double()
        f = [4 * t * float((a + p) @ n.double()) - 2 * (1 + t) * float(a @ p) for n in negatives]
        total += math.log1p(sum(math.exp(x) for x in f))
    return total / len(anchor)


# --- release against the transcription ------------------------------------------------------

@pytest.mark.parametrize("seed, t", [(0, 1.0), (1, 1.0), (2, 0.5)])
def test_release_terms_equal_the_tiled_transcription(seed, t):
    img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, rand = inputs(b=6, seed=seed)
    cfg = config(1.0, 0.3, 0.2, t=t)
    total, parts = CrossModalObjective(cfg)(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, rand)
    want = {"l_i2t": release_tiled(img, txt, rand, t), "l_sym": release_tiled(txt, img, img, t),
            "l_img": release_tiled(img, nb_img, img, t),
            "l_text": release_tiled(txt, nb_txt, rand, t)}
    for name, value in want.items():
        assert parts[name].item() == pytest.approx(value, rel=1e-5, abs=1e-5), name
    want_total = want["l_i2t"] + 1.0 * want["l_sym"] + 0.3 * want["l_img"] + 0.2 * want["l_text"]
    assert total.item() == pytest.approx(want_total, rel=1e-5)


def test_release_without_a_neighbour_the_row_is_no_anchor_but_its_image_a_negative():
    has = [True, False, True, True, False, True]
    img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, rand = inputs(b=6, seed=3, has_nb=has)
    nb_img, nb_txt = nb_img.clone(), nb_txt.clone()
    nb_img[~has_nb] = float("nan")          # filler rows: whatever they hold must not matter
    nb_txt[~has_nb] = float("nan")
    _, parts = CrossModalObjective(config())(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, rand)
    rows = [i for i, h in enumerate(has) if h]
    clean_nb = torch.nan_to_num(nb_img), torch.nan_to_num(nb_txt)
    assert parts["l_img"].item() == pytest.approx(
        release_tiled(img, clean_nb[0], img, 1.0, rows), rel=1e-5)
    assert parts["l_text"].item() == pytest.approx(
        release_tiled(txt, clean_nb[1], rand, 1.0, rows), rel=1e-5)


def test_release_validation_is_untiled_i2t_against_the_random_texts():
    img, txt, nb_img, nb_txt, ids, nb_ids, _, rand = inputs(b=5, seed=4, m=5)
    train = config(1.0, 0.3, 0.2)
    val = train.for_validation()
    no_nb = torch.zeros(5, dtype=torch.bool)
    total, parts = CrossModalObjective(val)(img, txt, img, txt, ids, ids, no_nb, rand)
    assert total.item() == pytest.approx(release_untiled(img, txt, rand, 1.0), rel=1e-5)
    assert total.item() == pytest.approx(parts["l_i2t"].item())
    _, tiled = CrossModalObjective(train)(img, txt, img, txt, ids, ids, no_nb, rand)
    assert tiled["l_i2t"].item() > total.item()
    with pytest.raises(ValueError, match="tiled"):
        replace(val, negatives="clean", tiled=True)


# --- where release and clean differ ---------------------------------------------------------

def test_own_image_sits_in_release_l_sym_and_not_in_clean():
    img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, rand = inputs(b=6, seed=5)
    b = 6
    _, rel = CrossModalObjective(config())(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, rand)
    _, cln = CrossModalObjective(config(negatives="clean"))(img, txt, nb_img, nb_txt, ids,
                                                           nb_ids, has_nb)
    # Own image: f = 4t (y + x)^T x - 2(1 + t) y^T x = 4 at t = 1, B times: the release's floor.
    floor = math.log1p(b * math.exp(4.0))
    assert rel["l_sym"].item() > floor > cln["l_sym"].item()
    everyone = torch.ones(b, b, dtype=torch.bool)
    others = ~torch.eye(b, dtype=torch.bool)
    assert rel["l_sym"].item() == pytest.approx(
        angular_loss(txt, img, img, everyone, 1.0, copies=b).item(), rel=1e-6)
    assert cln["l_sym"].item() == pytest.approx(angular_loss(txt, img, img, others, 1.0).item(),
                                                rel=1e-6)
    # The B factor alone: the release's sets counted once are log(B) lower at most.
    once = angular_loss(txt, img, img, everyone, 1.0).item()
    assert once < rel["l_sym"].item() <= once + math.log(b) + 1e-6


def test_release_text_negatives_are_the_random_texts_only():
    img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, rand = inputs(b=6, seed=6)
    objective = CrossModalObjective(config())
    _, a = objective(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, rand)
    _, b = objective(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, unit(6, 8, seed=99))
    for name in ("l_i2t", "l_text"):
        assert a[name].item() != pytest.approx(b[name].item(), rel=1e-3)
    for name in ("l_sym", "l_img"):
        assert a[name].item() == b[name].item()
    # Fewer or more random texts than the batch: the factor follows the list's length.
    _, c = objective(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, rand[:4])
    assert c["l_i2t"].item() == pytest.approx(
        angular_loss(img, txt, rand[:4], torch.ones(6, 4, dtype=torch.bool), 1.0, copies=4).item())
    with pytest.raises(ValueError, match="neg_txt"):
        objective(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb)


def test_release_gradient_reaches_every_branch_row_and_the_random_texts():
    img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, rand = (
        x.clone().requires_grad_() if x.is_floating_point() else x for x in inputs(b=5, seed=7))
    total, _ = CrossModalObjective(config())(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, rand)
    total.backward()
    for x in (img, txt, nb_img, nb_txt, rand):
        assert torch.isfinite(x.grad).all() and (x.grad.abs().sum(dim=1) > 0).all()


# --- triplet under release --------------------------------------------------------------------

@pytest.mark.parametrize("hardest", [False, True])
def test_release_triplet_takes_the_release_sets_without_the_factor(hardest):
    img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, rand = inputs(b=6, seed=8)
    cfg = config(1.0, 0.3, 0.2, loss="triplet", margin=0.3, hardest=hardest)
    _, parts = CrossModalObjective(cfg)(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, rand)
    every_text = torch.ones(6, 6, dtype=torch.bool)
    assert parts["l_i2t"].item() == pytest.approx(
        triplet_loss(img, txt, rand, every_text, 0.3, hardest).item())
    # The anchor's own image is a negative of L_sym: a hinge of exactly the margin.
    want = 0.0
    for i in range(6):
        hinges = [max(0.0, 0.3 - float(txt[i] @ img[i]) + float(txt[i] @ img[j])) for j in range(6)]
        assert hinges[i] == pytest.approx(0.3)
        want += max(hinges) if hardest else sum(hinges)
    assert parts["l_sym"].item() == pytest.approx(want / 6, rel=1e-5)


# --- the hinge form -------------------------------------------------------------------------

def ref_hinge(a, p, n, t, mask=None, has=None):
    values = []
    for i in range(len(a)):
        if mask is not None and not mask[i]:
            continue
        if has is not None and not has[i]:
            values.append(0.0)
            continue
        ai, pi, ni = (x[i].tolist() for x in (a, p, n))
        c = [(x + y) / 2 for x, y in zip(ai, pi)]
        pos = sum((x - y) ** 2 for x, y in zip(ai, pi))
        neg = sum((x - y) ** 2 for x, y in zip(ni, c))
        values.append(max(0.0, pos - 4 * t * neg))
    return sum(values) / len(values) if values else 0.0


@pytest.mark.parametrize("seed, t", [(0, 1.0), (1, 0.3), (2, 0.1)])
def test_angular_hinge_matches_reference(seed, t):
    a, p, n = unit(7, 5, seed=seed), unit(7, 5, seed=seed + 10), unit(7, 5, seed=seed + 20)
    mask = torch.tensor([True, True, False, True, True, False, True])
    has = torch.tensor([True, False, True, True, True, True, True])
    for m, h in ((None, None), (mask, None), (mask, has)):
        want = ref_hinge(a, p, n, t, m, h)
        assert angular_hinge_loss(a, p, n, t, m, h).item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert ref_hinge(a, p, n, t) > 0


def test_angular_hinge_gradcheck_and_bad_inputs():
    a, p, n = (unit(4, 3, seed=s, dtype=torch.float64).requires_grad_() for s in (0, 1, 2))
    assert torch.autograd.gradcheck(lambda *x: angular_hinge_loss(*x, 0.4), (a, p, n))
    with pytest.raises(ValueError, match="must all be"):
        angular_hinge_loss(a, p, n[:3], 1.0)
    with pytest.raises(ValueError, match="has_negative"):
        angular_hinge_loss(a, p, n, 1.0, has_negative=torch.ones(4))


def test_pick_negative_draws_uniformly_among_the_valid_and_is_seeded():
    valid = torch.tensor([[True, False, True, True, False, True],
                          [False] * 6,
                          [False, False, False, False, True, False]])
    counts = torch.zeros(6)
    g = torch.Generator().manual_seed(0)
    for _ in range(4000):
        index, has = pick_negative(valid, g)
        assert has.tolist() == [True, False, True] and index[2] == 4
        assert valid[0, index[0]]
        counts[index[0]] += 1
    assert counts[[1, 4]].sum() == 0
    assert ((counts[[0, 2, 3, 5]] - 1000).abs() < 120).all()   # about 4 sigma
    a = pick_negative(valid, torch.Generator().manual_seed(3))[0]
    b = pick_negative(valid, torch.Generator().manual_seed(3))[0]
    assert torch.equal(a, b)


@pytest.mark.parametrize("negatives", ["release", "clean"])
def test_objective_hinge_uses_one_drawn_negative_of_the_mode_s_set(negatives):
    img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, rand = inputs(b=6, seed=9)
    ids = torch.tensor([0, 0, 1, 2, 3, 4])          # rows 0 and 1 show the same image
    cfg = config(1.0, 0.3, 0.2, negatives=negatives, loss="angular-hinge", t=0.8)
    extra = (rand,) if negatives == "release" else ()
    torch.manual_seed(11)
    _, parts = CrossModalObjective(cfg)(img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, *extra)
    # The same draw by hand: four terms in order, one key per (anchor, candidate) each.
    torch.manual_seed(11)
    cands = {"l_i2t": rand if extra else txt, "l_sym": img, "l_img": img,
             "l_text": rand if extra else txt}
    setup = {"l_i2t": (img, txt, ids), "l_sym": (txt, img, ids), "l_img": (img, nb_img, nb_ids),
             "l_text": (txt, nb_txt, nb_ids)}
    for name in ("l_i2t", "l_sym", "l_img", "l_text"):
        anchor, positive, pos_ids = setup[name]
        keys = torch.rand(6, len(cands[name]))
        chosen, has = [], []
        for i in range(6):
            ok = [j for j in range(len(cands[name])) if negatives == "release"
                  or (ids[j] != ids[i] and ids[j] != pos_ids[i])]
            has.append(bool(ok))
            chosen.append(max(ok, key=lambda j: keys[i, j]) if ok else 0)
        mask = has_nb if name in ("l_img", "l_text") else None
        want = ref_hinge(anchor, positive, cands[name][chosen], 0.8, mask, has)
        assert parts[name].item() == pytest.approx(want, rel=1e-5, abs=1e-6), name


# --- config ---------------------------------------------------------------------------------

def test_loss_config_checks_and_from_args():
    import argparse
    args = argparse.Namespace(w_sym=1.0, w_img=0.3, w_text=0.2, loss="angular-hinge",
                              tan2_alpha=0.5, margin=0.1, hardest_negative=False,
                              negatives="release")
    cfg = LossConfig.from_args(args)
    assert cfg == LossConfig(weights=Weights(1.0, 0.3, 0.2), loss="angular-hinge", tan2_alpha=0.5,
                             margin=0.1, hardest_negative=False, negatives="release", tiled=True)
    assert not LossConfig.from_args(argparse.Namespace(**{**vars(args), "negatives": "clean"})).tiled
    for bad, match in (({"loss": "hinge"}, "loss must be"), ({"negatives": "x"}, "negatives"),
                       ({"weights": Weights(1.0, 0.3, -1.0)}, "w_text"), ({"tan2_alpha": 0.0}, "tan2_alpha"),
                       ({"margin": -0.1}, "margin")):
        with pytest.raises(ValueError, match=match):
            replace(cfg, **bad)
