"""The printed table (one column per checkpoint) and the metrics.json files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from data.workdir import atomic_write

_RECALLS = (("R@1", "r1"), ("R@5", "r5"), ("R@10", "r10"), ("medr", "medr"), ("meanr", "meanr"))


def _rows() -> list[tuple[str, tuple[str, ...], str]]:
    """(row label, key path into the metrics dict, format)."""
    rows = [("images", ("n_images",), "d"), ("texts", ("n_texts",), "d")]
    for prefix, path in (("", ()), ("1K ", ("folds_1k",))):
        for direction in ("i2t", "t2i"):
            rows += [(f"{prefix}{direction} {name}", (*path, direction, key), ".1f")
                     for name, key in _RECALLS]
        rows.append((f"{prefix}rsum", (*path, "rsum"), ".1f"))
    rows += [("image overlap@10", ("neighborhood", "image_overlap@10"), ".3f"),
             ("text overlap@10", ("neighborhood", "text_overlap@10"), ".3f")]
    rows += [(f"label P@10 {d}", ("label_precision@10", d), ".3f")
             for d in ("i2t", "t2i", "i2i", "t2t")]
    return rows


def _lookup(metrics: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(metrics, dict) or key not in metrics:
            return None
        metrics = metrics[key]
    return metrics


def format_table(names: Sequence[str], results: Sequence[dict]) -> str:
    """Rows of metrics, one column per run; a row no run has is left out, a missing cell is '-'."""
    lines = []
    for label, path, fmt in _rows():
        cells = [_lookup(m, path) for m in results]
        if all(c is None for c in cells):
            continue
        lines.append([label] + ["-" if c is None else format(c, fmt) for c in cells])
    header = ["metric", *names]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    out = [header, ["-" * w for w in widths], *lines]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))) for row in out)


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


def write_json(obj: dict, path: str | Path) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
    atomic_write(path, write)


def per_query_path(checkpoint: str | Path, split: str) -> Path:
    """per_query_<split>.npz beside the checkpoint (per_query_<file>_<split>.npz for a file other
    than best.pt), as metrics_path."""
    checkpoint = Path(checkpoint)
    stem = "" if checkpoint.stem == "best" else f"_{checkpoint.stem}"
    return checkpoint.parent / f"per_query{stem}_{split}.npz"


def write_per_query(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:   # a file object: np.savez would add .npz to a name
            np.savez(f, **arrays)
    atomic_write(path, write)
