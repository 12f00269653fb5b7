"""The image side's settings, a frozen dataclass built once from the parsed flags (as
data/datasets/settings.py builds the dataset's and the text's): which backbone, at which image
size, from which weights, fine-tuned or frozen, under which head. Its fields are the flags'
names, so a script without one of them keeps config.py's value."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import config
from data.datasets.settings import from_args


@dataclass(frozen=True)
class ImageSettings:
    """--arch, --image-size, --no-pretrained / --image-weights, --frozen-image, --image-head."""
    arch: str = config.ARCH
    image_size: int = config.IMAGE_SIZE
    no_pretrained: bool = False
    image_weights: str | None = None
    frozen_image: bool = config.FROZEN_IMAGE
    image_head: str = config.IMAGE_HEAD

    @property
    def pretrained(self) -> bool:
        """Whether the backbone starts from its entry's pretrained weights."""
        return not self.no_pretrained and self.image_weights is None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ImageSettings":
        return from_args(cls, args)
