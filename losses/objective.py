"""The paper's four-term objective as one module, built once from its LossConfig.

L = L_i2t + w_sym L_sym + w_img L_img + w_text L_text, each term a loss of (anchor, positive,
negatives):

| term   | anchor | positive          | negatives under "release" | under "clean"          |
|--------|--------|-------------------|---------------------------|------------------------|
| L_i2t  | image  | its text          | B random training texts   | the batch's texts      |
| L_sym  | text   | its image         | every batch image         | the batch's images     |
| L_img  | image  | neighbour's image | every batch image         | the batch's images     |
| L_text | text   | neighbour's text  | B random training texts   | the batch's texts      |

"release" is what the authors' code computes: its B x B tiling counts each negative B times and
keeps the anchor's own image in L_sym's and L_img's sets. "clean" counts each once and leaves out
every batch row that shows the anchor's image or the positive's image.
"""
from __future__ import annotations

import argparse
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from losses.angular import angular_hinge_loss, angular_loss
from losses.triplet import triplet_loss
from losses.weights import Weights

LOSSES = ("angular", "angular-hinge", "triplet")
NEGATIVES = ("release", "clean")
TERMS = ("l_i2t", "l_sym", "l_img", "l_text")


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    """Everything the objective needs; the defaults are config.py's, through the flags.

    tiled: count each negative B times, as the release's B x B tiled training tensors do (its
    validation loss is not tiled); only with the release's negatives.
    """
    weights: Weights
    loss: str
    tan2_alpha: float
    margin: float
    hardest_negative: bool
    negatives: str
    tiled: bool

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, got {self.negatives!r}")
        self.weights.check()
        if self.tan2_alpha <= 0:
            raise ValueError(f"tan2_alpha must be > 0, got {self.tan2_alpha}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if self.tiled and self.negatives != "release":
            raise ValueError("tiled counts only with the release's negatives")

    @classmethod
    def for_training(cls, *, weights: Weights, loss: str, tan2_alpha: float, margin: float,
                     hardest_negative: bool, negatives: str) -> "LossConfig":
        """The training objective: tiled exactly when the negatives are the release's."""
        return cls(weights=Weights(*weights), loss=loss, tan2_alpha=tan2_alpha, margin=margin,
                   hardest_negative=hardest_negative, negatives=negatives,
                   tiled=negatives == "release")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "LossConfig":
        """The training objective the train script's flags describe."""
        return cls.for_training(weights=Weights.from_args(args), loss=args.loss,
                                tan2_alpha=args.tan2_alpha, margin=args.margin,
                                hardest_negative=args.hardest_negative, negatives=args.negatives)

    def for_validation(self) -> "LossConfig":
        """The release's validation loss: L_i2t alone, not tiled."""
        return replace(self, weights=self.weights.zeroed(), tiled=False)


def negative_mask(anchor_image_ids: Tensor, positive_image_ids: Tensor,
                  candidate_image_ids: Tensor) -> Tensor:
    """[B, M] bool, True where candidate j is a negative of anchor i under "clean".

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


def pick_negative(valid: Tensor, generator: torch.Generator | None = None
                  ) -> tuple[Tensor, Tensor]:
    """One valid candidate per anchor, uniformly: (index [B], has_negative [B]).

    The random keys come from the CPU generator (the global one by default, which the trainer
    seeds every epoch), so a seed fixes the draw on any device and nothing waits for the GPU.
    A row without a valid candidate gets index 0 and has_negative False.
    """
    keys = torch.rand(valid.shape, generator=generator).to(valid.device, non_blocking=True)
    keys = keys.masked_fill(~valid, -1.0)      # rand is >= 0: an invalid j never wins
    return keys.argmax(dim=1), valid.any(dim=1)


def _check_batch(img: Tensor, txt: Tensor, nb_img: Tensor, nb_txt: Tensor, image_ids: Tensor,
                 nb_image_ids: Tensor, has_nb: Tensor, neg_txt: Tensor | None,
                 negatives: str) -> None:
    for name, t in (("txt", txt), ("nb_img", nb_img), ("nb_txt", nb_txt)):
        if img.dim() != 2 or t.shape != img.shape:
            raise ValueError(f"CrossModalObjective: img and {name} must both be [B, D], got "
                             f"{tuple(img.shape)} and {tuple(t.shape)}")
    b = img.shape[0]
    for name, t in (("image_ids", image_ids), ("nb_image_ids", nb_image_ids)):
        if t.shape != (b,) or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"CrossModalObjective: {name} must be an integer tensor of shape "
                             f"({b},), got {t.dtype} {tuple(t.shape)}")
    if has_nb.shape != (b,) or has_nb.dtype != torch.bool:
        raise ValueError(f"CrossModalObjective: has_nb must be a bool tensor of shape ({b},), "
                         f"got {has_nb.dtype} {tuple(has_nb.shape)}")
    if negatives == "release":
        if neg_txt is None or neg_txt.dim() != 2 or neg_txt.shape[1] != img.shape[1] \
                or neg_txt.shape[0] < 1:
            got = "none" if neg_txt is None else tuple(neg_txt.shape)
            raise ValueError(f"CrossModalObjective: the release's negatives need neg_txt, the "
                             f"[M, {img.shape[1]}] embeddings of random texts, got {got}")
    elif neg_txt is not None:
        raise ValueError("CrossModalObjective: neg_txt is given but the negatives are 'clean' "
                         "(the batch's own texts)")


class CrossModalObjective(nn.Module):
    """forward(...) -> (total, parts): the weighted sum and every term, detached.

    Every term is computed at every step, whatever its weight, so the curves of all four exist
    for every run; a zero-weight term runs under no_grad and costs no backward.
    """

    def __init__(self, config: LossConfig):
        super().__init__()
        self.config = config

    def term(self, anchor: Tensor, positive: Tensor, candidates: Tensor, valid: Tensor,
             anchor_mask: Tensor | None) -> Tensor:
        """One term under the configured loss. angular-hinge draws its one negative per anchor
        from `valid` with the global CPU generator (seeded by the trainer every epoch)."""
        c = self.config
        if c.loss == "angular":
            copies = candidates.shape[0] if c.tiled else 1
            return angular_loss(anchor, positive, candidates, valid, c.tan2_alpha, anchor_mask,
                                copies)
        if c.loss == "triplet":
            # The tiling is the release's N-pair code; a sum of hinges would only be scaled by B.
            return triplet_loss(anchor, positive, candidates, valid, c.margin,
                                c.hardest_negative, anchor_mask)
        pick, has_negative = pick_negative(valid)
        return angular_hinge_loss(anchor, positive, candidates.index_select(0, pick),
                                  c.tan2_alpha, anchor_mask, has_negative)

    def forward(self, img: Tensor, txt: Tensor, nb_img: Tensor, nb_txt: Tensor,
                image_ids: Tensor, nb_image_ids: Tensor, has_nb: Tensor,
                neg_txt: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """img, txt: [B, D] unit embeddings of item i's image and text; nb_img, nb_txt: those of
        its sampled Doc2Vec neighbour (rows with has_nb False are filler: they are no anchor of
        L_img / L_text); image_ids, nb_image_ids: [B] integer ids of item i's image and of its
        neighbour's; neg_txt: [M, D] random texts, the release's text negatives (None under
        "clean")."""
        c = self.config
        _check_batch(img, txt, nb_img, nb_txt, image_ids, nb_image_ids, has_nb, neg_txt,
                     c.negatives)
        if c.negatives == "release":
            text_negatives = neg_txt
            every_text = torch.ones(len(img), len(neg_txt), dtype=torch.bool, device=img.device)
            every_image = torch.ones(len(img), len(img), dtype=torch.bool, device=img.device)
            valid = {"l_i2t": every_text, "l_sym": every_image, "l_img": every_image,
                     "l_text": every_text}
        else:
            text_negatives = txt
            # The anchor and its positive show the same image in l_i2t and l_sym: one mask.
            pair = negative_mask(image_ids, image_ids, image_ids)
            nb = negative_mask(image_ids, nb_image_ids, image_ids)
            valid = {"l_i2t": pair, "l_sym": pair, "l_img": nb, "l_text": nb}
        terms = {"l_i2t": (1.0, img, txt, text_negatives, None),
                 "l_sym": (c.weights.sym, txt, img, img, None),
                 "l_img": (c.weights.img, img, nb_img, img, has_nb),
                 "l_text": (c.weights.text, txt, nb_txt, text_negatives, has_nb)}
        total, parts = None, {}
        for name, (weight, anchor, positive, candidates, mask) in terms.items():
            with nullcontext() if weight else torch.no_grad():
                value = self.term(anchor, positive, candidates, valid[name], mask)
            parts[name] = value.detach()
            if total is None:
                total = value                   # l_i2t, weight 1
            elif weight:
                total = total + weight * value
        return total, parts
