"""Cross-modal retrieval metrics: ranks, Recall@K, median/mean rank, and the COCO 1K folds.

Protocol (the field's standard): images [Ni, D] and texts [Nt, D] are embeddings in the joint
space (unit vectors), similarity is the dot product, and `text_image[t]` is the index of text t's
image, so an image may have several texts (e.g. 5 COCO captions).

- image -> text: an image query ranks all texts; its rank is that of its FIRST correct text
  (the best-scoring of its texts).
- text -> image: a text query ranks all images; exactly one is correct.

Ranks are 0-based. Ties are broken AGAINST the query: the rank is the number of INCORRECT
candidates whose score is >= the best correct candidate's score. Constant embeddings therefore
give the worst possible rank, never a perfect score.

Memory stays bounded: the similarity matrix is computed `block` queries at a time, on the
embeddings' device, so a 25,000 x 125,000 evaluation never holds it whole.
"""
from __future__ import annotations

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


def retrieval_ranks(images: torch.Tensor, texts: torch.Tensor, text_image: torch.Tensor,
                    block: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based ranks of each query's correct answer: (i2t [Ni], t2i [Nt]) as CPU LongTensors.

    Ties count against the query (see the module docstring). `block` is the number of queries
    scored at once; the result does not depend on it.
    """
    _check_block(block)
    images, texts, text_image = _check_pair(images, texts, text_image)
    n_images = images.shape[0]
    device = images.device

    # Texts grouped by image, so each block of image queries finds its own texts as one slice.
    order = torch.argsort(text_image, stable=True)
    starts = torch.zeros(n_images + 1, dtype=torch.long, device=device)
    starts[1:] = torch.cumsum(torch.bincount(text_image, minlength=n_images), 0)

    i2t = torch.empty(n_images, dtype=torch.long)
    for s in range(0, n_images, block):
        e = min(s + block, n_images)
        scores = images[s:e] @ texts.T
        own = order[int(starts[s]):int(starts[e])]
        rows = text_image[own] - s
        own_scores = scores[rows, own]
        best = torch.full((e - s,), float("-inf"), dtype=scores.dtype, device=device)
        best = best.scatter_reduce(0, rows, own_scores, reduce="amax")
        at_least = (scores >= best[:, None]).sum(1)
        own_at_least = torch.zeros(e - s, dtype=torch.long, device=device)
        own_at_least.index_add_(0, rows, (own_scores >= best[rows]).long())
        i2t[s:e] = (at_least - own_at_least).cpu()

    n_texts = texts.shape[0]
    t2i = torch.empty(n_texts, dtype=torch.long)
    for s in range(0, n_texts, block):
        e = min(s + block, n_texts)
        scores = texts[s:e] @ images.T
        own = scores.gather(1, text_image[s:e, None])
        # The correct image is itself counted by >=, hence the -1.
        t2i[s:e] = ((scores >= own).sum(1) - 1).cpu()
    return i2t, t2i


def recall_summary(ranks: torch.Tensor) -> dict[str, float]:
    """R@1/5/10 in percent, median and mean 1-based rank (the median may end in .5)."""
    if not isinstance(ranks, torch.Tensor) or ranks.dim() != 1 or ranks.numel() == 0:
        raise ValueError("ranks must be a non-empty 1-D tensor of 0-based ranks")
    if ranks.is_floating_point() or ranks.dtype == torch.bool or ranks.min() < 0:
        raise ValueError("ranks must be non-negative integers (0 = correct answer first)")
    r = ranks.detach().cpu().numpy().astype(np.int64)
    summary = {f"r{k}": float(100.0 * np.mean(r < k)) for k in RECALL_AT}
    summary["medr"] = float(np.median(r + 1))
    summary["meanr"] = float(np.mean(r + 1))
    return summary


def retrieval_metrics(images: torch.Tensor, texts: torch.Tensor, text_image: torch.Tensor,
                      block: int = 1024) -> dict:
    """{"i2t": recall_summary, "t2i": recall_summary, "rsum": sum of the six recalls}."""
    i2t, t2i = retrieval_ranks(images, texts, text_image, block)
    result = {"i2t": recall_summary(i2t), "t2i": recall_summary(t2i)}
    result["rsum"] = sum(result[d][f"r{k}"] for d in ("i2t", "t2i") for k in RECALL_AT)
    return result


def fold_metrics(images: torch.Tensor, texts: torch.Tensor, text_image: torch.Tensor,
                 fold_size: int = 1000, block: int = 1024) -> dict | None:
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
        folds.append(retrieval_metrics(images[lo:hi], texts[keep], text_image[keep] - lo, block))
    averaged: dict = {}
    for direction in ("i2t", "t2i"):
        averaged[direction] = {key: float(np.mean([m[direction][key] for m in folds]))
                               for key in folds[0][direction]}
    averaged["rsum"] = float(np.mean([m["rsum"] for m in folds]))
    return averaged
