"""Seeded topic-model corpora for the text-side scale benchmark: a JSONL manifest with image paths
but no images.

Each document has one topic; its content words come from that topic's Zipf distribution over a
made-up vocabulary (70%) or from the background distribution (30%), with English stopwords
between them as in real prose. "short" documents are two sentences of about 40 words (Politics
as the method uses it: the first two sentences of each article); "article" documents are about
600 words in 30 sentences (GoodNews articles). About 0.5% of the documents repeat an earlier
text exactly, as scraped news does.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

STOPWORDS = ("the of and to in a is that for on with as by at from it was his her their this "
             "have has had are were be been will would said its which who they not but an or").split()
SYLLABLES = [c + v for c in "bcdfghklmnprstvz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
KINDS = {"short": (2, 20), "article": (30, 20)}   # sentences per document, words per sentence


def vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    """`size` distinct pronounceable words of 2 to 4 syllables (4 to 12 letters)."""
    words: dict[str, None] = {}
    while len(words) < size:
        n = rng.integers(2, 5, size=size)
        picks = rng.integers(0, len(SYLLABLES), size=(size, 4))
        for k, row in zip(n, picks):
            words.setdefault("".join(SYLLABLES[s] for s in row[:k]), None)
            if len(words) == size:
                break
    return list(words)


def generate(n: int, seed: int = 0, kind: str = "short", vocab_size: int = 30_000, topics: int = 100,
             test_share: float = 0.01) -> list[dict]:
    """`n` manifest records {"id", "image", "text", "split"}; the same for the same arguments."""
    rng = np.random.default_rng([seed, n, len(kind)])
    words = np.array(vocabulary(vocab_size, rng), dtype=object)
    sentences, per_sentence = KINDS[kind]
    zipf = 1.0 / (np.arange(vocab_size) + 10.0) ** 1.1
    cdf = np.cumsum(zipf / zipf.sum())
    ranks_of_topic = np.stack([rng.permutation(vocab_size) for _ in range(topics + 1)])  # last: background
    topic = rng.integers(0, topics, size=n)
    lengths = np.clip(rng.poisson(per_sentence, size=(n, sentences)), 6, None)
    records = []
    stop = np.array(STOPWORDS, dtype=object)
    chunk = 20_000
    for s in tqdm(range(0, n, chunk), desc=f"generating {n:,} {kind} texts", unit="chunk",
                  disable=n < 50_000, mininterval=1.0):
        ln = lengths[s:s + chunk]
        total = int(ln.sum())
        doc_of = np.repeat(np.arange(len(ln)), ln.sum(1))
        rank = np.minimum(np.searchsorted(cdf, rng.random(total)), vocab_size - 1)
        which = np.where(rng.random(total) < 0.7, topic[s:s + chunk][doc_of], topics)
        content = words[ranks_of_topic[which, rank]]
        is_stop = rng.random(total) < 0.35
        content[is_stop] = stop[rng.integers(0, len(stop), size=int(is_stop.sum()))]
        pos = 0
        for row in ln:
            parts = []
            for m in row:
                sent = content[pos:pos + m]
                pos += m
                parts.append(sent[0].capitalize() + " " + " ".join(sent[1:]) + ".")
            records.append(" ".join(parts))
    dup = np.flatnonzero(rng.random(n) < 0.005)
    dup = dup[dup > 0]
    for i, j in zip(dup, rng.integers(0, np.maximum(dup, 1))):
        records[i] = records[j]
    # Val marked here, as large as test: the scripts then draw no slice of their own.
    split = np.array(["train", "test", "val"])[np.digitize(rng.random(n), [1 - 2 * test_share, 1 - test_share])]
    return [{"id": str(i), "image": f"images/{i:07d}.jpg", "text": t, "split": str(split[i])}
            for i, t in enumerate(records)]


def write_manifest(path: Path, n: int, seed: int = 0, kind: str = "short") -> Path:
    """The manifest at `path`, generated unless a finished one is already there."""
    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in generate(n, seed, kind):
            f.write(json.dumps(rec) + "\n")
    tmp.replace(path)
    return path
