"""Text branch from a Hugging Face transformer (--text-encoder hf): its tokenizer, a pooling rule
and a linear head onto the joint unit sphere, fine-tuned or frozen.

It reads what the GRU reads, so every step that feeds the GRU feeds it unchanged: the
preprocessed words of a text (joined by spaces), as token ids between the tokenizer's own
specials, padded by models.vocab.pad_batch. The tokenizer and the transformer's configuration
live in the checkpoint (the tokenizer as its JSON text, the configuration as a plain dict), so
a checkpoint or an export rebuilds the branch without the model folder.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common import records as R
from models.image import projection_head
from models.vocab import Vocabulary

POOLINGS = ("mean", "cls")
# Configuration entries that say where or with what a model was made, not what it is.
_UNSTORED = ("transformers_version", "_name_or_path", "name_or_path", "architectures",
             "torch_dtype", "dtype")


class HFTokenizer:
    """A fast tokenizer behind the Vocabulary's interface: encode(words, max_tokens) -> ids
    with the tokenizer's specials around at most min(max_tokens, limit) tokens, where `limit`
    leaves room for the specials within `max_length`, the longest input the model takes."""

    def __init__(self, tokenizer_json: str, max_length: int):
        from tokenizers import Tokenizer
        self._json = tokenizer_json
        self._tok = Tokenizer.from_str(tokenizer_json)
        self._tok.no_truncation()
        self._tok.no_padding()
        self.max_length = int(max_length)
        specials = len(self._tok.post_process(self._tok.encode("", add_special_tokens=False)).ids)
        self.limit = self.max_length - specials
        if self.limit < 1:
            raise ValueError(f"a model of {max_length} positions leaves no room for a token "
                             f"beside its {specials} special tokens")

    @property
    def words(self) -> list[str]:
        vocab = self._tok.get_vocab()
        return sorted(vocab, key=vocab.get)

    def __len__(self) -> int:
        return self._tok.get_vocab_size()

    def __contains__(self, word: str) -> bool:
        return True   # subwords spell any word; an unknown one becomes [UNK], still a token

    def encode(self, tokens: Sequence[str], max_tokens: int) -> list[int]:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        enc = self._tok.encode(" ".join(tokens), add_special_tokens=False)
        enc.truncate(min(max_tokens, self.limit))
        return self._tok.post_process(enc).ids

    def to_state(self) -> dict:
        return {"kind": "hf", "tokenizer": self._json, "max_length": self.max_length}

    @classmethod
    def from_state(cls, state: dict) -> "HFTokenizer":
        if not isinstance(state.get("tokenizer"), str) or \
                not isinstance(state.get("max_length"), int):
            raise ValueError("the tokenizer state lacks its JSON or its length limit: the "
                             "checkpoint is not one this project wrote")
        return cls(state["tokenizer"], state["max_length"])

    def fingerprint(self) -> str:
        return hashlib.sha1(self._json.encode("utf-8") + str(self.max_length).encode()
                            ).hexdigest()[:12]


_WORDS = R.list_of(R.of(str))
_TOKENIZER = R.of(dict, check=lambda v: v.get("kind") == "hf" and isinstance(v.get("tokenizer"), str)
                  and isinstance(v.get("max_length"), int) and not isinstance(v["max_length"], bool),
                  want="a list of words or a tokenizer's state")


def vocabulary_rule(value: object) -> str | None:
    """The schema rule of a checkpoint's "vocab" (common.records): the GRU's word list, or the
    transformer's tokenizer state."""
    return _TOKENIZER(value) if isinstance(value, dict) else _WORDS(value)


def vocabulary_from_state(state: object) -> "Vocabulary | HFTokenizer":
    """A checkpoint's "vocab": the GRU's word list, or the transformer's tokenizer."""
    if isinstance(state, dict) and state.get("kind") == "hf":
        return HFTokenizer.from_state(state)
    return Vocabulary.from_state(state)


def stored_config(config) -> dict:
    """A transformers configuration as the plain dict a checkpoint stores."""
    return {k: v for k, v in config.to_dict().items() if k not in _UNSTORED}


class HFTextEncoder(nn.Module):
    """token ids [B, L] (PAD-padded), lengths [B] -> transformer -> pooled -> Linear -> unit.

    `body`: a pretrained transformer to start from; without it one is built from `hf_config`
    with random weights (a checkpoint's state dict then fills them). `frozen` keeps the
    transformer out of training and in eval mode (no dropout), so only the head learns."""

    def __init__(self, hf_config: dict, embed_dim: int = 256, pooling: str = "mean",
                 frozen: bool = False, body: nn.Module | None = None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
        if body is None:
            from transformers import AutoConfig, AutoModel
            config = AutoConfig.for_model(**hf_config)
            body = AutoModel.from_config(config)
        # BERT-like models carry a pooler the mean never reads: unused parameters would stop
        # DistributedDataParallel and waste optimizer state.
        if getattr(body, "pooler", None) is not None:
            body.pooler = None
        self.body = body
        self.hidden = int(body.config.hidden_size)
        self.head = projection_head(self.hidden, embed_dim)
        self.embed_dim, self.pooling, self.frozen = embed_dim, pooling, frozen
        self.pad_id = int(getattr(body.config, "pad_token_id", None) or 0)
        if frozen:
            self.body.requires_grad_(False)
            self.body.eval()
        self.memo: dict[tuple, Tensor] | None = None
        self.memo_limit = 0

    def keep_pooled(self, limit: int) -> None:
        """A frozen transformer gives a text the same states at every epoch: from now on each
        text's pooled states are computed once, on their own (so that the batch a text first
        came in cannot change them), and kept, up to `limit` texts; a step then runs only the
        head. Not part of the state dict: evaluation and export run the transformer."""
        if not self.frozen:
            raise ValueError("keep_pooled needs a frozen transformer: its states change as it trains")
        self.memo, self.memo_limit = {}, limit

    def train(self, mode: bool = True) -> "HFTextEncoder":
        super().train(mode)
        if self.frozen:
            self.body.eval()
        return self

    def hf_config(self) -> dict:
        return stored_config(self.body.config)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """tokens [B, L], lengths [B] -> [B, embed_dim] float32 unit vectors."""
        if tokens.dim() != 2 or lengths.shape != (tokens.shape[0],):
            raise ValueError(f"HFTextEncoder: tokens must be [B, L] and lengths [B], got "
                             f"{tuple(tokens.shape)} and {tuple(lengths.shape)}")
        pooled = self.pooled(tokens, lengths) if self.memo is None else self._kept(tokens, lengths)
        out = self.head(pooled)
        with torch.autocast(device_type=out.device.type, enabled=False):
            return F.normalize(out.float(), dim=-1)

    def pooled(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """The transformer's token states pooled: [B, L], [B] -> [B, hidden]."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        mask = positions[None, :] < lengths.to(tokens.device)[:, None]
        ids = tokens.masked_fill(~mask, self.pad_id)
        hidden = self.body(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)

    def _kept(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        rows = []
        for row, n in zip(tokens.tolist(), lengths.tolist()):
            key = tuple(row[:n])
            vector = self.memo.get(key)
            if vector is None:
                with torch.no_grad():
                    vector = self.pooled(tokens.new_tensor([key]), lengths.new_tensor([n]))[0].float()
                if len(self.memo) < self.memo_limit:
                    self.memo[key] = vector
            rows.append(vector)
        return torch.stack(rows)
