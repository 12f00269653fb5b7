"""One way to run a function over many jobs: forked worker processes with a progress bar, or this
process alone when the jobs are too few to pay for starting workers."""
from __future__ import annotations

import multiprocessing as mp
from typing import Any, Callable, Iterator, Sequence

from tqdm import tqdm


def fork_map(fn: Callable[[Any], Any], jobs: Sequence, workers: int, serial_below: int,
             chunksize: int = 1, ordered: bool = True, progress: dict | None = None,
             count: Callable[[Any], int] | None = None) -> Iterator:
    """fn(job) for every job: in job order, or as they finish when `ordered` is False.

    Forked, not spawned: workers share the parent's read-only state (a loaded model, a tokenizer)
    through copy-on-write pages instead of each loading a copy, and `fn` may be a module-level
    function reading module globals the parent set. With `workers` <= 1 or fewer than
    `serial_below` jobs, everything runs here. `progress`: tqdm's keywords (desc, unit, disable,
    ...), its total the number of jobs unless given; `count(result)`: how far one result moves the
    bar (default 1). Stopping early (an exception in the caller's loop) terminates the workers.
    """
    bar = {"total": len(jobs), "mininterval": 1.0, **(progress or {})}
    with tqdm(**bar) as shown:
        if workers <= 1 or len(jobs) < serial_below:
            for job in jobs:
                result = fn(job)
                yield result
                shown.update(count(result) if count else 1)
            return
        with mp.get_context("fork").Pool(workers) as pool:   # leaving it terminates the workers
            results = (pool.imap if ordered else pool.imap_unordered)(fn, jobs, chunksize=chunksize)
            for result in results:
                yield result
                shown.update(count(result) if count else 1)
