"""One set of runs against another on test: for each metric both means, their difference, the
paired t interval over the seeds both sides share, and the bootstrap interval over the test
queries. tune_weights.py compares a chosen triple with the baseline this way; compare_sweeps.py
compares one sweep's runs with another's (a GRU text branch against a transformer, one
neighbourhood space against another)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from common.errors import InputError
from common.files import read_npz, read_regular_text
from tuning.metrics import METRICS, flatten
from tuning.stats import available, bootstrap_difference, seed_interval


@dataclass(frozen=True)
class TestRun:
    """One evaluated run: its seed, its flat test metrics and its per-query arrays."""
    seed: int
    metrics: dict
    per_query: dict

    @classmethod
    def read(cls, folder: Path, seed: int) -> "TestRun":
        """The run in `folder` (tune_weights.py's seed folder), one line when it was not tested."""
        for name in ("metrics_test.json", "per_query_test.npz"):
            if not (folder / name).is_file():
                raise InputError(f"{folder / name}: missing; this run was not evaluated on test "
                                 "(tune_weights.py tests the chosen triple, the baseline and "
                                 "--also-test ones)")
        return cls(seed, flatten(json.loads(read_regular_text(folder / "metrics_test.json"))),
                   read_npz(folder / "per_query_test.npz"))


def compare(chosen: Sequence[TestRun], baseline: Sequence[TestRun], samples: int) -> dict:
    """{metric: {"baseline", "chosen", "difference", "seed_ci", "bootstrap_ci", "seeds"}}, for
    the metrics both sides have; the seed interval pairs runs of the same seed."""
    names = [n for n in METRICS if n in available(chosen[0].per_query) and n in chosen[0].metrics
             and n in baseline[0].metrics]
    boot = bootstrap_difference([r.per_query for r in chosen], [r.per_query for r in baseline],
                                names, samples)
    by_seed = {r.seed: r.metrics for r in baseline}
    out = {}
    for name in names:
        pairs = [(r.metrics[name], by_seed[r.seed][name]) for r in chosen if r.seed in by_seed]
        mean_a = np.mean([r.metrics[name] for r in chosen])
        mean_b = np.mean([r.metrics[name] for r in baseline])
        out[name] = {"baseline": float(mean_b), "chosen": float(mean_a),
                     "difference": float(mean_a - mean_b),
                     "seed_ci": seed_interval([x - y for x, y in pairs]),
                     "bootstrap_ci": boot[name], "seeds": len(pairs)}
    return out
