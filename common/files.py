"""Opening input files that may be something other than a file.

A FIFO where an image, a manifest or a checkpoint should be makes a plain open() wait forever for
a writer; a character device (/dev/zero, /dev/urandom) never ends. Every input is therefore
opened without blocking, checked to be a regular file, and only then read.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import stat
from pathlib import Path
from typing import IO

from common.errors import InputError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


class NotRegularFile(OSError):
    """The path is a folder, a FIFO, a device or a socket; str(e) says which, `what` in words."""

    def __init__(self, path: str, what: str):
        super().__init__(f"{path} is {what}, not a regular file")
        self.path, self.what = path, what

    def __str__(self) -> str:
        return f"{self.path} is {self.what}, not a regular file"


def kind_of(e: NotRegularFile) -> str:
    return e.what


def kind(mode: int) -> str:
    """What a st_mode that is not a regular file's is, in words."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike, mode: str = "rb", **kwargs) -> IO:
    """open(path, mode) for reading, refused with NotRegularFile (never blocking) when the path
    is not a regular file. Symbolic links are followed."""
    if any(c in mode for c in "wax+"):
        raise ValueError("open_regular opens files for reading only")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(os.fspath(path), kind(st.st_mode))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def read_regular_text(path: str | os.PathLike, errors: str = "strict") -> str:
    """The UTF-8 text of a regular file (NotRegularFile for a FIFO or device, never a wait)."""
    with open_regular(path, "r", encoding="utf-8", errors=errors) as f:
        return f.read()


def read_npz(path: str | os.PathLike) -> dict:
    """Every array of an .npz file, read through open_regular."""
    import numpy as np
    with open_regular(path) as f, np.load(f) as data:
        return {k: data[k] for k in data.files}


def not_regular(path: str | os.PathLike) -> str | None:
    """None when `path` is a regular file (or missing: the caller reports that its own way),
    else what it is. For readers that take a path (torch, gensim, numpy's memory map)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return None if stat.S_ISREG(st.st_mode) else kind(st.st_mode)


def require_regular(path: str | os.PathLike, fix: str) -> Path:
    """`path`, or a one-line InputError when it exists and is not a regular file."""
    what = not_regular(path)
    if what is not None:
        raise InputError(f"{path}: is {what}, not a regular file: {fix}")
    return Path(path)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a regular file, read in 1 MiB blocks (a weights file of hundreds of MB)."""
    h = hashlib.sha256()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
