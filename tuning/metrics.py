"""The metrics a sweep records, selects on and compares: those of evaluation.registry, the one
list, with the columns its printed table shows."""
from __future__ import annotations

from evaluation.registry import METRICS, Metric, flatten

__all__ = ["METRICS", "Metric", "flatten", "HEADLINE"]

# The columns of the printed table, when the runs have them.
HEADLINE = ("rsum", "i2t_r1", "t2i_r1", "i2t_medr", "t2i_medr", "image_overlap", "text_overlap",
            "label_p10_i2t", "label_p10_t2i")
