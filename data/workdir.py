"""The files the scripts exchange through the work folder, and safe ways to read and write them."""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

from .items import InputError

DOC2VEC_MODEL = "doc2vec_model.gensim"
DOC2VEC_FEATURES = "doc2vec_features.pickle"
KNN = "document_feats_knn.pickle"

# Which script writes each file, for the error that says what to run first.
WRITER = {
    DOC2VEC_MODEL: "train_doc2vec.py",
    DOC2VEC_FEATURES: "extract_doc2vec_vectors.py",
    KNN: "knn_document_features.py",
}


def require(work_dir: str | Path, name: str) -> Path:
    path = Path(work_dir) / name
    if not path.exists():
        raise InputError(f"{path}: not found: run {WRITER.get(name, 'the earlier script')} with "
                           f"--work-dir {work_dir} first")
    return path


def atomic_write(path: str | Path, write) -> None:
    """Call write(tmp_path), then move it over `path`: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_pickle(obj: object, path: str | Path) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    atomic_write(path, write)


def read_pickle(path: str | Path, fix: str) -> object:
    """The unpickled file, or a one-line InputError that ends with `fix`."""
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception as e:  # a damaged pickle can raise almost anything
        msg = " ".join(str(e).split())[:200]
        raise InputError(f"{path}: unreadable pickle ({type(e).__name__}: {msg}): {fix}") from None


def load_pickle(work_dir: str | Path, name: str) -> dict:
    path = require(work_dir, name)
    obj = read_pickle(path, f"run {WRITER.get(name, 'the earlier script')} again")
    if not isinstance(obj, dict):
        raise InputError(f"{path}: not a file {WRITER.get(name, 'this project')} wrote: run it again")
    return obj
