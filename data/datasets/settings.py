"""The settings that decide a run's items and their tokens, each a frozen dataclass built once
from the parsed flags. Their fields are the flags' names: the lists of flags that evaluation takes
from a checkpoint, that provenance compares and that an export copies are read from the fields,
so a new dataset or preprocessing option is one field here (and its flag in cli.py)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields

import config

# Field metadata: the field decides which items are train, val and test (provenance names it
# to explain a changed hash); the field changes only what Doc2Vec reads, not the tokens.
SPLIT, DOC2VEC_ONLY = "split", "doc2vec_only"


@dataclass(frozen=True)
class DataSettings:
    """Which dataset, read how, and the seeded validation slice."""
    dataset: str
    dataset_format: str | None = config.DATASET_FORMAT
    image_root: str | None = config.IMAGE_ROOT
    val_size: int | None = field(default=config.VAL_SIZE, metadata={SPLIT: True})
    seed: int = field(default=config.SEED, metadata={SPLIT: True})
    politics_min_chars: int = field(default=config.POLITICS_MIN_CHARS, metadata={SPLIT: True})
    csv_image_key: str = config.CSV_IMAGE_KEY
    csv_caption_key: str = config.CSV_CAPTION_KEY
    csv_separator: str | None = config.CSV_SEPARATOR

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "DataSettings":
        return from_args(cls, args)


@dataclass(frozen=True)
class TextSettings:
    """How a text becomes the tokens every step reads (and the text Doc2Vec reads)."""
    max_sentences: int = config.MAX_SENTENCES
    doc2vec_max_sentences: int = field(default=config.DOC2VEC_MAX_SENTENCES,
                                       metadata={DOC2VEC_ONLY: True})
    max_chars: int = config.MAX_CHARS
    keep_unicode: bool = config.KEEP_UNICODE

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "TextSettings":
        return from_args(cls, args)


def from_args(cls: type, args: argparse.Namespace):
    """`cls` from the flags of its fields; a flag a script does not have keeps the default
    (required fields must be flags)."""
    given = vars(args)
    return cls(**{f.name: given[f.name] for f in fields(cls) if f.name in given})


def names(cls: type, without: str | None = None, only: str | None = None) -> tuple[str, ...]:
    """The flag names of `cls`'s fields, in order; `only`/`without` those whose metadata holds
    that key."""
    return tuple(f.name for f in fields(cls)
                 if (only is None or f.metadata.get(only)) and not (without and f.metadata.get(without)))


# What decides the items (and their splits) and what decides their tokens.
DATA_FLAGS = names(DataSettings)
TOKEN_FLAGS = names(TextSettings, without=DOC2VEC_ONLY)
