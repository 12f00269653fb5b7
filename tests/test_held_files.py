"""Files a run reads during its length (the image cache, the frozen features, the kNN tables) are
read as they were when the run checked them: a rebuild that swaps a new file in meanwhile does
not change what the run (its loader workers included) reads, and a reader that has to open the
path again stops with one line when it is no longer the same file."""
import argparse
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from conftest import input_error
from data.images.cache import build_cache
from models.features import ARRAY, FeatureRequest, build_features, features_folder, load_backbone, training_features
from data.neighbors.knn_file import load_knn
from common.workdir import KNN, save_pickle, swap_folder

SIZE = 16
N = 6


def write_images(folder: Path) -> list[str]:
    from PIL import Image
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(N):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def rebuild_npy(path: Path) -> None:
    """What the prepare scripts do: a new folder with a new array, swapped in for the old one."""
    old = np.load(path)
    tmp = path.parent.parent / f".{path.parent.name}.building"
    shutil.copytree(path.parent, tmp)
    (tmp / path.name).unlink()
    np.save(tmp / path.name, (old + 1).astype(old.dtype))
    swap_folder(tmp, path.parent, path.parent.parent / f".{path.parent.name}.old")


def feature_args(work: Path, seed: int = 0) -> FeatureRequest:
    return FeatureRequest.from_args(argparse.Namespace(
        work_dir=str(work), arch="resnet18", image_size=SIZE, seed=seed, no_pretrained=True,
        image_weights=None, dataset="d.jsonl"))


def image_cache_case(tmp: Path):
    paths = write_images(tmp / "img")
    cache = build_cache(tmp / "work", paths, SIZE, progress=False)
    return cache.reader(paths), cache.folder / "images.npy", rebuild_npy


def features_case(tmp: Path):
    paths = write_images(tmp / "img")
    cache = build_cache(tmp / "work", paths, SIZE, progress=False)
    args = feature_args(tmp / "work")
    build_features(args, cache, "hash", torch.device("cpu"), N, progress=False)
    read = training_features(args, paths, paths)[0]

    def rebuild(path: Path) -> None:   # prepare_image_features.py --seed 7
        build_features(feature_args(tmp / "work", seed=7), cache, "hash", torch.device("cpu"), N,
                       progress=False)
    return read, features_folder(tmp / "work", "resnet18", SIZE) / ARRAY, rebuild


class KnnRows:
    def __init__(self, rows):
        self.rows = rows

    def __call__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.rows[i:i + 1]))


def knn_case(tmp: Path):
    n, k = 4096, 64                 # a table over data.neighbors.knn_file.LARGE: left in the file, read by rows
    table = np.arange(n * k, dtype=np.int64).reshape(n, k)
    path = tmp / KNN
    save_pickle({"ids": list(range(n)), "neighbors": table, "distances": table * 0.5}, path)
    rows = load_knn(tmp)["neighbors"]
    assert type(rows).__name__ == "Rows"

    def rebuild(path: Path) -> None:   # knn_document_features.py again: a new file over the old
        save_pickle({"ids": list(range(n)), "neighbors": table + 1, "distances": table}, path)
    return KnnRows(rows), path, rebuild


CASES = {"image cache": image_cache_case, "frozen features": features_case,
         "kNN table": knn_case}


class Rows(Dataset):
    def __init__(self, read):
        self.read = read

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.read(i).float()


def epoch(read) -> torch.Tensor:
    """The rows as a --workers 2 epoch reads them (workers forked anew each epoch)."""
    loader = DataLoader(Rows(read), batch_size=1, num_workers=2,
                        multiprocessing_context="fork")
    return torch.cat(list(loader))


@pytest.mark.parametrize("case", list(CASES))
def test_a_rebuild_during_a_run_does_not_change_what_it_reads(case, tmp_path):
    read, path, rebuild = CASES[case](tmp_path)
    first = epoch(read)
    rebuild(path)
    assert not np.array_equal(np.asarray(np.load(path, mmap_mode="r")[:1]) if path.suffix == ".npy"
                              else load_knn(tmp_path)["neighbors"][:1], first[:1].numpy())
    assert torch.equal(epoch(read), first)            # the workers of the next epoch
    assert torch.equal(torch.stack([read(i).float() for i in range(4)]), first)   # this process


@pytest.mark.parametrize("case", ["image cache", "frozen features"])
def test_a_reader_opened_again_after_a_rebuild_stops_with_one_line(case, tmp_path):
    read, path, rebuild = CASES[case](tmp_path)
    copy = pickle.dumps(read)              # as a spawned process or another rank gets it
    rebuild(path)
    msg = input_error(pickle.loads, copy)
    assert str(path) in msg and "replaced since this run checked it" in msg


def test_the_backbone_of_rebuilt_features_is_refused(tmp_path):
    read, path, rebuild = features_case(tmp_path)
    args = feature_args(tmp_path / "work")
    assert load_backbone(args, read)
    rebuild(path)
    msg = input_error(load_backbone, args, read)
    assert "rebuilt while this run read it" in msg and str(path.parent) in msg
    assert os.path.exists(path)


def test_mapping_the_held_array_never_moves_the_offset_forked_workers_share(tmp_path):
    """Loader workers inherit one open file, so one file offset: a reader that seeks to map the
    array moves the header another worker is reading (seen as 'mmap length is greater than file
    size' in a worker). Mapping reads by position only, wherever the offset was left."""
    from data.images.cache import map_npy
    array = np.arange(2 * 3 * 4, dtype=np.float16).reshape(2, 3, 4)
    np.save(tmp_path / "a.npy", array)
    fd = os.open(tmp_path / "a.npy", os.O_RDONLY)
    try:
        for where in (0, 7, os.fstat(fd).st_size):   # as another worker may have left it
            os.lseek(fd, where, os.SEEK_SET)
            mapped = map_npy(fd, "a.npy")
            assert os.lseek(fd, 0, os.SEEK_CUR) == where
            assert np.array_equal(mapped, array) and not mapped.flags.writeable
    finally:
        os.close(fd)


def test_a_held_array_cut_short_is_one_line(tmp_path):
    from data.images.cache import map_npy
    np.save(tmp_path / "a.npy", np.zeros((4, 8), dtype=np.uint8))
    os.truncate(tmp_path / "a.npy", os.path.getsize(tmp_path / "a.npy") - 5)
    fd = os.open(tmp_path / "a.npy", os.O_RDONLY)
    try:
        assert "cut short" in input_error(map_npy, fd, "a.npy")
    finally:
        os.close(fd)
