"""retrieve.py's HTML page: thumbnails copied beside it, scores, the ground truth marked."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw

from data.images import to_rgb
from data.workdir import atomic_write
from evaluation.search import QueryResult

THUMBS = "thumbs"
STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
section { border-top: 1px solid #ccc; padding: 0.5em 0 1em; }
.query img { max-height: 160px; border: 1px solid #888; }
.hits { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: var(--w); border: 3px solid transparent; padding: 2px; }
figure.correct { border-color: #1a9e3a; background: #e9f7ec; }
figure img { width: 100%; display: block; }
figcaption { font-size: 12px; overflow-wrap: anywhere; }
.truth { color: #555; }
"""


def fit(path: str, size: int) -> Image.Image:
    """The image scaled, up or down, to fit a size x size square, aspect ratio kept."""
    with Image.open(path) as img:
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


def _query_block(result: QueryResult, thumbs: Thumbnails) -> str:
    if result.kind == "image":
        return (f'<div class="query"><img src="{html.escape(thumbs(result.query))}" alt="query">'
                f"<div>{html.escape(result.query)}</div></div>")
    return f'<div class="query"><q>{html.escape(result.query)}</q></div>'


def write_page(out_dir: str | Path, results: Sequence[QueryResult], sheets: Sequence[str],
               thumbs: Thumbnails, title: str) -> Path:
    """index.html in out_dir: one section per query; `sheets` are the contact sheets' relative
    paths, one per query."""
    out_dir = Path(out_dir)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{STYLE}</style></head><body style='--w: {thumbs.size}px'>",
             f"<h1>{html.escape(title)}</h1>"]
    for n, (result, sheet) in enumerate(zip(results, sheets), 1):
        target = "images" if result.kind == "text" else "texts"
        parts.append(f"<section><h2>query {n}: {result.kind} &rarr; {target}</h2>")
        parts.append(_query_block(result, thumbs))
        parts.append(f'<p class="truth">{html.escape(result.truth)} &middot; '
                     f'<a href="{html.escape(sheet)}">contact sheet</a></p><div class="hits">')
        for hit in result.hits:
            mark = " &#10003; ground truth" if hit.correct else ""
            parts.append(f'<figure class="{"correct" if hit.correct else ""}">'
                         f'<img src="{html.escape(thumbs(hit.image))}" alt="rank {hit.rank}">'
                         f"<figcaption><b>#{hit.rank}</b> {hit.score:.3f}{mark}<br>"
                         f"{html.escape(hit.label)}</figcaption></figure>")
        parts.append("</div></section>")
    parts.append("</body></html>")
    page = out_dir / "index.html"
    text = "\n".join(parts) + "\n"
    atomic_write(page, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return page
