"""How often a text's neighbours share its label, in each work folder's vectors space.

    python -m benchmarks.neighbour_labels --dataset D --space W_DOC2VEC --space W_MINILM [--k 10]

For each work folder, its doc2vec_features.pickle (from extract_doc2vec_vectors.py or
extract_transformer_vectors.py): every training document's k nearest other documents by cosine
similarity, exactly, and the share of them whose item has the document's label (items without
a label are left out as queries and as neighbours). Chance is the share a random neighbour would
have: the sum over labels of (their share of the documents)^2, near enough for N >> k.
The dataset flags must be those the vectors were made with (the ids are matched to its items).
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from cli import parser, run_main, whole
from common.errors import InputError
from common.workdir import DOC2VEC_FEATURES, check_vectors, load_pickle
from data.datasets import provenance
from data.datasets.items import documents
from data.datasets.load import load_items
from evaluation.neighborhood import label_precision


def label_share(vectors: np.ndarray, labels: list[str], k: int) -> float:
    """The mean share of each row's k nearest other rows (cosine) with the row's label."""
    codes = {lab: i for i, lab in enumerate(sorted(set(labels)))}
    x = torch.nn.functional.normalize(torch.from_numpy(vectors).float(), dim=1)
    y = torch.tensor([codes[lab] for lab in labels])
    return label_precision(x, x, y, y, k=k, exclude_self=True)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--space", action="append", required=True, metavar="WORK_DIR",
                   help="a work folder holding a vectors file (repeat the flag)")
    p.add_argument("--k", type=whole(1), default=10)
    args = p.parse_args()
    items = load_items(args)
    label_of = {d.id: items[d.item].label for d in documents(items, ["train"])}
    for work in args.space:
        feats = load_pickle(work, DOC2VEC_FEATURES)
        path = Path(work) / DOC2VEC_FEATURES
        vectors = check_vectors(feats.get("vectors"), path)
        ids = feats.get("ids") or []
        if not set(ids) <= set(label_of):
            raise InputError(f"{path}: its documents are not this dataset's training documents: "
                             "pass the dataset flags the vectors were made with")
        keep = [i for i, d in enumerate(ids) if label_of[d] is not None]
        if len(keep) <= args.k:
            raise InputError(f"{path}: {len(keep)} labelled documents, not more than --k {args.k}")
        labels = [label_of[ids[i]] for i in keep]
        counts = Counter(labels)
        chance = sum((c / len(labels)) ** 2 for c in counts.values())
        share = label_share(vectors[keep], labels, args.k)
        print(f"{provenance.vectors_space(feats.get(provenance.KEY)):45s} {len(keep):6d} documents, "
              f"{len(counts)} labels: {share:.3f} of {args.k} neighbours share the label "
              f"(chance {chance:.3f})")
    sys.stdout.flush()


if __name__ == "__main__":
    run_main(main)
