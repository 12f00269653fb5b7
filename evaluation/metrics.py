"""Cross-modal retrieval metrics: ranks, Recall@K, median/mean rank, and the COCO 1K folds.

Protocol (the field's standard): images [Ni, D] and texts [Nt, D] are embeddings in the joint
space (unit vectors), similarity is the dot product, and `text_image[t]` is the index of text t's
image, so an image may have several texts (e.g. 5 COCO captions).

- image -> text: an image query ranks all texts; its rank is that of its FIRST correct text
  (the best-scoring of its texts).
- text -> image: a text query ranks all images; exactly one is correct.

Ranks are 0-based: the number of INCORRECT candidates ranked ahead of the correct one. Exact
ties between an incorrect candidate and the correct one are broken by one of two rules:

- "stable" (the default, as open_clip breaks them): the candidates are ordered by score, and
  equal scores by index, lower first (open_clip sorts with torch.argsort, which gives that
  order on small inputs but is not guaranteed stable; this rule is its deterministic form). A tied incorrect candidate is
  ahead of the correct one only when its index is lower. With constant embeddings every query's
  rank is then the correct candidate's position in the index order, which over the queries
  scores like chance, never perfectly.
- "worst" (this project's earlier rule): every tied incorrect candidate is ahead, so constant
  embeddings get the worst rank; a query whose correct text has an identical twin elsewhere in
  the split is never a hit at R@1.

Median rank is reported as VSE++ and open_clip compute it, floor(median(0-based ranks)) + 1,
an integer (with an even number of queries the median of two ranks is rounded down); mean rank
is the plain mean of the 1-based ranks.

Memory stays bounded: the similarity matrix is computed `block` queries at a time, on the
embeddings' device, so a 25,000 x 125,000 evaluation never holds it whole.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

RECALL_AT = (1, 5, 10)


def _embeddings(x: torch.Tensor, name: str) -> torch.Tensor:
    """Check a [N, D] float embedding matrix; half precision is upcast so ties are not invented."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"{name} must be a 2-D tensor [N, D], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor, got {x.dtype}: pass the embeddings")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: evaluate a split with at least one item")
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values: check the model's output")
    return x


def _check_block(block: int) -> None:
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive int (queries per step), got {block!r}")


def _two_spaces(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str, same_dim: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Both embedding matrices checked and on one device; when same_dim (they are multiplied
    together), also of one dimension and one dtype, the wider of the two."""
    a, b = _embeddings(a, name_a), _embeddings(b, name_b)
    if same_dim and a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} have dimension {a.shape[1]} but {name_b} {b.shape[1]}: "
                         "both must be embedded in the same joint space")
    if a.device != b.device:
        raise ValueError(f"{name_a} are on {a.device} but {name_b} on {b.device}: "
                         "move both to one device")
    if not same_dim:
        return a, b
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def _check_pair(images: torch.Tensor, texts: torch.Tensor,
                text_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images, texts = _two_spaces(images, texts, "images", "texts")
    if (not isinstance(text_image, torch.Tensor) or text_image.dim() != 1
            or text_image.dtype.is_floating_point or text_image.dtype == torch.bool):
        raise ValueError("text_image must be a 1-D integer tensor giving each text's image index")
    if text_image.shape[0] != texts.shape[0]:
        raise ValueError(f"text_image has {text_image.shape[0]} entries but there are "
                         f"{texts.shape[0]} texts: give one image index per text")
    text_image = text_image.to(device=images.device, dtype=torch.long)
    n_images = images.shape[0]
    if text_image.min() < 0 or text_image.max() >= n_images:
        raise ValueError(f"text_image holds indices outside [0, {n_images}): "
                         "each entry must index a row of images")
    counts = torch.bincount(text_image, minlength=n_images)
    if (counts == 0).any():
        missing = int(torch.nonzero(counts == 0)[0])
        raise ValueError(f"image {missing} has no text, so image->text retrieval is undefined "
                         "for it: drop images without texts before evaluating")
    return images, texts, text_image


TIES = ("stable", "worst")


@dataclass
class Ranks:
    """Per-query rank parts in both directions (CPU LongTensors, [Ni] for i2t, [Nt] for t2i):
    incorrect candidates scoring strictly higher than the correct one (`above`), tied with it at
    a lower index (`tied_before`), and tied with it at all (`tied`)."""
    above: dict[str, torch.Tensor]
    tied_before: dict[str, torch.Tensor]
    tied: dict[str, torch.Tensor]

    def under(self, ties: str) -> tuple[torch.Tensor, torch.Tensor]:
        """0-based ranks (i2t, t2i) under a tie rule."""
        _check_ties(ties)
        extra = self.tied_before if ties == "stable" else self.tied
        return self.above["i2t"] + extra["i2t"], self.above["t2i"] + extra["t2i"]

    def tie_counts(self) -> dict[str, int]:
        """How many queries of each direction had an incorrect candidate tied with the correct one."""
        return {d: int((self.tied[d] > 0).sum()) for d in ("i2t", "t2i")}


def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")


def rank_parts(images: torch.Tensor, texts: torch.Tensor, text_image: torch.Tensor,
               block: int = 1024) -> Ranks:
    """Everything either tie rule needs, in one pass over the similarities.

    Image query i: its correct text is the best-scoring of its texts, the lowest-indexed of
    them when several share that score (the one a sort by score, then index, meets first).
    """
    _check_block(block)
    images, texts, text_image = _check_pair(images, texts, text_image)
    n_images, n_texts = images.shape[0], texts.shape[0]
    device = images.device
    text_index = torch.arange(n_texts, device=device)
    image_index = torch.arange(n_images, device=device)

    # Texts grouped by image, so each block of image queries finds its own texts as one slice.
    order = torch.argsort(text_image, stable=True)
    starts = torch.zeros(n_images + 1, dtype=torch.long, device=device)
    starts[1:] = torch.cumsum(torch.bincount(text_image, minlength=n_images), 0)

    parts = {name: {"i2t": torch.empty(n_images, dtype=torch.long),
                    "t2i": torch.empty(n_texts, dtype=torch.long)}
             for name in ("above", "tied_before", "tied")}
    for s in range(0, n_images, block):
        e = min(s + block, n_images)
        scores = images[s:e] @ texts.T
        own = order[int(starts[s]):int(starts[e])]
        rows = text_image[own] - s
        own_scores = scores[rows, own]
        best = torch.full((e - s,), float("-inf"), dtype=scores.dtype, device=device)
        best = best.scatter_reduce(0, rows, own_scores, reduce="amax")
        at_best = own_scores == best[rows]
        first = torch.full((e - s,), n_texts, dtype=torch.long, device=device)
        first = first.scatter_reduce(0, rows[at_best], own[at_best], reduce="amin")
        own_tied = torch.zeros(e - s, dtype=torch.long, device=device).index_add_(
            0, rows, at_best.long())
        equal = scores == best[:, None]
        # No correct text scores above `best`, and none at `best` has an index below `first`.
        parts["above"]["i2t"][s:e] = (scores > best[:, None]).sum(1).cpu()
        parts["tied"]["i2t"][s:e] = (equal.sum(1) - own_tied).cpu()
        parts["tied_before"]["i2t"][s:e] = (equal & (text_index < first[:, None])).sum(1).cpu()

    for s in range(0, n_texts, block):
        e = min(s + block, n_texts)
        scores = texts[s:e] @ images.T
        right = text_image[s:e, None]
        own = scores.gather(1, right)
        equal = scores == own
        parts["above"]["t2i"][s:e] = (scores > own).sum(1).cpu()
        parts["tied"]["t2i"][s:e] = (equal.sum(1) - 1).cpu()   # the correct image ties itself
        parts["tied_before"]["t2i"][s:e] = (equal & (image_index < right)).sum(1).cpu()
    return Ranks(parts["above"], parts["tied_before"], parts["tied"])


def retrieval_ranks(images: torch.Tensor, texts: torch.Tensor, text_image: torch.Tensor,
                    block: int = 1024, ties: str = "stable") -> tuple[torch.Tensor, torch.Tensor]:
    """0-based ranks of each query's correct answer: (i2t [Ni], t2i [Nt]) as CPU LongTensors.

    `ties` is the tie rule (see the module docstring). `block` is the number of queries scored
    at once; the result does not depend on it.
    """
    _check_ties(ties)
    return rank_parts(images, texts, text_image, block).under(ties)


def recall_summary(ranks: torch.Tensor) -> dict[str, float]:
    """R@1/5/10 in percent, median rank (VSE++'s integer form) and mean 1-based rank."""
    if not isinstance(ranks, torch.Tensor) or ranks.dim() != 1 or ranks.numel() == 0:
        raise ValueError("ranks must be a non-empty 1-D tensor of 0-based ranks")
    if ranks.is_floating_point() or ranks.dtype == torch.bool or ranks.min() < 0:
        raise ValueError("ranks must be non-negative integers (0 = correct answer first)")
    r = ranks.detach().cpu().numpy().astype(np.int64)
    summary = {f"r{k}": float(100.0 * np.mean(r < k)) for k in RECALL_AT}
    summary["medr"] = float(np.floor(np.median(r)) + 1)
    summary["meanr"] = float(np.mean(r + 1))
    return summary


def summarize(i2t: torch.Tensor, t2i: torch.Tensor) -> dict:
    """{"i2t": recall_summary, "t2i": recall_summary, "rsum": sum of the six recalls}."""
    result = {"i2t": recall_summary(i2t), "t2i": recall_summary(t2i)}
    result["rsum"] = sum(result[d][f"r{k}"] for d in ("i2t", "t2i") for k in RECALL_AT)
    return result


def retrieval_metrics(images: torch.Tensor, texts: torch.Tensor, text_image: torch.Tensor,
                      block: int = 1024, ties: str = "stable") -> dict:
    """{"i2t": recall_summary, "t2i": recall_summary, "rsum": sum of the six recalls}."""
    return summarize(*retrieval_ranks(images, texts, text_image, block, ties))


def fold_metrics(images: torch.Tensor, texts: torch.Tensor, text_image: torch.Tensor,
                 fold_size: int = 1000, block: int = 1024, ties: str = "stable") -> dict | None:
    """retrieval_metrics on consecutive folds of `fold_size` images, each key averaged over folds.

    Fold f holds images [f * fold_size, (f + 1) * fold_size) and the texts of those images (the
    COCO 1K protocol). A trailing partial fold is dropped. None when there are fewer than two
    full folds, where the full-split metrics already say everything.
    """
    if not isinstance(fold_size, int) or fold_size < 1:
        raise ValueError(f"fold_size must be a positive int, got {fold_size!r}")
    images, texts, text_image = _check_pair(images, texts, text_image)
    n_folds = images.shape[0] // fold_size
    if n_folds < 2:
        return None
    folds = []
    for f in range(n_folds):
        lo, hi = f * fold_size, (f + 1) * fold_size
        keep = (text_image >= lo) & (text_image < hi)
        folds.append(retrieval_metrics(images[lo:hi], texts[keep], text_image[keep] - lo, block,
                                       ties))
    averaged: dict = {}
    for direction in ("i2t", "t2i"):
        averaged[direction] = {key: float(np.mean([m[direction][key] for m in folds]))
                               for key in folds[0][direction]}
    averaged["rsum"] = float(np.mean([m["rsum"] for m in folds]))
    return averaged
