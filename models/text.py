"""Text branch: word embeddings (Doc2Vec-initialised) -> GRU -> linear head -> unit vector."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from models.image import projection_head
from models.vocab import PAD, SPECIALS

SPECIAL_STD = 0.1   # START/END rows: small next to Doc2Vec word vectors


class TextEncoder(nn.Module):
    """Embedding(vocab_size, word_dim) -> GRU(word_dim, hidden) final state -> Linear -> unit.

    The Linear is initialised as the image branch's (xavier normal, bias 0.1), as in the release.

    Row layout follows models.vocab: PAD (kept zero), START, END, then the words.
    """

    def __init__(self, vocab_size: int, word_dim: int = 200, hidden: int = 512,
                 embed_dim: int = 256, word_vectors: np.ndarray | None = None):
        super().__init__()
        if vocab_size <= SPECIALS:
            raise ValueError(f"vocab_size {vocab_size} leaves no words after the {SPECIALS} "
                             "special rows: the Doc2Vec vocabulary is empty (lower --min-count)")
        self.embedding = nn.Embedding(vocab_size, word_dim, padding_idx=PAD)
        self.gru = nn.GRU(word_dim, hidden, num_layers=1, batch_first=True)
        self.head = projection_head(hidden, embed_dim)
        self.embed_dim = embed_dim
        if word_vectors is not None:
            self._init_rows(np.asarray(word_vectors))

    @torch.no_grad()
    def _init_rows(self, vectors: np.ndarray) -> None:
        expected = (self.embedding.num_embeddings - SPECIALS, self.embedding.embedding_dim)
        if vectors.shape != expected:
            raise ValueError(f"word vectors have shape {vectors.shape}, expected {expected} "
                             "(one row per vocabulary word, word_dim columns): build the "
                             "vocabulary and the vectors from the same Doc2Vec model")
        if not np.isfinite(vectors).all():
            raise ValueError("word vectors contain NaN or inf: retrain the Doc2Vec model")
        weight = self.embedding.weight
        weight[PAD].zero_()
        weight[PAD + 1:SPECIALS].normal_(0.0, SPECIAL_STD)
        weight[SPECIALS:] = torch.as_tensor(vectors, dtype=weight.dtype)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """tokens [B, L] (PAD-padded), lengths [B] -> [B, embed_dim] float32 unit vectors."""
        if tokens.dim() != 2 or lengths.shape != (tokens.shape[0],):
            raise ValueError(f"TextEncoder: tokens must be [B, L] and lengths [B], got "
                             f"{tuple(tokens.shape)} and {tuple(lengths.shape)}")
        # pack_padded_sequence wants the lengths on the CPU whatever the device of the tokens.
        lengths = lengths.to("cpu", torch.long)
        if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > tokens.shape[1]):
            raise ValueError(f"TextEncoder: lengths must lie in [1, {tokens.shape[1]}], got "
                             f"{lengths.min().item()}..{lengths.max().item()}")
        packed = pack_padded_sequence(self.embedding(tokens), lengths, batch_first=True,
                                      enforce_sorted=False)
        _, last = self.gru(packed)   # [1, B, hidden], in the input order of the batch
        out = self.head(last[0])
        with torch.autocast(device_type=out.device.type, enabled=False):
            return F.normalize(out.float(), dim=-1)
