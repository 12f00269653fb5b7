"""Two sweeps of tune_weights.py compared on test, triple by triple: B's runs minus A's, with the
paired t interval over the seeds both have and the bootstrap interval over the test queries.

For sweeps that differ in one thing the weights do not name: the text branch (a GRU sweep
against a --text-encoder hf one), the neighbourhood space (Doc2Vec against a transformer), the
image backbone. Both must have been evaluated on the same test queries. A triple is compared
where both sweeps tested it (the chosen triple, the baseline and --also-test ones).

  python compare_sweeps.py runs/gru/sweep runs/minilm/sweep --objective release
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from cli import HelpFormatter, run_main, whole
from common.errors import InputError
from common.files import read_regular_text
from tuning.compare import TestRun, compare
from tuning.grid import format_triple, parse_grid
from tuning.report import test_table
from tuning.sweep import write_json_atomic
from losses.weights import Weights

SEED = re.compile(r"seed_(\d+)$")


def tested_runs(sweep: Path, objective: str) -> dict[tuple, list[Path]]:
    """{triple: its seed folders with test metrics} of one objective of a sweep."""
    summary_path = sweep / "summary.json"
    if not summary_path.is_file():
        raise InputError(f"{summary_path}: missing; pass the --out folder of a finished "
                         "tune_weights.py sweep")
    summary = json.loads(read_regular_text(summary_path))
    objectives = sorted(summary.get("chosen", {}))
    if objective not in objectives:
        raise InputError(f"{sweep}: has no objective {objective!r} (it has "
                         f"{', '.join(objectives) or 'none'}); pass --objective")
    out: dict[tuple, list[Path]] = {}
    for row in summary["validation"][objective]:
        # The sweep's own folder of a triple (tuning.sweep.plan names it so).
        folder = sweep / objective / Weights(*row["weights"]).run_name()
        folders = sorted((f for f in folder.glob("seed_*") if (f / "metrics_test.json").is_file()),
                         key=lambda f: int(SEED.search(f.name).group(1)))
        if folders:
            out[tuple(row["weights"])] = folders
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("a", type=Path, help="the sweep compared against (its --out folder)")
    p.add_argument("b", type=Path, help="the sweep whose runs are compared with A's")
    p.add_argument("--objective", default=None,
                   help="which objective's runs (default: the one both sweeps have, if one)")
    p.add_argument("--grid", default=None,
                   help="the triples to compare (default: every triple both sweeps tested)")
    p.add_argument("--bootstrap", type=whole(1), default=2000, help="resamples of the test queries")
    p.add_argument("--labels", default="A,B", help="the two columns' names, comma-separated")
    p.add_argument("--json", type=Path, default=None, help="also write the comparisons here")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    labels = args.labels.split(",")
    if len(labels) != 2 or not all(labels):
        raise InputError(f"--labels {args.labels!r}: pass two names separated by a comma")
    objective = args.objective or _one_objective(args.a, args.b)
    a, b = tested_runs(args.a, objective), tested_runs(args.b, objective)
    triples = parse_grid(args.grid) if args.grid else [t for t in a if t in b]
    if not triples:
        raise InputError(f"{args.a} and {args.b} tested no triple in common for objective "
                         f"{objective}; pass --grid with triples both tested")
    result = {}
    for triple in triples:
        for sweep, runs in ((args.a, a), (args.b, b)):
            if tuple(triple) not in runs:
                raise InputError(f"{sweep}: triple {format_triple(triple)} was not tested "
                                 f"(objective {objective})")
        side_a = [TestRun.read(f, int(SEED.search(f.name).group(1))) for f in a[tuple(triple)]]
        side_b = [TestRun.read(f, int(SEED.search(f.name).group(1))) for f in b[tuple(triple)]]
        comparison = compare(side_b, side_a, args.bootstrap)   # "baseline" is A, "chosen" B
        result[format_triple(triple)] = comparison
        shared = sorted({r.seed for r in side_a} & {r.seed for r in side_b})
        print(f"\ntest, objective {objective}, {format_triple(triple)}: {labels[1]} "
              f"({len(side_b)} seeds) minus {labels[0]} ({len(side_a)} seeds), {len(shared)} "
              "paired by seed:")
        print(test_table(comparison, labels[1], labels[0]))
    if args.json:
        write_json_atomic({"objective": objective, "a": str(args.a), "b": str(args.b),
                           "labels": labels, "comparisons": result}, args.json)


def _one_objective(*sweeps: Path) -> str:
    common = None
    for sweep in sweeps:
        path = sweep / "summary.json"
        if not path.is_file():
            raise InputError(f"{path}: missing; pass the --out folder of a finished "
                             "tune_weights.py sweep")
        found = set(json.loads(read_regular_text(path)).get("chosen", {}))
        common = found if common is None else common & found
    if len(common) != 1:
        raise InputError(f"the two sweeps share the objectives {sorted(common) or 'none'}: pass "
                         "--objective")
    return common.pop()


if __name__ == "__main__":
    run_main(lambda: main(parse_args()))
