"""Device and numeric precision, decided once: training, evaluation and the benchmarks all ask
a Precision object instead of repeating the rule."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from common.devices import pick_device

PRECISIONS = ("bf16", "fp32")


def use_bf16(device: torch.device, precision: str) -> bool:
    """bf16 autocast + channels_last run on CUDA only; the CPU always runs fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return device.type == "cuda" and precision == "bf16"


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
