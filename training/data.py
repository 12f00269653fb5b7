"""Training pairs: a document's image and tokens plus those of its sampled neighbour, and under
the release's negatives the tokens of a random document of the same set."""
from __future__ import annotations

from typing import Callable, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from models.vocab import pad_batch

Key = Union[int, tuple[int, int]]   # a document, or (document, the random text paired with it)

# The release drew its validation negatives under this seed, the same set at every epoch.
VALIDATION_SEED = 9485629


class PairDataset(Dataset):
    """Item i is document i: its image (uint8), token ids, image id, and its neighbour's.

    `image_ids` are what `read` takes (item indices); `groups` (data.datasets.items.item_groups, per item)
    give the ids the objective compares, so documents of one image or group are never each
    other's negatives. Without it each image id is its own group."""

    def __init__(self, image_ids: Sequence[int], token_ids: Sequence[list[int]],
                 read: Callable[[int], torch.Tensor], groups: Sequence[int] | None = None):
        self.image_ids = np.asarray(image_ids, dtype=np.int64)
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64)
        self.tokens = token_ids
        self.read = read                       # image id -> uint8 [3, H, W]
        self.neighbors = np.full(len(token_ids), -1, dtype=np.int64)

    def set_neighbors(self, neighbors: np.ndarray) -> None:
        self.neighbors = neighbors

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, key: Key) -> dict:
        i, random_text = key if isinstance(key, tuple) else (key, -1)
        out = {"image": self.read(int(self.image_ids[i])), "tokens": self.tokens[i],
               "image_id": self._group(i), "nb": int(self.neighbors[i])}
        if random_text >= 0:
            out["random_tokens"] = self.tokens[random_text]
        if out["nb"] >= 0:
            nb = out["nb"]
            out["nb_image"] = self.read(int(self.image_ids[nb]))
            out["nb_tokens"] = self.tokens[nb]
            out["nb_image_id"] = self._group(nb)
        return out

    def _group(self, i: int) -> int:
        image = int(self.image_ids[i])
        return image if self.groups is None else int(self.groups[image])


def collate(samples: list[dict]) -> dict:
    """Images and texts of the batch, then those of the neighbours that exist, then the random
    texts when the samples carry them ("random_texts": how many).

    Only real neighbours are stacked, so no filler image passes through BatchNorm.
    """
    with_nb = [s for s in samples if s["nb"] >= 0]
    randoms = [s["random_tokens"] for s in samples if "random_tokens" in s]
    if randoms and len(randoms) != len(samples):
        raise ValueError(f"collate: {len(randoms)} of {len(samples)} samples carry a random text: "
                         "pair every index of the order or none")
    images = torch.stack([s["image"] for s in samples] + [s["nb_image"] for s in with_nb])
    tokens, lengths = pad_batch([s["tokens"] for s in samples] + [s["nb_tokens"] for s in with_nb]
                                + randoms)
    image_ids = torch.tensor([s["image_id"] for s in samples])
    has_nb = torch.tensor([s["nb"] >= 0 for s in samples])
    nb_image_ids = torch.full_like(image_ids, -1)
    nb_image_ids[has_nb] = torch.tensor([s["nb_image_id"] for s in with_nb], dtype=torch.long)
    return {"images": images, "tokens": tokens, "lengths": lengths, "image_ids": image_ids,
            "nb_image_ids": nb_image_ids, "has_nb": has_nb, "random_texts": len(randoms)}


def with_random_texts(order: Sequence[int], n_texts: int, batch_size: int,
                      seed: Sequence[int]) -> list[tuple[int, int]]:
    """Each index of `order` paired with a random document of the n_texts of the same set.

    The pairs are cut into batches as the loader cuts `order`, and each batch gets as many
    distinct documents, drawn uniformly and independently of the other batches: the release's
    random.sample(train_list, B) at every step. The same seed gives the same draw, whatever the
    process.
    """
    rng = np.random.default_rng(list(seed))
    out: list[tuple[int, int]] = []
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        # A set smaller than the batch (a tiny validation split) draws with replacement.
        picks = rng.choice(n_texts, size=len(chunk), replace=len(chunk) > n_texts)
        out.extend(zip((int(i) for i in chunk), picks.tolist()))
    return out


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[int]:
    """The epoch's permutation, cut into `world` equal shards (a few items repeat to even them:
    every rank must take the same number of DDP steps)."""
    order = np.random.default_rng([seed, epoch, 11]).permutation(n)
    per = -(-n // world)
    order = np.resize(order, per * world)
    return order[rank::world].tolist()


def make_loader(dataset: Dataset, order: Sequence[Key], batch_size: int, workers: int, pin: bool,
                drop_last: bool) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=order, num_workers=workers,
                      collate_fn=collate, pin_memory=pin, drop_last=drop_last,
                      persistent_workers=False, prefetch_factor=4 if workers > 0 else None)
