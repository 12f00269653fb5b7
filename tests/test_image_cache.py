"""The image cache: its rows, reuse and rebuild, bad images, atomic builds, and the trainer on it."""
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from common.errors import InputError
import data.images.cache as image_cache
from demo.synthetic import generate_synthetic
from conftest import RUN, cli, one_line_error, quick_text_side
from pipeline import TINY_TRAIN
from models.checkpoint import load_checkpoint
from data.images.cache import (UnreadableImage, build_cache, cache_folder, ensure_cache, find_cache,
                               load_cache, training_images)
from data.images.read import find_bad_images, read_image

SIZE = 24


def write_images(folder: Path, n: int = 12) -> list[str]:
    """n JPEG and PNG files of several shapes, one broken file and one missing path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        h, w = 20 + 7 * (i % 3), 30 + 11 * (i % 4)
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        path = folder / f"{i:02d}.{'jpg' if i % 2 else 'png'}"
        img.save(path)
        paths.append(str(path))
    (folder / "broken.jpg").write_bytes(b"not an image")
    return paths + [str(folder / "broken.jpg"), str(folder / "missing.jpg")]


def touch_later(path: str) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def test_every_row_equals_read_image_and_bad_images_are_recorded(tmp_path):
    paths = write_images(tmp_path / "img")
    cache = build_cache(tmp_path / "work", paths[::-1], SIZE, workers=2, progress=False)
    assert cache.paths == sorted(paths)
    assert cache.bad == find_bad_images(paths, SIZE)    # the trainer's check, same reasons
    assert set(cache.bad) == {paths[-2], paths[-1]}
    assert "FileNotFoundError" in cache.bad[paths[-1]]
    read = cache.reader(paths)
    for i, p in enumerate(paths[:-2]):
        assert torch.equal(read(i), read_image(p, SIZE)), p
    with pytest.raises(UnreadableImage) as e:
        read(len(paths) - 2)
    assert str(e.value) == cache.bad[paths[-2]]
    array = np.load(cache_folder(tmp_path / "work", SIZE) / "images.npy", mmap_mode="r")
    assert array.shape == (len(paths), 3, SIZE, SIZE) and array.dtype == np.uint8


def test_reader_is_picklable_and_reads_in_loader_workers(tmp_path):
    paths = write_images(tmp_path / "img", n=8)[:8]
    read = build_cache(tmp_path / "work", paths, SIZE, progress=False).reader(paths)
    read(0)    # maps the file in this process: the workers must open their own
    clone = pickle.loads(pickle.dumps(read))
    assert clone._array is None and torch.equal(clone(3), read(3))
    loader = DataLoader(range(8), batch_size=4, num_workers=2, collate_fn=lambda ids: torch.stack([read(i) for i in ids]))
    got = torch.cat(list(loader))
    assert torch.equal(got, torch.stack([read_image(p, SIZE) for p in paths]))


def test_reused_while_unchanged_rebuilt_when_the_dataset_or_size_changes(tmp_path):
    paths = write_images(tmp_path / "img", n=6)
    work = tmp_path / "work"
    _, what = ensure_cache(work, paths, SIZE, progress=False)
    assert what.startswith("wrote")
    first, what = ensure_cache(work, paths, SIZE, progress=False)
    assert "up to date" in what and "reused" in what

    touch_later(paths[0])                     # same bytes, newer mtime: decoded again
    cache, why = find_cache(work, paths, SIZE)
    assert cache is None and "out of date" in why and paths[0] in why
    second, what = ensure_cache(work, paths, SIZE, progress=False)
    assert what.startswith("wrote") and second.fingerprint != first.fingerprint

    Image.new("RGB", (9, 9), (200, 10, 10)).save(tmp_path / "img" / "new.png")
    more = paths + [str(tmp_path / "img" / "new.png")]
    assert find_cache(work, more, SIZE)[0] is None
    third, what = ensure_cache(work, more, SIZE, progress=False)
    assert what.startswith("wrote") and len(third.paths) == len(more)
    assert find_cache(work, paths, SIZE)[0] is not None     # a cache may hold more than asked

    other, what = ensure_cache(work, more, SIZE + 8, progress=False)
    assert what.startswith("wrote") and other.folder == cache_folder(work, SIZE + 8)
    assert load_cache(work, SIZE)[0].fingerprint == third.fingerprint   # each size its own
    assert sorted(p.name for p in (work / "image_cache").iterdir()) == [str(SIZE), str(SIZE + 8)]


def test_an_interrupted_build_is_never_taken_as_complete(tmp_path, monkeypatch):
    paths = write_images(tmp_path / "img", n=6)[:6]
    work = tmp_path / "work"
    real = image_cache._decode_chunk

    def dies(job):
        raise KeyboardInterrupt

    monkeypatch.setattr(image_cache, "CHUNK", 2)
    monkeypatch.setattr(image_cache, "_decode_chunk", dies)
    with pytest.raises(KeyboardInterrupt):
        build_cache(work, paths, SIZE, progress=False)
    assert load_cache(work, SIZE)[0] is None and "no image cache" in load_cache(work, SIZE)[1]
    assert list((work / "image_cache").iterdir()) == []      # nothing half-written left behind

    monkeypatch.setattr(image_cache, "_decode_chunk", real)
    good = build_cache(work, paths, SIZE, progress=False)
    touch_later(paths[1])
    monkeypatch.setattr(image_cache, "_decode_chunk", dies)
    with pytest.raises(KeyboardInterrupt):
        ensure_cache(work, paths, SIZE, progress=False)
    kept, _ = load_cache(work, SIZE)           # the previous cache stays whole, and stale
    assert kept.fingerprint == good.fingerprint and find_cache(work, paths, SIZE)[0] is None

    # A build killed outright leaves its hidden folder: never read, removed by the next build.
    dead = work / "image_cache" / f".{SIZE}.building-pid99999999-x"
    shutil.copytree(good.folder, dead)
    monkeypatch.setattr(image_cache, "_decode_chunk", real)
    build_cache(work, paths, SIZE, progress=False)
    assert not dead.exists()


def test_training_images_modes(tmp_path):
    paths = write_images(tmp_path / "img", n=4)
    work, used = tmp_path / "work", paths[:4] + paths[-1:]
    read, bad, where = training_images(work, paths, used, SIZE, "auto")
    assert "decoded from the files" in where and "prepare_image_cache.py" in where
    assert set(bad) == {paths[-1]}
    with pytest.raises(InputError, match="no image cache.*prepare_image_cache.py"):
        training_images(work, paths, used, SIZE, "require")
    build_cache(work, paths, SIZE, progress=False)
    read, bad, where = training_images(work, paths, used, SIZE, "require")
    assert "read from the image cache" in where and set(bad) == {paths[-1]}
    assert torch.equal(read(2), read_image(paths[2], SIZE))
    _, _, where = training_images(work, paths, used, SIZE, "off")
    assert where == "images: decoded from the files (--image-cache off)"


def test_script_reports_bad_images_and_reuses_its_cache(tmp_path):
    paths = write_images(tmp_path / "img", n=10)
    manifest = tmp_path / "data.jsonl"
    split = lambda i: "test" if i == 0 else "val" if i == 1 else "train"   # noqa: E731
    manifest.write_text("".join(f'{{"id": "{i}", "image": "{p}", "texts": ["a text"], '
                                f'"split": "{split(i)}"}}\n' for i, p in enumerate(paths)))
    args = ["--dataset", manifest, "--work-dir", tmp_path / "work", "--image-size", SIZE,
            "--workers", "2"]
    result = cli("prepare_image_cache.py", *args, "--max-bad-images", "0.5")
    assert "wrote image cache" in result.out
    assert "left out 2 of 12 dataset images" in result.out and paths[-1] in result.out
    assert "reused" in cli("prepare_image_cache.py", *args, "--max-bad-images", "0.5").out
    one_line_error(cli("prepare_image_cache.py", *args, "--max-bad-images", "0.1", check=False),
                   "--max-bad-images")


def test_trainer_reads_the_cache_and_learns_the_same_weights(tmp_path):
    manifest = generate_synthetic(tmp_path / "data", n_items=48, image_size=32, seed=2)
    work = tmp_path / "work"
    common = quick_text_side(manifest, work)
    train = ["1", "0.3", "0.2", "--dataset", manifest, *TINY_TRAIN, "--epochs", "1"]
    one_line_error(cli("train_cross_modal_retrieval_model.py", *train, "--work-dir", work,
                       "--image-cache", "require", check=False), "prepare_image_cache.py")

    cli("prepare_image_cache.py", *common, "--image-size", "32")
    files = shutil.copytree(work, tmp_path / "files")
    out = cli("train_cross_modal_retrieval_model.py", *train, "--work-dir", work).out
    assert "images: read from the image cache" in out
    out = cli("train_cross_modal_retrieval_model.py", *train, "--work-dir", files,
              "--image-cache", "off").out
    assert "images: decoded from the files" in out
    cached = load_checkpoint(work / "models" / RUN / "last.pt")
    decoded = load_checkpoint(files / "models" / RUN / "last.pt")
    assert cached["step"] == decoded["step"] > 0 and cached["val_loss"] == decoded["val_loss"]
    for name, tensor in cached["model"].items():
        assert torch.equal(tensor, decoded["model"][name]), name
