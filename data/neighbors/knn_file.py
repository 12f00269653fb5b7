"""document_feats_knn.pickle read without its [N, k] tables in memory (1.6 GB at 1,000,000
documents, k = 200): the tables come back as `Rows`, read from the file one block at a time.

The file stays a plain pickle that pickle.load reads whole. Its arrays are written in protocol 5,
where numpy hands each table to pickle as one out-of-frame BYTEARRAY8 payload; this reader
unpickles with the pure-Python unpickler, notes where each large payload starts and seeks past
it, and numpy's reconstructor then gets a `Rows` over the file instead of the bytes. Anything
else (an older protocol, a small or unusual array) is read as usual. Only the classes
common.workdir allows are ever built.
"""
from __future__ import annotations

import math
import os
import pickle
import struct
from pathlib import Path

import numpy as np

from common.errors import InputError
from common.files import open_regular
from common.workdir import KNN, WRITER, allowed_class, require

LARGE = 1 << 20     # payloads from this size are left in the file


class Rows:
    """A C-order 2-D array stored in a file at `offset`: `rows[a:b]` reads rows a to b.

    Read through the descriptor the file was unpickled from (its own copy), never by path
    again: a kNN file rewritten meanwhile (a new file renamed over it) is not what it reads."""

    def __init__(self, path: str | Path, offset: int, dtype: np.dtype, shape: tuple[int, int],
                 fd: int):
        self.path, self.offset = str(path), offset
        self.dtype, self.shape = np.dtype(dtype), tuple(shape)
        self.ndim = 2
        self._fd = os.dup(fd)

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("Rows reads contiguous row ranges only: rows[a:b]")
        start, stop, _ = key.indices(self.shape[0])
        count = max(0, stop - start) * self.shape[1]
        row_bytes = self.shape[1] * self.dtype.itemsize
        data = _pread(self._fd, count * self.dtype.itemsize, self.offset + start * row_bytes)
        out = np.frombuffer(data, dtype=self.dtype, count=len(data) // self.dtype.itemsize)
        if out.size != count:
            raise InputError(f"{self.path}: the file ends inside its neighbour table (cut short "
                             f"while written or copied): run {WRITER[KNN]} again")
        return out.reshape(-1, self.shape[1])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


class _Stored:
    """A large payload left in the file."""

    def __init__(self, offset: int, size: int):
        self.offset, self.size = offset, size


class _RowsUnpickler(pickle._Unpickler):
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, f, path: Path):
        super().__init__(f)
        self._fh, self._path = f, path

    def find_class(self, module: str, name: str):
        found = allowed_class(module, name, super().find_class)
        return self._frombuffer(found) if name == "_frombuffer" else found

    def _frombuffer(self, real):
        def build(buf, dtype, shape, order, *rest):
            if not isinstance(buf, _Stored):
                return real(buf, dtype, shape, order, *rest)
            dtype = np.dtype(dtype)
            whole = math.prod(shape) * dtype.itemsize == buf.size
            if order == "C" and len(shape) == 2 and whole and not rest:
                return Rows(self._path, buf.offset, dtype, shape, self._fh.fileno())
            return real(_read(self._fh.fileno(), self._path, buf), dtype, shape, order, *rest)
        return build

    def load_bytearray8(self):
        size, = struct.unpack("<Q", self.read(8))
        frame = self._unframer.current_frame
        # Large payloads are written outside any frame: the file's position is the payload's.
        if size >= LARGE and (frame is None or frame.tell() == len(frame.getbuffer())):
            self._unframer.current_frame = None
            self.append(_Stored(self._fh.tell(), size))
            self._fh.seek(size, 1)
            return
        b = bytearray(size)
        self.readinto(b)
        self.append(b)
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8


def _pread(fd: int, size: int, offset: int) -> bytearray:
    """`size` bytes at `offset` (fewer at the end of the file), the file position untouched."""
    out = bytearray()
    while len(out) < size:
        block = os.pread(fd, min(size - len(out), 1 << 30), offset + len(out))
        if not block:
            break
        out += block
    return out


def _read(fd: int, path: Path, stored: _Stored) -> bytearray:
    data = _pread(fd, stored.size, stored.offset)
    if len(data) != stored.size:
        raise InputError(f"{path}: the file is cut short: run {WRITER[KNN]} again")
    return data


def _resolve(obj: object, fd: int, path: Path) -> object:
    """A payload that no array took (not this project's layout) becomes its bytes after all."""
    if isinstance(obj, _Stored):
        return _read(fd, path, obj)
    if isinstance(obj, dict):
        return {k: _resolve(v, fd, path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, fd, path) for v in obj]
    return obj


def load_knn(work_dir: str | Path) -> dict:
    """The kNN file of `work_dir` as load_pickle gives it, its 'neighbors' and 'distances' as
    Rows where the file allows (an ndarray otherwise: both slice the same way)."""
    path = require(work_dir, KNN)
    try:
        with open_regular(path) as f:   # a FIFO would block a plain open()
            obj = _resolve(_RowsUnpickler(f, path).load(), f.fileno(), path)
    except InputError:
        raise
    except Exception as e:  # a damaged pickle can raise almost anything
        msg = " ".join(str(e).split())[:200]
        raise InputError(f"{path}: unreadable pickle ({type(e).__name__}: {msg}): run "
                         f"{WRITER[KNN]} again") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: not a file {WRITER[KNN]} wrote: run it again")
    return obj
