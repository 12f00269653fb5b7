"""Tune the three weights: train weight triples x seeds, choose on validation, then compare the
chosen triple with the baseline 1 0 0 on test, with confidence intervals.

    python tune_weights.py --grid "1 0 0; 1 0.3 0.2; 1 1 1" --seeds 3 [--objectives release,clean]
        [--select rsum] [--devices cuda:0,cuda:1] [--out DIR] -- [trainer flags]

Every flag after `--` goes to train_cross_modal_retrieval_model.py unchanged (dataset, work
folder, model, epochs, ...). Each run trains in its own folder, OUT/<objective>/<run
name>/seed_<s>/ (`--log-dir`), with `--run-seed s`, so the seeds vary the initial weights, the
data order, the neighbour draws and the flips while the data split stays that of --seed. Each
run is then evaluated on the VALIDATION split (evaluate_retrieval.py --split val); the test
split is not looked at while choosing. Per objective, the triple with the best mean over seeds
of --select is chosen, and only then are its runs and the baseline's evaluated on test.

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
import sys
import time
from pathlib import Path

import numpy as np

from cli import run_main
from common.errors import InputError
from common.files import read_npz
from common.places import Lock, own_folder
from common.workdir import DOC2VEC_MODEL, check_writable
from data.datasets.load import load_items
from evaluation.report import K
from losses.weights import Weights
from tuning import arguments, slurm
from tuning.arguments import finetune_line, finetuned_flags, grid_triples
from tuning.grid import BASELINE, format_triple
from tuning.metrics import METRICS, flatten
from tuning.plots import test_plot, validation_plot
from tuning.report import aggregate, choose, csv_text, test_table, validation_table
from tuning.stats import available, bootstrap_difference, seed_interval
from tuning.sweep import Run, Settings, execute, plan, run_all, write_json_atomic, write_text_atomic

# What a sweep folder of a version before its .made-by marker holds.
SWEEP_FILES = ("sweep.csv", "summary.json", "*/*/seed_*/started.json")


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
    """{metric: baseline and chosen means, their difference, the seeds' and the queries' 95%
    intervals} on test."""
    per_query = {r: read_npz(r.folder / "per_query_test.npz") for r in [*chosen_runs, *baseline_runs]}
    a = [flatten(m) for m in chosen_metrics]
    b = [flatten(m) for m in baseline_metrics]
    names = [n for n in METRICS if n in available(per_query[chosen_runs[0]]) and n in a[0]]
    boot = bootstrap_difference([per_query[r] for r in chosen_runs],
                                [per_query[r] for r in baseline_runs], names, samples)
    by_seed_b = {r.seed: m for r, m in zip(baseline_runs, b)}
    out = {}
    for name in names:
        pairs = [(m[name], by_seed_b[r.seed][name]) for r, m in zip(chosen_runs, a) if r.seed in by_seed_b]
        mean_a, mean_b = np.mean([m[name] for m in a]), np.mean([m[name] for m in b])
        ci = seed_interval([x - y for x, y in pairs])
        out[name] = {"baseline": float(mean_b), "chosen": float(mean_a),
                     "difference": float(mean_a - mean_b), "seed_ci": ci,
                     "bootstrap_ci": boot[name], "seeds": len(pairs)}
    return out


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return arguments.parse_args(argv, __doc__)


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
        raise InputError(f"{e}: see the runs' evaluate_val.log for why it was skipped") from None
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
