"""One optimisation step of the method, shared by the training script and the throughput benchmark.

Nothing here waits for the GPU: no .item(), no boolean indexing of device tensors. The CPU can
then queue the next step while the GPU still runs this one, and the per-step scalars are read
one step late (StepLog) for the same reason.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from common.errors import InputError
from losses import CrossModalObjective
from models.image_source import ImageSource
from models.precision import Precision


def pixels_of(net: nn.Module) -> ImageSource:
    """The pixel source of the (possibly wrapped) model's backbone: what a batch of uint8 images
    is when no source is named."""
    model = getattr(net, "module", net)
    return ImageSource.pixels(model.image.entry, 0)


def objective_inputs(net: nn.Module, batch: dict, precision: Precision, train: bool,
                     images: ImageSource | None = None) -> tuple:
    """Forward both branches on the batch, its neighbours and its random texts; the objective's
    arguments (img, txt, nb_img, nb_txt, image_ids, nb_image_ids, has_nb, neg_txt).

    `batch` is what training.data.collate returns; its images and tokens may already be on the
    device. Images are mirrored at random when `train`; under --frozen-image (an `images` source
    of features) "images" holds each image's features and its mirror's (float16 [n, 2, F]), and
    the mirror is drawn alike. No `images`: the batch holds pixels.
    """
    images = images or pixels_of(net)
    device = precision.device
    n = len(batch["image_ids"])
    n_nb = len(batch["images"]) - n      # only real neighbours are stacked: as many images
    has_nb_cpu = batch["has_nb"].cpu()
    # Rows of the neighbours, found on the CPU: nonzero() on a device tensor waits for the GPU.
    rows = has_nb_cpu.nonzero().squeeze(1).to(device, non_blocking=True)
    has_nb = has_nb_cpu.to(device, non_blocking=True)
    with precision.autocast():
        img_all, txt_all = net(images.inputs(batch["images"], precision, train),
                               batch["tokens"].to(device, non_blocking=True), batch["lengths"],
                               features=images.features)
    nb_img = img_all.new_zeros(n, img_all.shape[1]).index_copy(0, rows, img_all[n:])
    nb_txt = txt_all.new_zeros(n, txt_all.shape[1]).index_copy(0, rows, txt_all[n:n + n_nb])
    # The release's random texts, when the batch carries them, follow the neighbours' texts.
    neg_txt = txt_all[n + n_nb:] if batch["random_texts"] else None
    return (img_all[:n], txt_all[:n], nb_img, nb_txt,
            batch["image_ids"].to(device, non_blocking=True),
            batch["nb_image_ids"].to(device, non_blocking=True), has_nb, neg_txt)


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, batch: dict,
               precision: Precision, objective: CrossModalObjective,
               images: ImageSource | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """One step on one batch: forward, the objective, backward, optimizer step. Returns the
    detached loss and its parts, still on the device."""
    loss, parts = objective(*objective_inputs(net, batch, precision, train=True, images=images))
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
