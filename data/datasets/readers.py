"""Dataset readers: a JSONL manifest (the project's format), open_clip-style CSV (tabular.py),
the authors' Politics pickles, the Karpathy split JSON (COCO, Flickr30K) and the GoodNews release
(goodnews.py). Each returns a list of `Item`s."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from common.errors import InputError, quoted, shown
from common.workdir import atomic_write, read_pickle
from data.datasets.fields import clean_texts, read_text, report_dropped, resolve
from data.datasets.goodnews import is_goodnews, read_goodnews
from data.datasets.items import (SPLITS, Item, assign_validation, check_split, check_strings,
                                 check_unique_ids)
from data.datasets.tabular import CsvKeys, read_csv

FORMATS = ("jsonl", "csv", "karpathy", "politics", "goodnews")
POLITICS_FILES = ("complete_db.pickle", "db.pickle")   # in order of preference


def detect_format(path: Path) -> str:
    if is_goodnews(path):   # before the folder and .json rules: its files are JSON in a folder
        return "goodnews"
    if path.is_dir() or path.suffix == ".pickle":
        return "politics"
    if path.suffix == ".jsonl":
        return "jsonl"
    if path.suffix in (".csv", ".tsv"):
        return "csv"
    if path.suffix == ".json":
        return "karpathy"
    raise InputError(f"{path}: cannot tell the dataset format from the name: pass "
                       f"--dataset-format {'|'.join(FORMATS)}")


def _clean_pairs(texts: list, doc2vec: list[str], where: str, dropped: list[str],
                 dropped_doc2vec: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(texts, their doc2vec texts) of the pairs where both are non-empty; the others noted."""
    kept, kept_doc2vec = [], []
    for t, d in zip(texts, doc2vec):
        if not isinstance(t, str):
            raise InputError(f"{where}: a text is {type(t).__name__}, not a string: fix the item")
        if not t.strip():
            dropped.append(where)
        elif not d.strip():
            dropped_doc2vec.append(where)
        else:
            kept.append(t)
            kept_doc2vec.append(d)
    return tuple(kept), tuple(kept_doc2vec)


def _doc2vec_texts(rec: dict, n_texts: int, where: str) -> list | None:
    """The optional "doc2vec_text": a string for every text of the item, or a list with one
    string per text; None when absent."""
    if "doc2vec_text" not in rec:
        return None
    value = rec["doc2vec_text"]
    if isinstance(value, str):
        return [value] * n_texts
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f'{where}: "doc2vec_text" must be a string or a list of strings: fix the item')
    if len(value) != n_texts:
        raise InputError(f'{where}: "doc2vec_text" has {len(value)} entries for {n_texts} texts: give '
                           "one per text, or one string for all")
    return value


def _images(rec: dict, where: str) -> list[str]:
    """The item's image paths: "image" (one) or "images" (an article's several), never both."""
    if "images" in rec:
        if "image" in rec:
            raise InputError(f'{where}: both "image" and "images": give one of them')
        images = rec["images"]
        if not isinstance(images, list) or not images:
            raise InputError(f'{where}: "images" must be a non-empty list of paths: fix the item')
        for image in images:
            if not isinstance(image, str) or not image:
                raise InputError(f'{where}: "images" holds {image!r}, not a path: every entry must '
                                 "be a non-empty string")
        twice = next((i for k, i in enumerate(images) if i in images[:k]), None)
        if twice is not None:
            raise InputError(f'{where}: "images" lists {twice!r} twice: list each picture once')
        return images
    if not isinstance(rec.get("image"), str) or not rec["image"]:
        raise InputError(f'{where}: no "image" path (or "images" list): add one')
    return [rec["image"]]


def read_jsonl(path: Path, image_root: Path | None = None) -> list[Item]:
    root = image_root or path.parent
    items, empty, empty_d2v = [], [], []
    first: tuple[bool, int] | None = None   # whether the first item has a doc2vec_text, its line
    # Split on "\n" only: JSON strings may hold U+2028 and the like, which splitlines() breaks on.
    for n, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not valid JSON ({e.msg}): fix or remove the line") from None
        except RecursionError:   # [[[[...]]]] nested deeper than Python's stack
            raise InputError(f"{where}: JSON nested too deeply to read: fix or remove the line") from None
        if not isinstance(rec, dict):
            raise InputError(f"{where}: expected a JSON object per line: fix or remove the line")
        images = _images(rec, where)
        if "texts" in rec:
            texts = rec["texts"] if isinstance(rec["texts"], list) else [rec["texts"]]
        elif "text" in rec:
            texts = [rec["text"]]
        else:
            raise InputError(f'{where}: no "texts" or "text": add the item\'s text')
        item_id = str(rec["id"]) if rec.get("id") is not None else str(n)
        what = f"{where} (id {item_id})"
        if not texts:   # "texts": [] is an item without text, dropped and counted as one
            empty.append(what)
            continue
        # Doc2Vec reads one kind of text for the whole dataset, never articles for some items
        # and captions for others.
        has = "doc2vec_text" in rec
        first = first or (has, n)
        if has != first[0]:
            raise InputError(f'{where}: {"a" if has else "no"} "doc2vec_text", but line {first[1]} has '
                               f'{"none" if has else "one"}: give it to every item or to none')
        d2v = _doc2vec_texts(rec, len(texts), where)
        if d2v is None:
            texts = clean_texts(texts, what, empty)
        else:
            texts, d2v = _clean_pairs(texts, d2v, what, empty, empty_d2v)
        if not texts:
            continue
        split = check_split(rec.get("split", "train"), where)
        label = None if rec.get("label") is None else str(rec["label"])
        if len(images) == 1:
            items.append(Item(item_id, resolve(images[0], root), texts, split, label, d2v))
            continue
        # An article with several pictures: one item per picture, all with its text, in one
        # group so that they are never each other's negatives or neighbours.
        items.extend(Item(f"{item_id}@{k}", resolve(image, root), texts, split, label, d2v,
                          group=f"{where} (id {item_id})") for k, image in enumerate(images))
    report_dropped(empty, "empty texts")
    report_dropped(empty_d2v, "texts whose doc2vec_text is empty")
    check_unique_ids(items, str(path))
    return items


def write_jsonl(path: Path, records: list[dict]) -> None:
    """A manifest read_jsonl reads, written atomically (json.dumps escapes "\n" inside strings)."""
    lines = "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
    atomic_write(path, lambda tmp: Path(tmp).write_text(lines, encoding="utf-8"))


def read_karpathy(path: Path, image_root: Path | None = None) -> list[Item]:
    root = image_root or path.parent
    try:
        data = json.loads(read_text(path))
        images = data["images"]
        if not isinstance(images, list):
            raise TypeError(f"'images' is {type(images).__name__}")
    except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as e:
        raise InputError(f"{path}: not a Karpathy split file (no 'images' list: {e}): "
                           "pass the dataset_coco.json / dataset_flickr30k.json file") from None
    items, empty = [], []
    for n, img in enumerate(images):
        where = f"{path}: images[{n}]"
        try:
            rel = os.path.join(img.get("filepath", ""), img["filename"])
            raws = [s["raw"] for s in img["sentences"]]
            split = {"restval": "train"}.get(img["split"], img["split"])
        except (KeyError, TypeError, AttributeError) as e:
            raise InputError(f"{where}: missing field {e}: every image needs filename, split and "
                               "sentences[].raw") from None
        item_id = str(img.get("cocoid", img.get("imgid", rel)))
        texts = clean_texts(raws, f"{where} ({rel})", empty)
        if not raws:    # no sentence at all: counted as the empty captions are
            empty.append(f"{where} ({rel})")
        if texts:
            items.append(Item(item_id, resolve(rel, root), texts, check_split(split, where)))
    report_dropped(empty, "empty captions")
    check_unique_ids(items, str(path))
    return items


def read_politics(path: Path, image_root: Path | None = None, min_chars: int = 500) -> list[Item]:
    """db.pickle or complete_db.pickle, with train_test_paths.pickle beside it.

    A folder holding both is read from complete_db.pickle, the file the release filtered by
    length (db.pickle has no such filter); a file path is read as given.
    """
    folder = path if path.is_dir() else path.parent
    both = path.is_dir() and all((folder / n).exists() for n in POLITICS_FILES)
    if path.is_dir():
        path = next((folder / n for n in POLITICS_FILES if (folder / n).exists()), folder / "db.pickle")
    if not path.exists():
        raise InputError(f"{path}: not found: a Politics folder needs db.pickle or complete_db.pickle")
    split_file = next((folder / n for n in ("train_test_paths.pickle", "train_test_pths.pickle")
                       if (folder / n).exists()), None)
    if split_file is None:
        raise InputError(f"{folder / 'train_test_paths.pickle'}: not found: the Politics split file "
                           "({'train': [...], 'test': [...]}) must lie beside the texts")
    db = read_pickle(path, "re-create the file")
    texts: dict[str, str] = {}
    short: dict[str, None] = {}  # ordered, for the message, and fast to look up
    seen: Counter = Counter()    # paths, to report those given more than one text
    if isinstance(db, dict):  # complete_db: {side: {issue: [{'content_text', 'local_path'}]}}
        try:
            for side, issues in db.items():
                for issue, records in issues.items():
                    for r in records:
                        seen[r["local_path"]] += 1
                        if min_chars > 0 and len(r["content_text"]) <= min_chars:
                            short[r["local_path"]] = None
                        else:
                            texts[r["local_path"]] = r["content_text"]
        except (AttributeError, KeyError, TypeError) as e:
            raise InputError(f"{path}: not the complete_db layout {{side: {{issue: [{{'content_text', "
                               f"'local_path'}}]}}}} ({type(e).__name__}: {e}): pass db.pickle "
                               "or re-create the file") from None
    elif isinstance(db, list):
        for n, pair in enumerate(db):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)):
                raise InputError(f"{path}: entry {n} is not an (image_path, text) pair")
            seen[pair[0]] += 1
            texts[pair[0]] = pair[1]
    else:
        raise InputError(f"{path}: expected a list of (image_path, text) or the complete_db dict")
    repeated = [p for p, c in seen.items() if c > 1]
    if repeated:
        print(f"{len(repeated)} image paths appear more than once in {path.name}: the last text of "
              f"each is kept (first: {', '.join(map(shown, repeated[:3]))})")
    _report_politics_file(path, both, sum(seen.values()), short, min_chars, isinstance(db, dict))
    splits = read_pickle(split_file, "re-create the file")
    if (not isinstance(splits, dict) or not {"train", "test"} <= set(splits)
            or not all(isinstance(splits.get(s, []), (list, tuple)) for s in SPLITS)):
        raise InputError(f"{split_file}: expected a dict with 'train' and 'test' path lists")
    root = image_root or folder
    items, empty, unsplit = [], [], set(texts)
    for split in SPLITS:
        for p in splits.get(split, []):
            if p not in texts:
                if p in short:
                    continue
                raise InputError(f"{split_file}: {split} path {quoted(p)} has no text in {path.name}: "
                                   "use the split file made with this db")
            unsplit.discard(p)
            kept = clean_texts([texts[p]], f"{path.name} ({p})", empty)
            if kept:
                items.append(Item(p, resolve(p, root), kept, split))
    report_dropped(empty, "empty texts")
    if unsplit:
        print(f"left out {len(unsplit)} items that {split_file.name} puts in no split "
              f"(first: {', '.join(map(shown, sorted(unsplit)[:3]))})")
    check_unique_ids(items, str(split_file))
    return items


def _report_politics_file(path: Path, preferred: bool, n_records: int, short: dict, min_chars: int,
                          filtered: bool) -> None:
    """Which file was read, and what the length filter (complete_db layout only) dropped."""
    print(f"read {path}{' (preferred to db.pickle beside it)' if preferred else ''}: "
          f"{n_records} records")
    if not filtered:
        return
    if min_chars <= 0:
        print("no length filter (--politics-min-chars 0)")
        return
    first = f" (first: {', '.join(map(shown, list(short)[:3]))})" if short else ""
    print(f"dropped {len(short)} items of {min_chars} characters or fewer{first}; "
          "--politics-min-chars 0 keeps them")


def load_dataset(path: str | Path, fmt: str | None = None, image_root: str | Path | None = None,
                 val_size: int | None = None, seed: int = 0, politics_min_chars: int = 500,
                 csv_keys: CsvKeys | None = None) -> list[Item]:
    """Read any supported dataset and assign the seeded validation slice."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: dataset not found: pass --dataset with a .jsonl manifest, a .csv "
                           "file, a Karpathy .json, a Politics folder or a GoodNews folder")
    fmt = fmt or detect_format(path)
    root = Path(image_root) if image_root else None
    if fmt == "jsonl":
        items = read_jsonl(path, root)
    elif fmt == "csv":
        items = read_csv(path, root, csv_keys or CsvKeys())
    elif fmt == "karpathy":
        items = read_karpathy(path, root)
    elif fmt == "politics":
        items = read_politics(path, root, politics_min_chars)
    elif fmt == "goodnews":
        items = read_goodnews(path, root)
    else:
        raise InputError(f"unknown dataset format {fmt!r}: use one of {', '.join(FORMATS)}")
    check_strings(items, str(path))
    if not any(it.split == "train" for it in items):
        raise InputError(f"{path}: no training items: mark some items \"split\": \"train\"")
    return assign_validation(items, val_size, seed)
