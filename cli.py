"""Command-line flags every script shares; each default comes from config.py."""
from __future__ import annotations

import argparse
import errno
import math
import os
import sys

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


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    g = p.add_argument_group("dataset and work folder (config.py)")
    g.add_argument("--dataset", default=config.DATASET,
                   help="a .jsonl manifest, a .csv/.tsv file, a Karpathy .json, a Politics "
                        "folder / db.pickle, or a GoodNews folder")
    g.add_argument("--dataset-format", choices=FORMATS, default=config.DATASET_FORMAT,
                   help="force the format instead of finding it from the path")
    g.add_argument("--csv-image-key", "--csv-img-key", default=config.CSV_IMAGE_KEY,
                   help="--dataset-format csv: the column of image paths")
    g.add_argument("--csv-caption-key", default=config.CSV_CAPTION_KEY,
                   help="--dataset-format csv: the column of captions")
    g.add_argument("--csv-separator", default=config.CSV_SEPARATOR,
                   help="--dataset-format csv: the field separator (\\t or tab for a tab; default: "
                        "a tab for .tsv, else a comma)")
    g.add_argument("--image-root", default=config.IMAGE_ROOT,
                   help="folder relative image paths start from (default: the dataset's folder)")
    g.add_argument("--work-dir", default=config.WORK_DIR, help="where every script reads and writes")
    g.add_argument("--workers", type=whole(0, max_workers()), default=config.WORKERS,
                   help="worker processes")
    # numpy and gensim take 32-bit seeds.
    g.add_argument("--seed", type=whole(0, 2**32 - 1), default=config.SEED)
    g.add_argument("--val-size", type=whole(0), default=config.VAL_SIZE,
                   help="size of the seeded validation slice of train when no item is marked val "
                        "(default: the test split's size)")
    g.add_argument("--politics-min-chars", type=whole(0), default=config.POLITICS_MIN_CHARS,
                   help="complete_db.pickle items this short or shorter are dropped")
    g.add_argument("--max-sentences", type=whole(0), default=config.MAX_SENTENCES,
                   help="first N sentences of each text (0: the whole text)")
    g.add_argument("--doc2vec-max-sentences", type=whole(0), default=config.DOC2VEC_MAX_SENTENCES,
                   help="first N sentences of each doc2vec_text, the separate text Doc2Vec and the "
                        "kNN read when the dataset has one (0: the whole text)")
    g.add_argument("--max-chars", type=whole(0), default=config.MAX_CHARS,
                   help="raw text cut before tokenising (0: no cut)")
    g.add_argument("--keep-unicode", action="store_true", default=config.KEEP_UNICODE,
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


# Write failures that no code path turned into an InputError naming its file (a TensorBoard
# writer thread, a third-party save) still end as one line rather than a traceback.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM}


def run_main(main) -> None:
    """Run a script's main(), turning input errors (and a full or read-only disk) into one line
    on stderr and exit status 2, and a stop (Ctrl-C, SIGTERM, SIGHUP) into one line and 128 + the
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
        if e.errno not in WRITE_ERRNOS:
            raise
        from common.workdir import write_error
        print(f"error: {write_error(e.filename or 'a file', e)}", file=sys.stderr)
        sys.exit(2)
    finally:
        signals.restore(handlers)
