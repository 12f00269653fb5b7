"""The GRU's word vocabulary: the Doc2Vec words, in the Doc2Vec model's order, after 3 specials."""
from __future__ import annotations

import hashlib
import json
from typing import Sequence

import torch
from torch import Tensor

PAD, START, END = 0, 1, 2
SPECIALS = 3    # rows before the first word; the text encoder's embedding matches this layout


class Vocabulary:
    """Word -> row index. Row 0 is PAD, 1 START, 2 END, the words follow from row 3.

    The words keep the Doc2Vec order so that row 3 + i is `wv.vectors[i]`.
    """

    def __init__(self, words: Sequence[str]):
        words = list(words)
        for i, w in enumerate(words):
            if not isinstance(w, str) or not w:
                raise ValueError(f"vocabulary word {i} is {w!r}: every word must be a non-empty "
                                 "string")
        index = {w: SPECIALS + i for i, w in enumerate(words)}
        if len(index) != len(words):
            dup = next(w for i, w in enumerate(words) if index[w] != SPECIALS + i)
            raise ValueError(f"vocabulary word {dup!r} appears twice: pass each word once")
        self._words = words
        self._index = index

    @property
    def words(self) -> list[str]:
        return list(self._words)

    def __len__(self) -> int:
        return SPECIALS + len(self._words)

    def __contains__(self, word: str) -> bool:
        return word in self._index

    def encode(self, tokens: Sequence[str], max_tokens: int) -> list[int]:
        """START + the first `max_tokens` in-vocabulary tokens + END; unknown tokens are dropped,
        as the authors filtered the text to the Doc2Vec vocabulary before the GRU."""
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        ids = [self._index[t] for t in tokens if t in self._index][:max_tokens]
        return [START, *ids, END]

    def to_state(self) -> list[str]:
        """A plain list for checkpoints (no pickled classes)."""
        return list(self._words)

    @classmethod
    def from_state(cls, state: list[str]) -> "Vocabulary":
        if not isinstance(state, list):
            raise ValueError(f"vocabulary state must be a list of words, got "
                             f"{type(state).__name__}: the checkpoint is not one this project "
                             "wrote")
        return cls(state)

    def fingerprint(self) -> str:
        """Short hash of the word list, so evaluation can tell a checkpoint built on another
        Doc2Vec model (same size, different rows) from a matching one."""
        data = json.dumps(self._words, ensure_ascii=True).encode("ascii")
        return hashlib.sha1(data).hexdigest()[:12]


def pad_batch(seqs: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Right-pad token id sequences with PAD: (LongTensor [B, L], LongTensor [B] lengths)."""
    if len(seqs) == 0:
        raise ValueError("pad_batch: got no sequences: pass at least one")
    lengths = [len(s) for s in seqs]
    if min(lengths) == 0:
        raise ValueError(f"pad_batch: sequence {lengths.index(0)} is empty: encode adds START "
                         "and END, so encode every text before padding")
    tokens = torch.full((len(seqs), max(lengths)), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return tokens, torch.tensor(lengths, dtype=torch.long)
