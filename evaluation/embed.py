"""A trained model for evaluation and retrieval: its flags resolved with the checkpoint's training
settings, the device and precision it runs at, and batched embedding of images and texts.

The flags the checkpoint records default to their training values, so the seeded split and the
preprocessing are those of training. Images are decoded to uint8 by DataLoader workers and
normalised on the device; on CUDA the forward runs under bf16 autocast with channels_last unless
precision is "fp32". An image that cannot be decoded is not fatal here: its row is filled from a
blank image and it is returned as a failure, so the caller decides (evaluation leaves it out,
retrieval refuses a bad query).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import config
from data.datasets.settings import DataSettings, TextSettings, names
from data.images.cache import UnreadableImage
from models import CrossModalModel, Vocabulary, pad_batch
from models.checkpoint import load_checkpoint, rebuild
from models.image_source import ImageSource
from models.precision import Precision

# Training flags whose value the checkpoint records; a flag given on the command line wins.
# Those of DATA_FLAGS decide the evaluation split and its tokens: given on the command line, the
# user evaluates on other data on purpose, and the checkpoint's record is not checked.
DATA_FLAGS = (*names(DataSettings), *names(TextSettings))
FROM_CHECKPOINT = (*DATA_FLAGS, "work_dir", "max_tokens", "image_size")


def device_and_precision(name: str | None, precision: str = "fp32") -> tuple[torch.device, str]:
    """Where and how a model runs for evaluation, retrieval and the benchmarks, as
    models.precision decides it for training too: the named device or CUDA when present, and the
    precision that runs there (bf16 only on CUDA; the CPU always runs fp32)."""
    run = Precision.resolve(name, precision)
    return run.device, "bf16" if run.bf16 else "fp32"


def with_checkpoint_defaults(args: argparse.Namespace, state: dict) -> argparse.Namespace:
    """A copy of args where every FROM_CHECKPOINT flag not given comes from the checkpoint
    (config.py's value when the checkpoint does not record it)."""
    trained = state.get("config") or {}
    resolved = argparse.Namespace(**vars(args))
    for key in FROM_CHECKPOINT:
        if key not in vars(args):
            setattr(resolved, key, trained.get(key, getattr(config, key.upper())))
    # What the split is checked against (data.datasets.provenance.check_checkpoint): the checkpoint's
    # record, unless the user chose other data; the reason when not checked.
    given = [f"--{k.replace('_', '-')}" for k in DATA_FLAGS if k in vars(args)]
    resolved.provenance = None if given else state.get("provenance")
    # What the checkpoint was trained from, whatever data it is evaluated on: its Doc2Vec model.
    resolved.trained_from = state.get("provenance")
    resolved.unchecked = (f"{', '.join(given)} given" if given else
                          None if state.get("provenance") else
                          "the checkpoint has no provenance record (an older version wrote it)")
    return resolved


def load_model(path: str | Path, args: argparse.Namespace
               ) -> tuple[CrossModalModel, Vocabulary, argparse.Namespace]:
    """The checkpoint's model ready to embed, its vocabulary, and the flags resolved once: the
    checkpoint's training values where a flag was not given, `device` a torch.device and
    `precision` the one that runs there."""
    state = load_checkpoint(path, "cpu")
    run = with_checkpoint_defaults(args, state)
    run.device, run.precision = device_and_precision(args.device, args.precision)
    model, vocab = rebuild(state, "cpu", path)
    return prepare_model(model, run.device, run.precision), vocab, run


def prepare_model(model: CrossModalModel, device: torch.device, precision: str) -> CrossModalModel:
    """The model on the device in eval mode; channels_last where bf16 runs, as in training."""
    return Precision.resolve(device, precision).prepare(model).eval()


class ImageFileDataset(Dataset):
    """Item i: (i, the source's row of paths[i], "" or the reason the image could not be had;
    the source's filler stands in for it then).

    Rows come from the source's reader (the image cache's, or --frozen-image's features) when it
    has one, else from the files.
    """

    def __init__(self, paths: Sequence[str], source: ImageSource):
        self.paths, self.source = list(paths), source

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, i: int) -> tuple[torch.Tensor | None, str]:
        try:
            return self.source.load(self.paths[i], i)
        except UnreadableImage as e:
            return None, str(e)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        image, reason = self._load(i)
        if image is None:
            return i, self.source.filler(), reason
        return i, image, ""


def _collate(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    index, images, reasons = zip(*batch)
    return torch.tensor(index), torch.stack(images), list(reasons)


@torch.no_grad()
def embed_images(model: CrossModalModel, paths: Sequence[str], size: int, device: torch.device,
                 batch_size: int = 128, workers: int = 0, precision: str = "bf16",
                 desc: str = "embedding images", read: Callable[[int], torch.Tensor] | None = None,
                 progress: bool = True, source: ImageSource | None = None
                 ) -> tuple[torch.Tensor, dict[int, str]]:
    """(float32 CPU [N, D] unit rows in the order of `paths`, {index: reason} of unreadable files).

    `model` must already be on `device` (see prepare_model). `read(i)`, when given, returns the
    uint8 image of paths[i] (the image cache's reader) instead of decoding the file. `source`
    (training's, with its reader), when given, says what the rows are instead of `size`/`read`.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    source = source or ImageSource.pixels(model.image.entry, size, read)
    loader = DataLoader(ImageFileDataset(paths, source), batch_size=batch_size, shuffle=False,
                        num_workers=max(0, workers), collate_fn=_collate,
                        pin_memory=device.type == "cuda",
                        prefetch_factor=4 if workers > 0 else None)
    # Kept on the device until the end: a copy per batch would make the GPU wait every batch.
    out = torch.empty(len(paths), model.image.embed_dim, device=device)
    failures: dict[int, str] = {}
    run = Precision.resolve(device, precision)
    for index, images, reasons in tqdm(loader, desc=desc, unit="batch", mininterval=1.0,
                                       disable=len(loader) < 2 or not progress):
        x = source.inputs(images, run, train=False)
        with run.autocast():
            out[index.to(device)] = source.embed(model, x).float()
        failures.update({int(i): r for i, r in zip(index, reasons) if r})
    return out.cpu(), failures


@torch.no_grad()
def embed_texts(model: CrossModalModel, vocab: Vocabulary, tokens: Sequence[list[str]],
                max_tokens: int, device: torch.device, batch_size: int = 128,
                precision: str = "bf16", desc: str = "embedding texts") -> torch.Tensor:
    """float32 CPU [N, D] unit rows in the order of `tokens` (preprocessed word lists).

    Texts are batched by length, so a batch pads little, then put back in their order.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    return embed_token_ids(model, [vocab.encode(t, max_tokens) for t in tokens], device,
                           batch_size, precision, desc)


@torch.no_grad()
def embed_token_ids(model: CrossModalModel, encoded: Sequence[list[int]], device: torch.device,
                    batch_size: int = 128, precision: str = "bf16", desc: str = "embedding texts",
                    progress: bool = True) -> torch.Tensor:
    """embed_texts for texts already encoded by the vocabulary (START ... END id lists)."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    out = torch.empty(len(encoded), model.text.embed_dim, device=device)
    starts = range(0, len(order), batch_size)
    run = Precision.resolve(device, precision)
    for s in tqdm(starts, desc=desc, unit="batch", mininterval=1.0,
                  disable=len(starts) < 2 or not progress):
        rows = order[s:s + batch_size]
        ids, lengths = pad_batch([encoded[i] for i in rows])
        with run.autocast():
            out[torch.tensor(rows, device=device)] = model.embed_texts(
                ids.to(device, non_blocking=True), lengths).float()
    return out.cpu()
