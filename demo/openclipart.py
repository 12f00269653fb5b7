"""The Open Clip Art Library (public domain) as Debian packages it, as a JSONL manifest.

`openclipart-png` holds the pictures and `openclipart-svg` the same drawings as SVG, whose RDF
metadata gives a title, a description and keywords: the item's text. Both packages share one
folder tree, usr/share/openclipart/{png,svg}/<category>/.../<name>.{png,svg}; the top-level
category is the item's label. Pictures are resized once into the cache; items unfit for
retrieval are left out and counted by reason.
"""
from __future__ import annotations

import json
import os
import random
import re
import time
import warnings
import xml.parsers.expat as expat
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from common.errors import InputError
from common.records import read_json
from data.datasets.readers import read_jsonl, write_jsonl
from data.text.preprocess import preprocess
from demo.debian import FetchError, fetch_packages
from demo.synthetic import assign_splits

STAMP = "openclipart_build.json"
UNLABELLED = {"unsorted"}        # a folder that names no category

DUPLICATE = "duplicate (link to another picture)"
MISSING_PAIR = "missing pair (png without svg or svg without png)"
UNREADABLE_SVG = "unreadable svg"
NO_TEXT = "no text (no word the text preprocessing keeps)"
GENERATED = "generated art"
BOILERPLATE = "boilerplate text (same text as many other pictures)"
UNREADABLE_PNG = "unreadable png"
TOO_BIG = "too big to decode"
TOO_SMALL = "too small"
BLANK = "blank picture"
NOT_TAKEN = "not taken (--limit)"

MIN_SIDE = 16         # a few flags are 3x2 pixels: nothing to see
BLANK_RANGE = 8       # grey levels: less spread than this over the picture means nothing is drawn
# Families made by a program, not drawn: ImageMagick star polygrams (1375 near-identical
# pictures, all titled "gramastar") and colour-gradient swatches (their PNGs are empty).
GENERATED_TITLES = (re.compile(r"gramastar$"), re.compile(r"svg gradient collection"))

# The library's export tool leaked Perl hash references: a keyword "hash" on thousands of
# drawings and "HASH(0x85a4f2c)" in some descriptions.
PERL_HASH = re.compile(r"HASH\(0x[0-9a-fA-F]+\)")

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns# "
DC = "http://purl.org/dc/elements/1.1/ "
CC = "http://web.resource.org/cc/ "


@dataclass(frozen=True)
class SvgText:
    title: str
    description: str
    keywords: tuple[str, ...]


@dataclass
class BuildReport:
    manifest: str
    kept: int
    skipped: dict[str, int]
    examples: dict[str, list[str]]
    labels: dict[str, int]
    splits: dict[str, int]
    seconds: float
    reused: bool = False

    def lines(self) -> list[str]:
        total = self.kept + sum(self.skipped.values())
        out = [f"kept {self.kept} of {total} pictures ({self.seconds:.0f}s): "
               + ", ".join(f"{s} {n}" for s, n in self.splits.items())]
        for reason, n in sorted(self.skipped.items(), key=lambda kv: -kv[1]):
            out.append(f"  skipped {n:5d}  {reason}: e.g. {', '.join(self.examples[reason])}")
        out.append(f"{len(self.labels)} categories: " + ", ".join(f"{k} {v}" for k, v in self.labels.items()))
        return out


@dataclass
class Skips:
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, example: str) -> None:
        self.counts[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < 3:
            shown.append(example)


class _MetadataEnd(Exception):
    pass


def read_svg_text(path: Path) -> SvgText:
    """Title, description and keywords from an SVG's RDF metadata (dc:title, dc:description,
    dc:subject); empty strings where absent.

    Parsed with expat, stopping at </metadata>. Like defusedxml: external entities are never
    fetched, and entity declarations are refused unless plain text (Illustrator declares its
    namespaces so), which rules out nested-entity expansion bombs. Raises ValueError when unreadable.
    """
    parser = expat.ParserCreate(namespace_separator=" ")
    stack: list[str] = []
    text: list[str] = []
    found: dict[str, list[str]] = {"title": [], "description": [], "keywords": []}

    def entity_declaration(name, is_parameter, value, base, system_id, public_id, notation):
        if is_parameter or system_id or public_id or notation or value is None or "&" in value:
            raise ValueError(f"entity {name!r} refused")

    def start(tag, attrs):
        stack.append(tag)
        text.clear()

    def end(tag):
        content = " ".join("".join(text).split())
        text.clear()
        parent = stack[-2] if len(stack) > 1 else ""
        if parent != CC + "Agent":       # an Agent's dc:title is a person or a licence
            if tag == DC + "title":
                found["title"].append(content)
            elif tag == DC + "description":
                found["description"].append(content)
            elif tag == RDF + "li" and DC + "subject" in stack or tag == DC + "subject":
                found["keywords"].append(content)
        stack.pop()
        if tag.endswith(" metadata"):
            raise _MetadataEnd

    parser.EntityDeclHandler = entity_declaration
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    try:
        with open(path, "rb") as f:
            parser.ParseFile(f)
    except _MetadataEnd:
        pass
    except (expat.ExpatError, OSError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    keywords = tuple(dict.fromkeys(k for k in found["keywords"] if k))
    return SvgText(next((t for t in found["title"] if t), ""),
                   next((t for t in found["description"] if t), ""), keywords)


def compose_text(meta: SvgText) -> str:
    """Title, keywords, then description, one sentence each.

    Keywords come before the (often long) description so that a pipeline keeping the first two
    sentences still sees them.
    """
    keywords = [k for k in meta.keywords if k.lower() != "hash"]
    parts = [meta.title, ", ".join(keywords), meta.description]
    parts = [PERL_HASH.sub(" ", p) for p in parts]
    return " ".join(p if p[-1] in ".!?" else p + "." for p in (" ".join(p.split()) for p in parts) if p)


def generated_family(meta: SvgText) -> bool:
    title = meta.title.lower().strip()
    return any(p.match(title) for p in GENERATED_TITLES)


def resize_picture(task: tuple[str, str, int, int]) -> str | None:
    """Resize one picture into the cache as RGB on white; None when kept, else the skip reason.

    The pixel count is checked from the header before decoding, so a worker never holds more
    than about 12 bytes per allowed pixel. A picture already in the cache is reused.
    """
    src, dst, max_side, max_pixels = task
    if os.path.exists(dst):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(src) as im:
                w, h = im.size
                if w * h > max_pixels:
                    return TOO_BIG
                if min(w, h) < MIN_SIDE:
                    return TOO_SMALL
                rgba = im.convert("RGBA")
        # Many are whole pages with a small drawing on them: keep the drawn area and a margin.
        box = rgba.getchannel("A").getbbox()
        if box is None:
            return BLANK
        pad = round(0.03 * max(box[2] - box[0], box[3] - box[1]))
        rgba = rgba.crop((max(0, box[0] - pad), max(0, box[1] - pad), min(w, box[2] + pad), min(h, box[3] + pad)))
        # Pillow resizes RGBA premultiplied, so transparent pixels' colours do not bleed in.
        rgba.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
        rgb = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb.alpha_composite(rgba)
        rgb = rgb.convert("RGB")
    except Image.DecompressionBombError:
        return TOO_BIG
    except (OSError, ValueError, SyntaxError, EOFError):
        return UNREADABLE_PNG
    lo, hi = rgb.convert("L").getextrema()
    if hi - lo < BLANK_RANGE:
        return BLANK
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = f"{dst}.{os.getpid()}.tmp"
    rgb.save(tmp, format="PNG")
    os.replace(tmp, dst)
    return None


def scan(root: Path, skips: Skips) -> list[tuple[str, str]]:
    """(relative path without suffix, text) of every picture with a usable text, sorted."""
    png_root, svg_root = root / "png", root / "svg"
    if not png_root.is_dir() or not svg_root.is_dir():
        raise InputError(f"{root}: no png/ and svg/ folders: pass the unpacked "
                           "usr/share/openclipart folder (or leave --root out to download it)")
    pngs = sorted(png_root.rglob("*.png"))
    rels = set()
    found = []
    for png in pngs:
        rel = png.relative_to(png_root).with_suffix("").as_posix()
        rels.add(rel)
        if png.is_symlink() and png.resolve().is_file():
            skips.add(DUPLICATE, f"png/{rel}.png")
            continue
        svg = svg_root / f"{rel}.svg"
        if not svg.is_file():
            skips.add(MISSING_PAIR, f"png/{rel}.png")
            continue
        try:
            meta = read_svg_text(svg)
        except ValueError:
            skips.add(UNREADABLE_SVG, f"svg/{rel}.svg")
            continue
        text = compose_text(meta)
        if not preprocess(text, max_sentences=None, max_chars=None):     # e.g. "Cd. computer."
            skips.add(NO_TEXT, f"svg/{rel}.svg")
        elif generated_family(meta):
            skips.add(GENERATED, f"svg/{rel}.svg ({meta.title})")
        else:
            found.append((rel, text))
    for svg in sorted(svg_root.rglob("*.svg")):
        rel = svg.relative_to(svg_root).with_suffix("").as_posix()
        if rel not in rels and not svg.is_symlink():
            skips.add(MISSING_PAIR, f"svg/{rel}.svg")
    return found


def drop_boilerplate(found: list[tuple[str, str]], max_shared: int, skips: Skips) -> list[tuple[str, str]]:
    """Leave out texts shared verbatim by more than max_shared pictures (icon themes titled
    with the theme's name, card decks): such a text tells its pictures apart from nothing."""
    key = lambda text: " ".join(text.lower().split())
    counts = Counter(key(t) for _, t in found)
    kept = []
    for rel, text in found:
        if counts[key(text)] > max_shared:
            skips.add(BOILERPLATE, f"{rel} ({text[:40]!r} x{counts[key(text)]})")
        else:
            kept.append((rel, text))
    return kept


def resize_all(found: list[tuple[str, str]], root: Path, resized: Path, max_side: int, max_pixels: int,
               workers: int, limit: int | None, seed: int, skips: Skips) -> list[tuple[str, str]]:
    """Resize every found picture, or with `limit` seeded picks until that many are kept."""
    order = list(found)
    if limit is not None:
        random.Random(f"limit-{seed}").shuffle(order)
    want = len(order) if limit is None else min(limit, len(order))
    kept: list[tuple[str, str]] = []
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        with tqdm(total=want, desc="resizing pictures", unit="picture", mininterval=1.0) as bar:
            while len(kept) < want and order:
                batch, order = order[:want - len(kept)], order[want - len(kept):]
                tasks = [(str(root / "png" / f"{rel}.png"), str(resized / f"{rel}.png"), max_side, max_pixels)
                         for rel, _ in batch]
                results = pool.map(resize_picture, tasks, chunksize=16) if pool else map(resize_picture, tasks)
                for (rel, text), reason in zip(batch, results):
                    if reason is None:
                        kept.append((rel, text))
                    else:
                        skips.add(reason, f"png/{rel}.png")
                        if limit is not None and order:     # another picture will be tried
                            bar.total += 1
                    bar.update()
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    for rel, _ in order:
        skips.add(NOT_TAKEN, rel)
    return sorted(kept)


def build_openclipart(out_dir: Path, root: Path | None = None, cache: Path | None = None,
                      max_side: int = 256, seed: int = 0, workers: int = 1, limit: int | None = None,
                      max_pixels: int = 40_000_000, max_shared_text: int = 20,
                      val_fraction: float = 0.1, test_fraction: float = 0.1) -> BuildReport:
    """Build out_dir/manifest.jsonl from the unpacked packages at `root` (None: download them
    into `cache`, default out_dir/cache). Resized pictures go to cache/png-<max_side>/.
    A finished build with the same settings whose pictures are all there is reused. With
    `limit`, the picture checks (size, blank, ...) are counted only over the pictures tried."""
    out_dir = Path(out_dir)
    cache = Path(cache) if cache is not None else out_dir / "cache"
    if max_side < MIN_SIDE or max_pixels < 1 or max_shared_text < 1 or (limit is not None and limit < 1):
        raise ValueError(f"max_side must be at least {MIN_SIDE}, max_pixels, max_shared_text and "
                         "limit at least 1")
    params = dict(root=str(root.resolve()) if root else None, cache=str(cache.resolve()),
                  max_side=max_side, seed=seed, limit=limit, max_pixels=max_pixels,
                  max_shared_text=max_shared_text, val_fraction=val_fraction, test_fraction=test_fraction)
    manifest, stamp = out_dir / "manifest.jsonl", out_dir / STAMP
    if manifest.exists() and stamp.exists():
        done = read_json(stamp, "remove it: the dataset is built again")
        if done.get("params") == params and all(os.path.isfile(it.image) for it in read_jsonl(manifest)):
            return BuildReport(**{**done["report"], "reused": True})
    stamp.unlink(missing_ok=True)
    start = time.time()
    if root is None:
        root = fetch_packages(cache)
    skips = Skips()
    found = drop_boilerplate(scan(Path(root), skips), max_shared_text, skips)
    kept = resize_all(found, Path(root), cache / f"png-{max_side}", max_side, max_pixels, workers,
                      limit, seed, skips)
    if not kept:
        raise InputError(f"{root}: no usable picture (skipped: {dict(skips.counts)})")
    splits = assign_splits(len(kept), val_fraction, test_fraction, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels: Counter = Counter()
    records = []
    for (rel, text), split in zip(kept, splits):
        category = rel.split("/", 1)[0]
        rec = {"id": rel, "image": os.path.relpath(cache / f"png-{max_side}" / f"{rel}.png", out_dir),
               "texts": [text], "split": split}
        if "/" in rel and category not in UNLABELLED:
            rec["label"] = category
            labels[category] += 1
        records.append(rec)
    write_jsonl(manifest, records)
    report = BuildReport(str(manifest), len(kept), dict(skips.counts), skips.examples,
                         dict(sorted(labels.items())), dict(Counter(splits)), time.time() - start)
    stamp.write_text(json.dumps({"params": params, "report": asdict(report)}, indent=1) + "\n")
    return report
