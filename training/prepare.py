"""Everything the training loop needs from the work folder and the dataset, checked."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
from gensim.models.doc2vec import Doc2Vec

from data.cli import load_items
from data.corpus import drop_empty, tokenized_documents
from data.items import DatasetError, Document, Item
from data.workdir import DOC2VEC_MODEL, KNN, load_pickle, require
from models import Vocabulary

from .distributed import Context, broadcast
from .images import find_bad_images, read_image, report_bad_images
from .neighbors import NeighborSampler


class ImageFiles:
    """image id (an item index) -> uint8 tensor, decoded from the item's file."""

    def __init__(self, paths: list[str], size: int):
        self.paths, self.size = paths, size

    def __call__(self, image_id: int):
        return read_image(self.paths[image_id], self.size)


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
    read: ImageFiles


def prepare(args: argparse.Namespace, ctx: Context) -> TrainingData:
    d2v = Doc2Vec.load(str(require(args.work_dir, DOC2VEC_MODEL)))
    vocab = Vocabulary(d2v.wv.index_to_key)
    knn = load_pickle(args.work_dir, KNN)
    items = load_items(args)
    docs, tokens = drop_empty(*tokenized_documents(items, ["train", "val"], args), "train/val")

    # Every image is decoded once before training: a bad one is reported, never replaced.
    bad = find_bad_images([items[d.item].image for d in docs], args.image_size, args.workers) \
        if ctx.main else None
    bad = broadcast(bad, ctx)
    used = {items[d.item].image for d in docs}
    if ctx.main:
        report_bad_images(bad, len(used), args.max_bad_images, "train/val")
    keep = [i for i, d in enumerate(docs) if items[d.item].image not in bad]
    docs, tokens = [docs[i] for i in keep], [tokens[i] for i in keep]

    encoded = [vocab.encode(t, args.max_tokens) for t in tokens]
    train = [i for i, d in enumerate(docs) if items[d.item].split == "train"]
    val = [i for i, d in enumerate(docs) if items[d.item].split == "val"]
    if len(train) < 2:
        raise DatasetError(f"{args.dataset}: {len(train)} usable training documents: training "
                           "needs at least 2 (in-batch negatives)")
    if len(val) < 2:
        raise DatasetError(f"{args.dataset}: {len(val)} usable validation documents: mark items "
                           '"split": "val" or pass a larger --val-size')
    train_docs = [docs[i] for i in train]
    sampler = NeighborSampler(knn, train_docs, args.neighbor_pool,
                              source=str(require(args.work_dir, KNN)))
    if ctx.main:
        print(f"{len(train_docs)} training and {len(val)} validation documents; "
              f"vocabulary {len(vocab.words)} words")
        sampler.report()
    return TrainingData(items, vocab, d2v.wv.vectors, train_docs, [encoded[i] for i in train],
                        [docs[i] for i in val], [encoded[i] for i in val], sampler,
                        ImageFiles([it.image for it in items], args.image_size))
