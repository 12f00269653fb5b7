"""Batched embedding of images and texts with a trained model, shared by evaluation and retrieval.

Images are decoded to uint8 by DataLoader workers and normalised on the device; on CUDA the
forward runs under bf16 autocast with channels_last unless precision is "fp32". An image that
cannot be decoded is not fatal here: its row is filled from a blank image and it is returned as
a failure, so the caller decides (evaluation leaves it out, retrieval refuses a bad query).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from models import CrossModalModel, Vocabulary, pad_batch
from data.image_cache import UnreadableImage
from data.images import try_read_image
from models.precision import Precision


def prepare_model(model: CrossModalModel, device: torch.device, precision: str) -> CrossModalModel:
    """The model on the device in eval mode; channels_last where bf16 runs, as in training."""
    return Precision.resolve(device, precision).prepare(model).eval()


class ImageFileDataset(Dataset):
    """Item i: (i, uint8 [3, s, s], "" or the reason the image could not be had).

    Images come from `read` (the image cache's reader) when given, else from the files.
    """

    def __init__(self, paths: Sequence[str], size: int, read: Callable[[int], torch.Tensor] | None = None):
        self.paths, self.size, self.read = list(paths), size, read

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, i: int) -> tuple[torch.Tensor | None, str]:
        if self.read is None:
            return try_read_image(self.paths[i], self.size)
        try:
            return self.read(i), ""
        except UnreadableImage as e:
            return None, str(e)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        image, reason = self._load(i)
        if image is None:
            return i, torch.zeros(3, self.size, self.size, dtype=torch.uint8), reason
        return i, image, ""


def _collate(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    index, images, reasons = zip(*batch)
    return torch.tensor(index), torch.stack(images), list(reasons)


@torch.no_grad()
def embed_images(model: CrossModalModel, paths: Sequence[str], size: int, device: torch.device,
                 batch_size: int = 128, workers: int = 0, precision: str = "bf16",
                 desc: str = "embedding images", read: Callable[[int], torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, dict[int, str]]:
    """(float32 CPU [N, D] unit rows in the order of `paths`, {index: reason} of unreadable files).

    `model` must already be on `device` (see prepare_model). `read(i)`, when given, returns the
    uint8 image of paths[i] (the image cache's reader) instead of decoding the file.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    loader = DataLoader(ImageFileDataset(paths, size, read), batch_size=batch_size, shuffle=False,
                        num_workers=max(0, workers), collate_fn=_collate,
                        pin_memory=device.type == "cuda",
                        prefetch_factor=4 if workers > 0 else None)
    # Kept on the device until the end: a copy per batch would make the GPU wait every batch.
    out = torch.empty(len(paths), model.image.embed_dim, device=device)
    failures: dict[int, str] = {}
    run = Precision.resolve(device, precision)
    for index, images, reasons in tqdm(loader, desc=desc, unit="batch", mininterval=1.0,
                                       disable=len(loader) < 2):
        x = run.images(images, train=False)
        with run.autocast():
            out[index.to(device)] = model.embed_images(x).float()
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
    encoded = [vocab.encode(t, max_tokens) for t in tokens]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    out = torch.empty(len(encoded), model.text.embed_dim, device=device)
    starts = range(0, len(order), batch_size)
    run = Precision.resolve(device, precision)
    for s in tqdm(starts, desc=desc, unit="batch", mininterval=1.0, disable=len(starts) < 2):
        rows = order[s:s + batch_size]
        ids, lengths = pad_batch([encoded[i] for i in rows])
        with run.autocast():
            out[torch.tensor(rows, device=device)] = model.embed_texts(
                ids.to(device, non_blocking=True), lengths).float()
    return out.cpu()
