"""One-file checkpoints: everything to rebuild the model and to resume its training.

What a checkpoint holds is defined here once (checkpoint_state), and read back here (rebuild for
evaluation, restore for --resume):
  model, model_config, vocab, vocab_fingerprint   the model and the words it reads
  optimizer, scheduler                             their states, to resume
  epoch, step, val_loss, val_recall                where the run stands (Progress)
  select_by, best_val, since_best                  the best epoch's rule and value (--select-by:
                                                   training.validate.Selection)
  config                                           the trainer's flags (evaluation's defaults),
                                                   but for --frozen-image
  provenance                                       what the data was made from (data.datasets.provenance)
  image_mode                                       {"frozen": --frozen-image, "features": the
                                                   feature file's record or None}, the only copy
                                                   of the mode (ImageSource.record); the model
                                                   always holds its backbone's weights
"""
from __future__ import annotations

import errno
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from common import records as R
from common.errors import InputError
from common.files import open_regular, require_regular
from common.workdir import atomic_write
from models import CrossModalModel, ModelConfig, Vocabulary, build_model
from models.hf_text import vocabulary_from_state, vocabulary_rule


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Atomic: an interrupted save leaves the previous file whole; a full disk is one line."""
    atomic_write(path, lambda tmp: torch_save(state, tmp))


def torch_save(obj: object, path: str | Path) -> None:
    """torch.save, raising the OSError behind a failed write. torch's zip writer reports a full
    disk as RuntimeError ("[enforce fail at inline_container.cc] unexpected pos"); writing
    through a Python file keeps the OSError that caused it, as the exception's context."""
    try:
        with open(path, "wb") as f:
            torch.save(obj, f)
    except RuntimeError as e:
        cause = e.__cause__ or e.__context__
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise OSError(errno.EIO, f"torch.save failed ({' '.join(str(e).split())[:160]})",
                      str(path)) from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", check: bool = True
                    ) -> dict:
    """The checkpoint at `path`, read weights-only; with `check`, what rebuilding the model reads
    checked against SCHEMA (a reader of its weights alone, such as a fingerprint, passes False)."""
    path = Path(path)
    fix = "pass the best.pt that train_cross_modal_retrieval_model.py printed"
    if not path.exists():
        raise InputError(f"{path}: checkpoint not found: {fix}")
    require_regular(path, fix)
    try:
        # weights_only: tensors and plain containers only. A checkpoint is a pickle, and a shared
        # best.pt could otherwise run any code it carries when loaded.
        with open_regular(path) as f:
            state = torch.load(f, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found is None:   # not a pickle at all
            raise InputError(f"{path}: not a readable checkpoint: pass a best.pt written by the "
                             "training script") from None
        raise InputError(f"{path}: refused: it asks for {found.group(1)}, not only tensors and "
                         "plain data, and loading it could run code: pass a best.pt written by "
                         "the training script, from a source you trust") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a damaged file
        raise InputError(f"{path}: not a readable checkpoint ({type(e).__name__}): "
                           "pass a best.pt written by the training script") from None
    if not isinstance(state, dict) or not {"model", "model_config", "vocab"} <= set(state):
        raise InputError(f"{path}: not a checkpoint of this project (no model, model_config "
                           "or vocab): pass a best.pt written by the training script")
    return R.check(state, SCHEMA, path, "pass a best.pt written by the training script, unedited") \
        if check else state


# What rebuilding the model reads; the image head's kind is absent from checkpoints older than
# --image-head (the release's Linear then).
SCHEMA = {
    "model": R.of(dict, check=lambda m: all(isinstance(v, torch.Tensor) for v in m.values()),
                  want="a state dict of tensors"),
    "model_config": {"arch": R.of(str), "embed_dim": R.whole(1), "word_dim": R.whole(1),
                     "hidden": R.whole(1), "vocab_size": R.whole(4)},
    "vocab": vocabulary_rule,
}


def state_mismatch(own: dict, state: dict) -> str | None:
    """The first tensor of `state` that is missing, foreign or of another shape than in `own`
    (a model's state_dict), in words; None when it fits."""
    return next((f"tensor {k!r} is missing" for k in own if k not in state), None) or \
        next((f"tensor {k!r} is not one of the model's" for k in state if k not in own), None) or \
        next((f"tensor {k!r} has shape {list(state[k].shape)}, the model's is "
              f"{list(own[k].shape)}" for k in own if state[k].shape != own[k].shape), None)


def load_model_state(model: torch.nn.Module, state: dict, path: str | Path) -> None:
    """`state` into `model`, or one line naming the first tensor that does not fit (a
    checkpoint's model edited or cut short)."""
    wrong = state_mismatch(model.state_dict(), state)
    if wrong:
        raise InputError(f"{path}: its model does not fit its model_config ({wrong}): pass a "
                         "best.pt written by the training script, unedited")
    model.load_state_dict(state)


def load_for_resume(path: str | Path, model_config: ModelConfig, vocab_fingerprint: str,
                    device: str | torch.device = "cpu") -> dict:
    """The last.pt of the run to continue, checked to fit the model and vocabulary built now:
    another vocabulary of the same size would load without complaint and misread every word."""
    return check_resume(load_resume(path, device), path, model_config, vocab_fingerprint)


def load_resume(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """The last.pt of the run to continue (read before the data: a missing one fails at once)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: not found, so there is no run to resume: start it without "
                           "--resume (or pass the --log-dir or --run-name of the run to continue)")
    return load_checkpoint(path, device)


# What resuming reads besides the model.
RESUME_SCHEMA = {"optimizer": R.of(dict), "scheduler": R.of(dict), "epoch": R.whole(-1),
                 "step": R.whole(0)}


def check_resumable(state: dict, path: str | Path) -> dict:
    """`state` when it holds what restore reads besides the model, else one line."""
    return R.check(state, RESUME_SCHEMA, path, "start the run afresh without --resume")


def check_resume(state: dict, path: str | Path, model_config: ModelConfig,
                 vocab_fingerprint: str) -> dict:
    """`state` when it fits the model and vocabulary built now, else one line saying what differs."""
    now = model_config.to_dict()
    try:   # through ModelConfig: a key added since (image_head) gets its old meaning
        then = ModelConfig.from_dict(state["model_config"]).to_dict()
    except (TypeError, ValueError):
        then = state["model_config"]
    changed = [f"{k} {v} -> {now.get(k)}" for k, v in then.items() if now.get(k) != v]
    if state.get("vocab_fingerprint") != vocab_fingerprint:
        changed.append("the Doc2Vec vocabulary")
    if changed:
        raise InputError(f"{path}: the run was trained with another model or vocabulary "
                           f"({'; '.join(changed)}): resume with that run's flags and work folder, "
                           "or start afresh without --resume")
    return state


def rebuild(state: dict, device: str | torch.device = "cpu", path: str | Path = "the checkpoint"
            ) -> tuple[CrossModalModel, Vocabulary]:
    """The trained model and its vocabulary, from the checkpoint alone (no pretrained weights)."""
    try:
        model = build_model(ModelConfig.from_dict(state["model_config"]))
        vocab = vocabulary_from_state(state["vocab"])
    except ValueError as e:   # an arch or head this version does not know, a repeated word
        raise InputError(f"{path}: {e}") from None
    load_model_state(model, state["model"], path)
    return model.to(device).eval(), vocab


@dataclass
class Progress:
    """Where a run stands after its last finished epoch (-1: none yet)."""
    epoch: int = -1
    step: int = 0
    val_loss: float | None = None
    val_recall: dict | None = None

    def end_epoch(self, epoch: int, val_loss: float, val_recall: dict | None) -> None:
        self.epoch, self.val_loss, self.val_recall = epoch, val_loss, val_recall


def checkpoint_state(model: CrossModalModel, vocab: Vocabulary, optimizer, scheduler,
                     progress: Progress, selection: dict, config: dict, provenance: dict,
                     image_mode: dict) -> dict:
    """The checkpoint's contents (see the module's docstring), plain data and tensors only.
    `selection`: Selection.state()."""
    return {"model": model.state_dict(), "model_config": model.config().to_dict(),
            "vocab": vocab.to_state(), "vocab_fingerprint": vocab.fingerprint(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": progress.epoch, "step": progress.step, **selection,
            "val_loss": progress.val_loss, "val_recall": progress.val_recall,
            "config": config, "provenance": provenance, "image_mode": image_mode}


def restore(resumed: tuple[Path, dict], model: CrossModalModel, optimizer, scheduler,
            vocab_fingerprint: str, image_mode: dict) -> Progress:
    """Load last.pt's states into the model, optimizer and scheduler built now (after checking
    that they fit); where the run stood."""
    path, state = resumed
    check_resume(state, path, model.config(), vocab_fingerprint)
    check_image_mode(state, image_mode["frozen"], path)
    check_resumable(state, path)
    load_model_state(model, state["model"], path)
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: its optimizer or scheduler state does not fit this run "
                         f"({type(e).__name__}): resume with that run's flags, or start afresh "
                         "without --resume") from None
    return Progress(state["epoch"], state["step"], state.get("val_loss"), state.get("val_recall"))


def trained_frozen(state: dict) -> bool:
    """Whether the checkpoint's run trained on frozen features. Checkpoints written before the
    mode was kept once also hold it among their flags (config["frozen_image"])."""
    mode = state.get("image_mode") or {}
    if "frozen" in mode:
        return bool(mode["frozen"])
    return bool((state.get("config") or {}).get("frozen_image", False))


def check_image_mode(state: dict, frozen: bool, path: str | Path) -> None:
    """One line unless the run `state` continues trained in the same image mode."""
    was = trained_frozen(state)
    if was != frozen:
        raise InputError(f"{path}: the run was trained {'with' if was else 'without'} "
                         "--frozen-image: resume it with the same image mode, or start afresh "
                         "without --resume")
