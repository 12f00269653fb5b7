"""Frozen image features: the image backbone run once over every image of a dataset, so that
--frozen-image training only runs the image head (and the text branch).

WORK_DIR/image_features/<arch>_<size>/ holds features.npy, [N, 2, F] float16 (row r: the image
paths[r] and its mirror, the trainer's only augmentation), backbone.pt (the backbone's weights
that made them: a frozen-mode checkpoint holds them, so it embeds new images without this
folder) and record.json (what they were made from: the dataset's hash, the arch, the identity of
the weights, the image size, the resize rule when it is not the default squash, the image
cache's fingerprint, every image's size and mtime, the images that could not be read). prepare_image_features.py writes it into a hidden folder renamed
into place at the end, so an interrupted build never looks complete; the trainer refuses a
folder that is missing, stale or made with other flags, with the command that remakes it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from common import records as R
from common.errors import InputError
from common.files import not_regular, open_regular, read_regular_text
from common.places import check_replaceable
from common.workdir import default_mode, swap_folder, write_error
from data.datasets.settings import DataSettings
from data.images.cache import CachedImages, ImageCache, _remove_leftovers, file_stats
from data.images.read import Preprocessing, Resize
from models.backbones import BACKBONES, backbone as backbone_entry
from models.checkpoint import state_mismatch, torch_save
from models.settings import ImageSettings

FEATURES_DIR = "image_features"
ARRAY, RECORD, BACKBONE = "features.npy", "record.json", "backbone.pt"
FORMAT = 1


def features_folder(work_dir: str | Path, arch: str, size: int) -> Path:
    # timm:NAME -> timm-NAME: a colon is not allowed in a folder name on every file system.
    return Path(work_dir) / FEATURES_DIR / f"{arch.replace(':', '-')}_{size}"


@dataclass(frozen=True)
class FeatureRequest:
    """The features a run asks for: made by the backbone and weights of `image` (random weights
    are drawn under the data's --seed), for the dataset of `data`, kept under `work_dir`."""
    work_dir: str
    image: ImageSettings
    data: DataSettings

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "FeatureRequest":
        return cls(str(args.work_dir), ImageSettings.from_args(args), DataSettings.from_args(args))

    @property
    def folder(self) -> Path:
        return features_folder(self.work_dir, self.image.arch, self.image.image_size)


def file_hash(path: str | Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_identity(image: ImageSettings, seed: int) -> dict:
    """Which backbone weights the settings ask for, as the trainer builds them: a --image-weights
    file (by its content), the entry's pretrained weights (by name), or random weights drawn
    under --seed (--no-pretrained; the trainer's --run-seed does not change a frozen backbone)."""
    if image.image_weights is not None:
        path = Path(image.image_weights)
        if not path.is_file():
            raise InputError(f"image weights file {path} not found: pass an existing file to "
                             "--image-weights, or --no-pretrained")
        return {"kind": "file", "path": str(path.resolve()), "hash": file_hash(path)}
    if image.no_pretrained:
        return {"kind": "random", "seed": int(seed)}
    # "imagenet": the kind older feature files recorded for the pretrained weights
    return {"kind": "imagenet", "name": backbone_entry(image.arch).weights.name}


def describe(identity: dict) -> str:
    if identity["kind"] == "file":
        return f"--image-weights {identity['path']}"
    if identity["kind"] == "random":
        return f"--no-pretrained --seed {identity['seed']}"
    return f"ImageNet weights ({identity['name']})"


def remake_hint(request: FeatureRequest) -> str:
    image = request.image
    weights = (f" --image-weights {image.image_weights}" if image.image_weights else
               f" --no-pretrained --seed {request.data.seed}" if image.no_pretrained else "")
    return (f"run prepare_image_features.py --dataset {request.data.dataset} --work-dir "
            f"{request.work_dir} --arch {image.arch} --image-size {image.image_size}{weights}")


def build_backbone(image: ImageSettings, seed: int) -> torch.nn.Module:
    """The backbone as the trainer builds it: random weights drawn under the seed first (the
    trainer seeds, then builds the image branch before anything else), then the pretrained or
    --image-weights ones over them."""
    from models.image import ImageEncoder
    torch.manual_seed(seed)
    encoder = ImageEncoder(image.arch, embed_dim=1, pretrained=not image.no_pretrained,
                           weights_file=image.image_weights)
    return encoder.backbone.eval()


@torch.no_grad()
def compute_features(backbone: torch.nn.Module, preprocessing: Preprocessing, cache: ImageCache,
                     out: np.ndarray, device: torch.device, batch_size: int,
                     progress: bool = True) -> None:
    """Write into `out` ([N, 2, F] float16, a memory map: a large dataset never sits in memory)
    the features of the cache's rows and their mirrors, prepared as the backbone's entry says;
    zeros for the images it could not read."""
    normalize = preprocessing.normalize
    images = np.load(cache.folder / "images.npy", mmap_mode="r")
    bad_rows = {cache.row_of[p] for p in cache.bad}
    backbone = backbone.to(device).eval()
    top = float(np.finfo(np.float16).max)
    starts = range(0, len(images), batch_size)
    for s in tqdm(starts, desc=f"image features at {cache.size}px", unit="batch",
                  mininterval=1.0, disable=not progress):
        x = torch.from_numpy(np.array(images[s:s + batch_size])).to(device)
        feats = torch.stack([backbone(normalize(x)), backbone(normalize(x.flip(-1)))], 1).float()
        if not torch.isfinite(feats).all() or feats.abs().max() > top:
            raise InputError(f"the backbone gives non-finite or too large features (float16 "
                             f"holds up to {top:g}) on images {s}..{s + len(x) - 1}: check "
                             "--image-weights")
        block = feats.cpu().numpy().astype(np.float16)
        for r in bad_rows.intersection(range(s, s + len(x))):
            block[r - s] = 0
        out[s:s + len(x)] = block


def build_features(request: FeatureRequest, cache: ImageCache, data_hash: str,
                   device: torch.device, batch_size: int, progress: bool = True) -> Path:
    """Compute the features of every image of `cache` and write the folder (replacing one)."""
    image = request.image
    identity = weights_identity(image, request.data.seed)
    backbone = build_backbone(image, request.data.seed)
    final = request.folder
    check_replaceable(final, RECORD, "prepare_image_features.py")
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root)
    entry = backbone_entry(image.arch)
    resize = entry.preprocessing.resize
    if cache.resize != resize:
        raise ValueError(f"the image cache {cache.folder} is resized by {cache.resize.describe()}, "
                         f"{image.arch} asks for {resize.describe()}: build the cache with its rule")
    shape = [len(cache.paths), 2, entry.feature_dim]
    need, free = int(np.prod(shape)) * 2, shutil.disk_usage(root).free
    if need > free:
        raise InputError(f"{root}: the features of {len(cache.paths)} images need "
                         f"{need / 2**30:.1f} GiB but {free / 2**30:.1f} GiB are free: free some "
                         "space or pass a --work-dir on a larger disk")
    record = {"format": FORMAT, "arch": image.arch, "image_size": image.image_size,
              "weights": identity, "dataset_hash": data_hash, "image_cache": cache.fingerprint,
              "paths": cache.paths, "stats": cache.stats, "bad": cache.bad, "shape": shape}
    if not resize.is_default:   # the default rule's record stays as it was before rules
        record["resize"] = resize.record()
    record.update(timm_preprocessing(image.arch))
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.building-pid{os.getpid()}-"))
    os.chmod(tmp, default_mode(folder=True))
    try:
        array = np.lib.format.open_memmap(tmp / ARRAY, mode="w+", dtype=np.float16, shape=tuple(shape))
        compute_features(backbone, entry.preprocessing, cache, array, device, batch_size, progress)
        array.flush()
        del array
        torch_save({k: v.cpu() for k, v in backbone.state_dict().items()}, tmp / BACKBONE)
        (tmp / RECORD).write_text(json.dumps(record), encoding="utf-8")
        for f in (tmp / ARRAY, tmp / BACKBONE, tmp / RECORD):
            os.chmod(f, default_mode())
        old = root / f".{final.name}.old-pid{os.getpid()}-{cache.fingerprint[:8]}"
        swap_folder(tmp, final, old)
    except OSError as e:
        raise write_error(final, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


RECORD_SCHEMA = {
    "format": R.one_of(FORMAT), "arch": R.of(str), "image_size": R.whole(1),
    "weights": {"kind": R.one_of("file", "random", "imagenet")}, "dataset_hash": R.of(str),
    "image_cache": R.of(str), "paths": R.list_of(R.of(str)),
    "stats": R.list_of(R.optional(R.list_of(R.of(int)))), "bad": R.of(dict),
    "shape": R.list_of(R.whole(0), length=3),
}


def read_record(folder: Path, fix: str = "run prepare_image_features.py again") -> dict | None:
    """The folder's record; None where there is none of this version (or its array is not a
    float16 one of the recorded shape); one line naming the field where the record is damaged
    (edited, cut short)."""
    try:
        record = json.loads(read_regular_text(folder / RECORD))
        array = np.load(folder / ARRAY, mmap_mode="r") if not not_regular(folder / ARRAY) else None
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT or array is None:
        return None
    R.check(record, RECORD_SCHEMA, folder / RECORD, fix)
    try:   # optional: absent where the rule is the default (and in records older than rules)
        Resize.from_record(record.get("resize"))
    except (TypeError, ValueError) as e:
        raise InputError(f"{folder / RECORD}: field 'resize': {e}: {fix}") from None
    n = record["shape"][0]
    for name in ("paths", "stats"):
        if len(record[name]) != n:
            raise InputError(f"{folder / RECORD}: field {name!r} has {len(record[name])} entries "
                             f"for {n} rows: {fix}")
    if list(array.shape) != record["shape"] or array.dtype != np.float16:
        return None
    return record


def timm_preprocessing(arch: str) -> dict:
    """{"preprocessing": ...} for a timm arch, whose mean, std and resize rule come from the
    installed timm's config for it (a table entry's are in code): {} otherwise."""
    return {} if arch in BACKBONES else {"preprocessing": backbone_entry(arch).preprocessing.record()}


def check_record(record: dict | None, folder: Path, request: FeatureRequest,
                 used: Sequence[str]) -> None:
    """One line, with the command that remakes the folder, unless it holds the features of
    every one of `used` (unchanged since) made with these settings."""
    hint = remake_hint(request)
    if record is None:
        raise InputError(f"{folder}: no image features (or unreadable, or written by another "
                         f"version) for --frozen-image: {hint}")
    identity = weights_identity(request.image, request.data.seed)
    resize = backbone_entry(request.image.arch).preprocessing.resize
    for what, then, now in (("--arch", record["arch"], request.image.arch),
                            ("--image-size", record["image_size"], request.image.image_size),
                            # the arch's rule, should its entry have changed since
                            ("the resize rule", Resize.from_record(record.get("resize")).describe(),
                             resize.describe()),
                            ("the backbone's weights", describe(record["weights"]), describe(identity)),
                            ("timm's preprocessing", record.get("preprocessing"),
                             timm_preprocessing(request.image.arch).get("preprocessing"))):
        if then != now:
            raise InputError(f"{folder}: the features were made with {what} {then}, this run "
                             f"asks for {now}: {hint}")
    if record["weights"] != identity:    # the same file name with other content
        raise InputError(f"{folder}: the features were made from another version of "
                         f"{describe(identity)}: {hint}")
    rows = {p: r for r, p in enumerate(record["paths"])}
    wanted = sorted(set(used))
    missing = [p for p in wanted if p not in rows]
    if missing:
        raise InputError(f"{folder}: the features lack {len(missing)} images of the dataset "
                         f"(first: {missing[0]}): {hint}")
    now = file_stats(wanted)
    changed = [p for p, st in zip(wanted, now) if record["stats"][rows[p]] != st]
    if changed:
        raise InputError(f"{folder}: the features are out of date: {len(changed)} images changed "
                         f"since they were made (first: {changed[0]}): {hint}")


def training_features(request: FeatureRequest, item_paths: Sequence[str], used: Sequence[str]
                      ) -> tuple[CachedImages, dict[str, str], str, dict]:
    """For --frozen-image: (image id -> float16 [2, F] reader, {path: reason} of the bad ones
    among `used`, a line saying where they come from, the record without its per-image lists
    (for the checkpoints))."""
    folder = request.folder
    # The array is opened before its record is read and checked after: what the run reads for
    # its whole length (the open file, whatever a rebuild swaps in) is what the record describes.
    held = open_held(folder / ARRAY, request)
    record = read_record(folder, remake_hint(request))
    check_record(record, folder, request, used)
    if not held.unchanged():
        raise InputError(f"{folder}: rebuilt while this run read it: start the run again once "
                         "prepare_image_features.py is done")
    row_of = {p: r for r, p in enumerate(record["paths"])}
    bad = record["bad"]
    rows = np.array([-1 if p in bad else row_of.get(p, -1) for p in item_paths], dtype=np.int64)
    reasons = {i: bad[p] for i, p in enumerate(item_paths) if p in bad}
    summary = {k: v for k, v in record.items() if k not in ("paths", "stats", "bad")}
    return (CachedImages(folder / ARRAY, rows, reasons, held.identity), {p: bad[p] for p in sorted(set(used)) if p in bad},
            f"images: frozen features from {folder}", summary)


def open_held(path: Path, request: FeatureRequest) -> CachedImages:
    """The features array opened (a reader of no rows: its identity and open file)."""
    if not path.is_file():
        check_record(None, path.parent, request, [])
    return CachedImages(path, np.zeros(0, dtype=np.int64), {})


def load_backbone(request: FeatureRequest, read: CachedImages | None = None) -> dict:
    """The state dict of the backbone that made the features (checked by training_features);
    with `read` (training_features' reader), refused when the folder was rebuilt since."""
    folder = request.folder
    path = folder / BACKBONE
    try:
        with open_regular(path) as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged file is remade
        raise InputError(f"{path}: unreadable ({type(e).__name__}): {remake_hint(request)}") from None
    # Shapes only: built on the meta device, it allocates nothing and draws no random numbers.
    with torch.device("meta"):
        own = backbone_entry(request.image.arch).build().state_dict()
    wrong = "it is not a state dict" if not isinstance(state, dict) or \
        not all(isinstance(v, torch.Tensor) for v in state.values()) else state_mismatch(own, state)
    if wrong:
        raise InputError(f"{path}: not the {request.image.arch} backbone the features were made "
                         f"with ({wrong}): {remake_hint(request)}")
    if read is not None and not read.unchanged():
        raise InputError(f"{folder}: rebuilt while this run read it: start the run again once "
                         "prepare_image_features.py is done")
    return state
