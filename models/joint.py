"""The two branches together, and the ModelConfig that lets a checkpoint rebuild them."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

import numpy as np
from torch import Tensor, nn

from models.hf_text import HFTextEncoder
from models.image import ImageEncoder
from models.text import TextEncoder


# Keys added after the first checkpoints: absent, they take their default (the release's model).
TEXT_KEYS = ("text_encoder", "text_config", "text_pooling", "text_frozen")
OPTIONAL = ("image_head", "image_preprocessing", *TEXT_KEYS)


@dataclass(frozen=True)
class ModelConfig:
    """The shape of the model: what build_model needs, and what a checkpoint stores (as a plain
    dict, so that torch.load(weights_only=True) reads it)."""
    arch: str
    embed_dim: int
    word_dim: int
    hidden: int
    vocab_size: int
    image_head: str = "linear"     # checkpoints older than the option have none: the release's
    # --text-encoder hf: the transformer's configuration (a plain dict), its pooling, and
    # whether it is frozen; word_dim and hidden are then its width, vocab_size its tokenizer's.
    text_encoder: str = "gru"
    text_config: dict | None = None
    text_pooling: str = "mean"
    text_frozen: bool = False
    # A timm backbone's preprocessing (Preprocessing.record()), as the timm of training read it
    # from its config: evaluation and export then prepare images as training did, whatever timm
    # is installed. The table's own backbones keep theirs in code (None).
    image_preprocessing: dict | None = None

    def __post_init__(self) -> None:
        # Checkpoints store builtins only: numpy integers (a vector's shape) become ints here.
        for name in ("embed_dim", "word_dim", "hidden", "vocab_size"):
            object.__setattr__(self, name, int(getattr(self, name)))

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.image_preprocessing is None:
            d.pop("image_preprocessing")
        if self.text_encoder == "gru":   # the GRU's checkpoints keep the keys they always had
            for key in TEXT_KEYS:
                d.pop(key)
        return d

    @classmethod
    def from_dict(cls, config: dict) -> "ModelConfig":
        """From a checkpoint's "model_config" (five keys since the first checkpoints; the
        image head's kind since --image-head, the release's Linear when absent)."""
        if not isinstance(config, dict):
            raise ValueError(f"model config must be a dict, got {type(config).__name__}")
        missing = [f.name for f in fields(cls) if f.name not in config and f.name not in OPTIONAL]
        if missing:
            raise ValueError(f"model config lacks {', '.join(missing)}: the checkpoint was not "
                             "written by this project's training")
        return cls(**{f.name: config[f.name] for f in fields(cls) if f.name in config})




class CrossModalModel(nn.Module):
    """Images and texts embedded as unit vectors of one joint space."""

    def __init__(self, image: ImageEncoder, text: TextEncoder | HFTextEncoder):
        super().__init__()
        if image.embed_dim != text.embed_dim:
            raise ValueError(f"image embed_dim {image.embed_dim} differs from text embed_dim "
                             f"{text.embed_dim}: both branches must share the joint space")
        self.image = image
        self.text = text

    def embed_images(self, images: Tensor) -> Tensor:
        return self.image(images)

    def embed_image_features(self, features: Tensor) -> Tensor:
        return self.image.forward_features(features)

    def embed_texts(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.text(tokens, lengths)

    def forward(self, images: Tensor, tokens: Tensor, lengths: Tensor, features: bool = False
                ) -> tuple[Tensor, Tensor]:
        """Both branches in one call, so that DistributedDataParallel sees every parameter.
        `features`: `images` are backbone features (--frozen-image), not pixels."""
        image = self.image.forward_features(images) if features else self.image(images)
        return image, self.text(tokens, lengths)

    def config(self) -> ModelConfig:
        image = dict(arch=self.image.arch, embed_dim=self.image.embed_dim,
                     image_head=self.image.head_kind,
                     image_preprocessing=self.image.recorded_preprocessing())
        if isinstance(self.text, HFTextEncoder):
            return ModelConfig(**image,
                               word_dim=self.text.hidden, hidden=self.text.hidden,
                               vocab_size=int(self.text.body.config.vocab_size),
                               text_encoder="hf",
                               text_config=self.text.hf_config(), text_pooling=self.text.pooling,
                               text_frozen=self.text.frozen)
        return ModelConfig(**image, word_dim=self.text.embedding.embedding_dim,
                           hidden=self.text.gru.hidden_size,
                           vocab_size=self.text.embedding.num_embeddings)


def build_model(config: ModelConfig, word_vectors: np.ndarray | None = None,
                pretrained: bool = False,
                weights_file: str | os.PathLike | None = None,
                text_body: nn.Module | None = None) -> CrossModalModel:
    """The model `config` describes. The defaults build it without any pretrained weights,
    which is what loading a checkpoint needs: its state dict overwrites every parameter.
    `text_body`: the pretrained transformer a --text-encoder hf run starts from."""
    if not isinstance(config, ModelConfig):
        raise ValueError(f"build_model needs a ModelConfig, got {type(config).__name__} (a "
                         "checkpoint's dict goes through ModelConfig.from_dict)")
    image = ImageEncoder(config.arch, config.embed_dim, pretrained=pretrained,
                         weights_file=weights_file, head=config.image_head,
                         preprocessing=config.image_preprocessing)
    if config.text_encoder == "hf":
        text = HFTextEncoder(config.text_config or {}, config.embed_dim, config.text_pooling,
                             config.text_frozen, body=text_body)
    else:
        text = TextEncoder(config.vocab_size, config.word_dim, config.hidden, config.embed_dim,
                           word_vectors=word_vectors)
    return CrossModalModel(image, text)
