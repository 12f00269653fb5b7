"""The log folder of a training run: named, locked while the run lives, never silently reused.

Two trainers writing one folder would leave the first run's printed best.pt holding the
second's model, and a new run in an old run's folder would replace its checkpoints and mix its
TensorBoard curves into the old ones. So a run takes an exclusive lock on LOG_DIR/.lock (flock:
the kernel drops it when the process dies, even by kill -9, so a stale lock never blocks), and
a folder that holds an earlier run's checkpoints or logs is used only with --resume (continue
that run) or --overwrite (remove its checkpoints and logs first).
"""
from __future__ import annotations

import os
from pathlib import Path

from common.errors import InputError
from common.places import Lock
from common.workdir import write_error
from losses.weights import Weights

LOCK = ".lock"
CHECKPOINTS = ("last.pt", "best.pt")
EVENTS = "events.out.tfevents.*"


def log_folder(args) -> Path:
    """--log-dir, else WORK_DIR/models/<--run-name>, else the authors' name from the weights."""
    if args.log_dir:
        return Path(args.log_dir)
    name = args.run_name or Weights.from_args(args).run_name()
    return Path(args.work_dir) / "models" / name


def check_run_name(name: str | None) -> str | None:
    """None, or a plain folder name (the message for anything else is the caller's usage line)."""
    # Control characters (a newline, a terminal escape) would break the evaluation's table and
    # every line that prints the folder.
    if name is not None and (not name.strip() or name in (".", "..") or "/" in name
                             or os.sep in name or any(c < " " or c == "\x7f" for c in name)):
        return f"--run-name {name!r}: pass a plain folder name (no '/'), or --log-dir for a path"
    return None


class RunFolder:
    """The claimed folder; keep the object alive for the whole run (it holds the lock open)."""

    def __init__(self, path: Path, lock: Lock | None):
        self.path, self._lock = path, lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # A run that stops on an error releases the folder when the object goes, as a file object
    # closes itself: what matters when main() runs inside another Python process (the tests).
    __del__ = release


def _lock(path: Path) -> Lock:
    """An exclusive flock on path/.lock holding our PID; one line naming the holder otherwise."""
    return Lock(path / LOCK, f"{path}: another training run (PID {{pid}}) is writing to this "
                "folder: wait for it to end, or pass --run-name NAME (or --log-dir) for this run")


def earlier_run(path: Path) -> list[str]:
    """The files of an earlier run in the folder: checkpoints and TensorBoard event logs."""
    if not path.is_dir():
        return []
    return [n for n in CHECKPOINTS if (path / n).exists()] + \
        sorted(p.name for p in path.glob(EVENTS))


def claim(path: Path, resume: bool, overwrite: bool, main: bool) -> RunFolder:
    """Create and lock the folder (rank 0 only: the ranks of one run share it), then stop unless
    it is free of an earlier run, or --resume / --overwrite says what to do with that run.

    Every rank makes the same check on the same files, so all of them stop together. With
    --overwrite the earlier checkpoints and logs are removed here, before any training, so the
    best.pt printed at the end is always one this run wrote.
    """
    lock = None
    if main:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(path, e) from None
        lock = _lock(path)
        # Under the lock no other trainer writes here: any checkpoint's temporary file is a
        # leftover of a run killed mid-save (kill -9), as large as the checkpoint.
        stale = [t for name in CHECKPOINTS for t in path.glob(f".{name}.*.tmp")]
        for t in stale:
            t.unlink(missing_ok=True)
        if stale:
            print(f"removed {len(stale)} temporary file(s) of a save that was cut short from {path}")
    found = earlier_run(path)
    try:
        if found and not (resume or overwrite):
            raise InputError(f"{path}: holds an earlier run ({', '.join(found[:3])}"
                             f"{', ...' if len(found) > 3 else ''}): pass --resume to continue "
                             "it, --overwrite to replace it, or --run-name NAME for a new folder")
        if overwrite and main:
            for name in found:
                (path / name).unlink(missing_ok=True)
            if found:
                print(f"--overwrite: removed the earlier run's {', '.join(found)} from {path}")
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return RunFolder(path, lock)


class LogWriter:
    """TensorBoard's SummaryWriter for the log folder, where a failed write (a full disk: the
    error surfaces from the writer's thread at a later call, with no file name) is one line
    naming the folder."""

    def __init__(self, path: Path, purge_step: int | None = None):
        self.path, self._purge_step, self._made = path, purge_step, None

    @property
    def _writer(self):
        # Made at the first value, not before: a run that logs nothing (--epochs 0) leaves no
        # events file, which would make the folder look used.
        if self._made is None:
            from torch.utils.tensorboard import SummaryWriter
            self._made = self._guard(lambda: SummaryWriter(str(self.path), purge_step=self._purge_step))
        return self._made

    def _guard(self, call):
        try:
            return call()
        except OSError as e:
            raise write_error(f"{self.path} (TensorBoard log)", e) from None

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._guard(lambda: self._writer.add_scalar(tag, value, step))

    def flush(self) -> None:
        if self._made is not None:
            self._guard(self._made.flush)

    def close(self) -> None:
        if self._made is not None:
            self._guard(self._made.close)
