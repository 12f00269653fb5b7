"""Documents of a split together with their tokens: what Doc2Vec, the kNN and training consume."""
from __future__ import annotations

import argparse
from typing import Sequence

from .items import Document, Item, documents
from .text import preprocess_all


def tokenized_documents(items: Sequence[Item], splits: Sequence[str], args: argparse.Namespace
                        ) -> tuple[list[Document], list[list[str]]]:
    docs = documents(items, splits)
    texts = [items[d.item].texts[d.text] for d in docs]
    tokens = preprocess_all(texts, args.max_sentences or None, args.max_chars, args.workers,
                            desc=f"preprocessing {'+'.join(splits)} texts",
                            keep_unicode=getattr(args, "keep_unicode", False))
    return docs, tokens


def drop_empty(docs: list[Document], tokens: list[list[str]], what: str
               ) -> tuple[list[Document], list[list[str]]]:
    """Documents whose text leaves no token are dropped, and counted."""
    empty = [d.id for d, t in zip(docs, tokens) if not t]
    if empty:
        print(f"dropped {len(empty)} {what} documents with no tokens after preprocessing "
              f"(first: {', '.join(empty[:3])})")
    keep = [i for i, t in enumerate(tokens) if t]
    return [docs[i] for i in keep], [tokens[i] for i in keep]
