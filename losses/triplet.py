"""Hinge triplet loss on cosine similarities: the sum over negatives, or VSE++'s hardest one."""
from __future__ import annotations

import torch
from torch import Tensor

from losses.angular import check_inputs, masked_mean, sanitize_positive


def triplet_loss(anchor: Tensor, positive: Tensor, candidates: Tensor, valid: Tensor,
                 margin: float, hardest: bool = False,
                 anchor_mask: Tensor | None = None) -> Tensor:
    """Mean over anchors of sum_{j valid} max(0, margin - a^T p + a^T n_j).

    With hardest=True only the valid negative with the largest hinge counts (VSE++). Shapes and
    masks as in angular_loss; an anchor with no valid candidate contributes 0. Returns float32
    (float64 for float64 inputs).
    """
    check_inputs(anchor, positive, candidates, valid, anchor_mask, "triplet_loss")
    if margin < 0:
        raise ValueError(f"triplet_loss: margin must be >= 0, got {margin}")
    positive = sanitize_positive(positive, anchor_mask)
    with torch.autocast(device_type=anchor.device.type, enabled=False):
        dtype = torch.promote_types(anchor.dtype, torch.float32)
        a, p, n = anchor.to(dtype), positive.to(dtype), candidates.to(dtype)
        positive_sim = (a * p).sum(dim=1, keepdim=True)                          # [B, 1]
        hinge = (margin - positive_sim + a @ n.t()).clamp(min=0)                 # [B, M]
        # Hinges are >= 0, so a 0 for invalid j changes neither the sum nor the max.
        hinge = hinge.masked_fill(~valid, 0.0)
        # amax has no identity for M = 0; the sum's 0 is the right answer there.
        per_anchor = hinge.amax(dim=1) if hardest and hinge.shape[1] else hinge.sum(dim=1)
        return masked_mean(per_anchor, anchor_mask)
