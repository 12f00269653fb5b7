"""Doc2Vec training and inference (gensim 4)."""
from __future__ import annotations

import multiprocessing as mp
import zlib
from contextlib import contextmanager
from functools import partial
from typing import Iterator, Sequence

import gensim.models.doc2vec as gensim_doc2vec
import numpy as np
from gensim.models.doc2vec import Doc2Vec, TaggedDocument
from tqdm import tqdm

from .items import InputError


def train_doc2vec(tokens: Sequence[list[str]], vector_size: int, window: int, min_count: int,
                  epochs: int, workers: int, seed: int) -> Doc2Vec:
    """PV-DM with gensim's defaults otherwise, documents tagged by index (as the authors)."""
    if not tokens:
        raise InputError("no training documents to train Doc2Vec on: mark some items "
                           '"split": "train" with non-empty texts')
    corpus = [TaggedDocument(t, [i]) for i, t in enumerate(tokens)]
    model = Doc2Vec(vector_size=vector_size, window=window, min_count=min_count, epochs=epochs,
                    workers=max(1, workers), seed=seed)
    model.build_vocab(corpus)
    if len(model.wv) == 0:
        raise InputError(f"the Doc2Vec vocabulary is empty: no word occurs {min_count} times in the "
                           f"{len(corpus)} training documents; pass a smaller --min-count")
    model.train(corpus, total_examples=len(corpus), epochs=model.epochs)
    return model


_model: Doc2Vec | None = None


def _stable_hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


@contextmanager
def _stable_start_vectors() -> Iterator[None]:
    """infer_vector starts from a vector seeded by Python's hash() of the words, which changes
    from process to process (PYTHONHASHSEED): the same document got a different vector on every
    run. While inferring, gensim's seeding uses a stable hash instead."""
    original = gensim_doc2vec.pseudorandom_weak_vector
    gensim_doc2vec.pseudorandom_weak_vector = partial(original, hashfxn=_stable_hash)
    try:
        yield
    finally:
        gensim_doc2vec.pseudorandom_weak_vector = original


def _init(path: str) -> None:
    global _model
    _model = Doc2Vec.load(path)


def _infer(tokens: list[str]) -> np.ndarray:
    # Inference draws negative samples and windows from model.random, whose state would carry
    # over from the previous document: reseeding from the words makes each vector independent
    # of the document order and of the worker count.
    _model.random.seed([_model.seed, _stable_hash(" ".join(tokens))])
    return _model.infer_vector(tokens)


def infer_vectors(model_path: str, tokens: Sequence[list[str]], workers: int = 1) -> np.ndarray:
    """`infer_vector` with gensim's defaults for every document, in order: float32 [N, d].

    Each inference is seeded from the model's seed and the document's words only, so a vector
    does not depend on the process, the document order or the worker count.
    """
    bar = dict(total=len(tokens), desc="inferring Doc2Vec vectors", unit="doc", mininterval=1.0)
    with _stable_start_vectors():  # forked workers inherit it
        _init(model_path)
        # One preallocated array, filled as vectors arrive: a list of a million small arrays
        # would cost twice the memory of the result and a copy at the end.
        out = np.empty((len(tokens), _model.vector_size), dtype=np.float32)
        if workers <= 1 or len(tokens) < 1000:
            for i, t in enumerate(tqdm(tokens, **bar)):
                out[i] = _infer(t)
        else:
            with mp.get_context("fork").Pool(workers, initializer=_init, initargs=(model_path,)) as pool:
                for i, v in enumerate(tqdm(pool.imap(_infer, tokens, chunksize=256), **bar)):
                    out[i] = v
    return out
