"""Neighbourhood metrics: does the joint space keep the semantic neighbours (the paper's claim)?

- knn_overlap: how many of each item's k nearest neighbours in a reference space (e.g. Doc2Vec)
  are also among its k nearest in the learned space.
- label_precision: precision@k of same-label items among the top-k retrieved.

Both work `block` query rows at a time on the inputs' device, so memory stays bounded. Exact ties
at the k-th place are resolved by torch.topk, which is deterministic for a given input.
"""
from __future__ import annotations

import torch

from evaluation.metrics import _check_block, _two_spaces


def _unit_rows(x: torch.Tensor, name: str) -> torch.Tensor:
    norms = x.norm(dim=1)
    if (norms == 0).any():
        row = int(torch.nonzero(norms == 0)[0])
        raise ValueError(f"{name} row {row} is all zeros, so its cosine similarity is undefined: "
                         "drop it or fix its embedding")
    return x / norms[:, None]


def _top_k(queries: torch.Tensor, gallery: torch.Tensor, k: int, self_offset: int | None
           ) -> torch.Tensor:
    """Indices of the k highest dot products per query row; with self_offset, query row i
    is gallery row self_offset + i and is never returned."""
    scores = queries @ gallery.T
    if self_offset is not None:
        rows = torch.arange(scores.shape[0], device=scores.device)
        scores[rows, rows + self_offset] = float("-inf")
    return scores.topk(k, dim=1).indices


def knn_overlap(reference: torch.Tensor, learned: torch.Tensor, k: int = 10,
                block: int = 1024) -> float:
    """Mean over rows of |A ∩ B| / k, a fraction in [0, 1]: 1.0 when the spaces agree, about
    k / (N - 1) for unrelated ones; invariant to rescaling either space's rows."""
    hits = knn_overlap_hits(reference, learned, k, block)
    return int(hits.sum()) / (hits.numel() * k)


def knn_overlap_hits(reference: torch.Tensor, learned: torch.Tensor, k: int = 10,
                     block: int = 1024) -> torch.Tensor:
    """|A ∩ B| of each row, a CPU LongTensor [N] (the per-query values behind knn_overlap).

    A and B are the row's k nearest OTHER rows by cosine similarity in `reference` [N, Dr] and
    `learned` [N, Dl].
    """
    _check_block(block)
    reference, learned = _two_spaces(reference, learned, "reference", "learned", same_dim=False)
    if reference.shape[0] != learned.shape[0]:
        raise ValueError(f"reference has {reference.shape[0]} rows but learned "
                         f"{learned.shape[0]}: give both spaces' embeddings of the same items")
    n = reference.shape[0]
    if not isinstance(k, int) or not 1 <= k <= n - 1:
        raise ValueError(f"k must be an int in [1, {n - 1}] (rows other than the query), got {k!r}")
    reference = _unit_rows(reference, "reference")
    learned = _unit_rows(learned, "learned")
    hits = torch.empty(n, dtype=torch.long)
    for s in range(0, n, block):
        e = min(s + block, n)
        a = _top_k(reference[s:e], reference, k, s)
        b = _top_k(learned[s:e], learned, k, s)
        in_a = torch.zeros(e - s, n, dtype=torch.bool, device=a.device).scatter_(1, a, True)
        hits[s:e] = in_a.gather(1, b).sum(1).cpu()
    return hits


def label_precision(queries: torch.Tensor, gallery: torch.Tensor, query_labels: torch.Tensor,
                    gallery_labels: torch.Tensor, k: int = 10, exclude_self: bool = False,
                    block: int = 1024) -> float:
    """Mean over queries of the FRACTION (0..1) of the top-k gallery items sharing its label
    (see label_precision_hits)."""
    hits = label_precision_hits(queries, gallery, query_labels, gallery_labels, k, exclude_self,
                                block)
    return int(hits.sum()) / (hits.numel() * k)


def label_precision_hits(queries: torch.Tensor, gallery: torch.Tensor,
                         query_labels: torch.Tensor, gallery_labels: torch.Tensor, k: int = 10,
                         exclude_self: bool = False, block: int = 1024) -> torch.Tensor:
    """How many of each query's top-k gallery items share its label: a CPU LongTensor [Nq].

    Similarity is the dot product (cosine for the unit embeddings of the joint space).
    exclude_self=True is for image->image or text->text, where query i is gallery item i and
    must not retrieve itself.
    """
    _check_block(block)
    queries, gallery = _two_spaces(queries, gallery, "queries", "gallery")
    for name, labels, rows in (("query_labels", query_labels, queries.shape[0]),
                               ("gallery_labels", gallery_labels, gallery.shape[0])):
        if (not isinstance(labels, torch.Tensor) or labels.dim() != 1
                or labels.dtype.is_floating_point or labels.shape[0] != rows):
            raise ValueError(f"{name} must be a 1-D integer tensor with one label per row "
                             f"({rows} rows)")
    if exclude_self and queries.shape[0] != gallery.shape[0]:
        raise ValueError(f"exclude_self needs query i to be gallery item i, but there are "
                         f"{queries.shape[0]} queries and {gallery.shape[0]} gallery items")
    available = gallery.shape[0] - (1 if exclude_self else 0)
    if not isinstance(k, int) or not 1 <= k <= available:
        raise ValueError(f"k must be an int in [1, {available}] (gallery items a query can "
                         f"retrieve), got {k!r}")
    query_labels = query_labels.to(queries.device)
    gallery_labels = gallery_labels.to(queries.device)
    n = queries.shape[0]
    hits = torch.empty(n, dtype=torch.long)
    for s in range(0, n, block):
        e = min(s + block, n)
        top = _top_k(queries[s:e], gallery, k, s if exclude_self else None)
        hits[s:e] = (gallery_labels[top] == query_labels[s:e, None]).sum(1).cpu()
    return hits
