"""sweep.csv, the per-triple means and standard deviations, the choice, the printed tables and
summary.json of a sweep."""
from __future__ import annotations

import csv
import io
from typing import Sequence

import numpy as np

from evaluation.registry import format_table as _table
from losses.weights import NAMES
from tuning.grid import Triple, format_triple
from tuning.metrics import HEADLINE, METRICS

KEYS = ("objective", *NAMES, "seed")


def csv_text(rows: Sequence[dict]) -> str:
    """One row per run: objective, weights, seed, folder, then every metric any run has."""
    metrics = [m for m in METRICS if any(m in r for r in rows)]
    out = io.StringIO()
    writer = csv.DictWriter(out, [*KEYS, "folder", *metrics], restval="", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r[k] for k in (*KEYS, "folder", *metrics) if k in r})
    return out.getvalue()


def triple_of(row: dict) -> Triple:
    return tuple(float(row[n]) for n in NAMES)


def aggregate(rows: Sequence[dict]) -> dict[str, dict[Triple, dict[str, dict]]]:
    """{objective: {triple: {metric: {"mean", "std", "n", "values"}}}} over the seeds, in the
    order the rows list them; std is the sample standard deviation (0 for one seed)."""
    grouped: dict[str, dict[Triple, list[dict]]] = {}
    for r in rows:
        grouped.setdefault(r["objective"], {}).setdefault(triple_of(r), []).append(r)
    out: dict = {}
    for objective, triples in grouped.items():
        out[objective] = {}
        for triple, runs in triples.items():
            cells = {}
            for name in METRICS:
                values = [float(r[name]) for r in runs if name in r]
                if values:
                    cells[name] = {"mean": float(np.mean(values)),
                                   "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                                   "n": len(values), "values": values}
            out[objective][triple] = cells
    return out


def choose(by_triple: dict[Triple, dict[str, dict]], select: str) -> Triple:
    """The triple with the best mean of `select`; the first listed among equals."""
    sign = 1 if METRICS[select].higher_is_better else -1
    best = None
    for triple, cells in by_triple.items():
        if select in cells and (best is None or sign * cells[select]["mean"] > sign * best[1]):
            best = (triple, cells[select]["mean"])
    if best is None:
        raise ValueError(f"no run has the metric {select}")
    return best[0]


def _format(value: float, name: str) -> str:
    return METRICS[name].format(value)


def validation_table(by_triple: dict[Triple, dict[str, dict]], select: str, chosen: Triple) -> str:
    """Mean +- std over seeds of the headline metrics (and `select`), one row per triple; the
    chosen triple marked *."""
    names = [n for n in dict.fromkeys([select, *HEADLINE])
             if any(n in cells for cells in by_triple.values())]
    header = [" ".join(NAMES), "seeds", *(METRICS[n].label for n in names)]
    lines = []
    for triple, cells in by_triple.items():
        seeds = max(c["n"] for c in cells.values())
        lines.append([f"{'*' if triple == chosen else ' '} {format_triple(triple)}", str(seeds)]
                     + [f"{_format(cells[n]['mean'], n)} ± {_format(cells[n]['std'], n)}"
                        if n in cells else "-" for n in names])
    return _table(header, lines)


def _interval(ci: Sequence[float] | None, name: str) -> str:
    return "n/a" if ci is None else f"[{_format(ci[0], name)}, {_format(ci[1], name)}]"


def test_table(comparison: dict[str, dict], label: str = "chosen", base_label: str = "baseline") -> str:
    """Baseline (`base_label`) and chosen (`label`) means on test, their difference and its two
    95% intervals."""
    header = ["metric", base_label, label, "difference", "95% CI seeds (t)",
              "95% CI queries (bootstrap)"]
    lines = []
    for name, c in comparison.items():
        lines.append([METRICS[name].label, _format(c["baseline"], name), _format(c["chosen"], name),
                      METRICS[name].format(c["difference"], sign=True),
                      _interval(c["seed_ci"], name), _interval(c["bootstrap_ci"], name)])
    return _table(header, lines)
