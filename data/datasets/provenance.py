"""What each intermediate file was made from, recorded inside it and checked by every later step.

A record is a plain dict: {"format", "data": {the dataset's hash and item count, the split and
preprocessing settings}, "steps": {step name: that step's settings}}. Each step copies the record
of the file it read and adds its own step, so the kNN file carries what the vectors, the Doc2Vec
model and the dataset were. A later step rebuilds the "data" part from its own flags and dataset
and compares: a difference stops it with one line naming the setting, both values and the step
to rerun, before any image is decoded.

Vectors from a transformer (extract_transformer_vectors.py) start a record of their own: their
vectors step names the model and its weights' hash, and no Doc2Vec step precedes it. Beside the
work folder's Doc2Vec model (the GRU's vocabulary) such a kNN file is compared on its own steps;
against a record of the other space, the two spaces are named.

Files made before records existed (no record) are refused with a line naming the step to rerun:
a file of unknown origin is exactly what this module is here to catch. Checkpoints are the
exception (evaluation/retrieval say so and go on): they cost hours to remake, and their model
and vocabulary are checked on their own.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from common import records as R
from common.errors import InputError
from data.datasets.items import Item
from data.datasets.settings import SPLIT as SPLIT_FIELD, DataSettings, TextSettings, names

FORMAT = 1
KEY = "provenance"     # the key of the record in the pickles and checkpoints

# Flags whose value changes the tokens every step reads (not part of the dataset hash, so
# compared one by one): TextSettings' fields.
PREPROCESSING = names(TextSettings)
# Flags that decide which items are train, val and test. Their effect is in the hash (it covers
# each item's split), so they are named only to explain a changed hash: training several seeds on
# one text side is fine when the dataset marks its val items.
SPLIT = names(DataSettings, only=SPLIT_FIELD)

# The steps that write records, in pipeline order, with the script that writes each.
SCRIPTS = {"doc2vec": "train_doc2vec.py", "vectors": "extract_doc2vec_vectors.py",
           "knn": "knn_document_features.py"}


def dataset_root(args: argparse.Namespace) -> Path:
    """The folder image paths are hashed relative to, so a dataset moved as a whole keeps its hash."""
    if getattr(args, "image_root", None):
        return Path(args.image_root).resolve()
    path = Path(args.dataset).resolve()
    return path if path.is_dir() else path.parent


def dataset_hash(items: Sequence[Item], root: str | Path) -> str:
    """A hash of every item's id, split, image (relative to `root`), texts and Doc2Vec texts, in
    order: what the text side reads (the texts, which document is which, which are training
    documents) and what the trainer pairs them with. Labels are left out: no step before the
    evaluation reads them."""
    h = hashlib.blake2b(digest_size=16)
    for it in items:
        image = os.path.relpath(it.image, root)
        d2v = None if it.doc2vec_text is None else list(it.doc2vec_text)
        h.update(json.dumps([it.id, it.split, image, list(it.texts), d2v], ensure_ascii=False)
                 .encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def data_record(items: Sequence[Item], args: argparse.Namespace) -> dict:
    """The part of every record that the dataset and the shared flags decide."""
    record = {"items": len(items), "hash": dataset_hash(items, dataset_root(args)),
              **{k: getattr(args, k, None) for k in SPLIT + PREPROCESSING}}
    if not any(it.doc2vec_text is not None for it in items):
        record["doc2vec_max_sentences"] = None    # it cuts nothing without a doc2vec_text
    return record


def new_record(data: dict, step: str, settings: dict, made_from: dict | None = None) -> dict:
    """The record of a file `step` writes: its input's record (if any) plus its own settings."""
    steps = dict(made_from["steps"]) if made_from else {}
    steps[step] = settings
    return {"format": FORMAT, "data": data, "steps": steps}


TRANSFORMER_SCRIPT = "extract_transformer_vectors.py"
WHERE = ("path",)   # where a model was read from: not what it is (its hash says that)


def transformer_vectors(record: dict | None) -> dict | None:
    """The vectors step's settings when a transformer made the vectors, else None."""
    steps = record.get("steps") if isinstance(record, dict) else None
    vectors = steps.get("vectors") if isinstance(steps, dict) else None
    return vectors if isinstance(vectors, dict) and vectors.get("encoder") == "transformer" else None


def vectors_space(record: dict | None) -> str:
    """The space the neighbours of a record come from, as a message names it."""
    t = transformer_vectors(record)
    if t is None:
        return "Doc2Vec"
    return f"transformer {t.get('text_model')} (weights SHA-256 {str(t.get('model'))[:12]})"


def _shown(key: str, value: object) -> str:
    if key == "keep_unicode":
        return "--keep-unicode" if value else "no --keep-unicode"
    flag = "--" + key.replace("_", "-")
    return f"{flag} (not given)" if value is None else f"{flag} {value}"


def _script(step: str, record: object = None) -> str:
    """The script that made `step` of `record` (the vectors step has two)."""
    if step == "vectors" and transformer_vectors(record) is not None:
        return TRANSFORMER_SCRIPT
    return SCRIPTS[step]


def _rerun_from(step: str, record: object = None) -> str:
    names = list(SCRIPTS)
    scripts = [_script(s, record) for s in names[names.index(step):]]
    return scripts[0] if len(scripts) == 1 else ", ".join(scripts[:-1]) + " and " + scripts[-1]


# "data" is compared key by key where a step has a dataset to compare it with (check_data), and
# files a benchmark writes carry only part of it.
SCHEMA = {"format": R.one_of(FORMAT), "data": R.of(dict),
          "steps": R.of(dict, check=lambda steps: all(isinstance(v, dict) for v in steps.values()),
                        want="an object of each step's settings")}


def require_record(record: object, path: str | Path, step: str) -> dict:
    """The record, or one line saying the file is of unknown origin (or its record damaged) and
    which step remakes it."""
    if not isinstance(record, dict) or record.get("format") != FORMAT or "data" not in record:
        raise InputError(f"{path}: no provenance record (made by an older version of this "
                         f"project, or not by it): rerun {_rerun_from(step)}")
    return R.check(record, SCHEMA, f"{path}: its provenance record",
                   f"rerun {_rerun_from(step, record)}")


def check_data(record: object, now: dict, path: str | Path, step: str, fix: str | None = None
               ) -> None:
    """Stop when the file at `path` (whose data `step` decided) was made from other data or
    settings than `now` (data_record of this run). The line names the setting, both values and
    the steps to rerun (or `fix`)."""
    made = require_record(record, path, step)["data"]
    fix = fix or f"rerun {_rerun_from(step, record)} with this run's flags"
    for key in PREPROCESSING:
        if made.get(key) != now.get(key):
            raise InputError(f"{path} was made with {_shown(key, made.get(key))}, this run has "
                             f"{_shown(key, now.get(key))}: {fix}, or pass the file's value")
    if made.get("hash") == now["hash"]:
        return
    for key in SPLIT:
        if made.get(key) != now.get(key):
            # Items marked "val" in the dataset make the split the same for every seed.
            mark = " (or mark the val items in the dataset)" if key == "seed" else ""
            raise InputError(f"{path} was made with {_shown(key, made.get(key))}, this run has "
                             f"{_shown(key, now.get(key))}, which changes the train/val/test "
                             f"split: {fix}, or pass the file's value{mark}")
    raise InputError(f"{path} was made from another version of the dataset ({made.get('items')} "
                     f"items then, {now['items']} now, or their ids, texts, images or splits "
                     f"differ): {fix}")


# Exact searches give the same neighbours (up to ties) whichever library or device ran them.
EXACT_KNN = ("exact", "faiss-exact")


def neighbour_settings(settings: dict | None) -> dict | None:
    """The kNN step's settings that decide its neighbours: a file remade by another exact
    backend, or on another device, is the same table; an approximate one with other settings
    (or another library's graph) is not."""
    if not settings or settings.get("backend") not in EXACT_KNN:
        return settings
    return {key: value for key, value in settings.items() if key not in ("device", "deterministic")
            } | {"backend": "exact"}


def _compared(step: str, settings: dict | None) -> dict | None:
    if step == "knn":
        return neighbour_settings(settings)
    if step == "vectors" and settings:
        return {k: v for k, v in settings.items() if k not in WHERE}
    return settings


def check_steps(record: dict, current: dict, path: str | Path, now_path: str | Path,
                fix: str | None = None) -> None:
    """Stop when the file at `path` was made from other text-side outputs than those `current`
    (the record of the file now at `now_path`) was: e.g. a kNN file of an earlier Doc2Vec model.
    Names the first setting that differs (or says the settings are equal: another training).
    kNN settings count only where they change the neighbours (neighbour_settings).

    Neighbours from a transformer did not come from a Doc2Vec model, so beside one (the GRU's
    vocabulary in the same work folder) only their own steps are compared; neighbours from
    another space than `current`'s are named as such."""
    if "vectors" in record["steps"] and "vectors" in current["steps"] and (
            (transformer_vectors(record) is None) != (transformer_vectors(current) is None)):
        raise InputError(f"{path} was made from neighbours in the {vectors_space(record)} space, "
                         f"but {now_path} comes from the {vectors_space(current)} space: "
                         f"{fix or 'rerun ' + _rerun_from('vectors', current)}")
    for step in SCRIPTS:
        made = _compared(step, record["steps"].get(step))
        have = _compared(step, current["steps"].get(step))
        if step == "doc2vec" and made is None and transformer_vectors(record) is not None:
            continue
        if made == have or have is None:
            continue
        later = list(SCRIPTS)[list(SCRIPTS).index(step) + 1:]
        script = _script(step, current)
        step_fix = fix or f"rerun {_rerun_from(later[0], current) if later else script}"
        for key in sorted(set(made or {}) | set(have)):
            if key != "model" and (made or {}).get(key) != have.get(key):
                raise InputError(f"{path} was made from a {script} output with "
                                 f"{_shown(key, (made or {}).get(key))}, but {now_path} comes "
                                 f"from {_shown(key, have.get(key))}: {step_fix}")
        raise InputError(f"{path} was made from another {script} output than {now_path} "
                         f"(same settings, another training): {step_fix}")


def check_checkpoint(run: argparse.Namespace, items: Sequence[Item], path: str | Path) -> None:
    """Evaluation and retrieval: the split read now must be the one the checkpoint was trained
    beside (its test items never trained on). `run` carries the checkpoint's record and, when
    there is none to check against, the reason (printed)."""
    if getattr(run, "provenance", None) is None:
        if getattr(run, "unchecked", None):
            print(f"{path}: the data is not checked against the checkpoint's record "
                  f"({run.unchecked})")
        return
    check_data(run.provenance, data_record(items, run), path, "doc2vec",
               fix="the split would not be the one it was trained beside: restore the dataset "
                   "it was trained on, or pass --dataset (and the split flags) to evaluate on "
                   "other data on purpose")
