"""The items a script works on, read from its flags, and the splits every script needs."""
from __future__ import annotations

import argparse

from common.errors import InputError
import config
from data.datasets.items import Item
from data.datasets.readers import load_dataset
from data.datasets.tabular import CsvKeys


def load_items(args: argparse.Namespace) -> list[Item]:
    keys = CsvKeys(getattr(args, "csv_image_key", config.CSV_IMAGE_KEY),
                   getattr(args, "csv_caption_key", config.CSV_CAPTION_KEY),
                   getattr(args, "csv_separator", config.CSV_SEPARATOR))
    items = load_dataset(args.dataset, args.dataset_format, args.image_root, args.val_size,
                         args.seed, args.politics_min_chars, keys)
    check_splits(items, args.dataset)
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
