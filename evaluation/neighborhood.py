"""Nearest neighbours: the one blocked top-k search, and the metrics built on it.

- top_k: the k highest dot products of each query row in a gallery (retrieve.py's results too).
- knn_overlap: how many of each item's k nearest neighbours in a reference space (e.g. Doc2Vec)
  are also among its k nearest in the learned space (the paper's claim).
- label_precision: precision@k of same-label items among the top-k retrieved.
- doc2vec_model_path: the Doc2Vec model whose space knn_overlap compares against.

The search works `block` query rows at a time on the inputs' device, so the similarity matrix is
never held whole. Exact ties at the k-th place are resolved by torch.topk, which is
deterministic for a given input.
"""
from __future__ import annotations

from pathlib import Path

import torch

from common.errors import InputError
from common.workdir import DOC2VEC_MODEL
from data.datasets import provenance
from evaluation.metrics import _check_block, _two_spaces
from models import Vocabulary


def top_k(queries: torch.Tensor, gallery: torch.Tensor, k: int, block: int = 1024,
          exclude_self: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, indices) [Q, k'] on the inputs' device: the highest dot products, best first.

    k' is k, or fewer when the gallery holds fewer items. exclude_self=True is for a gallery
    that is the queries themselves (image->image, text->text): query i never returns item i.
    """
    _check_block(block)
    queries, gallery = _two_spaces(queries, gallery, "queries", "gallery")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if exclude_self and queries.shape[0] != gallery.shape[0]:
        raise ValueError(f"exclude_self needs query i to be gallery item i, but there are "
                         f"{queries.shape[0]} queries and {gallery.shape[0]} gallery items")
    k = min(k, gallery.shape[0] - int(exclude_self))
    if k < 1:
        raise ValueError("the gallery holds no item other than the query itself")
    scores, indices = [], []
    for s in range(0, queries.shape[0], block):
        sims = queries[s:s + block] @ gallery.T
        if exclude_self:
            rows = torch.arange(sims.shape[0], device=sims.device)
            sims[rows, rows + s] = float("-inf")
        top = sims.topk(k, dim=1)
        scores.append(top.values)
        indices.append(top.indices)
    return torch.cat(scores), torch.cat(indices)


def _unit_rows(x: torch.Tensor, name: str) -> torch.Tensor:
    norms = x.norm(dim=1)
    if (norms == 0).any():
        row = int(torch.nonzero(norms == 0)[0])
        raise ValueError(f"{name} row {row} is all zeros, so its cosine similarity is undefined: "
                         "drop it or fix its embedding")
    return x / norms[:, None]


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
    a = top_k(reference, reference, k, block, exclude_self=True)[1]
    b = top_k(learned, learned, k, block, exclude_self=True)[1]
    # A row's k indices are distinct, so the equal pairs of its two lists are |A ∩ B|; compared
    # `block` rows at a time to bound the [rows, k, k] comparison.
    hits = torch.empty(n, dtype=torch.long)
    for s in range(0, n, block):
        hits[s:s + block] = (a[s:s + block, :, None] == b[s:s + block, None, :]).sum((1, 2)).cpu()
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
    top = top_k(queries, gallery, k, block, exclude_self)[1]
    gallery_labels = gallery_labels.to(queries.device)
    query_labels = query_labels.to(queries.device)
    return (gallery_labels[top] == query_labels[:, None]).sum(1).cpu()


def doc2vec_model_path(work_dir: str | Path, checkpoint: str | Path, vocab: Vocabulary,
                       record: dict | None = None) -> tuple[Path | None, str]:
    """(path of the work folder's Doc2Vec model, "") or (None, why the metric is skipped).

    A model that is not the one the checkpoint was trained beside is an error, not a skip: its
    space is not the one the checkpoint was trained to preserve, so the number would be
    meaningless. The vocabulary tells another dataset; `record`, the checkpoint's provenance,
    also tells a retraining on the same words (another --window, another seed).
    """
    # Imported here: retrieve.py searches with top_k and never needs gensim.
    from data.text.doc2vec import load_model

    path = Path(work_dir) / DOC2VEC_MODEL
    if not path.exists():
        return None, (f"no Doc2Vec model at {path} (pass --work-dir of the run that trained the "
                      "checkpoint)")
    model = load_model(path)
    words = model.wv.index_to_key
    # A transformer text branch reads its own tokenizer's ids, not the Doc2Vec words: only the
    # provenance below ties such a run to this model.
    theirs, ours = Vocabulary(words).fingerprint(), vocab.fingerprint()
    if isinstance(vocab, Vocabulary) and theirs != ours:
        raise InputError(f"{checkpoint}: the checkpoint's vocabulary ({len(vocab.words)} words, "
                         f"fingerprint {ours}) is not that of the Doc2Vec model {path} "
                         f"({len(words)} words, {theirs}): pass --work-dir of the run that "
                         "trained this checkpoint")
    if record is not None and record.get("steps", {}).get("doc2vec") is not None:
        fix = ("the neighbourhood metric needs the model the checkpoint was trained beside: pass "
               "--work-dir of that run, or retrain the checkpoint on this model")
        made = getattr(model, "provenance", None)
        steps = made.get("steps") if isinstance(made, dict) else None
        have = steps.get("doc2vec") if isinstance(steps, dict) else None
        if have is None:
            raise InputError(f"{path}: no provenance record, so it cannot be the Doc2Vec model "
                             f"{checkpoint} was trained beside: {fix}")
        provenance.check_steps({"steps": {"doc2vec": record["steps"]["doc2vec"]}},
                               {"steps": {"doc2vec": have}}, checkpoint, path, fix)
    return path, ""
