"""compare_sweeps.py on two sweeps of the stand-in scripts: B's runs made better by a known
amount on one triple, the difference and both intervals checked against numbers computed here."""
import json
import shutil

import numpy as np
import pytest
from scipy import stats

from conftest import cli, one_line_error
from test_tune_weights import fakes, sweep_args  # noqa: F401 - fakes is a fixture

PAPER = "l_i2t_l_sym_1_l_img_0_3_l_text_0_2"


def _improve(sweep, seed: int, by: int) -> float:
    """Lower the i2t ranks of one of B's runs by `by` (each at least 0); its new i2t R@10."""
    folder = sweep / "release" / PAPER / f"seed_{seed}"
    with np.load(folder / "per_query_test.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["rank_i2t"] = np.maximum(arrays["rank_i2t"] - by, 0)
    np.savez(folder / "per_query_test.npz", **arrays)
    metrics = json.loads((folder / "metrics_test.json").read_text())
    r = arrays["rank_i2t"]
    metrics["i2t"]["r10"] = 100 * float(np.mean(r < 10))
    (folder / "metrics_test.json").write_text(json.dumps(metrics))
    return metrics["i2t"]["r10"]


@pytest.fixture
def two_sweeps(fakes, tmp_path):  # noqa: F811 - the fixture imported above
    manifest, _ = fakes
    a, b = tmp_path / "a", tmp_path / "b"
    cli(*sweep_args(manifest, a, "--also-test", "1 0.3 0.2"))
    shutil.copytree(a, b)
    return a, b


def test_differences_and_intervals_are_those_of_the_runs(two_sweeps, tmp_path):
    a, b = two_sweeps
    r10 = lambda s, seed: json.loads(  # noqa: E731
        (s / "release" / PAPER / f"seed_{seed}" / "metrics_test.json").read_text())["i2t"]["r10"]
    before = [r10(a, s) for s in (0, 1)]
    after = [_improve(b, 0, 3), _improve(b, 1, 1)]
    out = tmp_path / "c.json"
    result = cli("compare_sweeps.py", a, b, "--labels", "GRU,hf", "--json", out, "--bootstrap", "300")
    comparisons = json.loads(out.read_text())["comparisons"]
    assert set(comparisons) == {"1 0 0", "1 0.3 0.2", "1 0.6 0"}   # chosen, also, baseline
    # The baseline's runs are the same files on both sides: nothing moves.
    assert all(c["difference"] == 0 and c["seed_ci"] == [0, 0] and c["bootstrap_ci"] == [0, 0]
               for c in comparisons["1 0 0"].values())
    c = comparisons["1 0.3 0.2"]["i2t_r10"]
    d = np.subtract(after, before)
    assert c["difference"] == pytest.approx(d.mean()) and d.mean() > 0 and c["seeds"] == 2
    half = stats.t.ppf(0.975, 1) * d.std(ddof=1) / np.sqrt(2)
    assert c["seed_ci"] == pytest.approx([d.mean() - half, d.mean() + half])
    lo, hi = c["bootstrap_ci"]
    assert lo <= c["difference"] <= hi and hi > 0
    assert comparisons["1 0.3 0.2"]["t2i_r10"]["difference"] == 0   # only i2t was changed
    assert "hf (2 seeds) minus GRU (2 seeds), 2 paired by seed" in result.out
    header = next(line for line in result.out.splitlines() if line.startswith("metric"))
    assert header.split()[:3] == ["metric", "GRU", "hf"]


def test_what_cannot_be_compared_is_one_line(two_sweeps, tmp_path):
    a, b = two_sweeps
    one_line_error(cli("compare_sweeps.py", a, tmp_path, check=False), "summary.json: missing")
    one_line_error(cli("compare_sweeps.py", a, b, "--objective", "clean", check=False),
                   "has no objective 'clean'", "release")
    one_line_error(cli("compare_sweeps.py", a, b, "--grid", "1 0 0.2", check=False),
                   "triple 1 0 0.2 was not tested")
    one_line_error(cli("compare_sweeps.py", a, b, "--labels", "one", check=False),
                   "--labels 'one'")
    (b / "release" / PAPER / "seed_1" / "per_query_test.npz").unlink()
    one_line_error(cli("compare_sweeps.py", a, b, check=False),
                   "per_query_test.npz: missing")
