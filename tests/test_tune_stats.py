"""The sweep's statistics against slow, obviously-correct references."""
import math
import statistics

import numpy as np
import pytest
from scipy import stats

from tuning.stats import available, bootstrap_difference, query_metric, seed_interval

K = 10


def fake_run(seed, n_images=23, texts=(1, 3, 2), labels=True, skill=0.0):
    """Per-query values as evaluate_retrieval.py --save-ranks writes them, drawn at random."""
    rng = np.random.default_rng(seed)
    counts = [texts[i % len(texts)] for i in range(n_images)]
    text_image = np.repeat(np.arange(n_images), counts)
    n_texts = len(text_image)
    scale = 30 * (1 - skill)
    run = {"rank_i2t": rng.integers(0, 1 + int(scale), n_images),
           "rank_t2i": rng.integers(0, 1 + int(scale), n_texts),
           "text_image": text_image,
           "image_overlap_hits": rng.integers(0, K + 1, n_images),
           "text_overlap_hits": rng.integers(0, K + 1, n_images)}
    if labels:
        run.update(label_hits_i2t=rng.integers(0, K + 1, n_images),
                   label_hits_i2i=rng.integers(0, K + 1, n_images),
                   label_hits_t2i=rng.integers(0, K + 1, n_texts),
                   label_hits_t2t=rng.integers(0, K + 1, n_texts))
    return run


def ref_metric(run, name, images):
    """The metric over the queries of the listed images (repeats allowed), by hand."""
    texts_of = {}
    for t, i in enumerate(run["text_image"].tolist()):
        texts_of.setdefault(i, []).append(t)
    per_image = lambda key: [int(run[key][i]) for i in images]
    per_text = lambda key: [int(run[key][t]) for i in images for t in texts_of[i]]
    if name == "rsum":
        return sum(ref_metric(run, f"{d}_r{k}", images) for d in ("i2t", "t2i") for k in (1, 5, 10))
    fractions = {"image_overlap": ("image_overlap_hits", per_image),
                 "text_overlap": ("text_overlap_hits", per_image),
                 "label_p10_i2t": ("label_hits_i2t", per_image),
                 "label_p10_i2i": ("label_hits_i2i", per_image),
                 "label_p10_t2i": ("label_hits_t2i", per_text),
                 "label_p10_t2t": ("label_hits_t2t", per_text)}
    if name in fractions:
        key, pick = fractions[name]
        values = pick(key)
        return sum(v / K for v in values) / len(values)
    direction, stat = name.split("_")
    ranks = per_image("rank_i2t") if direction == "i2t" else per_text("rank_t2i")
    if stat == "medr":
        return math.floor(statistics.median(ranks)) + 1
    if stat == "meanr":
        return sum(r + 1 for r in ranks) / len(ranks)
    k = int(stat[1:])
    return 100 * sum(1 for r in ranks if r < k) / len(ranks)


def ref_bootstrap(chosen, baseline, names, samples, seed, level=0.95):
    rng = np.random.default_rng(seed)
    n = len(chosen[0]["rank_i2t"])
    diffs = {name: [] for name in names}
    for _ in range(samples):
        images = rng.integers(0, n, n).tolist()
        for name in names:
            a = sum(ref_metric(r, name, images) for r in chosen) / len(chosen)
            b = sum(ref_metric(r, name, images) for r in baseline) / len(baseline)
            diffs[name].append(a - b)
    tail = 100 * (1 - level) / 2
    return {name: (np.percentile(d, tail), np.percentile(d, 100 - tail)) for name, d in diffs.items()}


def test_full_split_metrics_match_the_reference():
    run = fake_run(0)
    names = available(run)
    assert len(names) == 17
    everything = list(range(23))
    ones = np.ones((1, 23), dtype=np.int64)
    for name in names:
        assert query_metric(run, name, ones)[0] == pytest.approx(ref_metric(run, name, everything)), name


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_resampled_metrics_match_the_reference(seed):
    run = fake_run(seed, n_images=16, texts=(2, 1, 4, 1))
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, 16, 16) for _ in range(5)]
    weights = np.stack([np.bincount(d, minlength=16) for d in draws])
    for name in available(run):
        got = query_metric(run, name, weights)
        want = [ref_metric(run, name, d.tolist()) for d in draws]
        assert got == pytest.approx(want), name


def test_even_counts_take_the_floor_of_the_median():
    run = {"rank_i2t": np.array([0, 3, 8, 9]), "rank_t2i": np.array([0, 3, 8, 9]),
           "text_image": np.arange(4)}
    # Images 1 and 2 twice each: ranks 3, 3, 8, 8, median 5.5 -> floor 5 + 1.
    assert query_metric(run, "i2t_medr", np.array([[0, 2, 2, 0]]))[0] == 6.0


def test_bootstrap_matches_the_reference():
    chosen = [fake_run(10 + s, skill=0.3) for s in range(3)]
    baseline = [fake_run(20 + s) for s in range(3)]
    names = available(chosen[0])
    got = bootstrap_difference(chosen, baseline, names, samples=60, seed=5, chunk=7)
    want = ref_bootstrap(chosen, baseline, names, samples=60, seed=5)
    for name in names:
        assert got[name] == pytest.approx(want[name]), name


def test_bootstrap_interval_holds_the_difference_and_narrows_with_more_queries():
    small = bootstrap_difference([fake_run(1, 40, skill=0.5)], [fake_run(2, 40)], ["rsum"], 400)
    large = bootstrap_difference([fake_run(1, 640, skill=0.5)], [fake_run(2, 640)], ["rsum"], 400)
    assert small["rsum"][0] < small["rsum"][1] and large["rsum"][0] > 0   # a real improvement
    assert large["rsum"][1] - large["rsum"][0] < (small["rsum"][1] - small["rsum"][0]) / 2.5


def test_runs_on_different_queries_are_an_error():
    other = fake_run(1, texts=(2,))
    with pytest.raises(ValueError, match="different test queries"):
        bootstrap_difference([fake_run(0)], [other], ["rsum"], 10)


def test_seed_interval_is_scipys_paired_t_interval():
    a = np.array([140.1, 133.7, 151.0, 138.2])
    b = np.array([136.0, 135.5, 141.8, 130.0])
    want = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert seed_interval(a - b) == pytest.approx((want.low, want.high))
    assert seed_interval([2.0]) is None
    assert seed_interval([1.0, 1.0, 1.0]) == (1.0, 1.0)
