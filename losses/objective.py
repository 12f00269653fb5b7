"""The paper's four-term objective with in-batch negatives that exclude each anchor's positive."""
from __future__ import annotations

import torch
from torch import Tensor

from losses.angular import angular_loss
from losses.triplet import triplet_loss

LOSSES = ("angular", "triplet")


def negative_mask(anchor_image_ids: Tensor, positive_image_ids: Tensor,
                  candidate_image_ids: Tensor) -> Tensor:
    """[B, M] bool, True where candidate j is a negative of anchor i.

    A candidate showing the anchor's image or the positive's image is not a negative: that
    drops the anchor's own positive (the authors' release kept it) and, with several captions
    per image, the other captions of the same image.
    """
    if anchor_image_ids.dim() != 1 or positive_image_ids.shape != anchor_image_ids.shape:
        raise ValueError(f"negative_mask: anchor and positive image ids must both be [B], got "
                         f"{tuple(anchor_image_ids.shape)} and {tuple(positive_image_ids.shape)}")
    if candidate_image_ids.dim() != 1:
        raise ValueError(f"negative_mask: candidate image ids must be [M], "
                         f"got {tuple(candidate_image_ids.shape)}")
    candidates = candidate_image_ids[None, :]
    return (candidates != anchor_image_ids[:, None]) & (candidates != positive_image_ids[:, None])


def _check_batch(img: Tensor, txt: Tensor, nb_img: Tensor, nb_txt: Tensor, image_ids: Tensor,
                 nb_image_ids: Tensor, has_nb: Tensor) -> None:
    for name, t in (("txt", txt), ("nb_img", nb_img), ("nb_txt", nb_txt)):
        if img.dim() != 2 or t.shape != img.shape:
            raise ValueError(f"cross_modal_loss: img and {name} must both be [B, D], got "
                             f"{tuple(img.shape)} and {tuple(t.shape)}")
    b = img.shape[0]
    for name, t in (("image_ids", image_ids), ("nb_image_ids", nb_image_ids)):
        if t.shape != (b,) or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"cross_modal_loss: {name} must be an integer tensor of shape "
                             f"({b},), got {t.dtype} {tuple(t.shape)}")
    if has_nb.shape != (b,) or has_nb.dtype != torch.bool:
        raise ValueError(f"cross_modal_loss: has_nb must be a bool tensor of shape ({b},), "
                         f"got {has_nb.dtype} {tuple(has_nb.shape)}")


def cross_modal_loss(img: Tensor, txt: Tensor, nb_img: Tensor, nb_txt: Tensor,
                     image_ids: Tensor, nb_image_ids: Tensor, has_nb: Tensor,
                     w_sym: float, w_img: float, w_text: float,
                     loss: str = "angular", tan2_alpha: float = 1.0, margin: float = 0.2,
                     hardest: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """L = l_i2t + w_sym l_sym + w_img l_img + w_text l_text over one batch.

    img, txt: [B, D] unit embeddings of item i's image and text; nb_img, nb_txt: those of its
    sampled Doc2Vec neighbour (rows with has_nb False are filler and ignored); image_ids and
    nb_image_ids: [B] integer ids of item i's image and of its neighbour's image. Negatives are
    the in-batch rows, minus those sharing the anchor's or the positive's image. A zero weight
    skips its term entirely. Returns the total and the detached parts.
    """
    _check_batch(img, txt, nb_img, nb_txt, image_ids, nb_image_ids, has_nb)
    if loss not in LOSSES:
        raise ValueError(f"cross_modal_loss: loss must be one of {LOSSES}, got {loss!r}")
    for name, w in (("w_sym", w_sym), ("w_img", w_img), ("w_text", w_text)):
        if w < 0:
            raise ValueError(f"cross_modal_loss: {name} must be >= 0, got {w}")

    def term(anchor: Tensor, positive: Tensor, candidates: Tensor, valid: Tensor,
             anchor_mask: Tensor | None) -> Tensor:
        if loss == "angular":
            return angular_loss(anchor, positive, candidates, valid, tan2_alpha, anchor_mask)
        return triplet_loss(anchor, positive, candidates, valid, margin, hardest, anchor_mask)

    # The anchor and its positive show the same image in l_i2t and l_sym, so one mask serves.
    pair_valid = negative_mask(image_ids, image_ids, image_ids)
    l_i2t = term(img, txt, txt, pair_valid, None)
    total = l_i2t
    parts = {"l_i2t": l_i2t.detach()}
    for name in ("l_sym", "l_img", "l_text"):
        parts[name] = torch.zeros((), dtype=l_i2t.dtype, device=l_i2t.device)
    if w_sym:
        l_sym = term(txt, img, img, pair_valid, None)
        total = total + w_sym * l_sym
        parts["l_sym"] = l_sym.detach()
    if w_img or w_text:
        nb_valid = negative_mask(image_ids, nb_image_ids, image_ids)
        if w_img:
            l_img = term(img, nb_img, img, nb_valid, has_nb)
            total = total + w_img * l_img
            parts["l_img"] = l_img.detach()
        if w_text:
            l_text = term(txt, nb_txt, txt, nb_valid, has_nb)
            total = total + w_text * l_text
            parts["l_text"] = l_text.detach()
    return total, parts
