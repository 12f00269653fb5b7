"""Doc2Vec training and inference (gensim 4)."""
from __future__ import annotations

import hashlib
import zlib
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Iterator, Sequence

import gensim.models.doc2vec as gensim_doc2vec
import numpy as np
from gensim.models.doc2vec import Doc2Vec, TaggedDocument
from common.pool import fork_map

from common.errors import InputError
from common.files import require_regular


def check_settings(vector_size: int, window: int, min_count: int, epochs: int, workers: int) -> None:
    """Every setting gensim takes, checked here: a bad one (window -1) otherwise fails inside a
    gensim training thread, and the script waits for that thread forever."""
    for name, value, low in (("vector-size", vector_size, 1), ("window", window, 1),
                             ("min-count", min_count, 1), ("epochs", epochs, 1),
                             ("workers", workers, 0)):
        if not isinstance(value, int) or value < low:
            raise InputError(f"--{name} {value}: pass a whole number of {low} or more")


def train_doc2vec(tokens: Sequence[list[str]], vector_size: int, window: int, min_count: int,
                  epochs: int, workers: int, seed: int, deterministic: bool = False) -> Doc2Vec:
    """PV-DM with gensim's defaults otherwise, documents tagged by index (as the authors).

    gensim's worker threads update the vectors without locks, in an order the OS decides, so
    several threads never give the same model twice. `deterministic` trains on one thread: with
    the same seed, corpus and packages the model is then the same on every run (gensim 4 seeds
    its starting vectors from `seed`, not from Python's salted hash()). The model keeps no
    timestamps or timings, so that file is the same too.
    """
    check_settings(vector_size, window, min_count, epochs, workers)
    if not tokens:
        raise InputError("no training documents to train Doc2Vec on: mark some items "
                           '"split": "train" with non-empty texts')
    corpus = [TaggedDocument(t, [i]) for i, t in enumerate(tokens)]
    model = Doc2Vec(vector_size=vector_size, window=window, min_count=min_count, epochs=epochs,
                    workers=1 if deterministic else max(1, workers), seed=seed)
    model.lifecycle_events = None   # dates, host and Python build: they would differ every run
    _build_vocab(model, corpus)
    if len(model.wv) == 0:
        raise InputError(f"the Doc2Vec vocabulary is empty: no word occurs {min_count} times in the "
                           f"{len(corpus)} training documents; pass a smaller --min-count")
    model.train(corpus, total_examples=len(corpus), epochs=model.epochs)
    model.total_train_time = 0.0    # seconds, different on every run; nothing reads it
    return model


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (MemAvailable), None where it cannot say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _build_vocab(model: Doc2Vec, corpus: list) -> None:
    """model.build_vocab(corpus), in gensim's own steps, stopping with one line before the
    vectors are allocated when they cannot fit in memory (--vector-size 100000000 would
    otherwise take every byte until the kernel kills the process)."""
    total_words, count = model.scan_vocab(corpus_iterable=corpus, progress_per=10000, trim_rule=None)
    model.corpus_count, model.corpus_total_words = count, total_words
    report = model.prepare_vocab(update=False, keep_raw_vocab=False, trim_rule=None)
    need = model.estimate_memory(vocab_size=report["num_retained_words"])["total"]
    free = available_memory()
    if free is not None and need > free:
        raise InputError(f"--vector-size {model.vector_size}: Doc2Vec's vectors for "
                         f"{report['num_retained_words']} words and {count} documents need "
                         f"{need / 2**30:.1f} GiB, and {free / 2**30:.1f} GiB of memory are "
                         "available: pass a smaller --vector-size (the authors' is 200)")
    model.prepare_weights(update=False)


def model_id(model: Doc2Vec) -> str:
    """A hash of what the trained model holds (vocabulary, word and document vectors): tells one
    training from another with the same settings."""
    h = hashlib.blake2b(digest_size=8)
    h.update("\n".join(model.wv.index_to_key).encode("utf-8"))
    h.update(np.ascontiguousarray(model.wv.vectors).tobytes())
    h.update(np.ascontiguousarray(model.dv.vectors).tobytes())
    return h.hexdigest()


def load_model(path: str | Path) -> Doc2Vec:
    """The model train_doc2vec.py wrote, or one line saying the file is not one.

    gensim's format is a pickle, which can run code when loaded: load models you made or trust.
    """
    require_regular(path, "rerun train_doc2vec.py")   # gensim's open would wait on a FIFO
    try:
        return Doc2Vec.load(str(path))
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file can raise anything
        raise InputError(f"{path}: not a readable Doc2Vec model ({type(e).__name__}): rerun "
                         "train_doc2vec.py") from None


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


def _infer(tokens: list[str]) -> np.ndarray:
    # Inference draws negative samples and windows from model.random, whose state would carry
    # over from the previous document: reseeding from the words makes each vector independent
    # of the document order and of the worker count.
    _model.random.seed([_model.seed, _stable_hash(" ".join(tokens))])
    return _model.infer_vector(tokens)


def infer_vectors(model: str | Path | Doc2Vec, tokens: Sequence[list[str]], workers: int = 1) -> np.ndarray:
    """`infer_vector` with gensim's defaults for every document, in order: float32 [N, d].
    `model`: a loaded model or its file.

    Each inference is seeded from the model's seed and the document's words only, so a vector
    does not depend on the process, the document order or the worker count.
    """
    global _model
    bar = dict(desc="inferring Doc2Vec vectors", unit="doc")
    _model = model if isinstance(model, Doc2Vec) else Doc2Vec.load(str(model))
    try:
        with _stable_start_vectors():  # forked workers inherit it
            # One preallocated array, filled as vectors arrive: a list of a million small arrays
            # would cost twice the memory of the result and a copy at the end.
            out = np.empty((len(tokens), _model.vector_size), dtype=np.float32)
            # Forked workers share the parent's model (inference reads its arrays and never
            # writes them, so the pages stay shared) instead of each loading a copy.
            for i, v in enumerate(fork_map(_infer, tokens, workers, serial_below=1000,
                                           chunksize=256, progress=bar)):
                out[i] = v
    finally:
        _model = None
    return out
