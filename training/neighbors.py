"""Which Doc2Vec neighbour each training document may draw, and the per-epoch draw."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from common.errors import InputError, shown
from data.datasets.items import Document

# kNN rows handled at once while building the table: bounds the temporaries to a few hundred
# MiB whatever the corpus (k = 200: 200 MiB of candidate ids and masks per 65,536 rows).
CHUNK_ROWS = 65_536


class NeighborSampler:
    """Candidates of each training document, from the rows of document_feats_knn.pickle.

    As the authors' release, each kNN row is filtered first and the pool is then the first `pool`
    entries that qualify. An entry qualifies when it is at distance > 0 (not the document itself,
    not a duplicate text) and is a training document here (documents dropped from training, e.g.
    for an unreadable image or no tokens, are not in `docs`). This project adds one rule: an entry
    sharing the document's image (another caption of it, or another item naming the same file) or
    its explicit group does not qualify either (`groups`: data.datasets.items.item_groups, per item), since
    its image would be the anchor's own. A document with no qualifying entry in its whole row has no
    neighbour; those are counted in `missing`.

    The table is `candidates[offsets[i]:offsets[i] + counts[i]]`: document indices, nearest first.
    """

    def __init__(self, knn: dict, docs: Sequence[Document], pool: int = 10, source: str = "kNN file",
                 groups: np.ndarray | None = None):
        position = {d.id: i for i, d in enumerate(docs)}
        knn_ids = list(knn["ids"])
        to_doc = np.fromiter((position.get(i, -1) for i in knn_ids), dtype=np.int64, count=len(knn_ids))
        foreign = int((to_doc < 0).sum())
        # Documents dropped from training (bad images) are expected; a mostly-foreign file is not.
        if foreign > len(knn_ids) // 2:
            first = [shown(knn_ids[i]) for i in np.flatnonzero(to_doc < 0)[:3]]
            raise InputError(f"{source}: {foreign} of its {len(knn_ids)} documents are not "
                               f"training documents of this dataset (first: {first}): re-run "
                               "train_doc2vec.py, extract_doc2vec_vectors.py and "
                               "knn_document_features.py on it")
        image_of = np.fromiter((d.item for d in docs), dtype=np.int64, count=len(docs))
        if groups is not None:
            image_of = np.asarray(groups, dtype=np.int64)[image_of]
        # The tables are read a block of rows at a time (data.neighbors.knn_file.Rows, or arrays): the
        # whole [N, k] pair is 1.6 GB at a million documents, k = 200.
        nbrs, dists = knn["neighbors"], knn["distances"]
        if not (len(nbrs) == len(dists) == len(knn_ids) and nbrs.ndim == dists.ndim == 2):
            raise InputError(f"{source}: {len(nbrs)} rows of neighbours for {len(knn_ids)} ids "
                             f"(and {len(dists)} rows of distances): run "
                             "knn_document_features.py again")
        # The kNN row of each document (the last one if an id repeats), -1 for none.
        row_of = np.full(len(docs), -1, dtype=np.int64)
        in_train = np.flatnonzero(to_doc >= 0)
        row_of[to_doc[in_train]] = in_train

        counts = np.zeros(len(docs), dtype=np.int64)
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        for s in range(0, len(knn_ids), CHUNK_ROWS):
            rows = np.arange(s, min(s + CHUNK_ROWS, len(knn_ids)))
            doc = to_doc[rows]
            used = doc >= 0
            used[used] = row_of[doc[used]] == rows[used]       # a repeated id's last row only
            if not used.any():
                continue
            block_nbrs = np.asarray(nbrs[s:s + CHUNK_ROWS])[used]
            block_d = np.asarray(dists[s:s + CHUNK_ROWS])[used]
            doc = doc[used]
            cand = to_doc[block_nbrs]                                  # [m, k] document indices
            ok = (cand >= 0) & (block_d > 0)
            ok &= image_of[np.maximum(cand, 0)] != image_of[doc][:, None]
            chosen = ok & (np.cumsum(ok, axis=1) <= pool)              # first `pool` qualifying
            counts[doc] = chosen.sum(1)
            parts.append((doc, cand[chosen]))                          # row-major: doc by doc
        self.counts = counts
        self.offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        # Blocks come in file order; the table is in document order.
        self.candidates = np.empty(int(counts.sum()), dtype=np.int64)
        for doc, cand in parts:
            c = counts[doc]
            start = np.repeat(self.offsets[doc] - np.concatenate([[0], np.cumsum(c)[:-1]]), c)
            self.candidates[start + np.arange(len(cand))] = cand
        self.missing = [docs[i].id for i in np.flatnonzero(counts == 0)]

    def report(self) -> None:
        if self.missing:
            print(f"{len(self.missing)} training documents have no usable neighbour and get no "
                  f"L_img / L_text term (first: {', '.join(map(shown, self.missing[:3]))})")

    def sample(self, seed: int, epoch: int) -> np.ndarray:
        """One neighbour per document (-1 for none), uniform over its candidates; the same for the
        same seed and epoch, whatever the process."""
        rng = np.random.default_rng([seed, epoch, 7])
        pick = np.floor(rng.random(len(self.counts)) * np.maximum(self.counts, 1)).astype(np.int64)
        out = np.full(len(self.counts), -1, dtype=np.int64)
        has = self.counts > 0
        out[has] = self.candidates[self.offsets[has] + pick[has]]
        return out
