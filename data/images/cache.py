"""The image cache: every image of a dataset decoded and resized once, into one uint8 array file.

WORK_DIR/image_cache/<size>/ (<size>-<key>/ for a backbone whose resize rule is not the
default squash, e.g. 224-crop0.875-bicubic) holds images.npy, [N, 3, size, size] uint8 rows in
the layout the model takes, and index.json: the sorted image paths (row r is paths[r]), each
file's size, mtime, ctime and inode when it was decoded, the images that could not be decoded
with the reason, the resize rule when it is not the default, and a hash of all that (the
fingerprint). prepare_image_cache.py builds it; the trainer and the evaluation read rows
through a memory map, so loader workers copy 150 KB from the OS page cache instead of decoding
a JPEG with PIL for every image of every step.

A build is written into a hidden folder and renamed into place at the end: an interrupted build
never looks complete. A cache is used only while every file it is asked for still has the size,
mtime, ctime and inode it had when decoded.
"""
from __future__ import annotations

import hashlib
import io
import json
import mmap
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from common.pool import fork_map

from common.errors import InputError
from common.files import not_regular, read_regular_text
from common.places import check_replaceable
from common.workdir import default_mode, pid_alive, swap_folder, write_error

from data.images.read import SQUASH, ImageFiles, Resize, find_bad_images, try_read_image

CACHE_DIR = "image_cache"
ARRAY, INDEX = "images.npy", "index.json"
FORMAT = 2          # 2: ctime and inode in the stats, EXIF orientation applied
MODES = ("auto", "off", "require")
HEADER_LIMIT = 1 << 20   # bytes read for a .npy header (numpy writes a few hundred)
CHUNK = 64          # images per worker task: big enough to amortise the task, small for the bar
BUILD_HINT = "run prepare_image_cache.py with the same --dataset, --work-dir, --image-size and --arch"


class UnreadableImage(Exception):
    """Reading an image the cache recorded as missing or broken; str(e) is the recorded reason."""


def cache_folder(work_dir: str | Path, size: int, resize: Resize = SQUASH) -> Path:
    """<size> for the default rule (the folder of caches written before there were rules),
    <size>-<key> for another: images resized otherwise never share a folder."""
    name = str(size) if resize.is_default else f"{size}-{resize.key}"
    return Path(work_dir) / CACHE_DIR / name


def file_stats(paths: Sequence[str]) -> list[list[int] | None]:
    """[size in bytes, mtime, ctime (both in ns), inode] of each file, None for one that cannot be
    stat'ed. The ctime is what no user can set back: a file rewritten with the same size and its
    mtime restored (touch -r) still reads as changed."""
    out: list[list[int] | None] = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append([st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
        except OSError:
            out.append(None)
    return out


def fingerprint(paths: Sequence[str], stats: Sequence, size: int, resize: Resize = SQUASH) -> str:
    # The default rule adds nothing: the fingerprints of existing caches (and the feature
    # records that name them) stay valid.
    rule = [] if resize.is_default else [resize.record()]
    data = json.dumps([FORMAT, size, list(paths), list(stats), *rule], separators=(",", ":"))
    return hashlib.sha1(data.encode("utf-8")).hexdigest()


class CachedImages:
    """image id -> uint8 [3, s, s], a row of the cache's array; rows[id] is -1 for an image the
    cache does not hold.

    The array file is opened once, here, and every process reads that open file: a rebuild
    (prepare_image_cache.py or prepare_image_features.py swaps a new folder in) during a run
    leaves the run reading what it checked at its start. Forked loader workers inherit the
    descriptor and map it themselves (a map is never shared across a fork); a copy unpickled
    in another process re-opens the path and stops with one line when it is no longer the
    same file."""

    def __init__(self, array_path: str | Path, rows: np.ndarray, reasons: dict[int, str],
                 identity: tuple | None = None):
        self.array_path, self.rows, self.reasons = str(array_path), rows, reasons
        self._array: np.ndarray | None = None
        self._pid: int | None = None
        try:
            self._fd = os.open(self.array_path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            raise InputError(f"{self.array_path}: cannot be opened ({e.strerror}): "
                             f"{BUILD_HINT}") from None
        self.identity = file_identity(os.fstat(self._fd))
        if identity is not None and identity != self.identity:
            os.close(self._fd)
            raise InputError(f"{self.array_path}: replaced since this run checked it (rebuilt "
                             "meanwhile?): start the run again once the rebuild is done")

    def __getstate__(self) -> dict:
        return {"array_path": self.array_path, "rows": self.rows, "reasons": self.reasons,
                "identity": self.identity}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["array_path"], state["rows"], state["reasons"], state["identity"])

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def __len__(self) -> int:
        return len(self.rows)

    def unchanged(self) -> bool:
        """Whether the path still names the file this reader reads."""
        try:
            return file_identity(os.stat(self.array_path)) == self.identity
        except OSError:
            return False

    def __call__(self, image_id: int) -> torch.Tensor:
        row = int(self.rows[image_id])
        if row < 0:
            if image_id in self.reasons:
                raise UnreadableImage(self.reasons[image_id])
            raise ValueError(f"image {image_id} is not in the image cache {self.array_path}: "
                             f"{BUILD_HINT}")
        if self._pid != os.getpid():
            self._array = map_npy(self._fd, self.array_path)
            self._pid = os.getpid()
        return torch.from_numpy(np.array(self._array[row]))


def file_identity(st: os.stat_result) -> tuple:
    """What tells one file from its replacement: device, inode, size, mtime, ctime."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def map_npy(fd: int, name: str) -> np.ndarray:
    """A read-only memory map of the .npy file open as `fd` (read through the descriptor, not a
    path, so a file renamed over it meanwhile is not what it maps).

    Only positional reads (pread, mmap) touch the descriptor: forked loader workers share its
    file offset, and a seek in one would move the header another is reading."""
    size = os.fstat(fd).st_size
    head = io.BytesIO(os.pread(fd, min(size, HEADER_LIMIT), 0))
    try:
        version = np.lib.format.read_magic(head)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"format version {version}")
        shape, fortran, dtype = read_header(head)
    except ValueError as e:
        raise InputError(f"{name}: not a .npy array ({e}): {BUILD_HINT}") from None
    offset, nbytes = head.tell(), int(np.prod(shape)) * dtype.itemsize
    if offset + nbytes > size:
        raise InputError(f"{name}: cut short ({size} bytes, its header promises "
                         f"{offset + nbytes}): {BUILD_HINT}")
    if nbytes == 0:
        return np.zeros(shape, dtype=dtype)
    buffer = mmap.mmap(fd, offset + nbytes, access=mmap.ACCESS_READ)
    return np.ndarray(shape, dtype=dtype, buffer=buffer, offset=offset,
                      order="F" if fortran else "C")


@dataclass
class ImageCache:
    folder: Path
    size: int
    paths: list[str]
    stats: list
    bad: dict[str, str]
    fingerprint: str
    array_identity: tuple | None = None    # the array file the index was read with
    resize: Resize = SQUASH

    @cached_property
    def row_of(self) -> dict[str, int]:
        return {p: r for r, p in enumerate(self.paths)}

    def changed(self, paths: Sequence[str]) -> list[str]:
        """Those of `paths` the cache lacks or whose file changed (or vanished) since it was built."""
        rows = self.row_of
        wanted = sorted(set(paths))
        now = file_stats(wanted)
        return [p for p, st in zip(wanted, now) if p not in rows or self.stats[rows[p]] != st]

    def reader(self, paths: Sequence[str]) -> CachedImages:
        """A reader whose image id i is paths[i]."""
        rows = np.array([-1 if p in self.bad else self.row_of.get(p, -1) for p in paths], dtype=np.int64)
        reasons = {i: self.bad[p] for i, p in enumerate(paths) if p in self.bad}
        return CachedImages(self.folder / ARRAY, rows, reasons, self.array_identity)


def load_cache(work_dir: str | Path, size: int, resize: Resize = SQUASH
               ) -> tuple[ImageCache | None, str]:
    """(the cache of this image size and resize rule, "") or (None, why there is none usable)."""
    folder = cache_folder(work_dir, size, resize)
    if not (folder / INDEX).is_file():
        return None, f"no image cache in {folder}"
    odd = not_regular(folder / ARRAY)   # np.load would wait forever on a FIFO
    if odd:
        return None, f"the image cache in {folder} is unreadable ({ARRAY} is {odd})"
    try:
        index = json.loads(read_regular_text(folder / INDEX))
        array = np.load(folder / ARRAY, mmap_mode="r")
        identity = file_identity(os.stat(folder / ARRAY))
        # An index without a rule was written by the default one (always, before there were rules).
        ok = (index.get("format") == FORMAT and index.get("image_size") == size
              and Resize.from_record(index.get("resize")) == resize and array.shape == (len(index["paths"]), 3, size, size) and array.dtype == np.uint8)
    except Exception as e:  # noqa: BLE001 - a damaged cache is rebuilt, whatever broke in it
        return None, f"the image cache in {folder} is unreadable ({type(e).__name__})"
    if not ok:
        return None, (f"the image cache in {folder} was written by another version, image size "
                      "or resize rule")
    return ImageCache(folder, size, index["paths"], index["stats"], index["bad"],
                      index["fingerprint"], identity, resize), ""


def find_cache(work_dir: str | Path, paths: Sequence[str], size: int, resize: Resize = SQUASH
               ) -> tuple[ImageCache | None, str]:
    """The cache when it holds every one of `paths` unchanged, else (None, why not)."""
    cache, why = load_cache(work_dir, size, resize)
    if cache is None:
        return None, why
    changed = cache.changed(paths)
    if changed:
        return None, (f"the image cache in {cache.folder} is out of date: {len(changed)} images "
                      f"are new or changed since it was built (first: {changed[0]})")
    return cache, ""


def _decode_chunk(job: tuple[str, int, list[str], int, Resize]) -> tuple[int, list[str | None]]:
    array_path, start, paths, size, resize = job
    array = np.load(array_path, mmap_mode="r+")
    reasons = []
    for j, p in enumerate(paths):
        img, reason = try_read_image(p, size, resize)
        if img is not None:
            array[start + j] = img.numpy()
        reasons.append(reason)
    array.flush()
    del array
    return start, reasons


def _decode_all(array_path: Path, paths: list[str], size: int, workers: int,
                progress: bool, resize: Resize = SQUASH) -> list[str | None]:
    jobs = [(str(array_path), s, paths[s:s + CHUNK], size, resize)
            for s in range(0, len(paths), CHUNK)]
    reasons: list[str | None] = [None] * len(paths)
    bar = dict(total=len(paths), desc=f"caching images at {size}px", unit="img", disable=not progress)
    for start, chunk in fork_map(_decode_chunk, jobs, workers, serial_below=2, ordered=False,
                                 progress=bar, count=lambda result: len(result[1])):
        reasons[start:start + len(chunk)] = chunk
    return reasons


def _remove_leftovers(root: Path) -> None:
    """Folders of builds (and swaps) that died part way: their process is gone."""
    for d in root.glob(".*-pid*-*"):
        try:
            pid = int(d.name.split("-pid")[1].split("-")[0])
        except (IndexError, ValueError):
            continue
        if d.is_dir() and not pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)


def build_cache(work_dir: str | Path, paths: Sequence[str], size: int, workers: int = 1,
                progress: bool = True, resize: Resize = SQUASH) -> ImageCache:
    """Decode every distinct path into a new cache (replacing any older one) and return it.

    Images that cannot be decoded get a zero row and a reason in `bad`; they never fail the build.
    """
    unique = sorted(set(paths))
    if not unique:
        raise InputError(f"no images to cache in {work_dir}: the dataset has no items")
    if size < 1:
        raise ValueError(f"image size must be at least 1, got {size}")
    stats = file_stats(unique)   # before decoding: a file changed meanwhile reads as changed later
    final = cache_folder(work_dir, size, resize)
    check_replaceable(final, INDEX, "prepare_image_cache.py")
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root)
    need = len(unique) * 3 * size * size
    free = shutil.disk_usage(root).free
    if need > free:
        raise InputError(f"{root}: the image cache of {len(unique)} images at {size}px needs "
                           f"{need / 2**30:.1f} GiB but {free / 2**30:.1f} GiB are free: free "
                           "some space or pass a --work-dir on a larger disk")
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.building-pid{os.getpid()}-"))
    os.chmod(tmp, default_mode(folder=True))   # mkdtemp's 0700 ignores the umask
    try:
        array = np.lib.format.open_memmap(tmp / ARRAY, mode="w+", dtype=np.uint8,
                                          shape=(len(unique), 3, size, size))
        del array   # the workers write through maps of their own
        reasons = _decode_all(tmp / ARRAY, unique, size, workers, progress, resize)
        bad = {p: r for p, r in zip(unique, reasons) if r is not None}
        fp = fingerprint(unique, stats, size, resize)
        index = {"format": FORMAT, "image_size": size, "fingerprint": fp, "paths": unique,
                 "stats": stats, "bad": bad}
        if not resize.is_default:   # the default rule's index stays as it was before rules
            index["resize"] = resize.record()
        (tmp / INDEX).write_text(json.dumps(index), encoding="utf-8")
        for f in (tmp / ARRAY, tmp / INDEX):
            os.chmod(f, default_mode())
        old = root / f".{final.name}.old-pid{os.getpid()}-{fp[:8]}"
        swap_folder(tmp, final, old)
    except OSError as e:    # a full disk or a folder taken away: one line, the build removed
        raise write_error(final, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ImageCache(final, size, unique, stats, bad, fp, resize=resize)


def ensure_cache(work_dir: str | Path, paths: Sequence[str], size: int, workers: int = 1,
                 progress: bool = True, resize: Resize = SQUASH) -> tuple[ImageCache, str]:
    """The cache of exactly these images at this size and resize rule: reused when its
    fingerprint still matches the files, built (again) otherwise. Returns it and a line saying
    which happened."""
    unique = sorted(set(paths))
    cache, why = load_cache(work_dir, size, resize)
    if cache is not None:
        if cache.fingerprint == fingerprint(unique, file_stats(unique), size, resize):
            return cache, f"image cache {cache.folder} is up to date ({len(unique)} images): reused"
        why = f"the image cache in {cache.folder} does not match the dataset's images"
    rule = "" if resize.is_default else f", resized by {resize.describe()},"
    print(f"{why}: decoding {len(unique)} images at {size}px{rule} over {max(1, workers)} processes")
    cache = build_cache(work_dir, unique, size, workers, progress, resize)
    return cache, f"wrote image cache {cache.folder} ({len(unique)} images)"


def training_images(work_dir: str | Path, item_paths: Sequence[str], used: Sequence[str], size: int,
                    mode: str = "auto", workers: int = 1, resize: Resize = SQUASH
                    ) -> tuple[Callable[[int], torch.Tensor], dict[str, str], str]:
    """Where the trainer reads images: (image id -> uint8 reader, {path: reason} of the bad ones
    among `used`, a line saying which source it is).

    Image id i is item_paths[i]. "auto" reads the cache when it holds every used image unchanged
    and decodes the files otherwise; "require" stops instead; "off" ignores any cache. Read from
    the files, every used image is decoded once here first, so a bad one is known before training.
    """
    if mode not in MODES:
        raise ValueError(f"image cache mode {mode!r}: use one of {', '.join(MODES)}")
    why = "--image-cache off"
    if mode != "off":
        cache, why = find_cache(work_dir, used, size, resize)
        if cache is not None:
            bad = {p: cache.bad[p] for p in sorted(set(used)) if p in cache.bad}
            return (cache.reader(item_paths), bad,
                    f"images: read from the image cache {cache.folder}")
        if mode == "require":
            raise InputError(f"{why}: {BUILD_HINT} (or pass --image-cache auto)")
    bad = find_bad_images(used, size, workers, resize)
    hint = "" if mode == "off" else f"; {BUILD_HINT} to decode them only once"
    return ImageFiles(item_paths, size, resize), bad, f"images: decoded from the files ({why}{hint})"


def cached_reader(work_dir: str | Path, paths: Sequence[str], size: int, resize: Resize = SQUASH
                  ) -> tuple[CachedImages | None, str]:
    """For the evaluation: a reader whose image id i is paths[i], from the cache when it holds
    every one of `paths` unchanged, else (None, why not). Reading an image the cache recorded
    as bad raises UnreadableImage with the recorded reason."""
    cache, why = find_cache(work_dir, paths, size, resize)
    return (cache.reader(list(paths)), "") if cache is not None else (None, why)
