"""Which torch device a --device flag names: decided here for every script, so that a CUDA
device asked for on a machine without one is the same one line everywhere."""
from __future__ import annotations

from typing import TYPE_CHECKING

from common.errors import InputError

if TYPE_CHECKING:
    import torch


def pick_device(name: "str | torch.device | None") -> "torch.device":
    """The named device, or CUDA when present; a CUDA device that is absent is refused."""
    import torch   # here: the text-side scripts import this module without needing torch
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name} was asked for but no CUDA device is available: pass "
                         "--device cpu")
    return device
