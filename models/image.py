"""Image branch: a backbone of models/backbones.py without its classifier, a head (linear, as the
release, or a two-layer MLP), L2 normalisation. The head also runs alone on precomputed backbone
features (prepare_image_features.py, forward_features), which is how --frozen-image trains."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from data.images.read import Preprocessing
from models.backbones import BACKBONES, Backbone, backbone

ARCHS = BACKBONES   # the named choices of --arch (and timm:NAME)
HEADS = ("linear", "mlp")


def projection_head(in_dim: int, out_dim: int) -> nn.Linear:
    """The linear map into the joint space, initialised as the release does for both branches:
    xavier-normal weight, bias 0.1."""
    head = nn.Linear(in_dim, out_dim)
    nn.init.xavier_normal_(head.weight)
    nn.init.constant_(head.bias, 0.1)
    return head


def image_head(kind: str, feat_dim: int, embed_dim: int) -> nn.Module:
    """"linear": the release's Linear; "mlp": Linear -> ReLU -> Linear, the usual head on frozen
    features (its hidden layer as wide as the features)."""
    if kind == "linear":
        return projection_head(feat_dim, embed_dim)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(feat_dim, feat_dim), nn.ReLU(inplace=True),
                             projection_head(feat_dim, embed_dim))
    raise ValueError(f"unknown image head {kind!r}: choose one of {', '.join(HEADS)}")


class ImageEncoder(nn.Module):
    """Backbone (its classifier removed) -> head(feat_dim -> embed_dim) -> unit vector."""

    def __init__(self, arch: str = "resnet50", embed_dim: int = 256, pretrained: bool = True,
                 weights_file: str | os.PathLike | None = None, head: str = "linear",
                 preprocessing: dict | None = None):
        super().__init__()
        entry = backbone(arch)
        if preprocessing is not None:   # as a checkpoint recorded it (ModelConfig)
            entry = dataclasses.replace(entry, preprocessing=Preprocessing.from_record(preprocessing))
        self._entry = entry
        self.arch = arch
        self.feat_dim = entry.feature_dim
        self.embed_dim = embed_dim
        self.head_kind = head
        self.backbone = entry.build()
        if weights_file is not None:
            entry.weights.load_file(self.backbone, Path(weights_file), arch)
        elif pretrained:
            entry.weights.load_pretrained(self.backbone, arch)
        self.head = image_head(head, entry.feature_dim, embed_dim)
        self.frozen_backbone = False

    def freeze_backbone(self) -> None:
        """--frozen-image: the backbone keeps its weights and its BatchNorm statistics (eval mode
        even while the model trains), as when its features were computed."""
        self.frozen_backbone = True
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> "ImageEncoder":
        super().train(mode)
        if self.frozen_backbone:
            self.backbone.eval()
        return self

    @property
    def entry(self) -> Backbone:
        """The backbone's entry: how its images are prepared, where its weights come from."""
        return self._entry

    def recorded_preprocessing(self) -> dict | None:
        """What a checkpoint records of the preprocessing: a timm model's, read from the
        installed timm's config (the table's backbones keep theirs in code)."""
        return None if self.arch in BACKBONES else self._entry.preprocessing.record()

    def forward(self, pixels: Tensor) -> Tensor:
        """[B, 3, H, W] normalised images -> [B, embed_dim] float32 unit vectors."""
        return self.forward_features(self.backbone(pixels))

    def forward_features(self, features: Tensor) -> Tensor:
        """[B, feat_dim] backbone features -> [B, embed_dim] float32 unit vectors."""
        out = self.head(features)
        # The norm of bf16 values loses too many digits: normalise in float32 outside autocast.
        with torch.autocast(device_type=out.device.type, enabled=False):
            return F.normalize(out.float(), dim=-1)
