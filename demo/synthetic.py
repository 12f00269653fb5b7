"""A generated dataset whose topics show in the texts but not in one look of the images.

Each topic has its own vocabulary and several image motifs that look nothing alike (rings,
stripes, dots, ...), so two items of one topic share words while their pictures may differ:
the case the paper's semantic neighbourhoods are meant for. Everything comes from the seed.
"""
from __future__ import annotations

import colorsys
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from data.datasets.readers import write_jsonl

# Lowercase, alphabetic, at least four letters, none a gensim stop word, none in two topics.
TOPIC_WORDS = {
    "sports": "football goalkeeper stadium referee tournament striker league championship penalty "
              "coach athlete marathon sprinter trophy medal racket tennis hockey basketball "
              "volleyball dribble halftime scoreboard jersey gymnast wrestler podium umpire "
              "rugby cyclist",
    "weather": "storm rainfall thunder forecast hurricane drought snowfall humidity breeze climate "
               "lightning tornado blizzard drizzle monsoon typhoon frost hailstorm barometer "
               "rainbow sleet overcast heatwave cyclone gust temperature meteorologist sunshine "
               "downpour fog",
    "cooking": "recipe kitchen bakery pastry flavour spice dinner noodle cheese tomato oven "
               "skillet garlic onion simmer roast dough butter saucepan ladle chef seasoning "
               "broth pepper vinegar omelette casserole dumpling marinade whisk",
    "music": "guitar concert melody orchestra singer violin rhythm album drummer chorus piano "
             "trumpet saxophone symphony conductor lyrics harmony ballad cello flute tempo "
             "soprano opera banjo microphone encore quartet harp tuba clarinet",
    "space": "rocket orbit astronaut telescope galaxy planet satellite launch comet nebula "
             "asteroid spacecraft lunar cosmonaut meteor supernova gravity eclipse crater "
             "shuttle observatory quasar mars jupiter saturn pulsar cosmos rover capsule "
             "spacewalk",
    "gardening": "tulip orchard compost seedling shovel greenhouse hedge lawn mower fertilizer "
                 "daisy sunflower weeding trowel mulch pruning blossom vegetable irrigation "
                 "harvest petal lavender rosebush beetroot pumpkin cucumber watering shrub "
                 "gardener orchid",
    "ocean": "coral reef dolphin seaweed tide harbour lighthouse sailor anchor whale shark "
             "jellyfish lagoon surfer shipwreck octopus seagull starfish plankton current "
             "submarine snorkel oyster trawler buoy pelican seashell mariner estuary kelp",
    "medicine": "doctor nurse hospital vaccine surgeon clinic patient diagnosis antibiotic "
                "stethoscope pharmacy symptom therapy ambulance bandage fever prescription "
                "virus scalpel allergy cardiology insulin physician ward syringe wound tablet "
                "infection remedy dentist",
}
FILLER_WORDS = ("picture shows scene today people report local week morning story public large "
                "small bright quiet evening nearby group city region plenty moment image view "
                "notice likely recent").split()
TOPIC_SHARE = 0.75               # share of a sentence's words drawn from its topic
WORDS_PER_SENTENCE = (6, 10)     # inclusive range
KINDS = ("rings", "stripes", "dots", "checker", "triangle", "squares", "cross", "waves",
         "star", "diagonal", "ring_of_dots", "split")


@dataclass(frozen=True)
class Motif:
    kind: str                          # one of KINDS
    background: tuple[int, int, int]
    foreground: tuple[int, int, int]
    scale: float                       # base size of the motif's elements, a share of the side


def topic_names(n_topics: int) -> list[str]:
    names = list(TOPIC_WORDS)
    return names[:n_topics] + [f"topic{t + 1:02d}" for t in range(len(names), n_topics)]


def topic_vocabularies(n_topics: int, seed: int) -> dict[str, list[str]]:
    """Real words for the first topics, made-up words (distinct, seeded) beyond them."""
    vocab = {name: TOPIC_WORDS[name].split() for name in topic_names(n_topics) if name in TOPIC_WORDS}
    used = {w for words in vocab.values() for w in words} | set(FILLER_WORDS)
    rng = random.Random(f"vocab-{seed}")
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    for name in topic_names(n_topics)[len(vocab):]:
        words: list[str] = []
        while len(words) < 30:
            w = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(2, 4)))
            if w not in used:
                used.add(w)
                words.append(w)
        vocab[name] = words
    return vocab


def make_motifs(n_topics: int, motifs_per_topic: int, seed: int) -> list[list[Motif]]:
    """Per topic, motifs of different kinds and far-apart hues, so they do not look alike."""
    if motifs_per_topic > len(KINDS):
        raise ValueError(f"motifs_per_topic {motifs_per_topic} is more than the {len(KINDS)} motif "
                         "kinds: pass a smaller --motifs")
    rng = random.Random(f"motifs-{seed}")
    out = []
    for _ in range(n_topics):
        kinds = rng.sample(KINDS, motifs_per_topic)
        hue0 = rng.random()
        motifs = []
        for j, kind in enumerate(kinds):
            hue = (hue0 + j / motifs_per_topic) % 1.0
            dark = j % 2 == 1       # alternate light and dark backgrounds within a topic
            bg = _rgb(hue, 0.35 if not dark else 0.7, 0.95 if not dark else 0.25)
            fg = _rgb((hue + 0.5) % 1.0, 0.9, 0.35 if not dark else 0.95)
            motifs.append(Motif(kind, bg, fg, rng.uniform(0.18, 0.3)))
        out.append(motifs)
    return out


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def _jitter(colour: tuple[int, int, int], rng: np.random.Generator, amount: int = 20) -> tuple:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def render_motif(motif: Motif, rng: np.random.Generator, size: int) -> Image.Image:
    """One picture of the motif: its layout with jittered position, size, colour and noise."""
    img = Image.new("RGB", (size, size), _jitter(motif.background, rng))
    d = ImageDraw.Draw(img)
    fg = _jitter(motif.foreground, rng)
    s = size * motif.scale * rng.uniform(0.8, 1.25)
    cx, cy = size * rng.uniform(0.35, 0.65), size * rng.uniform(0.35, 0.65)
    kind = motif.kind
    if kind == "rings":
        for r in np.arange(s * 0.4, size * 0.75, s * 0.45):
            d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fg, width=max(1, round(s * 0.15)))
    elif kind in ("stripes", "diagonal"):
        step, off = max(3.0, s * 0.6), rng.uniform(0, s)
        for k in range(-2 * size, 2 * size, max(1, round(step))):
            x = k + off
            line = [(x, 0), (x + size, size)] if kind == "diagonal" else [(0, x), (size, x)]
            d.line(line, fill=fg, width=max(1, round(step * 0.45)))
    elif kind == "dots":
        step, r = max(4.0, s * 0.7), max(1.0, s * 0.2)
        ox, oy = rng.uniform(0, step, 2)
        for x in np.arange(ox - step, size + step, step):
            for y in np.arange(oy - step, size + step, step):
                d.ellipse([x - r, y - r, x + r, y + r], fill=fg)
    elif kind == "checker":
        step = max(3, round(s * 0.8))
        ox, oy = rng.integers(0, step, 2)
        for i, x in enumerate(range(-step + int(ox), size, step)):
            for j, y in enumerate(range(-step + int(oy), size, step)):
                if (i + j) % 2 == 0:
                    d.rectangle([x, y, x + step - 1, y + step - 1], fill=fg)
    elif kind == "triangle":
        r, a = s * 1.8, rng.uniform(-0.3, 0.3)
        pts = [(cx + r * math.sin(a + k * 2 * math.pi / 3), cy - r * math.cos(a + k * 2 * math.pi / 3))
               for k in range(3)]
        d.polygon(pts, fill=fg)
    elif kind == "squares":
        for _ in range(int(rng.integers(8, 14))):
            x, y = rng.uniform(0, size, 2)
            w = s * rng.uniform(0.3, 0.6)
            d.rectangle([x - w, y - w, x + w, y + w], fill=_jitter(fg, rng, 30))
    elif kind == "cross":
        w, r = s * 0.45, s * 2.2
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fg)
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fg)
    elif kind == "waves":
        period, amp, phase = max(6.0, s * 1.5), s * 0.3, rng.uniform(0, 2 * math.pi)
        for y0 in np.arange(rng.uniform(0, s), size, s * 0.9):
            pts = [(x, y0 + amp * math.sin(phase + 2 * math.pi * x / period)) for x in range(0, size + 1, 2)]
            d.line(pts, fill=fg, width=max(1, round(s * 0.2)))
    elif kind == "star":
        r_out, a0 = s * 2.0, rng.uniform(0, math.pi)
        pts = [(cx + (r_out if k % 2 == 0 else r_out * 0.4) * math.cos(a0 + k * math.pi / 5),
                cy + (r_out if k % 2 == 0 else r_out * 0.4) * math.sin(a0 + k * math.pi / 5)) for k in range(10)]
        d.polygon(pts, fill=fg)
    elif kind == "ring_of_dots":
        r, dot = s * 1.7, max(1.5, s * 0.35)
        a0 = rng.uniform(0, 2 * math.pi)
        for k in range(8):
            x, y = cx + r * math.cos(a0 + k * math.pi / 4), cy + r * math.sin(a0 + k * math.pi / 4)
            d.ellipse([x - dot, y - dot, x + dot, y + dot], fill=fg)
    elif kind == "split":
        t = size * rng.uniform(0.4, 0.6)
        d.polygon([(0, t - s), (size, t + s), (size, size), (0, size)], fill=fg)
    else:
        raise ValueError(f"unknown motif kind {kind!r}: use one of {', '.join(KINDS)}")
    pixels = np.asarray(img, dtype=np.float32) + rng.normal(0.0, 8.0, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def make_text(rng: random.Random, words: list[str], sentences: int) -> str:
    out = []
    for _ in range(sentences):
        n = rng.randint(*WORDS_PER_SENTENCE)
        ws = [rng.choice(words) if rng.random() < TOPIC_SHARE else rng.choice(FILLER_WORDS) for _ in range(n)]
        out.append(" ".join(ws).capitalize() + ".")
    return " ".join(out)


def assign_splits(n_items: int, val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction {val_fraction} and test_fraction {test_fraction} must be in "
                         "[0, 1) and leave some training items")
    order = list(range(n_items))
    random.Random(f"split-{seed}").shuffle(order)
    n_test, n_val = round(n_items * test_fraction), round(n_items * val_fraction)
    splits = ["train"] * n_items
    for rank, i in enumerate(order):
        splits[i] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return splits


def generate_synthetic(out_dir: Path, n_items: int = 600, n_topics: int = 6, motifs_per_topic: int = 3,
                       image_size: int = 64, texts_per_item: int = 1, sentences_per_text: int = 3,
                       val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
                       image_format: str = "png") -> Path:
    """Write images/ and manifest.jsonl under out_dir; return the manifest's path.

    Topics and motifs are balanced (item k has topic k mod n_topics), then the order is shuffled.
    """
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image format {image_format!r} is not png or jpg")
    for name, value, low in (("n_items", n_items, 1), ("n_topics", n_topics, 1),
                             ("motifs_per_topic", motifs_per_topic, 1), ("image_size", image_size, 16),
                             ("texts_per_item", texts_per_item, 1), ("sentences_per_text", sentences_per_text, 1),
                             ("seed", seed, 0)):
        if value < low:
            raise ValueError(f"{name} is {value}: it must be at least {low}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    names = topic_names(n_topics)
    vocab = topic_vocabularies(n_topics, seed)
    motifs = make_motifs(n_topics, motifs_per_topic, seed)
    plan = [(k % n_topics, (k // n_topics) % motifs_per_topic) for k in range(n_items)]
    random.Random(f"order-{seed}").shuffle(plan)
    splits = assign_splits(n_items, val_fraction, test_fraction, seed)
    width = max(4, len(str(n_items - 1)))
    records = []
    for i, (topic, motif) in enumerate(plan):
        item_id = f"{i:0{width}d}"
        rel = f"images/{item_id}.{image_format}"
        img = render_motif(motifs[topic][motif], np.random.default_rng([seed, i]), image_size)
        if image_format == "png":
            img.save(out_dir / rel, format="PNG", optimize=False)
        else:
            img.save(out_dir / rel, format="JPEG", quality=92)
        rng = random.Random(f"text-{seed}-{i}")
        texts = [make_text(rng, vocab[names[topic]], sentences_per_text) for _ in range(texts_per_item)]
        records.append({"id": item_id, "image": rel, "texts": texts, "split": splits[i], "label": names[topic]})
    manifest = out_dir / "manifest.jsonl"
    write_jsonl(manifest, records)
    return manifest
