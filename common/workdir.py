"""The files the scripts exchange through the work folder, and safe ways to read and write them."""
from __future__ import annotations

import errno
import glob
import io
import os
import pickle
import secrets
import shutil
import tempfile
from pathlib import Path

from common.errors import InputError
from common.files import open_regular

DOC2VEC_MODEL = "doc2vec_model.gensim"
DOC2VEC_FEATURES = "doc2vec_features.pickle"
KNN = "document_feats_knn.pickle"

# Which script writes each file, for the error that says what to run first.
WRITER = {
    DOC2VEC_MODEL: "train_doc2vec.py",
    DOC2VEC_FEATURES: "extract_doc2vec_vectors.py",
    KNN: "knn_document_features.py",
}

_CAUSES = {
    errno.ENOSPC: ("no space left on the device", "free some space or write to another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write to another disk"),
    errno.EACCES: ("permission denied", "make it writable or write somewhere else"),
    errno.EPERM: ("operation not permitted", "make it writable or write somewhere else"),
    errno.EROFS: ("read-only file system", "write somewhere else"),
}


def write_error(path: str | Path, e: OSError, fix: str | None = None) -> InputError:
    """One line naming the file that could not be written, the cause and what to do."""
    cause, default_fix = _CAUSES.get(e.errno, (e.strerror or type(e).__name__, "check the folder"))
    return InputError(f"{path}: cannot write ({cause}): {fix or default_fix}")


def require(work_dir: str | Path, name: str) -> Path:
    path = Path(work_dir) / name
    if not path.exists():
        raise InputError(f"{path}: not found: run {WRITER.get(name, 'the earlier script')} with "
                           f"--work-dir {work_dir} first")
    return path


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask sets it, which
    could race with a thread creating a file)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(folder: bool = False) -> int:
    """The permissions a plain open() (or mkdir) would give under the current umask."""
    return (0o777 if folder else 0o666) & ~_umask()


def check_writable(path: str | Path, folder: bool = False, fix: str | None = None) -> None:
    """Stop now, not after the work, when `path` (a file to be written, or a folder with
    `folder`) cannot be: creates the folder and a file in it, then removes the file. `fix`
    replaces the usual advice in the message (e.g. the flag that writes elsewhere)."""
    path = Path(path)
    if folder:
        where = path
        if path.exists() and not path.is_dir():
            raise InputError(f"{path}: is a file, not a folder: pass a folder")
    else:
        where = path.parent
        if path.is_dir():
            raise InputError(f"{path}: is a folder: pass a file name")
    try:
        where.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=where, prefix=".write-check.", suffix=".tmp")
        os.close(fd)
        os.remove(probe)
    except FileExistsError:   # a file where a folder of the path should be
        raise InputError(f"{where}: a file stands where this folder should be: pass another "
                         "path") from None
    except NotADirectoryError:
        raise InputError(f"{where}: part of this path is a file, not a folder: pass another "
                         "path") from None
    except OSError as e:
        raise write_error(path if not folder else where, e, fix) from None


def pid_alive(pid: int) -> bool:
    """Whether a process of that id runs (one of another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: str | Path) -> list[str]:
    """Remove the temporary files of `path` that a process killed mid-write (kill -9, a power
    cut) left: those whose writer's PID is gone. Returns their names."""
    path = Path(path)
    gone = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.pid*-*.tmp"):
        pid = tmp.name[len(path.name) + 5:].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            try:
                tmp.unlink()
                gone.append(tmp.name)
            except OSError:
                pass
    return gone


def temp_name(path: Path) -> str:
    """A temporary file's name beside `path`, of the form remove_stale_temps finds."""
    return str(path.parent / f".{path.name}.pid{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _discard(tmp: str | None) -> None:
    """Remove a temporary file left by a failure or a stop, if there is one."""
    if tmp is not None and os.path.lexists(tmp):
        try:
            os.remove(tmp)
        except OSError:
            pass


def atomic_write(path: str | Path, write) -> None:
    """Call write(tmp_path), then move it over `path`: a crash never leaves a half-written file.

    The file gets the permissions a plain open() would (mkstemp's are 0600 whatever the umask).
    A full disk or a folder that cannot be written is one line naming `path`; the temporary file
    is removed whatever happens.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        # Named before it exists: a signal between creating it and naming it would leave it.
        tmp = temp_name(path)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        write(tmp)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except OSError as e:
        raise write_error(path, e) from None
    finally:
        _discard(tmp)


def link_file(source: str | Path, path: str | Path) -> bool:
    """Make `path` a second name of `source` (a hard link), replacing `path` atomically; False,
    with nothing changed, where the file system has no hard links (the caller writes a copy).
    Safe for files only ever replaced, never written in place: replacing one name later leaves
    the other with the old contents."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        os.link(source, tmp)
        os.replace(tmp, path)
        return True
    except OSError:
        return False
    finally:
        _discard(tmp)   # a failed replace, or a stop between the two calls


def save_pickle(obj: object, path: str | Path) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    atomic_write(path, write)


# What a pickle read here may build: plain containers need no class at all; these are the
# builtin and numpy types that the Politics files and this project's pickles hold. Anything else
# (a function, os.system, a class with a __reduce__) is refused before it is called.
_ALLOWED = {
    *(("builtins", t) for t in ("set", "frozenset", "complex", "bytearray", "bytes", "str", "int",
                                "float", "bool", "list", "dict", "tuple", "slice", "range")),
    ("_codecs", "encode"),          # bytes in protocol 2 pickles (numpy array data among them)
    ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "time"),
    ("datetime", "timedelta"), ("datetime", "timezone"),    # dates a scraped record may hold
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


def allowed_class(module: str, name: str, find):
    """The class a data pickle may name (the allowlist, found with the unpickler's own `find`,
    or a numpy scalar type); anything else is refused. Shared by the work folder's unpicklers."""
    module = {"__builtin__": "builtins"}.get(module, module)   # protocols 0 and 1
    if (module, name) in _ALLOWED:
        return find(module, name)
    # numpy scalar types (numpy.float32, numpy.int64, ...) are classes named in numpy itself.
    if module == "numpy" and name.isidentifier():
        import numpy
        obj = getattr(numpy, name, None)
        if isinstance(obj, type) and issubclass(obj, numpy.generic):
            return obj
    raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a data file has no "
                                 "reason to hold (refused: loading it could run code)")


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        return allowed_class(module, name, super().find_class)


def safe_unpickle(data: bytes | io.BufferedIOBase) -> object:
    """pickle.load that builds only plain containers, strings, numbers and numpy arrays."""
    f = io.BytesIO(data) if isinstance(data, bytes) else data
    return _Unpickler(f).load()


def read_pickle(path: str | Path, fix: str) -> object:
    """The unpickled file (plain data only), or a one-line InputError that ends with `fix`."""
    try:
        with open_regular(path) as f:   # a FIFO would block a plain open()
            return safe_unpickle(f)
    except Exception as e:  # a damaged pickle can raise almost anything
        msg = " ".join(str(e).split())[:200]
        raise InputError(f"{path}: unreadable pickle ({type(e).__name__}: {msg}): {fix}") from None


def load_pickle(work_dir: str | Path, name: str) -> dict:
    path = require(work_dir, name)
    obj = read_pickle(path, f"run {WRITER.get(name, 'the earlier script')} again")
    if not isinstance(obj, dict):
        raise InputError(f"{path}: not a file {WRITER.get(name, 'this project')} wrote: run it again")
    return obj


def check_vectors(vectors: object, path: str | Path) -> "np.ndarray":
    """The Doc2Vec vectors read from `path` as a float32 [N, d] array, or one line saying why
    they are not: a NaN or infinite vector would make every distance to it NaN, and the kNN
    would rank it anywhere without a word."""
    import numpy as np   # here: the text scripts' other files need no numpy
    fix = "run extract_doc2vec_vectors.py again (and train_doc2vec.py if the model diverged)"
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"{path}: 'vectors' is not an array of numbers: {fix}") from None
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise InputError(f"{path}: 'vectors' has shape {arr.shape}, not [documents, size]: {fix}")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if len(bad):
        raise InputError(f"{path}: {len(bad)} of its {len(arr)} vectors hold NaN or infinite "
                         f"values (first: row {bad[0]}): {fix}")
    return arr


def swap_folder(tmp: Path, final: Path, old: Path) -> None:
    """Put a finished build (`tmp`) in place of `final`. The previous folder is renamed aside
    first and removed only afterwards, so a reader finds the old folder or the new one whole."""
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
