"""tune_weights.py's flags: its own, parsed and checked before any run, and the trainer's flags
after `--`, parsed by the trainer's own parser (a mistake there stops the sweep at once)."""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import shlex
import sys

import config
from cli import HelpFormatter, max_workers, whole
from evaluation.metrics import TIES
from tuning import slurm
from tuning.grid import BASELINE, TooMany, format_triple, parse_grid, parse_values, product_grid
from tuning.metrics import METRICS
from tuning.sweep import NO_FLAG, parse_devices


# Flags the sweep sets for every run; given after `--` they would be overridden.
RESERVED = {"log_dir": "--log-dir", "run_name": "--run-name", "resume": "--resume",
            "overwrite": "--overwrite", "device": "--device"}


def parse_args(argv: list[str] | None = None, description: str = "") -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    own, trainer_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    g = p.add_argument_group("weights (W_SYM W_IMG W_TEXT) and seeds")
    g.add_argument("--grid", help="triples separated by ';', e.g. \"1 0 0; 1 0.3 0.2; 1 1 1\"")
    for name in ("w-sym", "w-img", "w-text"):
        g.add_argument(f"--{name}", help="instead of --grid, values of this weight, a list "
                                         "(0,0.1,0.2) or START:STOP:STEP; the grid is the product")
    g.add_argument("--seeds", type=int, default=3, help="runs per triple, --run-seed 0..N-1")
    g.add_argument("--max-runs", type=int, default=config.MAX_RUNS, metavar="N",
                   help="refuse a sweep that plans more runs than this (training and fine-tuned "
                        "runs together), e.g. a range with a tiny step")
    g.add_argument("--objectives", default=None,
                   help="--negatives values to sweep, e.g. release,clean (default: the trainer's "
                        "default objective)")
    g = p.add_argument_group("choice and comparison")
    g.add_argument("--select", choices=list(METRICS), default="rsum",
                   help="validation metric whose mean over seeds chooses the triple")
    g.add_argument("--ties", choices=TIES, default="stable", help="evaluate_retrieval.py --ties")
    g.add_argument("--bootstrap", type=int, default=2000, help="resamples of the test queries")
    g.add_argument("--finetune-chosen", type=int, default=0, metavar="N",
                   help="after choosing on --frozen-image runs, train the chosen triple, the "
                        "baseline and the --also-test triples fine-tuned, N seeds each, and "
                        "compare those on test (0: no)")
    g.add_argument("--finetune-args", default="", metavar="FLAGS",
                   help="trainer flags the fine-tuned runs add to those after -- (later wins), "
                        "e.g. \"--image-size 64 --epochs 3\": a size that fine-tuning can afford")
    g.add_argument("--also-test", default=None, metavar="TRIPLES",
                   help="triples of the grid also compared with the baseline on test whatever "
                        "the choice, named before the sweep (e.g. the paper's \"1 0.3 0.2\")")
    g = p.add_argument_group("where")
    g.add_argument("--devices", default="auto",
                   help="one run at a time on each: cpu, cuda, cuda:0,cuda:1, cpu,cpu; auto: "
                        "every visible GPU, else the CPU")
    g.add_argument("--out", default=None, help="the sweep's folder (default: WORK_DIR/sweep)")
    g.add_argument("--eval-workers", type=whole(0, max_workers()), default=None,
                   help="evaluate_retrieval.py --workers (default: the trainer's --workers)")
    g.add_argument("--keep-last", action="store_true",
                   help="keep each run's last.pt once it is trained and validated (by default "
                        "it is removed: only a stopped run resumes from it, the sweep evaluates "
                        "best.pt, and it is half of a sweep's disk)")
    slurm.add_flags(p)
    args = p.parse_args(own)

    if slurm.misused(args):
        p.error(slurm.misused(args))
    if args.grid is not None and any((args.w_sym, args.w_img, args.w_text)):
        p.error("give either --grid or --w-sym/--w-img/--w-text, not both")
    try:
        if args.grid is not None:
            args.triples = parse_grid(args.grid)
        elif all((args.w_sym, args.w_img, args.w_text)):
            axes = [parse_values(text, flag, args.max_runs) for text, flag in
                    ((args.w_sym, "--w-sym"), (args.w_img, "--w-img"), (args.w_text, "--w-text"))]
            size = math.prod(map(len, axes))
            if size > args.max_runs:   # counted before the product is made
                raise TooMany(f"--w-sym x --w-img x --w-text: {' x '.join(str(len(a)) for a in axes)}"
                              f" = {size} triples, more than --max-runs {args.max_runs}: narrow "
                              "the ranges, or pass a larger --max-runs")
            args.triples = product_grid(*axes)
        else:
            p.error("give the weights: --grid \"1 0 0; 1 0.3 0.2\" or all of --w-sym, --w-img "
                    "and --w-text")
    except ValueError as e:
        p.error(str(e))
    try:
        # The baseline against itself compares nothing: only the other triples are kept.
        args.also_test = [t for t in parse_grid(args.also_test) if t != BASELINE] if args.also_test else []
    except ValueError as e:
        p.error(f"--also-test: {e}")
    missing = [t for t in args.also_test if t not in args.triples]
    if missing:
        p.error(f"--also-test {format_triple(missing[0])}: not in the grid; add it to the grid")
    if args.max_runs < 1:
        p.error("--max-runs must be at least 1")
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    if args.finetune_chosen < 0:
        p.error("--finetune-chosen must be 0 or more")
    if not 100 <= args.bootstrap <= 1_000_000:   # its differences are held in memory, per metric
        p.error(f"--bootstrap must be at least 100 resamples and at most 1000000 (got "
                f"{args.bootstrap}): its differences are held in memory, per metric")
    if args.eval_workers is not None and args.eval_workers < 0:
        p.error("--eval-workers must be 0 or more")

    planned = planned_runs(args)
    if sum(planned) > args.max_runs:
        p.error(f"the sweep plans {sum(planned)} runs ({planned[0]} on the grid"
                f"{f', up to {planned[1]} fine-tuned' if planned[1] else ''}), more than "
                f"--max-runs {args.max_runs}: fewer triples or seeds, or pass a larger --max-runs")
    args.trainer_args = trainer_args
    args.trainer = trainer_flags(p, args.triples[0], trainer_args)
    if args.finetune_chosen and not getattr(args.trainer, "frozen_image", False):
        p.error("--finetune-chosen trains the choice of --frozen-image runs fine-tuned: add "
                "--frozen-image after -- (prepare_image_features.py makes its features)")
    args.finetune_args = shlex.split(args.finetune_args)
    if args.finetune_args:
        if not args.finetune_chosen:
            p.error("--finetune-args: add --finetune-chosen N, whose runs they are for")
        trainer_flags(p, args.triples[0], finetuned_flags(args))   # checked now, not after the sweep
    args.negatives = hasattr(args.trainer, "negatives")
    if args.objectives is None:
        args.objectives = [args.trainer.negatives if args.negatives else NO_FLAG]
    else:
        if not args.negatives:
            p.error("--objectives: this trainer has no --negatives flag, so it trains one "
                    "objective: leave --objectives out")
        if any(a.split("=")[0] == "--negatives" for a in trainer_args):
            p.error("--negatives after -- and --objectives: give the objectives once, with "
                    "--objectives")
        args.objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
        if not args.objectives or len(set(args.objectives)) < len(args.objectives):
            p.error(f"--objectives {','.join(args.objectives) or '(empty)'}: list each "
                    "objective once, e.g. release,clean")
        for objective in args.objectives:   # the trainer's parse says which values it takes
            trainer_flags(p, args.triples[0], [*trainer_args, "--negatives", objective])
    import torch   # here only: the flag checks above need no torch
    try:
        args.devices = parse_devices(args.devices, torch.cuda.device_count(), os.cpu_count() or 1)
    except ValueError as e:
        p.error(str(e))
    return args


def grid_triples(args: argparse.Namespace) -> list:
    """The sweep's triples: the grid's, the baseline first when the grid lacks it."""
    return args.triples if BASELINE in args.triples else [BASELINE, *args.triples]


def finetune_triples(args: argparse.Namespace) -> int:
    """How many triples --finetune-chosen trains at most: the chosen one, the baseline and the
    --also-test ones (fewer when the choice is one of them)."""
    return len({BASELINE, *args.also_test}) + 1


def planned_runs(args: argparse.Namespace) -> tuple[int, int]:
    """(runs of the grid, at most this many fine-tuned runs), from the counts alone."""
    objectives = args.objectives
    if isinstance(objectives, str):   # before parse_args has split it
        objectives = [o for o in objectives.split(",") if o.strip()]
    n_obj = max(1, len(objectives or []))
    return (len(grid_triples(args)) * args.seeds * n_obj,
            finetune_triples(args) * args.finetune_chosen * n_obj)


def finetune_line(args: argparse.Namespace) -> str:
    """What the first line adds for --finetune-chosen: the runs it trains after the choice."""
    if not args.finetune_chosen:
        return ""
    most = planned_runs(args)[1]
    fewest = most - args.finetune_chosen * len(args.objectives)
    return (f", then {fewest}-{most} fine-tuned runs (--finetune-chosen {args.finetune_chosen}: "
            f"the chosen triple{', the --also-test ones' if args.also_test else ''} and the "
            f"baseline, {args.finetune_chosen} seeds each; {fewest} when the choice is one of "
            "those)")


def trainer_flags(p: argparse.ArgumentParser, triple, trainer_args: list[str]) -> argparse.Namespace:
    """The trainer's own parse of the flags after `--`: a mistake there stops the sweep now,
    not after the first run."""
    import train_cross_modal_retrieval_model as trainer
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parsed = trainer.parse_args([*map(str, triple), *trainer_args])
    except SystemExit:
        message = next((line for line in reversed(err.getvalue().splitlines()) if line.strip()), "")
        p.error(f"the trainer's flags (after --): {message.split('error: ', 1)[-1]}")
    for dest, flag in RESERVED.items():
        if getattr(parsed, dest) not in (None, False):
            p.error(f"{flag} after --: the sweep sets it for every run (--devices for the device)")
    if any(a.split("=")[0] == "--run-seed" for a in trainer_args):
        p.error("--run-seed after --: the sweep sets it for every run (--seeds N gives 0..N-1)")
    return parsed


def finetuned_flags(args: argparse.Namespace) -> list[str]:
    """The fine-tuned runs' trainer flags: the sweep's without --frozen-image, then
    --finetune-args (argparse keeps a flag's last value)."""
    return [a for a in args.trainer_args if a != "--frozen-image"] + list(args.finetune_args)
