"""The angular loss (Wang et al. 2017) in its two forms: the N-pair form the authors' release
trains, and the hinge form with one negative per anchor that the paper writes."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def check_inputs(anchor: Tensor, positive: Tensor, candidates: Tensor, valid: Tensor,
                 anchor_mask: Tensor | None, name: str) -> None:
    """Raise a one-line ValueError when the shapes or dtypes of a loss call do not fit."""
    if anchor.dim() != 2 or positive.shape != anchor.shape:
        raise ValueError(f"{name}: anchor and positive must both be [B, D], got "
                         f"{tuple(anchor.shape)} and {tuple(positive.shape)}")
    if candidates.dim() != 2 or candidates.shape[1] != anchor.shape[1]:
        raise ValueError(f"{name}: candidates must be [M, {anchor.shape[1]}], "
                         f"got {tuple(candidates.shape)}")
    expected = (anchor.shape[0], candidates.shape[0])
    if valid.dtype != torch.bool or tuple(valid.shape) != expected:
        raise ValueError(f"{name}: valid must be a bool tensor of shape {expected}, "
                         f"got {valid.dtype} {tuple(valid.shape)}")
    if anchor_mask is not None and (anchor_mask.dtype != torch.bool
                                    or tuple(anchor_mask.shape) != (anchor.shape[0],)):
        raise ValueError(f"{name}: anchor_mask must be a bool tensor of shape "
                         f"({anchor.shape[0]},), got {anchor_mask.dtype} "
                         f"{tuple(anchor_mask.shape)}")


def masked_mean(per_anchor: Tensor, anchor_mask: Tensor | None) -> Tensor:
    """Mean over the masked anchors; with none it is a zero still tied to the graph, so that
    backward and DDP's gradient hooks see every parameter."""
    if anchor_mask is None:
        return per_anchor.mean() if per_anchor.numel() else per_anchor.sum()
    kept = torch.where(anchor_mask, per_anchor, torch.zeros_like(per_anchor))
    return kept.sum() / anchor_mask.sum().clamp(min=1)


def sanitize_positive(positive: Tensor, anchor_mask: Tensor | None) -> Tensor:
    """Zero the filler rows of unmasked anchors: a NaN there would otherwise leak into the
    gradient (0 * NaN) even though the row's loss is dropped."""
    if anchor_mask is None:
        return positive
    return positive.masked_fill(~anchor_mask[:, None], 0.0)


def angular_loss(anchor: Tensor, positive: Tensor, candidates: Tensor, valid: Tensor,
                 tan2_alpha: float, anchor_mask: Tensor | None = None, copies: int = 1) -> Tensor:
    """Mean over anchors of log(1 + copies * sum_{j valid} exp(4t (a+p)^T n_j - 2(1+t) a^T p)).

    anchor, positive: [B, D]; candidates: [M, D]; valid[i, j] True when candidate j is a
    negative of anchor i; t = tan2_alpha. `copies` counts every negative that many times: the
    release evaluates its loss on B x B tiled tensors, so there each anchor sees each negative B
    times. Anchors outside anchor_mask are left out of the mean; an anchor with no valid candidate
    contributes log(1) = 0. Returns a float32 scalar (float64 for float64 inputs).
    """
    check_inputs(anchor, positive, candidates, valid, anchor_mask, "angular_loss")
    if tan2_alpha <= 0:
        raise ValueError(f"angular_loss: tan2_alpha must be > 0, got {tan2_alpha}")
    if copies < 1:
        raise ValueError(f"angular_loss: copies must be at least 1, got {copies}")
    positive = sanitize_positive(positive, anchor_mask)
    # Logits are exponentiated: bf16 keeps about 3 significant digits, too coarse, so autocast is
    # switched off and everything runs in float32 (float64 inputs stay float64).
    with torch.autocast(device_type=anchor.device.type, enabled=False):
        dtype = torch.promote_types(anchor.dtype, torch.float32)
        a, p, n = anchor.to(dtype), positive.to(dtype), candidates.to(dtype)
        pull = 2.0 * (1.0 + tan2_alpha) * (a * p).sum(dim=1, keepdim=True)      # [B, 1]
        logits = 4.0 * tan2_alpha * (a + p) @ n.t() - pull                      # [B, M]
        if copies != 1:
            logits = logits + math.log(copies)      # copies * exp(x) = exp(x + log copies)
        logits = logits.masked_fill(~valid, float("-inf"))
        # The zero column is the "1 +": it keeps logsumexp finite when no j is valid.
        logits = torch.cat([logits.new_zeros(logits.shape[0], 1), logits], dim=1)
        per_anchor = torch.logsumexp(logits, dim=1)
        return masked_mean(per_anchor, anchor_mask)


def angular_hinge_loss(anchor: Tensor, positive: Tensor, negative: Tensor, tan2_alpha: float,
                       anchor_mask: Tensor | None = None,
                       has_negative: Tensor | None = None) -> Tensor:
    """Mean over anchors of [ |a - p|^2 - 4t |n - c|^2 ]_+ with c = (a + p) / 2, t = tan2_alpha.

    anchor, positive, negative: [B, D], one negative per anchor. Rows with has_negative False
    contribute 0 (an anchor that had no negative to draw); anchors outside anchor_mask are left
    out of the mean. Returns float32 (float64 for float64 inputs).
    """
    if anchor.dim() != 2 or positive.shape != anchor.shape or negative.shape != anchor.shape:
        raise ValueError(f"angular_hinge_loss: anchor, positive and negative must all be [B, D], "
                         f"got {tuple(anchor.shape)}, {tuple(positive.shape)} and "
                         f"{tuple(negative.shape)}")
    b = anchor.shape[0]
    for name, m in (("anchor_mask", anchor_mask), ("has_negative", has_negative)):
        if m is not None and (m.dtype != torch.bool or tuple(m.shape) != (b,)):
            raise ValueError(f"angular_hinge_loss: {name} must be a bool tensor of shape ({b},), "
                             f"got {m.dtype} {tuple(m.shape)}")
    if tan2_alpha <= 0:
        raise ValueError(f"angular_hinge_loss: tan2_alpha must be > 0, got {tan2_alpha}")
    positive = sanitize_positive(positive, anchor_mask)
    with torch.autocast(device_type=anchor.device.type, enabled=False):
        dtype = torch.promote_types(anchor.dtype, torch.float32)
        a, p, n = anchor.to(dtype), positive.to(dtype), negative.to(dtype)
        hinge = ((a - p).pow(2).sum(dim=1)
                 - 4.0 * tan2_alpha * (n - (a + p) / 2).pow(2).sum(dim=1)).clamp(min=0)
        if has_negative is not None:
            hinge = torch.where(has_negative, hinge, torch.zeros_like(hinge))
        return masked_mean(hinge, anchor_mask)
