"""Every number evaluate_retrieval.py reports for one model on one split, as one dict."""
from __future__ import annotations

import torch

from evaluation.metrics import fold_metrics, retrieval_metrics
from evaluation.neighborhood import knn_overlap, label_precision

K = 10             # neighbourhood and label precision depth
FOLD_SIZE = 1000   # the COCO "1K" protocol


def evaluate_embeddings(images: torch.Tensor, texts: torch.Tensor, text_image: torch.Tensor,
                        first_text: torch.Tensor, reference: torch.Tensor | None = None,
                        image_labels: torch.Tensor | None = None,
                        text_labels: torch.Tensor | None = None, block: int = 1024
                        ) -> tuple[dict, list[str]]:
    """(metrics, notes on what was skipped and why).

    images [Ni, D] and texts [Nt, D] are joint-space embeddings, text_image [Nt] each text's
    image. first_text [Ni] picks one text per image: the neighbourhood metric compares the
    images' (and those texts') 10 nearest neighbours with those of the texts' Doc2Vec vectors
    `reference` [Ni, d]. Labels are ints, one per image and per text.

    Keys: i2t, t2i (r1, r5, r10, medr, meanr), rsum, n_images, n_texts; folds_1k (same keys as
    the full split) with at least two folds of 1,000 images; neighborhood (image_overlap@10,
    text_overlap@10) with a reference; label_precision@10 (i2t, t2i, i2i, t2t) with labels.
    """
    n_images, n_texts = images.shape[0], texts.shape[0]
    metrics = retrieval_metrics(images, texts, text_image, block)
    metrics["n_images"], metrics["n_texts"] = n_images, n_texts
    notes = []
    folds = fold_metrics(images, texts, text_image, FOLD_SIZE, block)
    if folds is not None:
        metrics["folds_1k"] = folds
    elif n_images >= FOLD_SIZE:
        notes.append(f"1K folds: skipped, {n_images} images make fewer than 2 folds of {FOLD_SIZE}")

    if reference is not None and n_images <= K:
        notes.append(f"neighbourhood: skipped, {n_images} images leave fewer than {K} neighbours")
    elif reference is not None:
        reference = reference.to(images.device)
        metrics["neighborhood"] = {
            f"image_overlap@{K}": knn_overlap(reference, images, K, block),
            f"text_overlap@{K}": knn_overlap(reference, texts[first_text], K, block)}

    if image_labels is not None and text_labels is not None:
        if min(n_images, n_texts) <= K:
            notes.append(f"label precision: skipped, fewer than {K + 1} images or texts")
        else:
            il, tl = image_labels.to(images.device), text_labels.to(images.device)
            metrics[f"label_precision@{K}"] = {
                "i2t": label_precision(images, texts, il, tl, K, block=block),
                "t2i": label_precision(texts, images, tl, il, K, block=block),
                "i2i": label_precision(images, images, il, il, K, exclude_self=True, block=block),
                "t2t": label_precision(texts, texts, tl, tl, K, exclude_self=True, block=block)}
    return metrics, notes
