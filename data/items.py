"""The one item type every reader yields, the split logic and the document view of items."""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

SPLITS = ("train", "val", "test")


class InputError(ValueError):
    """Bad input: the message is one line naming the file or item and the fix."""


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
            raise ValueError(f"item {self.id!r}: {len(self.doc2vec_text)} Doc2Vec texts for "
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
            raise InputError(f"{source}: duplicate id {it.id!r}: make every item id unique")
        seen.add(it.id)
    # Separate pass: item "a" with two texts and item "a#1" with one both make document "a#1".
    owner: dict[str, str] = {}
    for it in items:
        for doc_id in _document_ids(it):
            if owner.setdefault(doc_id, it.id) != it.id:
                raise InputError(f"{source}: items {owner[doc_id]!r} and {it.id!r} both make document "
                                   f"id {doc_id!r} (an item with several texts numbers them "
                                   "<id>#<j>): rename one of them")


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


_SPACES = str.maketrans("\t\n\r\x0b\x0c", "     ")


def shown(text: str, limit: int | None = 80) -> str:
    """`text` as it can be printed on one terminal line and written in any UTF-8 file: tabs and
    line breaks as spaces, other control characters (a terminal escape) as \\x1b, a lone
    surrogate (an undecodable byte of a file name or command line) as \\udcff; cut to `limit`
    characters."""
    text = text.translate(_SPACES).encode("utf-8", "backslashreplace").decode("utf-8")
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."


def not_text(value: str) -> int | None:
    """The position of the first lone surrogate in `value`, or None: such a string cannot be
    written as UTF-8, so hashing, pickles, TSV and HTML would each fail on it later."""
    try:
        value.encode("utf-8")
        return None
    except UnicodeEncodeError as e:
        return e.start


def check_text(items: Sequence[Item], source: str | object) -> None:
    """Every string of every item must be writable as UTF-8 (a JSON escape such as "\\ud800"
    reads as a lone surrogate, and a non-UTF-8 file name does): refused here, naming the item,
    rather than failing in a later step's hash or output file."""
    for it in items:
        fields = [("id", it.id), ("image path", it.image), ("label", it.label),
                  *(("text", t) for t in it.texts),
                  *(("doc2vec_text", t) for t in it.doc2vec_text or ())]
        if isinstance(it.image, str) and "\0" in it.image:   # no file name can hold one
            raise InputError(f"{source}: item '{shown(it.id, 60)}': its image path holds a NUL "
                             "character (\\x00), which no file name can: fix the path")
        for field, value in fields:
            at = not_text(value) if isinstance(value, str) else None
            if at is not None:
                fix = ("rename the file to a UTF-8 name" if field == "image path" else
                       "write it as UTF-8 text")
                raise InputError(f"{source}: item '{shown(it.id, 60)}': its {field} holds "
                                 f"{shown(value[at])}, an undecodable byte or a lone surrogate "
                                 f"escape, not text: {fix}")


def check_split(split: str, where: str) -> str:
    if split not in SPLITS:
        raise InputError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
    return split
