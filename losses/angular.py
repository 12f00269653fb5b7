"""The N-pair angular loss (Wang et al. 2017), the loss of every term of the paper's objective."""
from __future__ import annotations

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
                 tan2_alpha: float = 1.0, anchor_mask: Tensor | None = None) -> Tensor:
    """Mean over anchors of log(1 + sum_{j valid} exp(4t (a+p)^T n_j - 2(1+t) a^T p)).

    anchor, positive: [B, D]; candidates: [M, D]; valid[i, j] True when candidate j is a
    negative of anchor i; t = tan2_alpha. Anchors outside anchor_mask are left out of the mean;
    an anchor with no valid candidate contributes log(1) = 0. Returns a float32 scalar
    (float64 for float64 inputs).
    """
    check_inputs(anchor, positive, candidates, valid, anchor_mask, "angular_loss")
    if tan2_alpha <= 0:
        raise ValueError(f"angular_loss: tan2_alpha must be > 0, got {tan2_alpha}")
    positive = sanitize_positive(positive, anchor_mask)
    # Logits are exponentiated: bf16 keeps about 3 significant digits, too coarse, so autocast is
    # switched off and everything runs in float32 (float64 inputs stay float64).
    with torch.autocast(device_type=anchor.device.type, enabled=False):
        dtype = torch.promote_types(anchor.dtype, torch.float32)
        a, p, n = anchor.to(dtype), positive.to(dtype), candidates.to(dtype)
        pull = 2.0 * (1.0 + tan2_alpha) * (a * p).sum(dim=1, keepdim=True)      # [B, 1]
        logits = 4.0 * tan2_alpha * (a + p) @ n.t() - pull                      # [B, M]
        logits = logits.masked_fill(~valid, float("-inf"))
        # The zero column is the "1 +": it keeps logsumexp finite when no j is valid.
        logits = torch.cat([logits.new_zeros(logits.shape[0], 1), logits], dim=1)
        per_anchor = torch.logsumexp(logits, dim=1)
        return masked_mean(per_anchor, anchor_mask)
