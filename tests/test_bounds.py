"""Sizes that come from the command line are bounded before anything of that size is made: a
sweep's grid and plan are counted arithmetically and refused past --max-runs with one line
saying why and how to force it; the other user-sized buffers have a ceiling."""
import re
import signal
from contextlib import contextmanager

import pytest

import tune_weights
from conftest import cli
from test_tune_weights import fakes, read_calls, sweep_args  # noqa: F401  (fakes: a fixture)

W = ["--dataset", "d.jsonl", "--work-dir", "w"]


@contextmanager
def within(seconds: int):
    """Fail instead of building a 1e300-long list until memory runs out."""
    def stop(signum, frame):
        raise AssertionError(f"not refused within {seconds} s: it is building what it was asked")
    before = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


CASES = [   # (command, phrases of the one error line)
    (["tune_weights.py", "--w-sym", "0:1:1e-300", "--w-img", "0", "--w-text", "0"],
     ["--w-sym 0:1:1e-300", "1e+300 values", "--max-runs 1000"]),
    (["tune_weights.py", "--w-sym", "0:1e308:1e-308", "--w-img", "0", "--w-text", "0"],
     ["--w-sym 0:1e308:1e-308", "over 1e308", "--max-runs"]),
    (["tune_weights.py", "--w-sym", "0:5:0.01", "--w-img", "0:1:0.5", "--w-text", "0"],
     ["501 x 3 x 1 = 1503 triples", "--max-runs"]),
    (["tune_weights.py", "--grid", "1 0 0; 1 0.3 0.2", "--seeds", "1000000000"],
     ["plans 2000000000 runs", "--max-runs"]),
    (["tune_weights.py", "--grid", "1 0 0", "--seeds", "1", "--finetune-chosen", "100000000"],
     ["up to 200000000 fine-tuned", "--max-runs"]),
    (["tune_weights.py", "--grid", "1 0 0", "--bootstrap", "1000000000000"],
     ["at most 1000000 (got 1000000000000)"]),
    (["retrieve.py", "--checkpoint", "c.pt", "--query", "a dog", "--thumb-size", "1000000"],
     ["--thumb-size 1000000", "16 to 1024"]),
]


@pytest.mark.parametrize("command, phrases", CASES, ids=[" ".join(c[1:4]) for c, _ in CASES])
def test_a_size_past_its_bound_is_refused_at_once_with_one_line(command, phrases):
    with within(5):
        result = cli(*command, "--", *W, check=False) if command[0] == "tune_weights.py" \
            else cli(*command, check=False)
    assert result.code == 2 and "Traceback" not in result.err, result.err
    line = result.err.strip().splitlines()[-1]
    assert "error:" in line
    for phrase in phrases:
        assert phrase in line, line


def test_max_runs_forces_a_larger_grid():
    args = tune_weights.parse_args(["--w-sym", "0:5:0.01", "--w-img", "0:1:0.5", "--w-text",
                                    "0", "--max-runs", "4000", "--seeds", "1", "--", *W])
    assert len(args.triples) == 1503


def test_the_first_line_counts_the_fine_tuned_runs(fakes, tmp_path, monkeypatch):  # noqa: F811
    import models.features
    monkeypatch.setattr(models.features, "training_features", lambda *a, **k: None)
    manifest, calls = fakes
    out = cli(*sweep_args(manifest, tmp_path / "sweep", "--finetune-chosen", "3", "--seeds", "1",
                          trainer_flags=["--frozen-image"])).out
    first = out.splitlines()[0] if not out.startswith("adding") else out.splitlines()[1]
    trains = [c for c in read_calls(calls) if c["script"] == "train"]
    grid = int(re.match(r"(\d+) runs", first).group(1))
    fewest, most = map(int, re.search(r"then (\d+)-(\d+) fine-tuned runs", first).groups())
    assert grid == len([c for c in trains if c["frozen"]]) == 3
    assert fewest <= len([c for c in trains if not c["frozen"]]) <= most
    assert (fewest, most) == (3, 6)
