"""Reading a file of backbone weights and loading it with every key and shape checked: what the
torchvision, timm and packaged weights (models/backbones.py, models/timm_backbones.py) share."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from common.errors import InputError
from common.files import not_regular, open_regular


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def read_state_file(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The state dict in `path` (read weights-only: a crafted pickle runs no code); one line
    (InputError) when it is missing, not a regular file, unreadable or not a state dict. `what`
    names what the file should hold, for the fix."""
    if not path.exists():
        raise InputError(f"image weights file {path} not found: pass an existing file to "
                         "--image-weights, or --no-pretrained")
    odd = not_regular(path)   # torch.load would wait forever on a FIFO
    if odd:
        raise InputError(f"image weights file {path} is {odd}, not a regular file: pass a "
                         f"{what} state dict to --image-weights, or --no-pretrained")
    try:
        with open_regular(path) as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file gets the same one-line answer
        raise InputError(f"image weights file {path} could not be read ({one_line(e)}): "
                         f"delete it or replace it with a {what} state dict") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise InputError(f"image weights file {path} holds a {type(state).__name__}, not a "
                         f"state dict: save the {what}'s state_dict() with torch.save")
    return state


def strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """`state` without the keys under `prefix` (a classifier the backbone does not have)."""
    return {k: v for k, v in state.items() if not k.startswith(prefix)} if prefix else dict(state)


def load_checked(net: nn.Module, state: dict[str, torch.Tensor], path: Path | str, what: str,
                 arch: str) -> None:
    """Load `state` into `net` only when its keys and shapes are exactly the net's; otherwise one
    line naming the first missing, unexpected and wrongly shaped key."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong_shape:
        parts = [f"{len(keys)} {name} keys (e.g. {keys[0]})" for name, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
                 if keys]
        raise InputError(f"image weights file {path} does not match {what} "
                         f"({'; '.join(parts)}): pass the weights of a {arch} or choose "
                         "the arch they belong to")
    net.load_state_dict(state)
