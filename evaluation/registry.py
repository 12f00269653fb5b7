"""The one list of metrics: evaluate_retrieval.py's table, the sweep's columns and choice, and the
bootstrap all read it. Add a metric here and every one of them has it. Also the one table layout
they print with."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from evaluation.metrics import RECALL_AT

K = 10   # neighbourhood and label precision depth


@dataclass(frozen=True)
class Metric:
    name: str                 # flat name: a sweep.csv column and a --select choice
    path: tuple[str, ...]     # where metrics.json holds it
    higher_is_better: bool
    needs: str | None         # None, "doc2vec" (the work folder's model) or "labels"
    unit: str                 # "points" (percent), "rank" or "fraction": the plots group by it
    label: str                # as the tables print it
    # For a fraction, the per-query array of hits among the top K (evaluation.report) and whether
    # it holds one value per image or per text: the bootstrap recomputes the metric from it.
    hits: tuple[str, str] | None = None

    @property
    def fmt(self) -> str:
        return ".3f" if self.unit == "fraction" else ".1f"

    def format(self, value: float, sign: bool = False) -> str:
        return format(value, ("+" if sign else "") + self.fmt)


def _direction(d: str) -> list[Metric]:
    return ([Metric(f"{d}_r{k}", (d, f"r{k}"), True, None, "points", f"{d} R@{k}") for k in RECALL_AT]
            + [Metric(f"{d}_medr", (d, "medr"), False, None, "rank", f"{d} medr"),
               Metric(f"{d}_meanr", (d, "meanr"), False, None, "rank", f"{d} meanr")])


def _all() -> list[Metric]:
    out = [Metric("rsum", ("rsum",), True, None, "points", "rsum"), *_direction("i2t"), *_direction("t2i")]
    out += [Metric(f"{s}_overlap", ("neighborhood", f"{s}_overlap@{K}"), True, "doc2vec", "fraction",
                   f"{s} overlap@{K}", (f"{s}_overlap_hits", "image")) for s in ("image", "text")]
    out += [Metric(f"label_p10_{d}", (f"label_precision@{K}", d), True, "labels", "fraction",
                   f"label P@{K} {d}", (f"label_hits_{d}", "image" if d[0] == "i" else "text"))
            for d in ("i2t", "t2i", "i2i", "t2t")]
    return out


METRICS: dict[str, Metric] = {m.name: m for m in _all()}
RECALLS = tuple(m.name for m in METRICS.values() if m.unit == "points" and m.name != "rsum")


def lookup(metrics: dict, path: Sequence[str]):
    """The value at `path` in a nested metrics dict, or None."""
    for key in path:
        if not isinstance(metrics, dict) or key not in metrics:
            return None
        metrics = metrics[key]
    return metrics


def flatten(metrics: dict) -> dict[str, float]:
    """metrics.json -> {flat name: value} for every metric it holds."""
    flat = {}
    for m in METRICS.values():
        value = lookup(metrics, m.path)
        if value is not None:
            flat[m.name] = float(value)
    return flat


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text columns: the first left-aligned, the rest right-aligned, a rule under the header."""
    header = list(header)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))) for row in lines)
