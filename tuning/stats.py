"""Confidence intervals for "chosen weights minus baseline" on test: a paired t interval over
seeds, and a bootstrap over the test queries from each query's saved values.

The per-query values are those evaluate_retrieval.py --save-ranks writes (evaluation.report):
0-based ranks, the text -> image map and the neighbourhood / label hits among the top K. Every
metric of tuning.metrics is recomputed from them for a resampled set of queries. The unit
resampled is the image: a resample holds each drawn image's query and the queries of all its
texts, so the image and text directions stay paired, as the metrics' rsum pairs them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats

from evaluation.registry import K, METRICS, RECALLS

# Per-query array and level ("image": one value per image, "text": one per text) of each
# fraction metric; the hits are out of K.
_FRACTIONS = {m.name: m.hits for m in METRICS.values() if m.hits is not None}


def seed_interval(differences: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """The paired t interval of the mean of per-seed differences; None below two seeds."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        return None
    half = stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    return float(d.mean() - half), float(d.mean() + half)


def available(per_query: dict[str, np.ndarray]) -> list[str]:
    """The metrics (tuning.metrics names) the per-query arrays can give."""
    return [n for n, m in METRICS.items() if m.hits is None or m.hits[0] in per_query]


def _weighted_medr(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """floor(median) + 1 of `values` (0-based ranks) repeated `weights[b]` times, for each row b
    of weights [B, N]: the median rank of evaluation.metrics on a resample."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    cumulative = np.cumsum(weights[:, order], axis=1)
    total = cumulative[:, -1]
    lower = (cumulative > ((total - 1) // 2)[:, None]).argmax(axis=1)
    upper = (cumulative > (total // 2)[:, None]).argmax(axis=1)
    return np.floor((ordered[lower] + ordered[upper]) / 2) + 1


def query_metric(per_query: dict[str, np.ndarray], name: str, weights: np.ndarray) -> np.ndarray:
    """Metric `name` [B] of one run for each row of image weights [B, Ni] (how many times each
    image is in the resample; all ones gives the metric of the full split)."""
    text_weights = weights[:, per_query["text_image"]]
    level = {"image": weights, "text": text_weights}
    if name == "rsum":
        return sum(query_metric(per_query, r, weights) for r in RECALLS)
    if name in _FRACTIONS:
        key, where = _FRACTIONS[name]
        w = level[where]
        return w @ per_query[key].astype(np.float64) / (w.sum(axis=1) * K)
    direction, stat = name.split("_")
    ranks = per_query[f"rank_{direction}"]
    w = weights if direction == "i2t" else text_weights
    if stat == "medr":
        return _weighted_medr(ranks, w)
    if stat == "meanr":
        return w @ ranks.astype(np.float64) / w.sum(axis=1) + 1
    k = int(stat[1:])
    return 100.0 * (w @ (ranks < k).astype(np.float64)) / w.sum(axis=1)


def _check_same_queries(runs: Sequence[dict[str, np.ndarray]]) -> None:
    first = runs[0]["text_image"]
    for r in runs[1:]:
        if not np.array_equal(r["text_image"], first):
            raise ValueError("the runs were evaluated on different test queries (their text -> "
                             "image maps differ): the bootstrap pairs them query by query")


def bootstrap_difference(chosen: Sequence[dict[str, np.ndarray]],
                         baseline: Sequence[dict[str, np.ndarray]], names: Sequence[str],
                         samples: int = 2000, seed: int = 0, level: float = 0.95,
                         chunk: int = 200) -> dict[str, tuple[float, float]]:
    """{metric: (low, high)}: the percentile interval of mean(chosen runs) - mean(baseline runs)
    over `samples` resamples of the test images (with replacement), the same resample for every
    run. Draw b is rng.integers(0, Ni, Ni) of numpy's default_rng(seed), in order."""
    if not chosen or not baseline:
        raise ValueError("the bootstrap needs at least one run on each side")
    _check_same_queries([*chosen, *baseline])
    n_images = len(chosen[0]["rank_i2t"])
    rng = np.random.default_rng(seed)
    differences = {name: np.empty(samples) for name in names}
    for start in range(0, samples, chunk):
        stop = min(start + chunk, samples)
        # Counts instead of index lists: a resample is a weighting of the images.
        weights = np.stack([np.bincount(rng.integers(0, n_images, n_images), minlength=n_images)
                            for _ in range(stop - start)])
        for name in names:
            a = np.mean([query_metric(r, name, weights) for r in chosen], axis=0)
            b = np.mean([query_metric(r, name, weights) for r in baseline], axis=0)
            differences[name][start:stop] = a - b
    tail = 100 * (1 - level) / 2
    return {name: (float(np.percentile(d, tail)), float(np.percentile(d, 100 - tail)))
            for name, d in differences.items()}
