"""Short fingerprints of the demo's intermediates, so two machines can see at which step they part.

Each fingerprint hashes the numbers a later step reads (the Doc2Vec vectors, the neighbour table,
a checkpoint's weights), not the file: a pickle or a torch file also holds paths, settings and
timestamps that differ between machines while the numbers agree.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from common.workdir import read_pickle

DIGITS = 12


def _update(h: "hashlib._Hash", array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    h.update(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.tobytes())


def _ids(h: "hashlib._Hash", ids: list) -> None:
    h.update("\n".join(map(str, ids)).encode("utf-8"))


def vectors_fingerprint(path: str | Path) -> str:
    """doc2vec_features.pickle: its document ids and vectors."""
    feats = read_pickle(path, "run extract_doc2vec_vectors.py again")
    h = hashlib.blake2b(digest_size=16)
    _ids(h, feats["ids"])
    _update(h, np.asarray(feats["vectors"]))
    return h.hexdigest()[:DIGITS]


def knn_fingerprint(path: str | Path) -> str:
    """document_feats_knn.pickle: its ids, neighbours and distances."""
    knn = read_pickle(path, "run knn_document_features.py again")
    h = hashlib.blake2b(digest_size=16)
    _ids(h, knn["ids"])
    _update(h, np.asarray(knn["neighbors"]))
    _update(h, np.asarray(knn["distances"]))
    return h.hexdigest()[:DIGITS]


def checkpoint_fingerprint(path: str | Path) -> str:
    """A checkpoint's model weights (every tensor of its state dict, by name)."""
    import torch   # here: the text-side fingerprints need no torch

    from models.checkpoint import load_checkpoint
    state = load_checkpoint(path, check=False)["model"]
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(state):
        h.update(name.encode())
        tensor = state[name].detach().cpu().contiguous()
        if tensor.dtype == torch.bfloat16:   # numpy has no bfloat16: hash its bits
            tensor = tensor.view(torch.int16)
        _update(h, tensor.numpy())
    return h.hexdigest()[:DIGITS]
