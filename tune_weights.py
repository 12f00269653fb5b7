"""Tune the three weights: train weight triples x seeds, choose on validation, then compare the
chosen triple with the baseline 1 0 0 on test, with confidence intervals.

    python tune_weights.py --grid "1 0 0; 1 0.3 0.2; 1 1 1" --seeds 3 [--objectives release,clean]
        [--select rsum] [--devices cuda:0,cuda:1] [--out DIR] -- [trainer flags]

Every flag after `--` goes to train_cross_modal_retrieval_model.py unchanged (dataset, work
folder, model, epochs, ...). Each run trains in its own folder, OUT/<objective>/<run
name>/seed_<s>/ (`--log-dir`), with `--run-seed s`, so the seeds vary the initial weights, the
data order, the neighbour draws and the flips while the data split stays that of --seed. Each
run is then evaluated on the VALIDATION split (evaluate_retrieval.py --split val, run by the
trainer in its own process: --then-evaluate); the test split is not looked at while choosing.
Per objective, the triple with the best mean over seeds of --select is chosen, and only then
are its runs and the baseline's evaluated on test (one evaluate_retrieval.py process per
device for all of them).

Written to OUT: sweep.csv (one row per run: objective, weights, seed, every validation metric),
summary.json (means and standard deviations over seeds per triple, the choice, and the test
comparison), validation.png (each metric against each weight) and test.png (the differences
with their intervals). The test comparison gives, for every metric, the difference chosen -
baseline of the means over seeds, a 95% paired t interval over seeds (seed s of one against
seed s of the other), and a 95% bootstrap interval over the test queries (images resampled
with their texts, every metric recomputed from each query's saved rank and hits).

Tune cheap, train once: sweep with --frozen-image after `--` (prepare_image_features.py first),
and add --finetune-chosen N: after the choice on validation, the chosen triple, the baseline and
every --also-test triple are trained again fine-tuned (the same flags without --frozen-image, then
--finetune-args, e.g. a smaller --image-size that fine-tuning can afford), N seeds each, in OUT/finetuned/, evaluated on validation (does the frozen choice stay the best
there?) and compared on test with both intervals as above; summary.json's "finetuned" holds it.

A run counts as finished when its marker (done_val.json, written after its metrics) holds the
same settings; run the same command again after a stop and only unfinished runs run, a killed
one continuing from its last.pt. Runs go one per device at a time over --devices, or with
--launcher slurm each run is one task of a SLURM job array (tuning/slurm.py; README: Sweeps on a
cluster).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import shlex
import sys
import time
from pathlib import Path

import config
from cli import HelpFormatter, max_workers, run_main, whole
from common.errors import InputError
from common.files import read_npz
from common.places import Lock, own_folder
from common.workdir import DOC2VEC_MODEL, check_writable
from data.datasets.load import load_items
from evaluation.metrics import TIES
from evaluation.report import K
from losses.weights import Weights
from tuning import slurm
from tuning.compare import TestRun, compare as compare_runs
from tuning.grid import BASELINE, TooMany, format_triple, parse_grid, parse_values, product_grid
from tuning.metrics import METRICS, flatten
from tuning.plots import test_plot, validation_plot
from tuning.report import aggregate, choose, csv_text, test_table, validation_table
from tuning.sweep import (NO_FLAG, Run, Settings, evaluate_all, execute, parse_devices, plan,
                          run_all, write_json_atomic, write_text_atomic)

# What a sweep folder of a version before its .made-by marker holds.
SWEEP_FILES = ("sweep.csv", "summary.json", "*/*/seed_*/started.json")

# Flags the sweep sets for every run; given after `--` they would be overridden.
RESERVED = {"log_dir": "--log-dir", "run_name": "--run-name", "resume": "--resume",
            "overwrite": "--overwrite", "device": "--device"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    own, trainer_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
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


def check_data(args: argparse.Namespace) -> None:
    """What the sweep needs from the dataset, checked before any training."""
    items = load_items(args.trainer)
    dataset = args.trainer.dataset
    for split in ("val", "test"):
        if not any(it.split == split for it in items):
            raise InputError(f"{dataset}: the {split} split is empty: the sweep chooses on "
                             "validation and compares on test")
    need = METRICS[args.select].needs
    if need == "labels":
        for split in ("val", "test"):
            missing = [it.id for it in items if it.split == split and it.label is None]
            if missing:
                raise InputError(f"--select {args.select} needs a label on every validation and "
                                 f"test item, but {len(missing)} {split} items of {dataset} have "
                                 f"none (first: {missing[0]}): choose another --select")
    if need == "doc2vec":
        model = Path(args.trainer.work_dir) / DOC2VEC_MODEL
        if not model.is_file():
            raise InputError(f"--select {args.select} needs the Doc2Vec model {model}: run "
                             "train_doc2vec.py first, or choose another --select")
    if getattr(args.trainer, "frozen_image", False):   # one line now, not one per failed run
        from models.features import FeatureRequest, training_features
        paths = [it.image for it in items]
        training_features(FeatureRequest.from_args(args.trainer), paths, paths)
    if need is not None:
        n_val = sum(it.split == "val" for it in items)
        if n_val <= K:
            raise InputError(f"--select {args.select} needs more than {K} validation items, "
                             f"{dataset} has {n_val}: pass a larger --val-size after --")


class Progress:
    """One line per finished run: which, where, what happened, and the selected metric."""

    def __init__(self, total: int, phase: str, select: str):
        self.total, self.count, self.phase, self.select = total, 0, phase, select
        self.t0 = time.time()

    def __call__(self, i, run, device, outcome) -> None:
        self.count += 1
        width = len(str(self.total))
        if outcome.status == "failed":
            what = f"FAILED ({outcome.error})"
        else:
            value = flatten(outcome.metrics or {}).get(self.select)
            shown = "-" if value is None else f"{value:.4g}"
            what = (f"{'reused' if outcome.status == 'reused' else f'{outcome.seconds:.0f}s'}, "
                    f"{self.phase} {self.select} {shown}")
        print(f"[{self.count:>{width}}/{self.total}] {run.label} on {device.name}: {what} "
              f"({time.time() - self.t0:.0f}s in)", flush=True)


def run_phase(runs, split: str, args, settings: Settings) -> list[dict]:
    progress = Progress(len(runs), split, args.select)
    if args.launcher == "slurm":
        outcomes = slurm.run_all(runs, split, settings, args.slurm, progress)
        if outcomes is None:   # --no-wait: a later call collects them
            sys.exit(0)
    elif split == "test":   # trained runs: one evaluation process per device, not per run
        outcomes = evaluate_all(runs, split, args.devices, settings, progress)
    else:
        outcomes = run_all(runs, args.devices, lambda r, d: execute(r, split, d, settings), progress)
    failed = [(r, o) for r, o in zip(runs, outcomes) if o.status == "failed"]
    if failed:
        print(f"error: {len(failed)} of {len(runs)} runs failed ({split}); the first, "
              f"{failed[0][0].label}: {failed[0][1].error}. Fix it and run the same command "
              "again: finished runs are reused", file=sys.stderr)
        sys.exit(1)
    return [o.metrics for o in outcomes]


def compare(chosen_runs, baseline_runs, chosen_metrics, baseline_metrics, samples: int) -> dict:
    """The chosen runs against the baseline's on test (tuning.compare)."""
    def tested(runs, metrics):
        return [TestRun(r.seed, flatten(m), read_npz(r.folder / "per_query_test.npz"))
                for r, m in zip(runs, metrics)]
    return compare_runs(tested(chosen_runs, chosen_metrics), tested(baseline_runs, baseline_metrics),
                        samples)


def finetuned_flags(args: argparse.Namespace) -> list[str]:
    """The fine-tuned runs' trainer flags: the sweep's without --frozen-image, then
    --finetune-args (argparse keeps a flag's last value)."""
    return [a for a in args.trainer_args if a != "--frozen-image"] + list(args.finetune_args)


def width(interval) -> float | None:
    return None if interval is None or None in interval else float(interval[1] - interval[0])


def finetune(args, out: Path, chosen: dict, named: list, workers: int, frozen_test: dict) -> dict:
    """The chosen triples, the baseline and the --also-test ones trained fine-tuned
    (--finetune-chosen seeds), chosen again on validation among them, compared on test."""
    settings = Settings(finetuned_flags(args), args.negatives, args.ties, workers,
                        keep_last=args.keep_last)
    folder = out / "finetuned"
    runs = [Run(obj, w, s, folder / obj / Weights(*w).run_name() / f"seed_{s}")
            for s in range(args.finetune_chosen) for obj in args.objectives
            for w in dict.fromkeys([chosen[obj], BASELINE, *named])]
    print(f"\nfine-tuned (without --frozen-image): {len(runs)} runs, {args.finetune_chosen} seeds "
          f"each; folder {folder}", flush=True)
    val = run_phase(runs, "val", args, settings)
    rows = [{"objective": r.objective, "w_sym": r.weights[0], "w_img": r.weights[1],
             "w_text": r.weights[2], "seed": r.seed, **flatten(m)} for r, m in zip(runs, val)]
    write_text_atomic(csv_text(rows), folder / "sweep.csv")
    aggregated = aggregate(rows)
    test = dict(zip(runs, run_phase(runs, "test", args, settings)))
    result = {"seeds": args.finetune_chosen, "trainer_args": settings.trainer_args,
              "validation": {}, "best_on_validation": {}, "agrees": {}, "test": {}, "also_test": {}}
    for obj in args.objectives:
        best = choose(aggregated[obj], args.select)
        result["validation"][obj] = [{"weights": list(t), **c} for t, c in aggregated[obj].items()]
        result["best_on_validation"][obj] = list(best)
        result["agrees"][obj] = best == chosen[obj]
        print(f"\nvalidation, fine-tuned, objective {obj} (mean ± std over seeds; * the best mean "
              f"{args.select}): the frozen runs chose {format_triple(chosen[obj])}, fine-tuned "
              f"{'agree' if best == chosen[obj] else 'prefer ' + format_triple(best)}")
        print(validation_table(aggregated[obj], args.select, best))
        for triple in dict.fromkeys([chosen[obj], *named]):
            if triple == BASELINE:
                continue
            ours = [r for r in runs if r.objective == obj and r.weights == triple]
            base = [r for r in runs if r.objective == obj and r.weights == BASELINE]
            comparison = compare(ours, base, [test[r] for r in ours], [test[r] for r in base],
                                 args.bootstrap)
            where = result["test"] if triple == chosen[obj] else \
                result["also_test"].setdefault(format_triple(triple), {})
            where[obj] = comparison
            print(f"\ntest, fine-tuned, objective {obj}: {format_triple(triple)} against the "
                  f"baseline {format_triple(BASELINE)}, {args.finetune_chosen} seeds each:")
            print(test_table(comparison, format_triple(triple)))
        # The point of many cheap seeds: how much narrower the frozen runs' interval is.
        if chosen[obj] != BASELINE and "rsum" in result["test"].get(obj, {}):
            widths = {"frozen": width(frozen_test[obj]["rsum"]["seed_ci"]),
                      "finetuned": width(result["test"][obj]["rsum"]["seed_ci"])}
            result.setdefault("rsum_seed_ci_width", {})[obj] = widths
            shown = {k: "-" if v is None else f"{v:.1f}" for k, v in widths.items()}
            print(f"\nrsum's 95% seed interval, objective {obj}: {shown['frozen']} wide over "
                  f"{args.seeds} frozen seeds, {shown['finetuned']} over {args.finetune_chosen} "
                  "fine-tuned")
    return result


def main() -> None:
    args = parse_args()
    check_data(args)
    out = Path(args.out or Path(args.trainer.work_dir) / "sweep").resolve()
    own_folder(out, "tune_weights.py", "--out", earlier=SWEEP_FILES)
    # Held to the end: a second sweep here would retrain (--overwrite) the runs this one trains.
    lock = Lock(out / ".sweep.lock", f"{out}: another tune_weights.py (PID {{pid}}) is running "
                "a sweep in this folder: wait for it to end, or pass another --out")
    try:
        sweep(args, out)
    finally:
        lock.release()


def sweep(args: argparse.Namespace, out: Path) -> None:
    check_writable(out, folder=True, fix="pass another --out")   # before the runs, not after
    if args.launcher == "slurm":
        args.slurm = slurm.options(args, out)
        slurm.check(args.slurm)
    triples = grid_triples(args)
    if BASELINE not in args.triples:
        print(f"adding the baseline {format_triple(BASELINE)} to the grid: the chosen triple is "
              "compared with it")
    workers = args.eval_workers if args.eval_workers is not None else args.trainer.workers
    settings = Settings(args.trainer_args, args.negatives, args.ties, workers, keep_last=args.keep_last)
    runs = plan(out, args.objectives, triples, args.seeds)
    print(f"{len(runs)} runs: {len(triples)} triples x {args.seeds} seeds x "
          f"{len(args.objectives)} objective{'s' if len(args.objectives) > 1 else ''} "
          f"({', '.join(args.objectives)}){finetune_line(args)}, on "
          f"{'SLURM' if args.launcher == 'slurm' else ', '.join(d.name for d in args.devices)}; "
          f"folder {out}", flush=True)
    val = run_phase(runs, "val", args, settings)

    rows = []
    for run, metrics in zip(runs, val):
        rows.append({"objective": run.objective, "w_sym": run.weights[0], "w_img": run.weights[1],
                     "w_text": run.weights[2], "seed": run.seed,
                     "folder": str(run.folder.relative_to(out)), **flatten(metrics)})
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(csv_text(rows), out / "sweep.csv")
    aggregated = aggregate(rows)
    try:
        chosen = {obj: choose(aggregated[obj], args.select) for obj in args.objectives}
    except ValueError as e:
        raise InputError(f"{e}: the runs' train.log (or evaluate_val.log) says why it was "
                         "skipped") from None
    for obj in args.objectives:
        print(f"\nvalidation, objective {obj} (mean ± std over seeds; * the best mean "
              f"{args.select}):")
        print(validation_table(aggregated[obj], args.select, chosen[obj]))

    named = args.also_test
    tested = [r for r in runs if r.weights in (chosen[r.objective], BASELINE, *named)]
    print(f"\ntest: the chosen triple{'s' if len(args.objectives) > 1 else ''}"
          f"{', ' + '; '.join(map(format_triple, named)) if named else ''} and the baseline, "
          f"{len(tested)} runs", flush=True)
    test = dict(zip(tested, run_phase(tested, "test", args, settings)))

    def against_baseline(obj: str, triple) -> dict:
        ours = [r for r in tested if r.objective == obj and r.weights == triple]
        base = [r for r in tested if r.objective == obj and r.weights == BASELINE]
        return compare(ours, base, [test[r] for r in ours], [test[r] for r in base], args.bootstrap)

    comparisons, also = {}, {format_triple(t): {} for t in named}
    for obj in args.objectives:
        comparisons[obj] = against_baseline(obj, chosen[obj])
        same = " (the baseline itself was chosen)" if chosen[obj] == BASELINE else ""
        print(f"\ntest, objective {obj}: chosen {format_triple(chosen[obj])}{same} against the "
              f"baseline {format_triple(BASELINE)}, {args.seeds} seeds each:")
        print(test_table(comparisons[obj]))
        for triple in named:
            also[format_triple(triple)][obj] = against_baseline(obj, triple)
            print(f"\ntest, objective {obj}: {format_triple(triple)} (named by --also-test) "
                  f"against the baseline {format_triple(BASELINE)}, {args.seeds} seeds each:")
            print(test_table(also[format_triple(triple)][obj], format_triple(triple)))

    names = [n for n in dict.fromkeys([args.select, "rsum", "image_overlap", "text_overlap",
                                        "label_p10_t2i"]) if n in rows[0]]
    plots = [validation_plot(aggregated, names, out / "validation.png"),
             test_plot(comparisons, out / "test.png")]
    plots += [test_plot(by_obj, out / f"test_{name.replace(' ', '_')}.png",
                        f"Test: {name} minus the baseline {format_triple(BASELINE)}")
              for name, by_obj in also.items()]
    summary = {
        "select": args.select, "higher_is_better": METRICS[args.select].higher_is_better,
        "seeds": args.seeds, "objectives": args.objectives, "ties": args.ties,
        "bootstrap_samples": args.bootstrap, "trainer_args": args.trainer_args,
        "validation": {obj: [{"weights": list(t), **cells} for t, cells in aggregated[obj].items()]
                       for obj in args.objectives},
        "chosen": {obj: list(chosen[obj]) for obj in args.objectives},
        "baseline": list(BASELINE),
        "test": comparisons,
        "also_test": also,
    }
    if args.finetune_chosen:
        summary["finetuned"] = finetune(args, out, chosen, named, workers, comparisons)
    write_json_atomic(summary, out / "summary.json")
    print(f"\nwrote {out / 'sweep.csv'}, {out / 'summary.json'}, "
          f"{', '.join(str(p) for p in plots)}")


if __name__ == "__main__":
    run_main(main)
