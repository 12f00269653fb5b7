"""The trainer's epoch: its data order, its steps, the validation loss, and the checkpoints."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from losses import CrossModalObjective
from models import Precision
from common.workdir import link_file
from models.checkpoint import Progress, save_checkpoint
from models.image_source import ImageSource

from . import distributed
from .data import VALIDATION_SEED, PairDataset, epoch_order, make_loader, with_random_texts
from .distributed import Context
from .neighbors import NeighborSampler
from . import step as steps
from .step import StepLog, objective_inputs
from .validate import Selection


def epoch_loader(ds: PairDataset, sampler: NeighborSampler, args: argparse.Namespace, ctx: Context,
                 epoch: int):
    """The epoch's batches: its neighbour draws, order, random texts and (seeded here) flips,
    each a function of --run-seed and the epoch, so a resumed run draws them alike."""
    torch.manual_seed(args.run_seed * 100_003 + epoch)
    ds.set_neighbors(sampler.sample(args.run_seed, epoch))
    order = epoch_order(len(ds), args.run_seed, epoch, ctx.rank, ctx.world)
    if args.negatives == "release":   # each batch's random training texts
        order = with_random_texts(order, len(ds), args.batch_size, [args.run_seed, epoch, ctx.rank, 13])
    return make_loader(ds, order, args.batch_size, args.workers, ctx.device.type == "cuda",
                       drop_last=len(order) > args.batch_size)


def train_epoch(net: nn.Module, optimizer, loader, precision: Precision, objective: CrossModalObjective,
                log: StepLog, progress: Progress, ctx: Context, epoch: int,
                images: ImageSource | None = None) -> tuple[float, float, float]:
    """One pass over the loader; (mean training loss, items per second, seconds)."""
    net.train()
    t0, seen, loss_sum = time.time(), 0, 0.0   # loss_sum stays on the device: no wait per step
    for b in tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not ctx.main):
        # Looked up at each call, not bound at import: a test swaps it to make the loss diverge.
        loss, parts = steps.train_step(net, optimizer, b, precision, objective, images)
        loss_sum = loss_sum + loss
        progress.step += 1
        seen += len(b["image_ids"]) * ctx.world
        log.add(progress.step, loss, parts, optimizer.param_groups[0]["lr"])
    log.flush()
    seconds = time.time() - t0
    return float(loss_sum) / max(len(loader), 1), seen / max(seconds, 1e-9), seconds


def validate(model, ds, args, ctx, precision: Precision, objective: CrossModalObjective,
             images: ImageSource | None = None) -> float:
    """Mean validation L_i2t, as the authors: against B random validation texts drawn under a
    fixed seed (the same every epoch) with the release's negatives, in-batch ones with clean.
    `objective` has zero weights: its total is L_i2t."""
    model.eval()
    # Every document once over all ranks: unequal shards are fine, as the unwrapped model runs here.
    order = list(range(ctx.rank, len(ds), ctx.world))
    release = objective.config.negatives == "release"
    if release:
        order = with_random_texts(order, len(ds), args.batch_size, [VALIDATION_SEED, ctx.rank])
    total, count = torch.zeros((), dtype=torch.float64, device=ctx.device), 0  # read once, at the end
    # A fixed seed for what the objective draws (angular-hinge), kept apart from training's.
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(VALIDATION_SEED)
        for b in make_loader(ds, order, args.batch_size, args.workers, ctx.device.type == "cuda", False):
            if len(b["image_ids"]) < 2 and not release:
                continue     # no in-batch negative
            loss, _ = objective(*objective_inputs(model, b, precision, train=False, images=images))
            total += loss.double() * len(b["image_ids"])
            count += len(b["image_ids"])
    total, count = distributed.all_sum([total.item(), count], ctx)
    return total / max(count, 1)


def save_epoch(state: dict, log_dir: Path, improved: bool, log: StepLog) -> bool:
    """best.pt when the epoch improved, then last.pt (whether it improved). best.pt first: a disk
    that fills between the two leaves last.pt at the epoch before, which --resume repeats, rather
    than a last.pt whose best.pt is missing. After an improved epoch both hold the same state:
    last.pt is then a hard link to best.pt instead of a second copy written (a checkpoint is
    only ever replaced, so the next last.pt leaves best.pt as it is)."""
    if improved:
        save_checkpoint(state, log_dir / "best.pt")
    if not (improved and link_file(log_dir / "best.pt", log_dir / "last.pt")):
        save_checkpoint(state, log_dir / "last.pt")
    log.last_checkpoint = f"{log_dir / 'last.pt'} (epoch {state['epoch']})"
    return improved


def epoch_line(epoch: int, train_loss: float, val: float, recall: dict, improved: bool, rate: float,
               seconds: tuple[float, float, float], select_by: str = "loss") -> str:
    """The epoch's line; `seconds`: of training, the validation loss and the validation recall.
    "(best)" follows the value --select-by follows, so a lower rsum marked best is not misread."""
    train_s, val_s, recall_s = seconds
    best = {k: " (best)" if improved and k == select_by else "" for k in ("loss", "rsum")}
    return (f"epoch {epoch}: train loss {train_loss:.4f} (mean), val loss {val:.4f}{best['loss']}, "
            f"val rsum {recall['rsum']:.1f}{best['rsum']}, "
            f"{rate:.1f} items/s; validation loss {val_s:.1f}s, recall {recall_s:.1f}s "
            f"({100 * recall_s / max(sum(seconds), 1e-9):.1f}% of the epoch)")


def ending(args: argparse.Namespace, select: Selection, log_dir: Path, wrote_best: bool,
           resumed: bool, last_epoch: int) -> str:
    """The run's last lines: why it stopped, and the best.pt of this run (what tune_weights and
    the user read), or that none was written."""
    lines = []
    if select.since_best >= args.patience:
        lines.append(f"stopped early: no better validation {select.by} for {args.patience} epochs")
    # Only a best.pt of this run: written now, or earlier in the run --resume continues.
    if wrote_best or (resumed and (log_dir / "best.pt").is_file()):
        lines.append(str(log_dir / "best.pt"))
    elif resumed:   # e.g. best.pt removed by hand: say what is there instead
        lines.append(f"no best.pt in {log_dir}: the run's last.pt is after epoch {last_epoch} and no "
                     f"epoch since improved on its best validation {select.by} (--epochs {args.epochs})")
    else:
        lines.append(f"no epoch was trained (--epochs {args.epochs}): no checkpoint written")
    return "\n".join(lines)
