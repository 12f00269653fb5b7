"""The one item type every reader yields, the split logic and the document view of items."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np

from common.errors import InputError, quoted

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Item:
    id: str
    image: str                  # absolute path
    texts: tuple[str, ...]      # one or more texts (several captions per image for COCO)
    split: str                  # "train", "val" or "test"
    label: str | None = None    # a category, used by evaluation when present
    # What Doc2Vec and the kNN read instead of `texts` (a GoodNews article while the GRU reads its
    # caption): None, or one text per entry of `texts`.
    doc2vec_text: tuple[str, ...] | None = None
    # Items of one group are never each other's negatives or training neighbours, whatever their
    # images (e.g. the pictures of one article). Items showing one image share a group anyway.
    group: str | None = None

    def __post_init__(self):
        if self.doc2vec_text is not None and len(self.doc2vec_text) != len(self.texts):
            raise ValueError(f"item {quoted(self.id)}: {len(self.doc2vec_text)} Doc2Vec texts for "
                             f"{len(self.texts)} texts: give one per text")

    def doc2vec(self, j: int) -> str:
        """The text Doc2Vec and the kNN read for the item's j-th document."""
        return self.texts[j] if self.doc2vec_text is None else self.doc2vec_text[j]


@dataclass(frozen=True)
class Document:
    """One (image, text) pair: the unit Doc2Vec, the kNN and training work on."""
    id: str          # "<item id>" for single-text items, "<item id>#<j>" otherwise
    item: int        # index into the item list
    text: int        # index into the item's texts


def image_key(item: Item) -> str:
    """What makes two items show the same image: the file they name, known by its device and
    inode, so that two spellings of one path, a symbolic or a hard link to it are one image (one
    stat, where resolving every link of the path would take six times as long). A file that
    cannot be stat'ed (missing: it is reported as unreadable later) is known by its path."""
    try:
        st = os.stat(item.image)
    except (OSError, ValueError):
        return "path:" + item.image
    return f"file:{st.st_dev}:{st.st_ino}"


def item_groups(items: Sequence[Item]) -> np.ndarray:
    """int64 [len(items)]: a group id per item, the one same-image rule of training and evaluation.

    Items showing the same image file (image_key) share a group, and so do items with the same
    explicit `group`; groups joined by either are merged. Training never takes an item of the
    anchor's group as a negative or a neighbour; evaluation ranks each image once.
    """
    parent = list(range(len(items)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, it in enumerate(items):
        for key in (("image", image_key(it)),) + ((("group", it.group),) if it.group is not None else ()):
            j = first.setdefault(key, i)
            if j != i:
                parent[root(i)] = root(j)
    roots = [root(i) for i in range(len(items))]
    _, ids = np.unique(np.asarray(roots, dtype=np.int64), return_inverse=True)
    return ids.astype(np.int64)


def assign_validation(items: list[Item], val_size: int | None, seed: int) -> list[Item]:
    """Mark a seeded slice of train as val when no item is marked val.

    The slice is the same on every run and in every script, as long as the items and seed are.
    `val_size` None means as large as the test split (the authors' choice).
    """
    if any(it.split == "val" for it in items):
        return items
    train = [i for i, it in enumerate(items) if it.split == "train"]
    n = val_size if val_size is not None else sum(it.split == "test" for it in items)
    if n <= 0:
        return items
    if n >= len(train):
        raise InputError(f"validation size {n} leaves no training items (only {len(train)} "
                           "train items): pass a smaller --val-size")
    chosen = set(random.Random(seed).sample(train, n))
    # The pictures of one article go to validation together: a slice cutting through an article
    # would validate on the text the model trained on.
    groups = {items[i].group for i in chosen if items[i].group is not None}
    chosen |= {i for i in train if items[i].group in groups}
    if len(chosen) >= len(train):
        raise InputError(f"validation size {n} takes every training item once the articles it "
                         "cuts are kept whole: pass a smaller --val-size")
    return [replace(it, split="val") if i in chosen else it for i, it in enumerate(items)]


def documents(items: Sequence[Item], splits: Iterable[str] = ("train",)) -> list[Document]:
    """Every (image, text) pair of the given splits, in item order."""
    wanted = set(splits)
    docs = []
    for i, it in enumerate(items):
        if it.split not in wanted:
            continue
        docs.extend(Document(doc_id, i, j) for j, doc_id in enumerate(_document_ids(it)))
    return docs


def _document_ids(item: Item) -> list[str]:
    if len(item.texts) == 1:
        return [item.id]
    return [f"{item.id}#{j}" for j in range(len(item.texts))]


def check_unique_ids(items: Sequence[Item], source: str) -> None:
    """Item ids, and the document ids made from them, must be unique: the Doc2Vec features and
    the kNN file name documents by id, so two documents of one id would share one row."""
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise InputError(f"{source}: duplicate id {quoted(it.id)}: make every item id unique")
        seen.add(it.id)
    # Separate pass: item "a" with two texts and item "a#1" with one both make document "a#1".
    owner: dict[str, str] = {}
    for it in items:
        for doc_id in _document_ids(it):
            if owner.setdefault(doc_id, it.id) != it.id:
                raise InputError(f"{source}: items {quoted(owner[doc_id])} and {quoted(it.id)} both "
                                 f"make document id {quoted(doc_id)} (an item with several texts "
                                 "numbers them <id>#<j>): rename one of them")


def check_strings(items: Sequence[Item], source: str) -> None:
    """Every string of every item must be one that later steps can write: an unpaired surrogate
    ("\\ud800" in JSON) cannot be encoded as UTF-8 for a hash, a pickle's record, a TSV or a
    page, and an image path holding a NUL byte cannot be opened. One line naming the item."""
    for it in items:
        if "\0" in it.image:
            raise InputError(f"{source}: item {quoted(it.id)}: its image path {quoted(it.image)} "
                             "holds a NUL character: fix the path")
        for field, value in (("id", it.id), ("image", it.image), ("label", it.label or ""),
                             *(("texts", t) for t in it.texts),
                             *(("doc2vec_text", t) for t in it.doc2vec_text or ())):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InputError(f"{source}: item {quoted(it.id)}: its {field} holds "
                                 f"{quoted(value[e.start:e.end])}, half of a UTF-16 pair (not a "
                                 "character): fix or remove it") from None


def not_text(value: str) -> int | None:
    """The position of the first lone surrogate in `value`, or None: such a string cannot be
    written as UTF-8, so hashing, pickles, TSV and HTML would each fail on it later."""
    try:
        value.encode("utf-8")
        return None
    except UnicodeEncodeError as e:
        return e.start


def check_split(split: str, where: str) -> str:
    if split not in SPLITS:
        raise InputError(f"{where}: split {quoted(split)} is not one of {', '.join(SPLITS)}")
    return split
