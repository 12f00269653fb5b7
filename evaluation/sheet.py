"""A PNG contact sheet of one query's results: the query on top, then the hits in rank order,
captioned with rank and score; ground-truth hits are framed in green."""
from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from data.workdir import atomic_write
from evaluation.html import Thumbnails
from evaluation.search import QueryResult

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
    wrapped = textwrap.wrap(" ".join(text.split()), chars) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][:chars - 3] + "..."
    return wrapped


def contact_sheet(result: QueryResult, thumbs: Thumbnails, dest: str | Path) -> Path:
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
