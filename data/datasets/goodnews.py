"""The GoodNews release (Biten et al., CVPR 2019): one item per image, whose caption is the text
the GRU reads and whose article is the text Doc2Vec and the kNN read (`Item.doc2vec_text`).

The files, as the GoodNews repository's own scripts write and read them:
- `article+caption.json` (the released name; its scripts call the same file
  `captioning_dataset.json`): {article_id: {"article": str, "images": {index: caption}, ...}}
  with more fields ("article_url", "headline", "abstract") that are not read.
- `img_splits.json`: {"<article_id>_<index>": "train" | "val" | "test"}, the release's split.
- the images, `<article_id>_<index>.jpg`, in `images/` beside them unless --image-root says.
`news_dataset.json`, which the GoodNews preprocessing makes from the first file, holds
anonymised captions and no article, so it is not read.
"""
from __future__ import annotations

import json
from pathlib import Path

from common.errors import InputError, quoted, shown
from common.files import open_regular
from data.datasets.items import Item, check_split, check_unique_ids

ARTICLE_FILES = ("article+caption.json", "article_caption.json", "captioning_dataset.json")
SPLIT_FILE = "img_splits.json"
FILES = ARTICLE_FILES + (SPLIT_FILE, "news_dataset.json")


def is_goodnews(path: Path) -> bool:
    """A GoodNews file, or a folder holding one."""
    if path.is_dir():
        return any((path / n).exists() for n in FILES)
    return path.name in FILES


def _locate(path: Path) -> tuple[Path, Path]:
    """(folder, article file) for a folder or any of the release's files."""
    if path.is_file() and path.name in ARTICLE_FILES:
        return path.parent, path
    folder = path if path.is_dir() else path.parent
    found = next((folder / n for n in ARTICLE_FILES if (folder / n).exists()), None)
    if found is None:
        raise InputError(f"{folder}: no {' or '.join(ARTICLE_FILES)}: GoodNews needs its article file "
                           f"(news_dataset.json holds no article) with {SPLIT_FILE} beside it")
    return folder, found


def _load(path: Path, layout: str) -> dict:
    try:
        with open_regular(path, "r", encoding="utf-8-sig") as f:   # a byte-order mark is no error
            data = json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: unreadable ({e}): pass a readable UTF-8 file") from None
    except RecursionError:
        raise InputError(f"{path}: not valid JSON (nested too deeply): download the file "
                         "again") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}): download the file "
                           "again") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply to read: download the file again") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object {layout}, found a {type(data).__name__}")
    return data


def _check_article(article_id: str, entry, path: Path) -> dict:
    """The entry's {index: caption}; the entry must be an object with "images" and "article"."""
    where = f"{path}: article {quoted(article_id)}"
    if not isinstance(entry, dict):
        raise InputError(f"{where} is a {type(entry).__name__}, not an object with \"article\" and "
                           "\"images\": download the file again")
    images = entry.get("images")
    if not isinstance(images, dict):
        raise InputError(f'{where} has no "images" object {{index: caption}}: download the file again')
    if "article" not in entry:
        raise InputError(f'{where} has no "article": download the file again')
    if entry["article"] is not None and not isinstance(entry["article"], str):
        raise InputError(f'{where}: "article" is a {type(entry["article"]).__name__}, not a string')
    for index, caption in images.items():
        if caption is not None and not isinstance(caption, str):
            raise InputError(f"{where}: the caption of image {quoted(index)} is a "
                               f"{type(caption).__name__}, not a string")
    return images


def read_goodnews(path: Path, image_root: Path | None = None) -> list[Item]:
    """One item per image that img_splits.json lists, in its order; images whose caption or
    article is empty are dropped and counted, images it does not list are left out and counted."""
    folder, articles_path = _locate(path)
    split_path = folder / SPLIT_FILE
    if not split_path.exists():
        raise InputError(f"{split_path}: not found: the GoodNews split file (linked from the "
                           "GoodNews README) must lie beside the article file")
    articles = _load(articles_path, "{article_id: {\"article\", \"images\"}}")
    splits = _load(split_path, '{"<article_id>_<index>": split}')
    captions = {aid: _check_article(aid, entry, articles_path) for aid, entry in articles.items()}
    print(f"read {articles_path} ({len(articles)} articles) and {split_path} ({len(splits)} images)")

    root = image_root or folder / "images"
    items, no_caption, no_article = [], [], []
    for image_id, split in splits.items():
        where = f"{split_path}: image {quoted(image_id)}"
        check_split(split, where)
        article_id, sep, index = image_id.rpartition("_")
        if not sep or not article_id:
            raise InputError(f"{where} is not named <article id>_<index>: use the release's split file")
        if article_id not in captions:
            raise InputError(f"{where} is not in {articles_path.name} (no article {quoted(article_id)}): "
                               "use the split file of the same release")
        if index not in captions[article_id]:
            have = ", ".join(sorted(captions[article_id])[:5]) or "none"
            raise InputError(f"{where} is not in {articles_path.name} (article {quoted(article_id)} has "
                               f"images {have}): use the split file of the same release")
        caption, article = captions[article_id][index], articles[article_id]["article"]
        if not caption or not caption.strip():
            no_caption.append(image_id)
        elif not article or not article.strip():
            no_article.append(image_id)
        else:
            items.append(Item(image_id, str(Path(root) / f"{image_id}.jpg"), (caption,), split,
                              doc2vec_text=(article,)))
    for dropped, what in ((no_caption, "an empty caption"), (no_article, "an empty article")):
        if dropped:
            print(f"dropped {len(dropped)} images with {what} (first: {', '.join(map(shown, dropped[:3]))})")
    unsplit = [f"{aid}_{ix}" for aid, images in captions.items() for ix in images
               if f"{aid}_{ix}" not in splits]
    if unsplit:
        print(f"left out {len(unsplit)} images that {SPLIT_FILE} puts in no split "
              f"(first: {', '.join(map(shown, unsplit[:3]))})")
    check_unique_ids(items, str(split_path))
    return items
