"""retrieve.py's output: the queries, their results, an HTML page and a PNG contact sheet each.

Queries are read and preprocessed like the training texts and matched to the split for the
ground truth; the page and the sheets show thumbnails copied beside them, scores, and the
ground truth marked (framed in green on the sheets).
"""
from __future__ import annotations

import html
import os
import textwrap
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from common.errors import InputError, quoted, shown
from common.files import NotRegularFile, kind_of, open_regular
from common.workdir import atomic_write
from data.images.read import to_rgb
from data.text.preprocess import preprocess
from evaluation.split import EvalSplit
from models import Vocabulary


@dataclass
class Hit:
    rank: int               # 1-based
    score: float            # cosine similarity
    image: str              # the image shown: the hit itself, or the image of a retrieved text
    label: str              # item id, and the text for a retrieved text
    correct: bool           # ground truth: the query's own image or one of its texts


@dataclass
class QueryResult:
    kind: str               # "text" (-> images) or "image" (-> texts)
    query: str              # the text, or the image file
    truth: str              # what the ground truth is, or why there is none
    hits: list[Hit] = field(default_factory=list)


def _text(s: str) -> str:
    """Text for the page: HTML-escaped, and control characters (NUL, ESC, ...) and unpaired
    surrogates, which HTML cannot hold, shown as escapes."""
    return html.escape("".join(c if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cs")
                               else repr(c)[1:-1] for c in s))


# --- queries ----------------------------------------------------------------------------------

def read_query_file(path: str | Path) -> list[str]:
    """One query per line; blank lines are skipped."""
    path = Path(path)
    try:
        with open_regular(path, "r", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        why = f"it is {kind_of(e)}" if isinstance(e, NotRegularFile) else type(e).__name__
        raise InputError(f"{path}: cannot read the queries file ({why}): pass a "
                         "UTF-8 text file with one query per line") from None
    queries = [line.strip() for line in lines if line.strip()]
    if not queries:
        raise InputError(f"{path}: the queries file holds no query: write one per line")
    return queries


def query_tokens(queries: Sequence[str], vocab: Vocabulary, max_sentences: int | None,
                 max_chars: int | None, keep_unicode: bool = False) -> list[list[str]]:
    """Each query's tokens, preprocessed as the training texts; a query the model cannot see
    (no token at all, or none in its vocabulary) is an error naming it."""
    out = []
    for n, query in enumerate(queries, 1):
        tokens = preprocess(query, max_sentences or None, max_chars, keep_unicode)
        if not tokens:
            raise InputError(f"query {n} {quoted(query)} leaves no token after preprocessing (stop "
                             "words and words under 3 letters are dropped): use content words")
        if not any(t in vocab for t in tokens):
            raise InputError(f"query {n} {quoted(query)}: none of its words "
                             f"({shown(' '.join(tokens[:8]))}) "
                             f"is in the model's vocabulary of {len(vocab.words)} words: use "
                             "words that occur in the training texts")
        out.append(tokens)
    return out


def normal_text(text: str) -> str:
    """The form in which a query matches a split text: whitespace and case aside."""
    return " ".join(text.split()).lower()


def images_by_text(split: EvalSplit) -> dict[str, set[int]]:
    """normal_text of each split text -> the images it belongs to (one text may recur)."""
    out: dict[str, set[int]] = {}
    for t, text in enumerate(split.texts):
        out.setdefault(normal_text(text), set()).add(int(split.text_image[t]))
    return out


def image_by_path(split: EvalSplit) -> dict[str, int]:
    """Resolved file path of each split image -> its index."""
    return {os.path.realpath(p): i for i, p in enumerate(split.image_paths)}


# --- thumbnails -------------------------------------------------------------------------------

THUMBS = "thumbs"


def fit(path: str, size: int) -> Image.Image:
    """The image scaled, up or down, to fit a size x size square, aspect ratio kept."""
    with open_regular(path) as f, Image.open(f) as img:
        img.draft("RGB", (size, size))  # JPEG: let the decoder downscale by 2^n first
        img = to_rgb(img)
    scale = size / max(img.width, img.height)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                      Image.LANCZOS)


class Thumbnails:
    """Resized copies of images under out_dir/thumbs/, each written once; src paths are relative
    to out_dir, so the page can be moved or shared with its folder."""

    def __init__(self, out_dir: Path, size: int):
        self.out_dir, self.size = Path(out_dir), size
        self.rel: dict[str, str] = {}
        (self.out_dir / THUMBS).mkdir(parents=True, exist_ok=True)

    def __call__(self, source: str) -> str:
        if source not in self.rel:
            rel = f"{THUMBS}/{len(self.rel):05d}.jpg"
            try:
                img = fit(source, self.size)
            except Exception:  # noqa: BLE001 - an unreadable gallery file still gets a tile
                img = Image.new("RGB", (self.size, self.size), (200, 200, 200))
                ImageDraw.Draw(img).text((4, 4), "unreadable", fill=(90, 0, 0))
            atomic_write(self.out_dir / rel, lambda tmp: img.save(tmp, format="JPEG", quality=85))
            self.rel[source] = rel
        return self.rel[source]

    def path(self, source: str) -> Path:
        return self.out_dir / self(source)


# --- the HTML page ----------------------------------------------------------------------------

STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
section { border-top: 1px solid #ccc; padding: 0.5em 0 1em; }
.query img { max-height: 160px; border: 1px solid #888; }
/* Every tile the same box, each picture contained in a square of it whatever its shape, so a
   tall or wide picture never moves the others and the columns line up. */
.hits { display: grid; grid-template-columns: repeat(auto-fill, calc(var(--w) + 10px)); gap: 10px; }
figure { margin: 0; border: 3px solid transparent; padding: 2px; min-width: 0; }
figure.correct { border-color: #1a9e3a; background: #e9f7ec; }
figure img { width: var(--w); height: var(--w); object-fit: contain; display: block; background: #f3f3f3; }
figcaption { font-size: 12px; overflow-wrap: anywhere; }
.truth { color: #555; }
"""


def _query_block(result: QueryResult, thumbs: Thumbnails) -> str:
    if result.kind == "image":
        return (f'<div class="query"><img src="{html.escape(thumbs(result.query))}" alt="query">'
                f"<div>{_text(result.query)}</div></div>")
    return f'<div class="query"><q>{_text(result.query)}</q></div>'


def write_page(out_dir: str | Path, results: Sequence[QueryResult], sheets: Sequence[str],
               thumbs: Thumbnails, title: str) -> Path:
    """index.html in out_dir: one section per query; `sheets` are the contact sheets' relative
    paths, one per query."""
    out_dir = Path(out_dir)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_text(title)}"
             f"</title><style>{STYLE}</style></head><body style='--w: {thumbs.size}px'>",
             f"<h1>{_text(title)}</h1>"]
    for n, (result, sheet) in enumerate(zip(results, sheets), 1):
        target = "images" if result.kind == "text" else "texts"
        parts.append(f"<section><h2>query {n}: {result.kind} &rarr; {target}</h2>")
        parts.append(_query_block(result, thumbs))
        parts.append(f'<p class="truth">{_text(result.truth)} &middot; '
                     f'<a href="{html.escape(sheet)}">contact sheet</a></p><div class="hits">')
        for hit in result.hits:
            mark = " &#10003; ground truth" if hit.correct else ""
            parts.append(f'<figure class="{"correct" if hit.correct else ""}">'
                         f'<img src="{html.escape(thumbs(hit.image))}" alt="rank {hit.rank}">'
                         f"<figcaption><b>#{hit.rank}</b> {hit.score:.3f}{mark}<br>"
                         f"{_text(hit.label)}</figcaption></figure>")
        parts.append("</div></section>")
    parts.append("</body></html>")
    page = out_dir / "index.html"
    text = "\n".join(parts) + "\n"
    atomic_write(page, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return page


# --- the contact sheet ------------------------------------------------------------------------

COLUMNS = 5
PAD = 8
LINE = 14
GREEN = (26, 158, 58)


def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow before 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _wrap(text: str, width_px: int, lines: int) -> list[str]:
    chars = max(8, width_px // 6)   # about 6 px per character at size 11
    wrapped = textwrap.wrap(shown(" ".join(text.split()), len(text)), chars) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][:chars - 3] + "..."
    return wrapped


def contact_sheet(result: QueryResult, thumbs: Thumbnails, dest: str | Path) -> Path:
    """A PNG of one query's results: the query on top, then the hits in rank order, captioned
    with rank and score; ground-truth hits are framed in green."""
    size, font = thumbs.size, _font()
    caption_lines = 2 if result.kind == "text" else 4   # text hits show their text
    cols = max(1, min(COLUMNS, len(result.hits)))
    rows = -(-len(result.hits) // cols)
    width = PAD + cols * (size + PAD)
    if result.kind == "image":
        query_lines = _wrap(Path(result.query).name, width - size - 3 * PAD, 2)
        header = size + 2 * PAD
    else:
        query_lines = _wrap(result.query, width - 2 * PAD, 4)
        header = PAD + LINE * (len(query_lines) + 1) + PAD
    cell = size + LINE * caption_lines + PAD
    sheet = Image.new("RGB", (width, header + rows * cell + PAD), "white")
    draw = ImageDraw.Draw(sheet)

    if result.kind == "image":
        with Image.open(thumbs.path(result.query)) as q:
            sheet.paste(q, (PAD, PAD))
        for i, line in enumerate(["query image:", *query_lines]):
            draw.text((2 * PAD + size, PAD + i * LINE), line, fill="black", font=font)
    else:
        for i, line in enumerate(["query text:", *query_lines]):
            draw.text((PAD, PAD + i * LINE), line, fill="black", font=font)

    for n, hit in enumerate(result.hits):
        x = PAD + (n % cols) * (size + PAD)
        y = header + (n // cols) * cell
        with Image.open(thumbs.path(hit.image)) as img:
            sheet.paste(img, (x + (size - img.width) // 2, y + (size - img.height) // 2))
        if hit.correct:
            draw.rectangle([x - 3, y - 3, x + size + 2, y + size + 2], outline=GREEN, width=3)
        caption = [f"#{hit.rank}   {hit.score:.3f}{'   ground truth' if hit.correct else ''}"]
        caption += _wrap(hit.label, size, caption_lines - 1)
        for i, line in enumerate(caption):
            draw.text((x, y + size + 2 + i * LINE), line, font=font,
                      fill=GREEN if hit.correct and i == 0 else "black")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, lambda tmp: sheet.save(tmp, format="PNG"))
    return dest
