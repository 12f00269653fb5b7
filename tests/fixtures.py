"""Small datasets the tests generate."""
from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = {
    "sport": "football goalkeeper stadium referee tournament striker league championship penalty coach",
    "space": "rocket orbit astronaut telescope galaxy planet satellite launch comet nebula",
    "food": "recipe kitchen bakery pastry flavour spice dinner noodle cheese tomato",
    "music": "guitar concert melody orchestra singer violin rhythm album drummer chorus",
    "weather": "storm rainfall thunder forecast hurricane drought snowfall humidity breeze climate",
}
FILLER = "people today report group local city week morning story public".split()


def topic_text(rng: random.Random, topic: str, sentences: int = 2, words: int = 8) -> str:
    vocab = TOPICS[topic].split()
    out = []
    for _ in range(sentences):
        ws = [rng.choice(vocab) if rng.random() < 0.7 else rng.choice(FILLER) for _ in range(words)]
        out.append(" ".join(ws).capitalize() + ".")
    return " ".join(out)


def write_topic_manifest(folder: Path, n: int = 300, seed: int = 0, texts_per_item: int = 1,
                         test_fraction: float = 0.2) -> Path:
    """A JSONL manifest of n items over the five topics (images are not written)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.jsonl"
    names = sorted(TOPICS)
    with open(path, "w") as f:
        for i in range(n):
            topic = names[i % len(names)]
            rec = {"id": f"{i:04d}", "image": f"img/{i:04d}.png",
                   "texts": [topic_text(rng, topic) for _ in range(texts_per_item)],
                   "split": "test" if rng.random() < test_fraction else "train", "label": topic}
            f.write(json.dumps(rec) + "\n")
    return path
