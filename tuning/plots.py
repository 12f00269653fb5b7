"""The sweep's figures (PNG, matplotlib's Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

from losses.weights import NAMES  # noqa: E402
from tuning.grid import Triple, format_triple  # noqa: E402
from tuning.metrics import METRICS  # noqa: E402

UNITS = {"points": "difference (percentage points)", "rank": "difference (rank)",
         "fraction": "difference (fraction)"}


def validation_plot(aggregated: dict[str, dict[Triple, dict[str, dict]]], names: Sequence[str],
                    path: Path) -> Path:
    """One row per metric, one column per weight the grid varies: each triple's mean +- std over
    seeds on the validation split against that weight, one series per objective, each point
    labelled with its triple (a list of triples can put several at one value of a weight)."""
    objectives = list(aggregated)
    triples = [t for obj in objectives for t in aggregated[obj]]
    varied = [i for i in range(3) if len({t[i] for t in triples}) > 1] or [0]
    fig, axes = plt.subplots(len(names), len(varied), figsize=(4.5 * len(varied), 2.9 * len(names)),
                             squeeze=False)
    for row, name in enumerate(names):
        for col, weight in enumerate(varied):
            ax = axes[row][col]
            span = max(t[weight] for t in triples) - min(t[weight] for t in triples) or 1.0
            for k, objective in enumerate(objectives):
                points = [(t, c[name]["mean"], c[name]["std"])
                          for t, c in aggregated[objective].items() if name in c]
                # Objectives side by side at each weight, so their error bars do not overlap.
                shift = (k - (len(objectives) - 1) / 2) * 0.03 * span
                for i, (t, mean, std) in enumerate(points):
                    ax.errorbar(t[weight] + shift, mean, yerr=std, fmt="o", capsize=3,
                                color=f"C{k}", alpha=0.8, label=objective if i == 0 else None)
                    if k == 0:   # once: the objectives share the triples
                        ax.annotate(format_triple(t), (t[weight] + shift, mean), fontsize=6,
                                    xytext=(4, 2), textcoords="offset points")
            ax.set_xlabel(NAMES[weight])
            if col == 0:
                ax.set_ylabel(f"val {METRICS[name].label}")
            ax.grid(alpha=0.3)
    axes[0][0].legend(title="objective", fontsize=8)
    fig.suptitle("Validation metric against each weight (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def test_plot(comparisons: dict[str, dict[str, dict]], path: Path,
              title: str = "Test: chosen weights minus the baseline 1 0 0") -> Path:
    """Chosen minus baseline on test for each metric, with the seeds' t interval (thick) and the
    queries' bootstrap interval (thin), one panel per unit, one colour per objective."""
    units = [u for u in UNITS if any(METRICS[n].unit == u for c in comparisons.values() for n in c)]
    fig, axes = plt.subplots(1, len(units), figsize=(5 * len(units), 4.5), squeeze=False)
    objectives = list(comparisons)
    for ax, unit in zip(axes[0], units):
        names = [n for n in METRICS if any(n in c for c in comparisons.values())
                 and METRICS[n].unit == unit]
        for k, objective in enumerate(objectives):
            colour = f"C{k}"
            for i, name in enumerate(names):
                c = comparisons[objective].get(name)
                if c is None:
                    continue
                y = i + (k - (len(objectives) - 1) / 2) * 0.25
                if c["bootstrap_ci"] is not None:
                    ax.plot(c["bootstrap_ci"], [y, y], color=colour, lw=1)
                if c["seed_ci"] is not None:
                    ax.plot(c["seed_ci"], [y, y], color=colour, lw=4, alpha=0.5)
                ax.plot([c["difference"]], [y], "o", color=colour,
                        label=objective if i == 0 else None)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(names)), [METRICS[n].label for n in names])
        ax.invert_yaxis()
        ax.set_xlabel(UNITS[unit])
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].legend(title="objective", fontsize=8)
    fig.suptitle(f"{title} (thick: 95% CI over seeds, thin: bootstrap over queries)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
