"""Where the image branch's input comes from, decided once where the data is prepared: pixels
(uint8 images, flipped and normalised as the backbone's entry says, then the whole branch) or,
under --frozen-image, the backbone's stored features (float16 rows of each image and its mirror,
then only the head). Training, validation and evaluation ask the source instead of looking at a
batch's dtype or shape."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from common.errors import InputError
from data.images.read import Preprocessing, try_read_image
from models.backbones import Backbone
from models.precision import Precision


def prep_images(images: Tensor, device: torch.device, train: bool, channels_last: bool,
                preprocessing: Preprocessing) -> Tensor:
    """uint8 [B, 3, H, W] (pinned CPU or device) -> normalised float on the device, each image
    mirrored with probability 1/2 when training (drawn from the CPU generator, so a seed fixes it)."""
    images = images.to(device, non_blocking=True)
    flip = (torch.rand(len(images)) < 0.5).to(device, non_blocking=True) if train else None
    x = preprocessing.normalize(images, flip)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def prep_features(features: Tensor, device: torch.device, train: bool) -> Tensor:
    """float16 [B, 2, F] backbone features of each image and its mirror (prepare_image_features.py)
    -> float32 [B, F] on the device: the mirror with probability 1/2 when training, drawn as
    prep_images draws its flips (same generator, same count), so a seed flips the same items."""
    features = features.to(device, non_blocking=True)
    if not train:
        return features[:, 0].float()
    flip = (torch.rand(len(features)) < 0.5).to(device, non_blocking=True)
    return torch.where(flip.view(-1, 1), features[:, 1], features[:, 0]).float()


@dataclass(frozen=True)
class ImageSource:
    """What the image branch reads. `read(i)`: image id i's row (uint8 [3, size, size] pixels,
    or float16 [2, F] features); None decodes the files (pixels only). `summary`: the feature
    file's record without its per-image lists, which the checkpoints keep."""
    features: bool
    backbone: Backbone
    size: int
    read: Callable[[int], Tensor] | None = None
    summary: dict | None = None

    @classmethod
    def pixels(cls, backbone: Backbone, size: int,
               read: Callable[[int], Tensor] | None = None) -> "ImageSource":
        return cls(False, backbone, size, read)

    @classmethod
    def frozen(cls, backbone: Backbone, size: int, read: Callable[[int], Tensor] | None,
               summary: dict) -> "ImageSource":
        return cls(True, backbone, size, read, summary)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.backbone.preprocessing

    def with_reader(self, read: Callable[[int], Tensor] | None) -> "ImageSource":
        """The same source read through another id mapping (a shard, a subset)."""
        return dataclasses.replace(self, read=read)

    def record(self) -> dict:
        """The image mode as a checkpoint keeps it, once: {"frozen", "features": the record}."""
        return {"frozen": self.features, "features": self.summary}

    def filler(self) -> Tensor:
        """The row that stands in for an image that could not be had (its result is discarded)."""
        if self.features:
            return torch.zeros(2, self.backbone.feature_dim, dtype=torch.float16)
        return torch.zeros(3, self.size, self.size, dtype=torch.uint8)

    def load(self, path: str, image_id: int) -> tuple[Tensor | None, str | None]:
        """(image id's row, None), or (None, the reason) for a file that cannot be decoded;
        a reader's own failures (an image its cache recorded as bad) are the caller's."""
        if self.read is None:
            if self.features:
                raise ValueError("a features source without a reader: features have no files")
            return try_read_image(path, self.size, self.preprocessing.resize)
        return self.read(image_id), None

    def inputs(self, batch: Tensor, precision: Precision, train: bool) -> Tensor:
        """A batch of rows -> the branch's input on the device (mirrored at random when `train`)."""
        if self.features:
            # Checked on the CPU, before the copy: a damaged feature file would otherwise show up
            # steps later as a NaN loss blamed on the learning rate.
            if batch.device.type == "cpu" and not torch.isfinite(batch).all():
                where = getattr(self.read, "array_path", "the frozen feature file")
                raise InputError(f"{where}: a batch of features holds NaN or infinite values (the "
                                 "file is damaged): run prepare_image_features.py again")
            return prep_features(batch, precision.device, train)
        return prep_images(batch, precision.device, train, precision.bf16, self.preprocessing)

    def embed(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """`model`'s (CrossModalModel) image embeddings of inputs()'s output."""
        return model.embed_image_features(inputs) if self.features else model.embed_images(inputs)
