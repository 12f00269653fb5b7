"""Embeddings on disk (numpy) and as a TensorBoard projector log with thumbnails and texts."""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch

from common.errors import InputError
from common.workdir import atomic_write, default_mode, write_error
from data.images.read import read_image
from evaluation.split import EvalSplit

SPRITE_LIMIT = 8192   # TensorBoard's projector refuses sprite sheets wider than this


def save_embeddings(folder: str | Path, split: EvalSplit, images: torch.Tensor,
                    texts: torch.Tensor) -> Path:
    """images.npy [Ni, D], texts.npy [Nt, D], text_image.npy [Nt] and ids.json (image ids and
    paths, text ids) in `folder`; rows are in the order of ids.json."""
    folder = Path(folder)
    arrays = {"images.npy": images.numpy().astype(np.float32),
              "texts.npy": texts.numpy().astype(np.float32),
              "text_image.npy": split.text_image.astype(np.int64)}
    for name, array in arrays.items():
        atomic_write(folder / name, partial(_save_npy, array=array))
    ids = {"split": split.name, "images": split.image_ids, "image_paths": split.image_paths,
           "texts": split.text_ids}
    text = json.dumps(ids, indent=1) + "\n"
    atomic_write(folder / "ids.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return folder


def _save_npy(tmp: str, array: np.ndarray) -> None:
    with open(tmp, "wb") as f:   # a file object: np.save would add ".npy" to the temporary name
        np.save(f, array)


def _cell(text: str | None, limit: int | None = 200) -> str:
    """One TSV cell: tabs and newlines (and the other line breaks str.split knows) would split
    the projector's metadata rows; a lone surrogate could not be written as UTF-8."""
    text = " ".join(str(text if text is not None else "").split())
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."


def write_projector(log_dir: str | Path, split: EvalSplit, images: torch.Tensor,
                    texts: torch.Tensor, max_images: int = 2000, thumb: int = 32) -> Path:
    """A projector log of the first `max_images` images (with thumbnails) and of their texts.

    Two embeddings: "images" (label: the image's first text) and "texts" (label: the text);
    both carry the item label when the dataset has one. Unreadable images get a grey thumbnail.
    """
    from torch.utils.tensorboard import SummaryWriter

    if max_images < 1 or thumb < 1:
        raise ValueError(f"projector image cap ({max_images}) and thumbnail size ({thumb}) must "
                         "be positive")
    n = min(max_images, split.n_images)
    keep = np.nonzero(split.text_image < n)[0]
    if math.ceil(math.sqrt(len(keep))) * thumb > SPRITE_LIMIT:
        raise ValueError(f"{len(keep)} thumbnails of {thumb} px make a sprite wider than {SPRITE_LIMIT} "
                         "px, which TensorBoard cannot show: lower --projector-max or "
                         "--projector-thumb")
    thumbs = torch.empty(n, 3, thumb, thumb)
    for i in range(n):
        try:
            thumbs[i] = read_image(split.image_paths[i], thumb).float() / 255
        except Exception:  # noqa: BLE001 - an unreadable image still gets a row
            thumbs[i] = 0.5
    first = split.first_texts()[:n]
    log_dir = Path(log_dir)
    ours = (log_dir / "projector_config.pbtxt").is_file() or \
        (log_dir.is_dir() and not any(log_dir.iterdir()))
    if log_dir.exists() and not ours:
        raise InputError(f"{log_dir}: exists and is not a projector log this script wrote: "
                         "remove it, or pass another --save-embeddings folder")
    # Written into a hidden folder and moved into place when whole: a full disk leaves the
    # previous log (or none), never a cut tensors.tsv without its projector_config.pbtxt.
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(dir=log_dir.parent, prefix=f".{log_dir.name}.", suffix=".tmp"))
        os.chmod(tmp, default_mode(folder=True))   # mkdtemp's 0700, whatever the umask
        writer = SummaryWriter(str(tmp))
        try:
            writer.add_embedding(images[:n], tag="images", label_img=thumbs,
                                 metadata=[[_cell(split.image_ids[i], None),
                                            _cell(split.image_labels[i]),
                                            _cell(split.texts[first[i]])] for i in range(n)],
                                 metadata_header=["id", "label", "text"])
            writer.add_embedding(texts[keep], tag="texts", label_img=thumbs[split.text_image[keep]],
                                 metadata=[[_cell(split.text_ids[t], None),
                                            _cell(split.text_labels[t]),
                                            _cell(split.texts[t])] for t in keep],
                                 metadata_header=["id", "label", "text"])
        finally:
            writer.close()
        if log_dir.exists():
            shutil.rmtree(log_dir)   # a log this function wrote before; a rerun would add to it
        os.replace(tmp, log_dir)
        tmp = None
    except OSError as e:
        # tensorboard's file layer often leaves the file name out: name the one being written.
        where = Path(e.filename) if e.filename else log_dir
        if tmp is not None and where.is_relative_to(tmp):
            where = log_dir / where.relative_to(tmp)
        raise write_error(where, e) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return log_dir
