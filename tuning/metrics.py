"""The metrics a sweep records, selects on and compares: flat names for evaluate_retrieval.py's
nested metrics.json, which way is better, and what each needs from the dataset."""
from __future__ import annotations

from dataclasses import dataclass

from evaluation.metrics import RECALL_AT


@dataclass(frozen=True)
class Metric:
    name: str                 # flat name: a sweep.csv column and a --select choice
    path: tuple[str, ...]     # where metrics.json holds it
    higher_is_better: bool
    needs: str | None         # None, "doc2vec" (the work folder's model) or "labels"
    unit: str                 # "points" (percent), "rank" or "fraction": the plots group by it
    label: str                # as the tables print it


def _all() -> list[Metric]:
    out = [Metric("rsum", ("rsum",), True, None, "points", "rsum")]
    for d in ("i2t", "t2i"):
        out += [Metric(f"{d}_r{k}", (d, f"r{k}"), True, None, "points", f"{d} R@{k}")
                for k in RECALL_AT]
        out += [Metric(f"{d}_medr", (d, "medr"), False, None, "rank", f"{d} medr"),
                Metric(f"{d}_meanr", (d, "meanr"), False, None, "rank", f"{d} meanr")]
    out += [Metric(f"{s}_overlap", ("neighborhood", f"{s}_overlap@10"), True, "doc2vec",
                   "fraction", f"{s} overlap@10") for s in ("image", "text")]
    out += [Metric(f"label_p10_{d}", ("label_precision@10", d), True, "labels", "fraction",
                   f"label P@10 {d}") for d in ("i2t", "t2i", "i2i", "t2t")]
    return out


METRICS: dict[str, Metric] = {m.name: m for m in _all()}
# The columns of the printed table, when the runs have them.
HEADLINE = ("rsum", "i2t_r1", "t2i_r1", "i2t_medr", "t2i_medr", "image_overlap", "text_overlap",
            "label_p10_i2t", "label_p10_t2i")


def flatten(metrics: dict) -> dict[str, float]:
    """metrics.json -> {flat name: value} for every metric it holds."""
    flat = {}
    for m in METRICS.values():
        value = metrics
        for key in m.path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            flat[m.name] = float(value)
    return flat
