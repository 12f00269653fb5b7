"""open_clip-style CSV datasets: one row per (image, caption) pair, columns chosen by flags.

    filepath,title,split
    images/0001.jpg,A red bicycle leans against a wall.,train

The image and caption columns are named by --csv-image-key and --csv-caption-key (open_clip's
filepath and title by default), the separator by --csv-separator (a comma, or a tab for a .tsv
file, when not given). Optional columns, read when the header has them: "split" (train, val or
test; train when absent), "id" (the row's line number when absent) and "label". Rows naming
one image file are one image to training's negatives and to evaluation (items.py).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError
from data.datasets.fields import clean_texts, read_text, report_dropped, resolve
from data.datasets.items import Item, check_split, check_unique_ids


@dataclass(frozen=True)
class CsvKeys:
    image: str = "filepath"
    caption: str = "title"
    separator: str | None = None     # None: a tab for .tsv, else a comma

    def delimiter(self, path: Path) -> str:
        sep = self.separator if self.separator is not None else ("\t" if path.suffix == ".tsv" else ",")
        sep = {"\\t": "\t", "tab": "\t"}.get(sep, sep)   # a tab is awkward to type in a shell
        if len(sep) != 1 or sep in "\"\r\n":
            raise InputError(f"--csv-separator {sep!r}: pass one character other than a quote or "
                             r"a line break (\t or tab for a tab)")
        return sep


def read_csv(path: Path, image_root: Path | None = None, keys: CsvKeys = CsvKeys()) -> list[Item]:
    root = image_root or path.parent
    sep = keys.delimiter(path)
    # newline="": a quoted caption may hold a line break; strict: a stray quote is an error.
    text = read_text(path)
    # csv's field limit (131,072 characters) is no bound of ours: a quoted caption may be as
    # long as a JSONL text, that is as long as the file.
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise InputError(f"{path}: empty file: a CSV dataset needs a header row "
                             f"({keys.image}{sep}{keys.caption}) and one row per image-caption pair")
        column = {name.strip(): i for i, name in enumerate(header)}
        if len(column) != len(header):
            names = [name.strip() for name in header]
            twice = next(n for i, n in enumerate(names) if n in names[:i])
            raise InputError(f"{path}:1: the header names the column {twice!r} twice: which one "
                             "holds the data is ambiguous: rename or remove one of them")
        missing = [k for k in (keys.image, keys.caption) if k not in column]
        if missing:
            shown = ", ".join(repr(h) for h in header[:8])
            raise InputError(f"{path}:1: no column {' or '.join(map(repr, missing))} in the header "
                             f"({shown}; separator {sep!r}): name the columns with --csv-image-key "
                             "and --csv-caption-key, or the separator with --csv-separator")
        items, empty = [], []
        end = reader.line_num
        for row in reader:
            line, end = end + 1, reader.line_num    # a quoted line break spans lines: its first
            if not row or (len(row) == 1 and not row[0].strip()):
                continue     # a blank line
            where = f"{path}:{line}"
            if len(row) != len(header):
                raise InputError(f"{where}: {len(row)} fields where the header has {len(header)}: "
                                 f"quote fields holding {sep!r} or fix the row")
            get = lambda name: row[column[name]] if name in column else None  # noqa: E731
            image = get(keys.image).strip()
            if not image:
                raise InputError(f"{where}: empty {keys.image!r}: give the row an image path")
            item_id = (get("id") or "").strip() or str(line)
            texts = clean_texts([get(keys.caption)], f"{where} (id {item_id})", empty)
            if not texts:
                continue
            split = check_split((get("split") or "train").strip(), where)
            label = (get("label") or "").strip() or None
            items.append(Item(item_id, resolve(image, root), texts, split, label))
    except csv.Error as e:
        raise InputError(f"{path}:{reader.line_num}: not readable as CSV ({e}): fix the row's "
                         "quoting") from None
    report_dropped(empty, "empty captions")
    check_unique_ids(items, str(path))
    return items
