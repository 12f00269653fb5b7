"""Documents of a split together with their tokens: what Doc2Vec, the kNN and training consume.

Two texts of a document may differ: the GRU always reads `texts` (cut by --max-sentences);
Doc2Vec and the kNN read `doc2vec_text` when the dataset has one (cut by
--doc2vec-max-sentences), else the same `texts` with the same cut.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from common.errors import shown
from data.datasets.items import Document, Item, documents
from data.text.preprocess import cut_text, preprocess_all


def tokenized_documents(items: Sequence[Item], splits: Sequence[str], args: argparse.Namespace
                        ) -> tuple[list[Document], list[list[str]]]:
    """The documents of the splits with the tokens the GRU reads."""
    docs = documents(items, splits)
    texts = [items[d.item].texts[d.text] for d in docs]
    tokens = preprocess_all(texts, args.max_sentences or None, args.max_chars, args.workers,
                            desc=f"preprocessing {'+'.join(splits)} texts",
                            keep_unicode=getattr(args, "keep_unicode", False))
    return docs, tokens


def has_doc2vec_text(items: Sequence[Item]) -> bool:
    # Readers give it to every item or to none, so the first item tells.
    return bool(items) and items[0].doc2vec_text is not None


def doc2vec_source(items: Sequence[Item], args: argparse.Namespace) -> tuple[str, int | None]:
    """(the field Doc2Vec reads, its sentence cut) for a message and for preprocessing."""
    if has_doc2vec_text(items):
        return "doc2vec_text", args.doc2vec_max_sentences or None
    return "texts", args.max_sentences or None


def doc2vec_tokens(items: Sequence[Item], docs: Sequence[Document], args: argparse.Namespace
                   ) -> list[list[str]]:
    """The tokens Doc2Vec and the kNN read for each document.

    A GoodNews article is the Doc2Vec text of each of its images: every distinct text is
    preprocessed once and its token list shared by the documents that read it.
    """
    _, max_sentences = doc2vec_source(items, args)
    texts = [items[d.item].doc2vec(d.text) for d in docs]
    unique = list(dict.fromkeys(texts))
    tokens = preprocess_all(unique, max_sentences, args.max_chars, args.workers,
                            desc="preprocessing Doc2Vec texts",
                            keep_unicode=getattr(args, "keep_unicode", False))
    of = dict(zip(unique, tokens))
    return [of[t] for t in texts]


def raw_documents(items: Sequence[Item], docs: Sequence[Document], args: argparse.Namespace
                  ) -> list[str]:
    """The text Doc2Vec reads for each document, cut the same way but not tokenised: the
    transformer reads the same words, with its own tokenizer."""
    _, max_sentences = doc2vec_source(items, args)
    return [cut_text(items[d.item].doc2vec(d.text), max_sentences, args.max_chars) for d in docs]


def doc2vec_documents(items: Sequence[Item], splits: Sequence[str], args: argparse.Namespace
                      ) -> tuple[list[Document], list[list[str]]]:
    """The documents of the splits with the tokens Doc2Vec and the kNN read."""
    field, max_sentences = doc2vec_source(items, args)
    print(f"Doc2Vec reads {field}, "
          f"{'whole' if max_sentences is None else f'first {max_sentences} sentences'}")
    docs = documents(items, splits)
    return docs, doc2vec_tokens(items, docs, args)


def drop_empty(docs: list[Document], tokens: list[list[str]], what: str
               ) -> tuple[list[Document], list[list[str]]]:
    """Documents whose text leaves no token are dropped, and counted."""
    empty = [d.id for d, t in zip(docs, tokens) if not t]
    if empty:
        print(f"dropped {len(empty)} {what} documents with no tokens after preprocessing "
              f"(first: {', '.join(map(shown, empty[:3]))})")
    keep = [i for i, t in enumerate(tokens) if t]
    return [docs[i] for i in keep], [tokens[i] for i in keep]
