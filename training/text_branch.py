"""--text-encoder hf in training: the tokenizer that encodes the texts, the pretrained
transformer the branch starts from, and the optimizer's groups (the transformer at its own
learning rate). The GRU's counterparts stay where they were: the Doc2Vec words and vectors."""
from __future__ import annotations

import argparse
from typing import Sequence

from torch import nn

from data.text import transformer
from models.hf_text import HFTokenizer
from models.vocab import Vocabulary


def is_hf(args: argparse.Namespace) -> bool:
    return getattr(args, "text_encoder", "gru") == "hf"


def text_vocabulary(args: argparse.Namespace, doc2vec_words: Sequence[str]
                    ) -> Vocabulary | HFTokenizer:
    """What encodes the texts: the Doc2Vec words for the GRU, the model folder's tokenizer for
    --text-encoder hf (cut at the model's limit; one line when the folder will not load)."""
    if not is_hf(args):
        return Vocabulary(doc2vec_words)
    folder = transformer.resolve(args.text_model)
    tokenizer = transformer.load_tokenizer(folder)
    limit = transformer.model_limit(folder, tokenizer, transformer.load_config(folder))
    return HFTokenizer(tokenizer.backend_tokenizer.to_str(), limit)


def pretrained_body(args: argparse.Namespace) -> nn.Module | None:
    """The transformer a --text-encoder hf run starts from (None for the GRU)."""
    if not is_hf(args):
        return None
    return transformer.load(transformer.resolve(args.text_model))[1].train()


def model_fields(args: argparse.Namespace) -> dict:
    """The ModelConfig fields of the text branch the flags ask for."""
    if not is_hf(args):
        return {}
    return {"text_encoder": "hf", "text_pooling": args.text_pooling,
            "text_frozen": bool(args.freeze_text)}


def param_groups(model: nn.Module, args: argparse.Namespace) -> list[dict]:
    """The trained parameters: the transformer's at --text-lr (a pretrained transformer
    forgets at the rate that trains a fresh head), everything else at the optimizer's --lr."""
    body = getattr(getattr(model, "text", None), "body", None)
    inside = set() if body is None else {id(p) for p in body.parameters()}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in inside]
    tuned = [] if body is None else [p for p in body.parameters() if p.requires_grad]
    return [{"params": rest}] + ([{"params": tuned, "lr": args.text_lr}] if tuned else [])
