"""Command-line flags every script shares; each default comes from config.py."""
from __future__ import annotations

import argparse
import sys

import config

from data.items import InputError, Item
from data.readers import FORMATS, load_dataset


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each flag; the script's docstring kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        # A flag whose help already says its default, or whose default is "not given", needs no
        # "(default: None)" after it.
        if action.default in (None, []) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    g = p.add_argument_group("dataset and work folder (config.py)")
    g.add_argument("--dataset", default=config.DATASET,
                   help="a .jsonl manifest, a Karpathy .json, a Politics folder / db.pickle, or a "
                        "GoodNews folder")
    g.add_argument("--dataset-format", choices=FORMATS, default=config.DATASET_FORMAT,
                   help="force the format instead of finding it from the path")
    g.add_argument("--image-root", default=config.IMAGE_ROOT,
                   help="folder relative image paths start from (default: the dataset's folder)")
    g.add_argument("--work-dir", default=config.WORK_DIR, help="where every script reads and writes")
    g.add_argument("--workers", type=int, default=config.WORKERS, help="worker processes")
    g.add_argument("--seed", type=int, default=config.SEED)
    g.add_argument("--val-size", type=int, default=config.VAL_SIZE,
                   help="size of the seeded validation slice of train when no item is marked val "
                        "(default: the test split's size)")
    g.add_argument("--politics-min-chars", type=int, default=config.POLITICS_MIN_CHARS,
                   help="complete_db.pickle items this short or shorter are dropped")
    g.add_argument("--max-sentences", type=int, default=config.MAX_SENTENCES,
                   help="first N sentences of each text (0: the whole text)")
    g.add_argument("--doc2vec-max-sentences", type=int, default=config.DOC2VEC_MAX_SENTENCES,
                   help="first N sentences of each doc2vec_text, the separate text Doc2Vec and the "
                        "kNN read when the dataset has one (0: the whole text)")
    g.add_argument("--max-chars", type=int, default=config.MAX_CHARS, help="raw text cut before tokenising")
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


def load_items(args: argparse.Namespace) -> list[Item]:
    return load_dataset(args.dataset, args.dataset_format, args.image_root, args.val_size,
                        args.seed, args.politics_min_chars)


def run_main(main) -> None:
    """Run a script's main(), turning input errors into one line on stderr and exit status 2."""
    try:
        main()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
