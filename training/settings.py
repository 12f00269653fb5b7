"""A training run's settings: the record its checkpoints keep, what --resume may change, and the
data under which a loss term would have no negative to push away.

A resumed run continues one optimisation: a different objective, learning rate or batch size
would compare validation losses of two different runs and keep the optimizer's old state under a
new name. So on --resume only the stopping rule (--epochs, --patience) may change, and where the
run goes on (--device, --workers: a sweep continues a run on whichever device is free, and a
checkpoint may move to another machine); each change is printed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common.errors import InputError
from losses.weights import NAMES as WEIGHT_NAMES

# May change on --resume: when to stop and where to run, not what is trained.
FREE_ON_RESUME = ("epochs", "patience", "device", "workers")
# Not part of the record: how this invocation treats the folder and what it does after training;
# the image mode, which the checkpoint keeps once, in its image_mode (models/checkpoint.py
# compares it).
NOT_RECORDED = ("resume", "overwrite", "then_evaluate", "frozen_image")
PATHS = ("dataset", "work_dir", "image_root")   # resolved: evaluation may run from another folder
# Not compared: where things are. The folder is the run's own (its last.pt is read), and what
# the paths hold (the dataset, the text side) is checked by its provenance record, so a moved
# or copied work folder resumes.
# --select-by is checked by training.validate.Selection.resumed, which also knows what a
# checkpoint from before the flag followed.
NOT_COMPARED = ("run_name", "log_dir", "select_by", *PATHS)


def settings_record(args: argparse.Namespace) -> dict:
    """The trainer's flags as the checkpoints record them (paths resolved)."""
    record = {k: v for k, v in vars(args).items() if k not in NOT_RECORDED}
    for key in PATHS:
        if record.get(key) is not None:
            record[key] = str(Path(record[key]).resolve())
    return record


def _flag(key: str) -> str:
    return key if key in WEIGHT_NAMES else "--" + key.replace("_", "-")


def _shown(value: object) -> str:
    return "(not given)" if value is None else repr(value) if isinstance(value, str) else str(value)


def check_resume_settings(recorded: dict | None, now: dict, path: str | Path) -> list[str]:
    """Lines to print for the settings a resume may change (FREE_ON_RESUME), or one
    InputError naming every other setting that differs from the run's (`name: old -> new`).

    `recorded` is the checkpoint's "config"; a flag it does not hold was added after it was
    written and is not compared. None (a checkpoint without a record) gives a line saying the
    settings are not checked.
    """
    if not isinstance(recorded, dict):
        return [f"{path} records no settings (an older version wrote it): they are not checked"]
    changed, free = [], []
    for key in sorted(set(recorded) & set(now)):
        if key in NOT_COMPARED or key in NOT_RECORDED or recorded[key] == now[key]:
            continue
        line = f"{_flag(key)}: {_shown(recorded[key])} -> {_shown(now[key])}"
        (free if key in FREE_ON_RESUME else changed).append(line)
    if changed:
        raise InputError(f"{path}: the run was trained with other settings ({'; '.join(changed)}): "
                         "a resumed run must keep them (only --epochs, --patience, --device and "
                         "--workers may change); "
                         "resume with the run's own flags, or start a new run with --run-name or "
                         "--overwrite")
    return [f"resuming with new settings: {'; '.join(free)}"] if free else []


def data_problem(n_train: int, n_val: int, batch_size: int, world: int, negatives: str
                 ) -> str | None:
    """Why, with these many training and validation pairs, a term would have no negative in
    any batch (every process's batches hold fewer than two rows), or None."""
    if negatives != "clean":
        return None
    for name, n in (("training", n_train), ("validation", n_val)):
        per_process = n // max(world, 1)
        if min(per_process, batch_size) < 2:
            return (f"{n} {name} pairs over {world} process{'es' if world > 1 else ''}: a batch "
                    f"holds {min(per_process, batch_size)} row, which under --negatives clean has "
                    f"no negative: use a larger {name} split (or fewer processes)")
    return None
