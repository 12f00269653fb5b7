"""The items a script works on, read from its flags, and the splits every script needs."""
from __future__ import annotations

import argparse

from common.errors import InputError
from data.datasets.items import Item
from data.datasets.readers import load_dataset
from data.datasets.settings import DataSettings
from data.datasets.tabular import CsvKeys


def load_items(args: argparse.Namespace | DataSettings) -> list[Item]:
    """The items of the dataset the flags (or their DataSettings) name, splits checked."""
    s = args if isinstance(args, DataSettings) else DataSettings.from_args(args)
    keys = CsvKeys(s.csv_image_key, s.csv_caption_key, s.csv_separator)
    items = load_dataset(s.dataset, s.dataset_format, s.image_root, s.val_size, s.seed,
                         s.politics_min_chars, keys)
    check_splits(items, s.dataset)
    return items


def check_splits(items: list[Item], dataset: str) -> None:
    """Every script stops at once on a dataset that training or evaluation could not use: without
    test items the validation slice is empty too (it takes the test split's size), and training
    would fail only after Doc2Vec, the neighbourhoods and every image were done."""
    if not any(it.split == "test" for it in items):
        raise InputError(f"{dataset}: no test items (an item without \"split\" is train): mark "
                         "some items \"split\": \"test\" (and \"val\", or let --val-size take "
                         "a seeded slice of train)")
    if not any(it.split == "val" for it in items):
        raise InputError(f"{dataset}: no validation items (--val-size 0 and none marked "
                         "\"val\"): mark some items \"split\": \"val\" or pass --val-size N")
