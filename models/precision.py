"""Device and numeric precision, decided once: training, evaluation and the benchmarks all ask
a Precision object instead of repeating the rule."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from common.devices import pick_device
from data.images.read import normalize

PRECISIONS = ("bf16", "fp32")


def use_bf16(device: torch.device, precision: str) -> bool:
    """bf16 autocast + channels_last run on CUDA only; the CPU always runs fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return device.type == "cuda" and precision == "bf16"


def prep_images(images: Tensor, device: torch.device, train: bool, channels_last: bool) -> Tensor:
    """uint8 [B, 3, H, W] (pinned CPU or device) -> normalised float on the device, each image
    mirrored with probability 1/2 when training (drawn from the CPU generator, so a seed fixes it)."""
    images = images.to(device, non_blocking=True)
    flip = (torch.rand(len(images)) < 0.5).to(device, non_blocking=True) if train else None
    x = normalize(images, flip)
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
class Precision:
    """Where the model runs and how: bf16 means autocast and channels_last together."""
    device: torch.device
    bf16: bool

    @classmethod
    def resolve(cls, device: str | torch.device | None, precision: str) -> "Precision":
        """From the --device flag (None: CUDA when present) or a device, and --precision."""
        dev = device if isinstance(device, torch.device) else pick_device(device)
        return cls(dev, use_bf16(dev, precision))

    def autocast(self) -> AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model on the device, in the memory layout its inputs will have."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.bf16 else model

    def images(self, images: Tensor, train: bool) -> Tensor:
        """uint8 images -> the model's input on the device (see prep_images)."""
        return prep_images(images, self.device, train, channels_last=self.bf16)

    def image_inputs(self, batch: Tensor, train: bool) -> Tensor:
        """The image branch's input from a batch of uint8 images or of float16 frozen features."""
        if batch.dtype == torch.uint8:
            return self.images(batch, train)
        return prep_features(batch, self.device, train)
