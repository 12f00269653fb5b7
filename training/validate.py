"""Validation retrieval recall at every epoch, and the rule that picks the best epoch from it or
from the release's validation loss (--select-by).

Recall is measured as evaluate_retrieval.py measures it (evaluation.metrics): every distinct image
file of the validation split once, each validation document a text query whose one correct image
is its own, an image query a hit when any of its texts is in the top K. Under torchrun each
process embeds a share of the images and texts and every process scores the whole set, so all
of them take the same decision.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

from common.errors import InputError
from data.datasets.items import Document, Item, image_key
from evaluation.embed import embed_images, embed_token_ids
from evaluation.metrics import RECALL_AT, retrieval_metrics
from models import CrossModalModel, Precision
from models.image_source import ImageSource

from .distributed import Context

SELECT_BY = ("loss", "rsum")
# TensorBoard tags written beside data/val_loss, in this order.
RECALL_TAGS = tuple(f"data/val_{d}_r{k}" for d in ("i2t", "t2i") for k in RECALL_AT) + ("data/val_rsum",)


def recall_scalars(metrics: dict) -> dict[str, float]:
    """{tag: value} of retrieval_metrics' recalls and rsum, named as RECALL_TAGS."""
    out = {f"data/val_{d}_r{k}": metrics[d][f"r{k}"] for d in ("i2t", "t2i") for k in RECALL_AT}
    out["data/val_rsum"] = metrics["rsum"]
    return out


def _gather(part: torch.Tensor, n: int, ctx: Context) -> torch.Tensor:
    """Rows rank::world of an [n, D] matrix from every process, put back in their order."""
    if ctx.world == 1:
        return part
    parts: list = [None] * ctx.world
    dist.all_gather_object(parts, part, group=ctx.objects)
    out = torch.empty(n, part.shape[1], dtype=part.dtype)
    for rank, rows in enumerate(parts):
        out[rank::ctx.world] = rows
    return out


@torch.no_grad()
def validation_recall(model: CrossModalModel, items: Sequence[Item], docs: Sequence[Document],
                      tokens: Sequence[list[int]], images: ImageSource, precision: Precision,
                      batch_size: int, ctx: Context) -> dict:
    """retrieval_metrics of the validation documents (`tokens`: their encoded texts; `images`:
    item index -> the image branch's row, as training reads it). The model is left in eval mode."""
    model.eval()
    image_of: dict[object, int] = {}
    first_item: list[int] = []         # the item whose image each distinct file is read from
    text_image = []
    for d in docs:
        key = image_key(items[d.item])   # one image as evaluation has it (evaluation/split.py)
        if key not in image_of:
            image_of[key] = len(first_item)
            first_item.append(d.item)
        text_image.append(image_of[key])
    run = "bf16" if precision.bf16 else "fp32"
    mine = first_item[ctx.rank::ctx.world]
    # No DataLoader workers: the images are already decoded (the cache) or checked readable, and
    # a worker pool started every epoch would cost more than it saves on a validation split.
    with torch.random.fork_rng(devices=[]):   # training's random stream stays as it was
        shard = images.with_reader(lambda i: images.read(mine[i]))
        embedded, _ = embed_images(model, [items[i].image for i in mine], images.size,
                                   precision.device, batch_size, 0, run, progress=False,
                                   source=shard)
    # No progress bars: they would cut through the epoch's bar, and the epoch line gives the time.
    texts = embed_token_ids(model, list(tokens[ctx.rank::ctx.world]), precision.device, batch_size,
                            run, progress=False)
    embedded, texts = _gather(embedded, len(first_item), ctx), _gather(texts, len(tokens), ctx)
    device = precision.device     # the similarities are scored where the model runs
    return retrieval_metrics(embedded.to(device), texts.to(device),
                             torch.tensor(text_image, dtype=torch.long, device=device))


@dataclass
class Selection:
    """What best.pt, early stopping and the plateau scheduler follow: the validation loss (lower
    is better, the release's rule) or the validation rsum (higher is better, VSE++'s)."""
    by: str = "loss"
    best: float | None = None
    since_best: int = 0

    def __post_init__(self) -> None:
        if self.by not in SELECT_BY:
            raise ValueError(f"select_by must be one of {SELECT_BY}, got {self.by!r}")
        if self.best is None:
            self.best = math.inf if self.by == "loss" else -math.inf

    @property
    def mode(self) -> str:
        """ReduceLROnPlateau's mode for the followed value."""
        return "min" if self.by == "loss" else "max"

    def value(self, val_loss: float, recall: dict) -> float:
        return val_loss if self.by == "loss" else recall["rsum"]

    def update(self, value: float) -> bool:
        """Record an epoch's value; True when it is the best so far (best.pt is written)."""
        improved = value < self.best if self.by == "loss" else value > self.best
        self.best, self.since_best = (value, 0) if improved else (self.best, self.since_best + 1)
        return improved

    def state(self) -> dict:
        """What a checkpoint keeps to resume the selection."""
        return {"select_by": self.by, "best_val": self.best, "since_best": self.since_best}

    @classmethod
    def resumed(cls, by: str, state: dict, path: object) -> "Selection":
        """The selection of the run a last.pt continues; a run that followed another value is
        refused (checkpoints written before --select-by existed followed the loss)."""
        was = state.get("select_by", "loss")
        if was != by:
            raise InputError(f"{path}: the run selected its best epoch by validation {was}, not "
                             f"{by}: resume with --select-by {was}, or start afresh with --overwrite")
        return cls(by, state["best_val"], state["since_best"])


def log_validation(writer, step: int, val_loss: float, recall: dict) -> None:
    """Every validation scalar at the global step, so that they line up with the step curves."""
    writer.add_scalar("data/val_loss", val_loss, step)
    for tag, value in recall_scalars(recall).items():
        writer.add_scalar(tag, value, step)
    writer.flush()
