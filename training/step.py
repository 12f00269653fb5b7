"""One optimisation step of the method, shared by the training script and the throughput benchmark.

Nothing here waits for the GPU: no .item(), no boolean indexing of device tensors. The CPU can
then queue the next step while the GPU still runs this one, and the per-step scalars are read
one step late (StepLog) for the same reason.
"""
from __future__ import annotations

import argparse
import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from data.items import InputError
from losses import cross_modal_loss

from data.images import normalize


@dataclass(frozen=True)
class LossConfig:
    w_sym: float
    w_img: float
    w_text: float
    loss: str = "angular"
    tan2_alpha: float = 1.0
    margin: float = 0.2
    hardest_negative: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "LossConfig":
        return cls(args.w_sym, args.w_img, args.w_text, args.loss, args.tan2_alpha, args.margin,
                   args.hardest_negative)


def use_bf16(device: torch.device, precision: str) -> bool:
    """bf16 autocast + channels_last run on CUDA only; the CPU always runs fp32."""
    return device.type == "cuda" and precision == "bf16"


def autocast(device: torch.device, precision: str):
    return torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16(device, precision) else nullcontext()


def prep_images(images: Tensor, device: torch.device, train: bool, channels_last: bool) -> Tensor:
    """uint8 [B, 3, H, W] (pinned CPU or device) -> normalised float on the device, each image
    mirrored with probability 1/2 when training (drawn from the CPU generator, so a seed fixes it)."""
    images = images.to(device, non_blocking=True)
    flip = (torch.rand(len(images)) < 0.5).to(device, non_blocking=True) if train else None
    x = normalize(images, flip)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, batch: dict, device: torch.device,
               amp, channels_last: bool, cfg: LossConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """Forward both branches on the batch and its neighbours, the loss, backward, optimizer step.

    `batch` is what training.data.collate returns; its images and tokens may already be on the
    device. Returns the detached loss and its parts, still on the device.
    """
    n = len(batch["image_ids"])
    has_nb_cpu = batch["has_nb"].cpu()
    # Rows of the neighbours, found on the CPU: nonzero() on a device tensor waits for the GPU.
    rows = has_nb_cpu.nonzero().squeeze(1).to(device, non_blocking=True)
    has_nb = has_nb_cpu.to(device, non_blocking=True)
    with amp:
        img_all, txt_all = net(prep_images(batch["images"], device, True, channels_last),
                               batch["tokens"].to(device, non_blocking=True), batch["lengths"])
    nb_img = img_all.new_zeros(n, img_all.shape[1]).index_copy(0, rows, img_all[n:])
    nb_txt = txt_all.new_zeros(n, txt_all.shape[1]).index_copy(0, rows, txt_all[n:])
    loss, parts = cross_modal_loss(img_all[:n], txt_all[:n], nb_img, nb_txt,
                                   batch["image_ids"].to(device, non_blocking=True),
                                   batch["nb_image_ids"].to(device, non_blocking=True), has_nb,
                                   cfg.w_sym, cfg.w_img, cfg.w_text, cfg.loss, cfg.tan2_alpha,
                                   cfg.margin, cfg.hardest_negative)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), parts


class NonFiniteLoss(InputError):
    """A logged loss (or one of its terms) is NaN or infinite: training stops with one line."""

    def __init__(self, step: int, term: str, value: float, lr: float, last_checkpoint: str | None):
        kept = (f"the last checkpoint, {last_checkpoint}, is from before it" if last_checkpoint
                else "no checkpoint was written")
        super().__init__(f"the loss is {value} at step {step} (term {term}, learning rate "
                         f"{lr:g}): training stopped; {kept}; lower --lr or check the loss "
                         "weights")
        self.step, self.term, self.value, self.lr = step, term, value, lr


class StepLog:
    """Per-step TensorBoard scalars, each step's written when the next one is added (or at
    flush): reading a value waits for its step, and by then the next step is already queued.

    Those reads are also where a non-finite loss is caught (NonFiniteLoss), one step late and
    without a GPU sync of its own; the end-of-epoch flush checks the last step before any
    checkpoint is written."""

    def __init__(self, writer):
        self.writer = writer
        self.pending: tuple[int, Tensor, list[str], float] | None = None
        self.last_checkpoint: str | None = None    # named by the error when the loss diverges

    def check(self, step: int, tag: str, value: float, lr: float) -> None:
        if not math.isfinite(value):
            raise NonFiniteLoss(step, tag, value, lr, self.last_checkpoint)

    def add(self, step: int, loss: Tensor, parts: dict[str, Tensor], lr: float) -> None:
        if self.writer is None:
            return
        self.flush()
        self.pending = (step, torch.stack([loss, *parts.values()]), ["train_loss", *parts], lr)

    def flush(self) -> None:
        if self.pending is None:
            return
        step, values, tags, lr = self.pending
        values = values.tolist()
        for tag, v in zip(tags, values):
            self.writer.add_scalar(f"data/{tag}", v, step)
        self.writer.add_scalar("data/lr", lr, step)
        self.pending = None
        bad = [(tag, v) for tag, v in zip(tags, values) if not math.isfinite(v)]
        if bad:
            # Name a term rather than the total when one of them is the culprit.
            self.check(step, *next(((t, v) for t, v in bad if t != "train_loss"), bad[0]), lr)
