"""Everything the training loop needs from the work folder and the dataset, checked."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from gensim.models.doc2vec import Doc2Vec

from common.errors import InputError, shown
from common.workdir import DOC2VEC_MODEL, KNN, require
from data.datasets import provenance
from data.datasets.items import Document, Item, item_groups
from data.datasets.load import load_items
from data.neighbors.knn_file import load_knn
from data.text.corpus import drop_empty, tokenized_documents
from data.text.doc2vec import load_model
from models import END, START, Vocabulary

from .distributed import Context, broadcast
from data.images.cache import training_images
from data.images.read import report_bad_images
from models.backbones import backbone as backbone_entry
from models.features import FeatureRequest, load_backbone, training_features
from models.image_source import ImageSource
from models.settings import ImageSettings
from .neighbors import NeighborSampler
from .text_branch import text_vocabulary


@dataclass
class TrainingData:
    items: list[Item]
    vocab: Vocabulary
    word_vectors: np.ndarray
    train_docs: list[Document]
    train_tokens: list[list[int]]
    val_docs: list[Document]
    val_tokens: list[list[int]]
    sampler: NeighborSampler
    images: ImageSource                    # image id (item index) -> the image branch's row
    image_settings: ImageSettings          # the flags the image side was prepared with
    groups: np.ndarray                     # item index -> its same-image group (item_groups)
    provenance: dict                       # what the run is made from, saved in its checkpoints
    backbone: dict | None = None           # --frozen-image: the weights that made the features

    @property
    def read(self) -> Callable[[int], torch.Tensor]:
        return self.images.read


def drop_unknown(docs: list[Document], encoded: list[list[int]], ctx: Context
                 ) -> tuple[list[Document], list[list[int]]]:
    """Documents without a word of the Doc2Vec vocabulary (only START and END left) are dropped,
    as the release dropped them, and counted. The neighbour sampler then never draws them:
    it only knows the documents kept."""
    empty = [d.id for d, e in zip(docs, encoded) if e == [START, END]]
    if empty and ctx.main:
        print(f"dropped {len(empty)} train/val documents with no word in the Doc2Vec vocabulary "
              f"(first: {', '.join(map(shown, empty[:3]))})")
    keep = [i for i, e in enumerate(encoded) if e != [START, END]]
    return [docs[i] for i in keep], [encoded[i] for i in keep]


def check_provenance(items: list[Item], args: argparse.Namespace, d2v: Doc2Vec, knn: dict,
                     resumed: tuple[Path, dict] | None) -> dict:
    """The Doc2Vec model and the kNN file must have been made from this dataset with these flags,
    the kNN file from this model, and a resumed run from the same: one line otherwise, before
    any image is decoded. Returns the record the checkpoints carry."""
    model_path, knn_path = Path(args.work_dir) / DOC2VEC_MODEL, Path(args.work_dir) / KNN
    now = provenance.data_record(items, args)
    model_record = getattr(d2v, "provenance", None)
    provenance.check_data(model_record, now, model_path, "doc2vec")
    knn_record = provenance.require_record(knn.get(provenance.KEY), knn_path, "vectors")
    provenance.check_data(knn_record, now, knn_path, "vectors")
    provenance.check_steps(knn_record, model_record, knn_path, model_path)
    if resumed is not None:
        last, state = resumed
        fix = "resume with that run's flags and work folder, or start afresh with --overwrite"
        if state.get(provenance.KEY) is None:
            print(f"{last} has no provenance record (an older version wrote it): its data is not "
                  "checked, only its model and vocabulary")
        else:
            provenance.check_data(state[provenance.KEY], now, last, "doc2vec", fix)
            provenance.check_steps(state[provenance.KEY], knn_record, last, knn_path, fix)
    return provenance.new_record(now, "train", {}, knn_record)


def prepare(args: argparse.Namespace, ctx: Context, resumed: tuple[Path, dict] | None = None,
            image: ImageSettings | None = None) -> TrainingData:
    """Everything training reads, checked. `resumed`: (last.pt, its state) of a run to continue;
    `image`: the image settings the caller built from `args` (built here when not given)."""
    d2v = load_model(require(args.work_dir, DOC2VEC_MODEL))
    vocab = text_vocabulary(args, d2v.wv.index_to_key)   # the Doc2Vec words, or a tokenizer
    knn_path = require(args.work_dir, KNN)
    knn = load_knn(args.work_dir)   # its [N, k] tables stay in the file, read in blocks
    items = load_items(args)
    record = check_provenance(items, args, d2v, knn, resumed)
    docs, tokens = drop_empty(*tokenized_documents(items, ["train", "val"], args), "train/val")

    # Images come from the image cache when it is up to date, else from the files, each decoded
    # once here first; either way a bad image is known before training, reported, never replaced.
    used = sorted({items[d.item].image for d in docs})
    image = image or ImageSettings.from_args(args)
    entry = backbone_entry(image.arch)
    source, summary, backbone = None, None, None
    if image.frozen_image:   # a cheap check, on every rank
        request = FeatureRequest.from_args(args)
        read, bad, where, summary = training_features(request, [it.image for it in items], used)
        backbone = load_backbone(request, read)
        if ctx.main:
            print(where)
        source = (read, bad)
    elif ctx.main:
        read, bad, where = training_images(args.work_dir, [it.image for it in items], used,
                                           image.image_size, args.image_cache, args.workers,
                                           entry.preprocessing.resize)
        print(where)
        source = (read, bad)
    read, bad = broadcast(source, ctx)
    images = (ImageSource.frozen(entry, image.image_size, read, summary) if image.frozen_image
              else ImageSource.pixels(entry, image.image_size, read))
    if ctx.main:
        report_bad_images(bad, len(used), args.max_bad_images, "train/val")
    keep = [i for i, d in enumerate(docs) if items[d.item].image not in bad]
    docs, tokens = [docs[i] for i in keep], [tokens[i] for i in keep]

    encoded = [vocab.encode(t, args.max_tokens) for t in tokens]
    docs, encoded = drop_unknown(docs, encoded, ctx)
    train = [i for i, d in enumerate(docs) if items[d.item].split == "train"]
    val = [i for i, d in enumerate(docs) if items[d.item].split == "val"]
    if len(train) < 2:
        raise InputError(f"{args.dataset}: {len(train)} usable training documents: training "
                           "needs at least 2 (in-batch negatives)")
    if len(val) < 2:
        raise InputError(f"{args.dataset}: {len(val)} usable validation documents: mark items "
                           '"split": "val" or pass a larger --val-size')
    train_docs = [docs[i] for i in train]
    groups = item_groups(items)
    sampler = NeighborSampler(knn, train_docs, args.neighbor_pool, source=str(knn_path), groups=groups)
    if ctx.main:
        print(f"{len(train_docs)} training and {len(val)} validation documents; "
              f"vocabulary {len(vocab.words)} words")
        sampler.report()
    return TrainingData(items, vocab, d2v.wv.vectors, train_docs, [encoded[i] for i in train],
                        [docs[i] for i in val], [encoded[i] for i in val], sampler, images, image,
                        groups, record, backbone)
