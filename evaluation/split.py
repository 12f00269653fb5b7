"""The evaluation set of one split: each image once, every text of it, labels, in item order.

Items that share an image file (a Politics image used by two articles) become one image with
the texts of both, so the image is ranked once and every one of its texts counts as correct.
Texts that leave no token after preprocessing are dropped, as in training.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from common.errors import InputError
from data.datasets.items import Item, image_key
from data.images.read import report_bad_images
from data.text.corpus import drop_empty, has_doc2vec_text, tokenized_documents
from data.text.preprocess import preprocess_all


@dataclass
class EvalSplit:
    name: str                       # "train", "val" or "test"
    image_paths: list[str]          # one per distinct image file
    image_ids: list[str]            # the id of the first item showing the image
    image_labels: list[str | None]  # that item's label
    text_ids: list[str]             # document ids ("<item id>" or "<item id>#<j>")
    texts: list[str]                # raw texts
    text_tokens: list[list[str]]    # preprocessed tokens (never empty)
    text_image: np.ndarray          # int64 [n_texts]: index of each text's image
    text_labels: list[str | None]
    # The raw text Doc2Vec reads for each text when the dataset has a separate one
    # (doc2vec_text, e.g. a GoodNews article); None when Doc2Vec reads the texts themselves.
    doc2vec_texts: list[str] | None = None

    @property
    def n_images(self) -> int:
        return len(self.image_paths)

    @property
    def n_texts(self) -> int:
        return len(self.texts)

    def first_texts(self) -> np.ndarray:
        """Index of each image's first text: one document per image for the neighbourhood metric."""
        first = np.full(self.n_images, -1, dtype=np.int64)
        for t in range(self.n_texts - 1, -1, -1):
            first[self.text_image[t]] = t
        return first

    def keep_images(self, keep: Sequence[int]) -> tuple["EvalSplit", np.ndarray]:
        """The split restricted to the images `keep` (in that order) and their texts; also the
        indices of the kept texts, to select the matching rows of text embeddings."""
        keep = list(keep)
        new_index = np.full(self.n_images, -1, dtype=np.int64)
        new_index[keep] = np.arange(len(keep))
        texts = np.nonzero(new_index[self.text_image] >= 0)[0]
        sub = EvalSplit(self.name, [self.image_paths[i] for i in keep],
                        [self.image_ids[i] for i in keep], [self.image_labels[i] for i in keep],
                        [self.text_ids[t] for t in texts], [self.texts[t] for t in texts],
                        [self.text_tokens[t] for t in texts], new_index[self.text_image[texts]],
                        [self.text_labels[t] for t in texts],
                        None if self.doc2vec_texts is None else [self.doc2vec_texts[t] for t in texts])
        return sub, texts


def load_split(items: Sequence[Item], split: str, args: argparse.Namespace) -> EvalSplit:
    """The split's images and texts; a split without any usable text is an error."""
    n_items = sum(it.split == split for it in items)
    if n_items == 0:
        raise InputError(f"{args.dataset}: the {split} split is empty: choose another --split "
                           "or mark items with it in the dataset")
    docs, tokens = drop_empty(*tokenized_documents(items, [split], args), split)
    if not docs:
        raise InputError(f"{args.dataset}: none of the {n_items} {split} items has a text that "
                           "leaves a token after preprocessing: check the texts or --max-sentences")
    index: dict[str, int] = {}
    paths, ids, labels, owner = [], [], [], []
    for d in docs:
        item = items[d.item]
        key = image_key(item)    # the image's identity, as training's same-image rule has it
        if key not in index:
            index[key] = len(paths)
            paths.append(item.image)
            ids.append(item.id)
            labels.append(item.label)
        owner.append(index[key])
    return EvalSplit(split, paths, ids, labels, [d.id for d in docs],
                     [items[d.item].texts[d.text] for d in docs], tokens,
                     np.asarray(owner, dtype=np.int64), [items[d.item].label for d in docs],
                     [items[d.item].doc2vec(d.text) for d in docs] if has_doc2vec_text(items) else None)


def reference_tokens(split: EvalSplit, doc2vec_max_sentences: int | None, max_chars: int | None,
                     workers: int = 1, keep_unicode: bool = False
                     ) -> tuple[list[str], list[list[str]]]:
    """(image ids, tokens) of each image's first document as Doc2Vec read it in training.

    The neighbourhood metric measures whether the learned spaces keep the neighbourhoods the
    kNN file held, and those came from the Doc2Vec text (doc2vec_text when the dataset has one,
    cut by --doc2vec-max-sentences), not from the texts the GRU reads.
    """
    first = split.first_texts()
    if split.doc2vec_texts is None:
        return split.image_ids, [split.text_tokens[t] for t in first]
    texts = [split.doc2vec_texts[t] for t in first]
    return split.image_ids, preprocess_all(texts, doc2vec_max_sentences or None, max_chars, workers,
                                           desc="preprocessing Doc2Vec texts",
                                           keep_unicode=keep_unicode)


def without_unreadable(split: EvalSplit, images: torch.Tensor, failures: dict[int, str],
                       max_share: float, dataset: str) -> tuple[EvalSplit, torch.Tensor]:
    """The split and its image embeddings less the images that could not be read (reported,
    their texts left out too); more than `max_share` of them, or all, is an error."""
    if not failures:
        return split, images
    report_bad_images({split.image_paths[i]: r for i, r in sorted(failures.items())},
                      split.n_images, max_share, split.name)
    good = [i for i in range(split.n_images) if i not in failures]
    if not good:
        raise InputError(f"{dataset}: no image of the {split.name} split can be read: fix the "
                           "image paths (--image-root)")
    return split.keep_images(good)[0], images[good]


def integer_labels(image_labels: Sequence[str | None], text_labels: Sequence[str | None]
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """Both label lists as ints of one shared mapping; None unless every image and text has one."""
    if any(lab is None for lab in image_labels) or any(lab is None for lab in text_labels):
        return None
    code = {lab: i for i, lab in enumerate(sorted(set(image_labels) | set(text_labels)))}
    return (np.asarray([code[lab] for lab in image_labels], dtype=np.int64),
            np.asarray([code[lab] for lab in text_labels], dtype=np.int64))
