"""Image branch: a torchvision ResNet without its classifier, a head (linear, as the release, or a
two-layer MLP), L2 normalisation. The head also runs alone on precomputed backbone features
(prepare_image_features.py), which is how --frozen-image trains."""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import models as tvm

from common.files import not_regular

ARCHS = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1, 512),
    "resnet34": (tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1, 512),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1, 2048),
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V1, 2048),
    "resnet152": (tvm.resnet152, tvm.ResNet152_Weights.IMAGENET1K_V1, 2048),
}
HEADS = ("linear", "mlp")
DOWNLOAD_TIMEOUT_S = 30   # per socket operation; an offline machine fails instead of hanging


def check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown image arch {arch!r}: choose one of {', '.join(ARCHS)}")


def imagenet_cache_path(arch: str) -> Path:
    """Where torchvision's weights API keeps (and looks for) the ImageNet file of `arch`."""
    check_arch(arch)
    url = ARCHS[arch][1].url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def download_weights(url: str, dest: Path) -> None:
    """Fetch `url` into `dest`, checking the hash prefix in its name as torch.hub does."""
    match = re.search(r"-([a-f0-9]*)\.", dest.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(url, str(dest),
                                       hash_prefix=match.group(1) if match else None)
    finally:
        socket.setdefaulttimeout(previous)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def load_backbone_weights(backbone: nn.Module, path: Path, arch: str) -> None:
    """Load a torchvision ResNet state dict from `path`; its fc keys are ignored."""
    if not path.exists():
        raise ValueError(f"image weights file {path} not found: pass an existing file to "
                         "--image-weights, or --no-pretrained")
    odd = not_regular(path)   # torch.load would wait forever on a FIFO
    if odd:
        raise ValueError(f"image weights file {path} is {odd}, not a regular file: pass a "
                         "torchvision ResNet state dict to --image-weights, or --no-pretrained")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file gets the same one-line answer
        raise ValueError(f"image weights file {path} could not be read ({one_line(e)}): "
                         "delete it or replace it with a torchvision ResNet state dict") from None
    if not isinstance(state, dict):
        raise ValueError(f"image weights file {path} holds a {type(state).__name__}, not a "
                         f"state dict: save {arch}.state_dict() with torch.save")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong_shape:
        parts = [f"{len(keys)} {name} keys (e.g. {keys[0]})" for name, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
                 if keys]
        raise ValueError(f"image weights file {path} does not match torchvision {arch} "
                         f"({'; '.join(parts)}): pass the weights of a {arch} or choose "
                         "the arch they belong to")
    backbone.load_state_dict(state)


def load_imagenet_weights(backbone: nn.Module, arch: str) -> None:
    """ImageNet weights from the torch hub cache, downloaded there first when absent."""
    path = imagenet_cache_path(arch)
    if not path.is_file():
        try:
            download_weights(ARCHS[arch][1].url, path)
        except Exception as e:  # offline, proxy, bad hash: all end in the same instructions
            raise ValueError(f"ImageNet weights for {arch} are not available ({one_line(e)}): "
                             f"put {path.name} at {path}, or pass --image-weights FILE, "
                             "or --no-pretrained") from None
    load_backbone_weights(backbone, path, arch)


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
    """ResNet (avgpool kept, fc removed) -> head(feat_dim -> embed_dim) -> unit vector."""

    def __init__(self, arch: str = "resnet50", embed_dim: int = 256, pretrained: bool = True,
                 weights_file: str | os.PathLike | None = None, head: str = "linear"):
        super().__init__()
        check_arch(arch)
        build, _, feat_dim = ARCHS[arch]
        self.arch = arch
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.head_kind = head
        self.backbone = build(weights=None)
        self.backbone.fc = nn.Identity()   # avgpool stays: the backbone returns [B, feat_dim]
        if weights_file is not None:
            load_backbone_weights(self.backbone, Path(weights_file), arch)
        elif pretrained:
            load_imagenet_weights(self.backbone, arch)
        self.head = image_head(head, feat_dim, embed_dim)
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

    def forward(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] images, or [B, feat_dim] backbone features -> [B, embed_dim] float32
        unit vectors."""
        feats = images if images.dim() == 2 else self.backbone(images)
        out = self.head(feats)
        # The norm of bf16 values loses too many digits: normalise in float32 outside autocast.
        with torch.autocast(device_type=out.device.type, enabled=False):
            return F.normalize(out.float(), dim=-1)
