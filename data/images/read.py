"""Image decoding (on CPU workers, to uint8) and augmentation + normalisation (on the device).

Workers hand over uint8 tensors already resized, a quarter of the bytes of float32; the flip and
the backbone's normalisation (its Preprocessing, from models/backbones.py) then run batched
wherever the model runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from common.pool import fork_map

from common.errors import InputError, shown
from common.files import open_regular

RESIZES = ("squash", "crop")
INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
ORIENTATION = 0x0112   # the EXIF tag
# What exports written before the resize rule was recorded say of it: the default rule.
OLD_RESIZE_TEXT = "squashed to image_size x image_size (bilinear), not cropped"


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB, as an image viewer shows it.

    PIL's own convert("RGB") clips 16- and 32-bit greys to 255 (a mid-grey 16-bit PNG comes out
    white) and drops transparency, showing whatever colour the transparent pixels hold. Here
    16-bit and integer greys are scaled from 0..65535, float greys from 0..1 (or clipped to
    0..255 when they go beyond 1), and transparent images are laid over white. An EXIF
    orientation (a phone photo taken sideways) is applied first, as a viewer does.
    """
    if img.getexif().get(ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
    if img.mode == "La":          # premultiplied alpha: PIL converts it only to LA
        img = img.convert("LA")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = np.asarray(img, dtype=np.float64)
        grey = np.clip(grey, 0, 65535) / 257.0      # 65535 -> 255 exactly
        return Image.fromarray(np.rint(grey).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        grey = np.asarray(img, dtype=np.float64)
        grey = np.nan_to_num(grey, nan=0.0, posinf=255.0, neginf=0.0)
        if grey.size and grey.min() >= 0 and grey.max() <= 1:
            grey = grey * 255
        return Image.fromarray(np.rint(np.clip(grey, 0, 255)).astype(np.uint8), "L").convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or \
        (img.mode in ("P", "L", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)
        return white.convert("RGB")
    return img.convert("RGB")


@dataclass(frozen=True)
class Resize:
    """How an image becomes size x size, as timm's eval transform does it: "squash" resizes both
    sides to floor(size / crop_pct) (aspect ratio not kept), "crop" the shorter side (aspect
    ratio kept), each with `interpolation`, then the centre size x size is cut out. The default,
    squash bilinear at crop_pct 1, is the authors' rule: a plain resize to size x size."""
    rule: str = "squash"
    interpolation: str = "bilinear"
    crop_pct: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.rule, str) or self.rule not in RESIZES:
            raise ValueError(f"resize rule {self.rule!r}: use one of {', '.join(RESIZES)}")
        if not isinstance(self.interpolation, str) or self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"resize interpolation {self.interpolation!r}: use one of "
                             f"{', '.join(INTERPOLATIONS)}")
        pct = self.crop_pct
        if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 < pct <= 1:
            raise ValueError(f"resize crop_pct {pct!r}: pass a number above 0 and at most 1")
        # 1 and 1.0 are one rule: the same key, record and cache folder
        object.__setattr__(self, "crop_pct", float(pct))

    @property
    def is_default(self) -> bool:
        return self == Resize()

    @property
    def key(self) -> str:
        """"" for the default rule (so its cache folders and fingerprints are those written
        before there were rules), else a short filesystem-safe name such as crop0.875-bicubic."""
        if self.is_default:
            return ""
        return f"{self.rule}{self.crop_pct!r}-{self.interpolation}"

    def describe(self) -> str:
        return (f"{self.rule} ({self.interpolation}, crop_pct {self.crop_pct!r})"
                if not self.is_default else "squash (bilinear, the default)")

    def record(self) -> dict:
        return {"rule": self.rule, "interpolation": self.interpolation, "crop_pct": self.crop_pct}

    @classmethod
    def from_record(cls, record: object) -> "Resize":
        """The rule of record(); None (a record written before there were rules), "squash" (an
        older Preprocessing record) or an older export's sentence is the default."""
        if record is None or record == "squash" or record == OLD_RESIZE_TEXT:
            return SQUASH
        if not isinstance(record, dict):
            raise ValueError(f"resize record {str(record)[:60]!r}: not an object of rule, "
                             "interpolation and crop_pct")
        unknown = sorted(set(record) - {"rule", "interpolation", "crop_pct"})
        if unknown:
            raise ValueError(f"resize record: unknown field {unknown[0]!r}: keep only rule, "
                             "interpolation and crop_pct")
        return cls(**record)

    def scale_size(self, size: int) -> int:
        """The side (both sides for squash, the shorter for crop) before the centre crop."""
        return math.floor(size / self.crop_pct)

    def apply(self, img: Image.Image, size: int) -> Image.Image:
        """An RGB image -> size x size, as timm's transforms_imagenet_eval (torchvision's Resize
        and CenterCrop on a PIL image) does it."""
        method = INTERPOLATIONS[self.interpolation]
        scale = self.scale_size(size)
        if self.rule == "squash":
            img = img.resize((scale, scale), method)
        else:
            w, h = img.size
            # torchvision's _compute_resized_output_size: the longer side truncated, not rounded
            if w <= h:
                new = (scale, int(scale * h / w))
            else:
                new = (int(scale * w / h), scale)
            if new != img.size:
                img = img.resize(new, method)
        w, h = img.size
        if (w, h) == (size, size):
            return img
        # torchvision's center_crop: Python's round (half to even) of the margins
        top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
        return img.crop((left, top, left + size, top + size))


SQUASH = Resize()


def read_image(path: str, size: int, resize: Resize = SQUASH) -> torch.Tensor:
    """Decode and resize by `resize` to [3, size, size] uint8 (by default squashed, aspect ratio
    not kept, as the authors)."""
    # A FIFO or a device in place of the file would make a plain open() wait forever.
    with open_regular(path) as f, Image.open(f) as img:
        if resize.is_default:
            img.draft("RGB", (size, size))  # JPEG: let the decoder downscale by 2^n first
            img = to_rgb(img).resize((size, size), Image.BILINEAR)
        else:
            # The draft keeps both sides at least the scale size, so the shorter side the crop
            # rule resizes is never below what it needs. (An EXIF rotation swaps the sides,
            # which a square request does not mind.)
            scale = resize.scale_size(size)
            img.draft("RGB", (scale, scale))
            img = resize.apply(to_rgb(img), size)
        arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def try_read_image(path: str, size: int, resize: Resize = SQUASH
                   ) -> tuple[torch.Tensor | None, str | None]:
    """(the image, None), or (None, a one-line reason) when the file is missing or broken."""
    try:
        return read_image(path, size, resize), None
    except Exception as e:  # noqa: BLE001 - any decoder failure means the same: unusable image
        return None, (f"{type(e).__name__}: {e}".splitlines() or [type(e).__name__])[0]


class ImageFiles:
    """image id (an index into `paths`) -> uint8 tensor, decoded from the file at every call."""

    def __init__(self, paths: Sequence[str], size: int, resize: Resize = SQUASH):
        self.paths, self.size, self.resize = list(paths), size, resize

    def __call__(self, image_id: int) -> torch.Tensor:
        return read_image(self.paths[image_id], self.size, self.resize)


def _probe(job: tuple[str, int, Resize]) -> str | None:
    return try_read_image(*job)[1]


def find_bad_images(paths: Sequence[str], size: int, workers: int = 1,
                    resize: Resize = SQUASH) -> dict[str, str]:
    """Decode every image once; returns {path: reason} for those that are missing or broken."""
    unique = sorted(set(paths))
    jobs = [(p, size, resize) for p in unique]
    reasons = list(fork_map(_probe, jobs, workers, serial_below=500, chunksize=64,
                            progress=dict(desc="checking images", unit="img",
                                          disable=len(jobs) < 2000)))
    return {p: r for p, r in zip(unique, reasons) if r is not None}


def report_bad_images(bad: dict[str, str], total: int, max_share: float, what: str) -> None:
    """Print the count and first examples; stop when more than `max_share` of images are bad."""
    if not bad:
        return
    first = "; ".join(f"{shown(p, 200)} ({shown(r, 200)})" for p, r in list(bad.items())[:3])
    share = len(bad) / max(total, 1)
    print(f"left out {len(bad)} of {total} {what} images that are missing or unreadable: {first}")
    if share > max_share:
        raise InputError(f"{len(bad)} of {total} {what} images ({share:.1%}) are missing or "
                           f"unreadable, more than --max-bad-images {max_share:.1%}: fix the "
                           f"image paths (--image-root) or raise the limit (first: {first})")


@dataclass(frozen=True)
class Preprocessing:
    """How a backbone wants its images: resized by `resize` to the run's image size (by default
    squashed bilinear to a square, aspect ratio not kept, as the authors), then scaled to 0..1
    and normalised per channel by `mean` and `std`."""
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: Resize = SQUASH

    def __post_init__(self) -> None:
        # Entries written when the rule was a name ("squash") keep working.
        if not isinstance(self.resize, Resize):
            object.__setattr__(self, "resize", Resize.from_record(self.resize))

    def normalize(self, batch: torch.Tensor, flip: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> float32 normalised, images with flip[i] mirrored."""
        # torch.where rather than x[flip]: boolean indexing waits for the GPU to count the rows.
        if flip is not None:
            batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
        x = batch.float().div_(255)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)

    def record(self) -> dict:
        """As a config file or a checkpoint keeps it (plain data)."""
        return {"mean": list(self.mean), "std": list(self.std), "resize": self.resize.record()}

    @classmethod
    def from_record(cls, record: dict) -> "Preprocessing":
        """The preprocessing of record(); an older record's "resize": "squash" is the default.
        ValueError in one line for a record that is not one (an edited checkpoint)."""
        def channels(name: str, low: float) -> tuple[float, float, float]:
            value = record.get(name) if isinstance(record, dict) else None
            if not (isinstance(value, list) and len(value) == 3 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    and v > low for v in value)):
                raise ValueError(f"image preprocessing record: {name} is {str(value)[:60]!r}, "
                                 f"not three finite numbers above {low}")
            return tuple(float(v) for v in value)
        return cls(channels("mean", -math.inf), channels("std", 0.0),
                   Resize.from_record(record.get("resize")))
