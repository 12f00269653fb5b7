"""What every dataset reader does to a field: resolve an image path, read a text file, keep
the non-empty texts and report the dropped ones."""
from __future__ import annotations

import os
from pathlib import Path

from common.errors import InputError, shown
from common.files import NotRegularFile, kind_of, open_regular


def resolve(image: str, root: Path) -> str:
    return image if os.path.isabs(image) else os.path.normpath(os.path.join(root, image))


def read_text(path: Path) -> str:
    try:
        with open_regular(path, "r", encoding="utf-8-sig") as f:  # a byte-order mark is no error
            return f.read()
    except NotRegularFile as e:
        raise InputError(f"{path}: is {kind_of(e)}, not a regular file: pass the dataset's "
                         "file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: unreadable ({e}): pass a readable UTF-8 file") from None


def clean_texts(texts: list, where: str, dropped: list[str]) -> tuple[str, ...]:
    kept = []
    for t in texts:
        if not isinstance(t, str):
            raise InputError(f"{where}: a text is {type(t).__name__}, not a string: fix the item")
        if t.strip():
            kept.append(t)
        else:
            dropped.append(where)
    return tuple(kept)


def report_dropped(dropped: list[str], what: str) -> None:
    if dropped:
        print(f"dropped {len(dropped)} {what} (first: {', '.join(map(shown, dropped[:3]))})")
