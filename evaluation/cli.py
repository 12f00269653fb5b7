"""Flags shared by evaluate_retrieval.py and retrieve.py, and the checkpoint's training settings
as their defaults, so that the seeded split and the preprocessing are those of training."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

import config
from cli import parser
from data.items import SPLITS
from evaluation.embed import prepare_model
from models import CrossModalModel, Vocabulary
from models.precision import PRECISIONS, pick_device
from models.checkpoint import load_checkpoint, rebuild

# Training flags whose value the checkpoint records; a flag given on the command line wins.
FROM_CHECKPOINT = ("dataset", "dataset_format", "image_root", "work_dir", "seed", "val_size",
                   "politics_min_chars", "max_sentences", "max_chars", "max_tokens", "image_size")


def eval_parser(description: str) -> argparse.ArgumentParser:
    p = parser(description)
    g = p.add_argument_group("model and embedding")
    g.add_argument("--split", choices=SPLITS, default="test", help="the split to evaluate on")
    g.add_argument("--image-size", type=int, help="image side fed to the model")
    g.add_argument("--max-tokens", type=int, help="longest token sequence fed to the GRU")
    g.add_argument("--batch-size", type=int, default=128, help="images or texts per forward pass")
    g.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: cuda when present")
    g.add_argument("--precision", choices=PRECISIONS, default=config.PRECISION,
                   help="bf16 autocast + channels_last on CUDA; the CPU always runs fp32")
    # SUPPRESS leaves a flag that was not given out of the namespace, so the checkpoint's value
    # can take its place (a None default could not tell "not given" from --val-size's None).
    for action in p._actions:
        if action.dest in FROM_CHECKPOINT:
            action.default = argparse.SUPPRESS
            # The help's own "(default: ...)" describes training; here the checkpoint decides.
            own = (action.help or "").split(" (default:")[0]
            action.help = f"{own} (default: the checkpoint's training value)".strip()
    return p


def check_output(p: argparse.ArgumentParser, flag: str, path: str | None, folder: bool) -> None:
    """Exit with the usage line when an output path is of the wrong kind: found before the
    embedding, not when the results of a long run are about to be written."""
    if not path:
        return
    if folder and Path(path).exists() and not Path(path).is_dir():
        p.error(f"{flag} {path} is a file: pass a folder")
    if not folder and Path(path).is_dir():
        p.error(f"{flag} {path} is a folder: pass a file name, e.g. {Path(path) / 'metrics.json'}")


def with_checkpoint_defaults(args: argparse.Namespace, state: dict) -> argparse.Namespace:
    """A copy of args where every FROM_CHECKPOINT flag not given comes from the checkpoint
    (config.py's value when the checkpoint does not record it)."""
    trained = state.get("config") or {}
    resolved = argparse.Namespace(**vars(args))
    for key in FROM_CHECKPOINT:
        if key not in vars(args):
            setattr(resolved, key, trained.get(key, getattr(config, key.upper())))
    return resolved


def load_model(path: str | Path, args: argparse.Namespace
               ) -> tuple[CrossModalModel, Vocabulary, argparse.Namespace, torch.device]:
    """The checkpoint's model on the chosen device, its vocabulary, and the resolved flags."""
    device = pick_device(args.device)
    state = load_checkpoint(path, "cpu")
    model, vocab = rebuild(state, "cpu")
    return prepare_model(model, device, args.precision), vocab, \
        with_checkpoint_defaults(args, state), device
