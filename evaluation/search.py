"""Top-k search of a gallery by query embeddings, and the results retrieve.py shows."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from evaluation.metrics import _check_block, _two_spaces


def top_k(queries: torch.Tensor, gallery: torch.Tensor, k: int, block: int = 1024
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, indices), CPU [Q, min(k, G)]: the highest dot products, best first.

    `block` queries are scored at a time, so the full similarity matrix is never held.
    """
    _check_block(block)
    queries, gallery = _two_spaces(queries, gallery, "queries", "gallery")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    k = min(k, gallery.shape[0])
    scores, indices = [], []
    for s in range(0, queries.shape[0], block):
        top = (queries[s:s + block] @ gallery.T).topk(k, dim=1)
        scores.append(top.values.cpu())
        indices.append(top.indices.cpu())
    return torch.cat(scores), torch.cat(indices)


@dataclass
class Hit:
    rank: int               # 1-based
    score: float            # cosine similarity
    image: str              # the image shown: the hit itself, or the image of a retrieved text
    label: str              # item id, and the text for a retrieved text
    correct: bool           # ground truth: the query's own image or one of its texts


@dataclass
class QueryResult:
    kind: str               # "text" (-> images) or "image" (-> texts)
    query: str              # the text, or the image file
    truth: str              # what the ground truth is, or why there is none
    hits: list[Hit] = field(default_factory=list)
