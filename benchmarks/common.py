"""What the two benchmarks share."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from evaluation.embed import device_and_precision


def setup(args: argparse.Namespace) -> tuple[torch.device, dict]:
    """The device --device names (CUDA when present), and the settings recorded with the results:
    the flags and the machine they were measured on."""
    device, _ = device_and_precision(args.device)
    return device, {**vars(args), "device": str(device), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "cpus": os.cpu_count()}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer read next sees it finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def save(results: dict, out: str | None) -> None:
    """Written after every stage, so that a run cut short still leaves what it measured."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=2, default=str))


def report(results: dict, text: str, out: str | None) -> None:
    """Print the table; with `out`, the results as JSON there and the table beside it (.md)."""
    print(text)
    save(results, out)
    if out:
        Path(out).with_suffix(".md").write_text(text + "\n")
        print(f"wrote {out} and {Path(out).with_suffix('.md')}")
