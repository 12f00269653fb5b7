"""Every number evaluate_retrieval.py reports for one model on one split (one dict), the printed
table (one column per checkpoint) and the metrics.json files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from common.workdir import atomic_write
from evaluation.metrics import fold_metrics, rank_parts, summarize
from evaluation.neighborhood import knn_overlap_hits, label_precision_hits
from evaluation.registry import K, METRICS, format_table as layout, lookup

FOLD_SIZE = 1000   # the COCO "1K" protocol


def evaluate_embeddings(images: torch.Tensor, texts: torch.Tensor, text_image: torch.Tensor,
                        first_text: torch.Tensor, reference: torch.Tensor | None = None,
                        image_labels: torch.Tensor | None = None,
                        text_labels: torch.Tensor | None = None, block: int = 1024,
                        ties: str = "stable", per_query: dict | None = None
                        ) -> tuple[dict, list[str]]:
    """(metrics, notes on what was skipped and why, and how many queries had a tie).

    images [Ni, D] and texts [Nt, D] are joint-space embeddings, text_image [Nt] each text's
    image. first_text [Ni] picks one text per image: the neighbourhood metric compares the
    images' (and those texts') 10 nearest neighbours with those of the texts' Doc2Vec vectors
    `reference` [Ni, d]. Labels are ints, one per image and per text. `ties` is the tie rule
    of the ranks (evaluation.metrics).

    Keys: i2t, t2i (r1, r5, r10, medr, meanr), rsum, n_images, n_texts, ties (rule, and the
    queries of each direction with an incorrect candidate tied with the correct one); folds_1k
    (same keys as the full split) with at least two folds of 1,000 images; neighborhood
    (image_overlap@10, text_overlap@10) with a reference; label_precision@10 (i2t, t2i, i2i,
    t2t) with labels.

    A dict passed as `per_query` receives each query's values as int64 arrays, the numbers
    every metric above averages (tuning.stats resamples them): rank_i2t [Ni] and
    rank_t2i [Nt] (0-based, under `ties`), text_image [Nt], and with those metrics
    image_overlap_hits / text_overlap_hits [Ni] and label_hits_i2t [Ni], label_hits_t2i [Nt],
    label_hits_i2i [Ni], label_hits_t2t [Nt] (hits among the top K).
    """
    n_images, n_texts = images.shape[0], texts.shape[0]
    parts = rank_parts(images, texts, text_image, block)
    i2t, t2i = parts.under(ties)
    metrics = summarize(i2t, t2i)
    metrics["n_images"], metrics["n_texts"] = n_images, n_texts
    tied = parts.tie_counts()
    metrics["ties"] = {"rule": ties, **tied}
    notes = [f"ties (--ties {ties}): {tied['i2t']} of {n_images} image queries and {tied['t2i']} "
             f"of {n_texts} text queries had an incorrect candidate scoring exactly as the "
             "correct one"]
    hits: dict[str, torch.Tensor] = {"rank_i2t": i2t, "rank_t2i": t2i,
                                     "text_image": text_image.detach().cpu()}
    folds = fold_metrics(images, texts, text_image, FOLD_SIZE, block, ties)
    if folds is not None:
        metrics["folds_1k"] = folds
    elif n_images >= FOLD_SIZE:
        notes.append(f"1K folds: skipped, {n_images} images make fewer than 2 folds of {FOLD_SIZE}")

    if reference is not None and n_images <= K:
        notes.append(f"neighbourhood: skipped, {n_images} images leave fewer than {K} neighbours")
    elif reference is not None:
        reference = reference.to(images.device)
        hits["image_overlap_hits"] = knn_overlap_hits(reference, images, K, block)
        hits["text_overlap_hits"] = knn_overlap_hits(reference, texts[first_text], K, block)
        metrics["neighborhood"] = {f"{name}@{K}": int(hits[f"{name}_hits"].sum()) / (n_images * K)
                                   for name in ("image_overlap", "text_overlap")}

    if image_labels is not None and text_labels is not None:
        if min(n_images, n_texts) <= K:
            notes.append(f"label precision: skipped, fewer than {K + 1} images or texts")
        else:
            il, tl = image_labels.to(images.device), text_labels.to(images.device)
            for name, q, g, ql, gl, same in (("i2t", images, texts, il, tl, False),
                                             ("t2i", texts, images, tl, il, False),
                                             ("i2i", images, images, il, il, True),
                                             ("t2t", texts, texts, tl, tl, True)):
                hits[f"label_hits_{name}"] = label_precision_hits(q, g, ql, gl, K, same, block)
            metrics[f"label_precision@{K}"] = {
                name: int(hits[f"label_hits_{name}"].sum()) / (hits[f"label_hits_{name}"].numel() * K)
                for name in ("i2t", "t2i", "i2i", "t2t")}
    if per_query is not None:
        per_query.update({key: value.numpy().astype(np.int64) for key, value in hits.items()})
    return metrics, notes


def _rows() -> list[tuple[str, tuple[str, ...], str]]:
    """(row label, key path into the metrics dict, format): the counts, then the registry's
    metrics, the ranking ones again over the 1K folds where there are folds."""
    ranking = [m for m in METRICS.values() if m.unit != "fraction" and m.name != "rsum"] + [METRICS["rsum"]]
    rows = [("images", ("n_images",), "d"), ("texts", ("n_texts",), "d")]
    for prefix, path in (("", ()), ("1K ", ("folds_1k",))):
        rows += [(prefix + m.label, (*path, *m.path), m.fmt) for m in ranking]
    rows += [(m.label, m.path, m.fmt) for m in METRICS.values() if m.unit == "fraction"]
    return rows


def format_table(names: Sequence[str], results: Sequence[dict]) -> str:
    """Rows of metrics, one column per run; a row no run has is left out, a missing cell is '-'."""
    lines = []
    for label, path, fmt in _rows():
        cells = [lookup(m, path) for m in results]
        if all(c is None for c in cells):
            continue
        lines.append([label] + ["-" if c is None else format(c, fmt) for c in cells])
    return layout(["metric", *names], lines)


def write_json(obj: dict, path: str | Path) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
    atomic_write(path, write)


def write_per_query(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:   # a file object: np.savez would add .npz to a name
            np.savez(f, **arrays)
    atomic_write(path, write)
