"""retrieve.py's queries: read, preprocessed like training texts, checked, matched to the split."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from data.items import InputError
from data.text import preprocess
from evaluation.split import EvalSplit
from models import Vocabulary


def read_query_file(path: str | Path) -> list[str]:
    """One query per line; blank lines are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the queries file ({type(e).__name__}): pass a "
                           "UTF-8 text file with one query per line") from None
    queries = [line.strip() for line in lines if line.strip()]
    if not queries:
        raise InputError(f"{path}: the queries file holds no query: write one per line")
    return queries


def query_tokens(queries: Sequence[str], vocab: Vocabulary, max_sentences: int | None,
                 max_chars: int | None, keep_unicode: bool = False) -> list[list[str]]:
    """Each query's tokens, preprocessed as the training texts; a query the model cannot see
    (no token at all, or none in its vocabulary) is an error naming it."""
    out = []
    for n, query in enumerate(queries, 1):
        tokens = preprocess(query, max_sentences or None, max_chars, keep_unicode)
        if not tokens:
            raise InputError(f"query {n} {query!r} leaves no token after preprocessing (stop "
                               "words and words under 3 letters are dropped): use content words")
        if not any(t in vocab for t in tokens):
            raise InputError(f"query {n} {query!r}: none of its words ({' '.join(tokens[:8])}) "
                               f"is in the model's vocabulary of {len(vocab.words)} words: use "
                               "words that occur in the training texts")
        out.append(tokens)
    return out


def normal_text(text: str) -> str:
    """The form in which a query matches a split text: whitespace and case aside."""
    return " ".join(text.split()).lower()


def images_by_text(split: EvalSplit) -> dict[str, set[int]]:
    """normal_text of each split text -> the images it belongs to (one text may recur)."""
    out: dict[str, set[int]] = {}
    for t, text in enumerate(split.texts):
        out.setdefault(normal_text(text), set()).add(int(split.text_image[t]))
    return out


def image_by_path(split: EvalSplit) -> dict[str, int]:
    """Resolved file path of each split image -> its index."""
    return {os.path.realpath(p): i for i, p in enumerate(split.image_paths)}
