"""The names of an evaluation's runs and files, without torch: tune_weights.py's sweep reads
them, and its SLURM jobs and the tests' stand-in scripts start without the libraries."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


def run_names(checkpoints: Sequence[str | Path]) -> list[str]:
    """Each checkpoint's run folder name (l_i2t_l_sym_1_...); folder/file where that repeats."""
    paths = [Path(c) for c in checkpoints]
    names = [p.parent.name or p.stem for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}/{p.stem}" for p in paths]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    return names


def metrics_path(checkpoint: str | Path, split: str) -> Path:
    """metrics.json beside a best.pt evaluated on test; other files or splits say so in the name,
    so evaluating last.pt or the val split never overwrites it."""
    checkpoint = Path(checkpoint)
    parts = ["metrics"] + ([checkpoint.stem] if checkpoint.stem != "best" else []) \
        + ([split] if split != "test" else [])
    return checkpoint.parent / ("_".join(parts) + ".json")


def per_query_path(checkpoint: str | Path, split: str) -> Path:
    """per_query_<split>.npz beside the checkpoint (per_query_<file>_<split>.npz for a file other
    than best.pt), as metrics_path."""
    checkpoint = Path(checkpoint)
    stem = "" if checkpoint.stem == "best" else f"_{checkpoint.stem}"
    return checkpoint.parent / f"per_query{stem}_{split}.npz"
