"""Output folders a script writes into, and locks held for a whole job.

A script writes only into a folder that is new, empty, or one it made before: a folder it makes
gets a marker file (.made-by, the script's name), and a folder without the marker is taken only
when it is empty or holds what the script writes there (an output of a version before the
marker). Anything else is refused with one line, so no file of the user's (a config.json of
their own where export_encoders.py would write its config.json) is ever replaced.

A lock is an exclusive flock on a file holding the holder's PID: the kernel drops it when the
process dies, even by kill -9, so a stale lock never blocks, and a second job on the same folder
is refused at once instead of interleaving with the first.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Sequence

from .files import open_regular
from .errors import InputError
from .workdir import atomic_write, write_error

MARKER = ".made-by"


def made_by(folder: Path) -> str | None:
    """The script named by the folder's marker, or None."""
    try:
        with open_regular(folder / MARKER, "r", encoding="utf-8", errors="replace") as f:
            return f.read(200).strip() or None
    except OSError:
        return None


def own_folder(path: str | Path, script: str, flag: str, earlier: Sequence[str] = (),
               make: bool = True) -> Path:
    """Create (or take) `path` as `script`'s output folder, or stop with one line: it must be
    new, empty, marked by `script`, or hold one of the `earlier` glob patterns (what `script`
    writes there). make=False only checks (a script's flags, before any work)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: is a file, not a folder: pass a folder to {flag}")
    if path.is_dir():
        maker = made_by(path)
        if maker == script:
            return path
        if maker is not None:
            raise InputError(f"{path}: a folder {maker} made, not {script}: pass another {flag}")
        try:
            entries = sorted(p.name for p in path.iterdir())
        except OSError as e:
            raise InputError(f"{path}: cannot be listed ({e.strerror}): pass another "
                             f"{flag}") from None
        if entries and not any(next(path.glob(pattern), None) for pattern in earlier):
            raise InputError(f"{path}: holds files {script} did not write ({entries[0]}"
                             f"{', ...' if len(entries) > 1 else ''}): pass a new or empty "
                             f"folder to {flag}")
    if not make:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"{path}: part of this path is a file: pass another {flag}") from None
    except OSError as e:
        raise write_error(path, e, f"pass another {flag}") from None
    atomic_write(path / MARKER, lambda tmp: Path(tmp).write_text(script + "\n", encoding="utf-8"))
    return path


class Lock:
    """An exclusive flock on `path`, held until release() (or the process ends)."""

    def __init__(self, path: str | Path, busy: str):
        """`busy`: the message when another process holds it; '{pid}' becomes its PID."""
        self.path, self._fd = Path(path), None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise write_error(self.path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise InputError(busy.replace("{pid}", holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)     # closing drops the flock
            self._fd = None

    __del__ = release


def check_replaceable(folder: Path, holds: str, script: str) -> None:
    """Stop with one line unless `folder` (which `script` replaces whole with a new build) is
    absent, empty, or one of its builds (it holds the file `holds`)."""
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir() or folder.is_symlink():
        raise InputError(f"{folder}: not a folder {script} wrote, where it writes its build: "
                         "move it away")
    entries = sorted(p.name for p in folder.iterdir())
    if entries and not (folder / holds).is_file():
        raise InputError(f"{folder}: holds files {script} did not write ({entries[0]}"
                         f"{', ...' if len(entries) > 1 else ''}) where it writes its build (and "
                         "replaces the folder whole): move them away")
