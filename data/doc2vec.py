"""Doc2Vec training and inference (gensim 4)."""
from __future__ import annotations

import multiprocessing as mp
import zlib
from typing import Sequence

import numpy as np
from gensim.models.doc2vec import Doc2Vec, TaggedDocument
from tqdm import tqdm

from .items import DatasetError


def train_doc2vec(tokens: Sequence[list[str]], vector_size: int, window: int, min_count: int,
                  epochs: int, workers: int, seed: int) -> Doc2Vec:
    """PV-DM with gensim's defaults otherwise, documents tagged by index (as the authors)."""
    if not tokens:
        raise DatasetError("no training documents to train Doc2Vec on: mark some items "
                           '"split": "train" with non-empty texts')
    corpus = [TaggedDocument(t, [i]) for i, t in enumerate(tokens)]
    model = Doc2Vec(vector_size=vector_size, window=window, min_count=min_count, epochs=epochs,
                    workers=max(1, workers), seed=seed)
    model.build_vocab(corpus)
    if len(model.wv) == 0:
        raise DatasetError(f"the Doc2Vec vocabulary is empty: no word occurs {min_count} times in the "
                           f"{len(corpus)} training documents; pass a smaller --min-count")
    model.train(corpus, total_examples=len(corpus), epochs=model.epochs)
    return model


_model: Doc2Vec | None = None


def _init(path: str) -> None:
    global _model
    _model = Doc2Vec.load(path)


def _infer(tokens: list[str]) -> np.ndarray:
    # Inference draws negative samples and windows from model.random, whose state would carry
    # over from the previous document: reseeding from the words makes each vector independent
    # of the document order and of the worker count.
    _model.random.seed([_model.seed, zlib.crc32(" ".join(tokens).encode("utf-8"))])
    return _model.infer_vector(tokens)


def infer_vectors(model_path: str, tokens: Sequence[list[str]], workers: int = 1) -> np.ndarray:
    """`infer_vector` with gensim's defaults for every document, in order: float32 [N, d].

    Each inference is seeded from the model's seed and the document's words, so a vector does
    not depend on the document order or the worker count.
    """
    bar = dict(total=len(tokens), desc="inferring Doc2Vec vectors", unit="doc", mininterval=1.0)
    if workers <= 1 or len(tokens) < 1000:
        _init(model_path)
        rows = [_infer(t) for t in tqdm(tokens, **bar)]
    else:
        with mp.get_context("fork").Pool(workers, initializer=_init, initargs=(model_path,)) as pool:
            rows = list(tqdm(pool.imap(_infer, tokens, chunksize=64), **bar))
    dim = Doc2Vec.load(model_path).vector_size if not rows else len(rows[0])
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), dim)
