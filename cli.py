"""Command-line flags every script shares; each default comes from config.py."""
from __future__ import annotations

import argparse
import errno
import math
import os
import sys
from pathlib import Path
from typing import Sequence

import config

from common import signals
from common.errors import InputError
from data.datasets.readers import FORMATS


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each flag; the script's docstring kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        # A flag whose help already says its default, or whose default is "not given", needs no
        # "(default: None)" after it.
        if action.default in (None, []) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def whole(low: int = 0, high: int | None = None):
    """An argparse type: a whole number from `low` (to `high`), refused at parse time otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            span = f"{low} or more" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"{value}: pass a whole number {span}")
        return value
    parse.__name__ = "whole number"
    return parse


def max_workers() -> int:
    """The most --workers a script takes: 4 per CPU (at least 8). More only wait on each
    other, and 100,000 fails after minutes on the threads the system will not start."""
    return max(8, 4 * (os.cpu_count() or 1))


def real(low: float = 0.0, high: float | None = None, above: bool = False):
    """An argparse type: a finite number >= `low` (> when `above`), <= `high`: NaN, inf and
    negative weights or rates are refused before any data is read."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        low_ok = value > low if above else value >= low
        if not math.isfinite(value) or not low_ok or (high is not None and value > high):
            span = f"{'above' if above else 'at least'} {low:g}" + \
                ("" if high is None else f" and at most {high:g}")
            raise argparse.ArgumentTypeError(f"{text}: pass a finite number {span}")
        return value
    parse.__name__ = "number"
    return parse


def adder(from_checkpoint: Sequence[str]):
    """add(group, *flags, **kw): group.add_argument, where a flag named in `from_checkpoint`
    gets no default (SUPPRESS: a None default could not tell "not given" from --val-size's None)
    and a help saying the checkpoint decides (its own "(default: ...)" describes training)."""
    def add(group, *flags: str, **kw) -> argparse.Action:
        if flags[0].lstrip("-").replace("-", "_") in from_checkpoint:
            own = (kw.get("help") or "").split(" (default:")[0]
            kw.update(default=argparse.SUPPRESS,
                      help=f"{own} (default: the checkpoint's training value)".strip())
        return group.add_argument(*flags, **kw)
    return add


def parser(description: str, from_checkpoint: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The flags every script shares. Those named in `from_checkpoint` (evaluation's) are left
    out of the namespace when not given, so that a checkpoint's training values take their place."""
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    g = p.add_argument_group("dataset and work folder (config.py)")
    add = adder(from_checkpoint)
    add(g, "--dataset", default=config.DATASET,
           help="a .jsonl manifest, a .csv/.tsv file, a Karpathy .json, a Politics "
                "folder / db.pickle, or a GoodNews folder")
    add(g, "--dataset-format", choices=FORMATS, default=config.DATASET_FORMAT,
           help="force the format instead of finding it from the path")
    add(g, "--csv-image-key", "--csv-img-key", default=config.CSV_IMAGE_KEY,
           help="--dataset-format csv: the column of image paths")
    add(g, "--csv-caption-key", default=config.CSV_CAPTION_KEY,
           help="--dataset-format csv: the column of captions")
    add(g, "--csv-separator", default=config.CSV_SEPARATOR,
           help="--dataset-format csv: the field separator (\\t or tab for a tab; default: "
                "a tab for .tsv, else a comma)")
    add(g, "--image-root", default=config.IMAGE_ROOT,
           help="folder relative image paths start from (default: the dataset's folder)")
    add(g, "--work-dir", default=config.WORK_DIR, help="where every script reads and writes")
    add(g, "--workers", type=whole(0, max_workers()), default=config.WORKERS,
           help="worker processes")
    # numpy and gensim take 32-bit seeds.
    add(g, "--seed", type=whole(0, 2**32 - 1), default=config.SEED)
    add(g, "--val-size", type=whole(0), default=config.VAL_SIZE,
           help="size of the seeded validation slice of train when no item is marked val "
                "(default: the test split's size)")
    add(g, "--politics-min-chars", type=whole(0), default=config.POLITICS_MIN_CHARS,
           help="complete_db.pickle items this short or shorter are dropped")
    add(g, "--max-sentences", type=whole(0), default=config.MAX_SENTENCES,
           help="first N sentences of each text (0: the whole text)")
    add(g, "--doc2vec-max-sentences", type=whole(0), default=config.DOC2VEC_MAX_SENTENCES,
           help="first N sentences of each doc2vec_text, the separate text Doc2Vec and the "
                "kNN read when the dataset has one (0: the whole text)")
    add(g, "--max-chars", type=whole(0), default=config.MAX_CHARS,
           help="raw text cut before tokenising (0: no cut)")
    add(g, "--keep-unicode", action="store_true", default=config.KEEP_UNICODE,
           help="keep non-ASCII letters (the release replaced them, so a text in another "
                "script leaves no token)")
    return p


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace, *positive: str) -> None:
    """Exit with the usage line when a flag is below 1 or CUDA is asked for but absent."""
    for flag in positive:
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    if getattr(args, "device", None) == "cuda":
        import torch   # only here: the text-side scripts never need it
        if not torch.cuda.is_available():
            p.error("--device cuda was asked for but no CUDA device is available: pass --device cpu")


def eval_parser(description: str) -> argparse.ArgumentParser:
    """The shared flags, and those of the model and embedding, of evaluate_retrieval.py and
    retrieve.py."""
    from data.datasets.items import SPLITS
    from evaluation.embed import FROM_CHECKPOINT
    from models.precision import PRECISIONS   # only here: the text-side scripts never need torch
    p = parser(description, FROM_CHECKPOINT)
    g = p.add_argument_group("model and embedding")
    add = adder(FROM_CHECKPOINT)
    g.add_argument("--split", choices=SPLITS, default="test", help="the split to evaluate on")
    # Checked here, as the trainer does: a 0 would otherwise fail after the data is loaded.
    add(g, "--image-size", type=whole(1), help="image side fed to the model")
    add(g, "--max-tokens", type=whole(1), help="longest token sequence fed to the GRU")
    g.add_argument("--batch-size", type=whole(1), default=128,
                   help="images or texts per forward pass")
    g.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: cuda when present")
    g.add_argument("--precision", choices=PRECISIONS, default=config.PRECISION,
                   help="bf16 autocast + channels_last on CUDA; the CPU always runs fp32")
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


# Write failures that no code path turned into an InputError naming its file (a TensorBoard
# writer thread, a third-party save) still end as one line rather than a traceback.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM}
# What to do about the other errors the system reports for a path the user gave.
PATH_FIXES = {errno.ENAMETOOLONG: "shorten the path (a name holds at most 255 bytes)",
              errno.ENOENT: "check the path", errno.ENOTDIR: "check the path: a part of it is a file",
              errno.EISDIR: "pass a file, not a folder", errno.ELOOP: "check the symbolic links",
              errno.EIO: "check the disk", errno.EMFILE: "raise the open-file limit (ulimit -n)"}
# torch's zip writer reports a failed write as a RuntimeError without the file or the errno.
TORCH_WRITE_FAILURES = ("PytorchStreamWriter failed", "inline_container.cc")


def os_error_line(e: OSError) -> str:
    """One line for an OSError that reached a script's top: the file, the cause, what to do."""
    from common.workdir import write_error
    if e.errno in WRITE_ERRNOS:
        return str(write_error(e.filename or "a file", e))
    where = f"{e.filename}: " if e.filename else ""
    cause = e.strerror or " ".join(str(e).split())[:200] or type(e).__name__
    return f"{where}{cause}: {PATH_FIXES.get(e.errno, 'check the path and the disk')}"


def run_main(main) -> None:
    """Run a script's main(), turning input errors, every error the system reports (a full or
    read-only disk, a name too long, a missing folder) and a failed torch write into one line on
    stderr and exit status 2, and a stop (Ctrl-C, SIGTERM, SIGHUP) into one line and 128 + the
    signal, after every `finally` has removed what it was writing."""
    handlers = signals.install()
    try:
        main()
    except (signals.Stopped, KeyboardInterrupt) as e:
        print(f"stopped by {e.name if isinstance(e, signals.Stopped) else 'SIGINT'}: files being "
              "written were removed", file=sys.stderr)
        sys.exit(signals.status_of(e))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        sys.exit(2)
    except RuntimeError as e:
        if not any(mark in str(e) for mark in TORCH_WRITE_FAILURES):
            raise
        print("error: a file could not be written (torch's writer failed; the disk is likely "
              "full): free some space or write to another disk", file=sys.stderr)
        sys.exit(2)
    finally:
        signals.restore(handlers)
