"""fork_map: the same results serial and forked, in order, with the bar counting what it is told."""
import os

import pytest

from common.pool import fork_map


def _square(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def _fail_on_seven(x: int) -> int:
    if x == 7:
        raise ValueError("seven")
    return x


@pytest.mark.parametrize("workers,serial_below", [(1, 0), (2, 1000), (2, 0)])
def test_results_in_job_order_whichever_way_it_runs(workers, serial_below):
    out = list(fork_map(_square, range(50), workers, serial_below, chunksize=3))
    assert [r for r, _ in out] == [x * x for x in range(50)]
    forked = workers > 1 and serial_below <= 50
    assert ({pid for _, pid in out} != {os.getpid()}) == forked


def test_unordered_gives_every_result_once():
    out = list(fork_map(_square, range(40), 2, 0, ordered=False))
    assert sorted(r for r, _ in out) == [x * x for x in range(40)]


def test_the_bar_counts_what_count_says(capsys):
    list(fork_map(_square, range(10), 1, 0, progress=dict(desc="things", total=30, mininterval=0),
                  count=lambda result: 3))
    assert "30/30" in capsys.readouterr().err


def test_a_worker_error_reaches_the_caller():
    with pytest.raises(ValueError, match="seven"):
        list(fork_map(_fail_on_seven, range(20), 2, 0))
