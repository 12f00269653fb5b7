"""Which Doc2Vec neighbour each training document may draw, and the per-epoch draw."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from data.items import InputError, Document


class NeighborSampler:
    """Candidates of each training document, from the rows of document_feats_knn.pickle.

    A candidate is not the document itself, not at distance 0 (a duplicate text), does not share
    its image (another caption of it), and is in the training subset. The pool is the first
    `pool` entries of the kNN row; when none of them qualifies, the nearest qualifying entry
    further down the row is the only candidate; with none at all the document has no neighbour.
    """

    def __init__(self, knn: dict, docs: Sequence[Document], pool: int = 10, source: str = "kNN file"):
        position = {d.id: i for i, d in enumerate(docs)}
        knn_ids = list(knn["ids"])
        foreign = [i for i in knn_ids if i not in position]
        # Documents dropped from training (bad images) are expected; a mostly-foreign file is not.
        if len(foreign) > len(knn_ids) // 2:
            raise InputError(f"{source}: {len(foreign)} of its {len(knn_ids)} documents are not "
                               f"training documents of this dataset (first: {foreign[:3]}): re-run "
                               "train_doc2vec.py, extract_doc2vec_vectors.py and "
                               "knn_document_features.py on it")
        to_doc = np.array([position.get(i, -1) for i in knn_ids], dtype=np.int64)
        row_of = {d: r for r, d in enumerate(to_doc) if d >= 0}
        image_of = np.array([d.item for d in docs], dtype=np.int64)
        nbrs, dists = np.asarray(knn["neighbors"]), np.asarray(knn["distances"])
        counts = np.zeros(len(docs), dtype=np.int64)
        flat: list[np.ndarray] = []
        for i in range(len(docs)):
            r = row_of.get(i)
            if r is None:
                flat.append(np.empty(0, dtype=np.int64))
                continue
            cand = to_doc[nbrs[r]]
            ok = (cand >= 0) & (dists[r] > 0)
            ok &= image_of[np.where(cand >= 0, cand, 0)] != image_of[i]
            hits = np.flatnonzero(ok)
            chosen = hits[hits < pool] if (hits < pool).any() else hits[:1]
            flat.append(cand[chosen])
            counts[i] = len(chosen)
        self.counts = counts
        self.offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.candidates = np.concatenate(flat) if flat else np.empty(0, dtype=np.int64)
        self.missing = [docs[i].id for i in np.flatnonzero(counts == 0)]

    def report(self) -> None:
        if self.missing:
            print(f"{len(self.missing)} training documents have no usable neighbour and get no "
                  f"L_img / L_text term (first: {', '.join(self.missing[:3])})")

    def sample(self, seed: int, epoch: int) -> np.ndarray:
        """One neighbour per document (-1 for none), uniform over its candidates; the same for the
        same seed and epoch, whatever the process."""
        rng = np.random.default_rng([seed, epoch, 7])
        pick = np.floor(rng.random(len(self.counts)) * np.maximum(self.counts, 1)).astype(np.int64)
        out = np.full(len(self.counts), -1, dtype=np.int64)
        has = self.counts > 0
        out[has] = self.candidates[self.offsets[has] + pick[has]]
        return out
