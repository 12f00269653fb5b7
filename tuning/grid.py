"""The weight triples (w_sym, w_img, w_text) of a sweep: a list, or a product of ranges."""
from __future__ import annotations

import itertools
import math
from typing import Sequence

from losses.weights import Weights, weight

Triple = Weights
BASELINE = Weights(1.0, 0.0, 0.0)


def parse_grid(text: str) -> list[Triple]:
    """'1 0 0; 1 0.3 0.2' -> [(1, 0, 0), (1, 0.3, 0.2)]: triples separated by ';' (or new
    lines), each three numbers w_sym w_img w_text separated by spaces or commas."""
    triples: list[Triple] = []
    for n, part in enumerate(text.replace("\n", ";").split(";"), 1):
        fields = part.replace(",", " ").split()
        if not fields:
            continue
        if len(fields) != 3:
            raise ValueError(f"--grid triple {n} ({part.strip()!r}) has {len(fields)} numbers: "
                             "give three, W_SYM W_IMG W_TEXT")
        triple = Weights.parse(fields, f"--grid triple {n}")
        if triple in triples:
            raise ValueError(f"--grid lists {format_triple(triple)} twice: list each triple once")
        triples.append(triple)
    if not triples:
        raise ValueError("--grid holds no triple: give e.g. --grid '1 0 0; 1 0.3 0.2'")
    return triples


def parse_values(text: str, flag: str, limit: int | None = None) -> list[float]:
    """'0,0.1,0.2' (a list) or '0:0.4:0.1' (start:stop:step, stop included) -> the values.
    A range of more than `limit` values is refused before any is made (its count is
    arithmetic: 0:1:1e-300 would otherwise build 1e300 floats)."""
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"{flag} {text}: a range is START:STOP:STEP")
        start, stop = weight(parts[0], flag), weight(parts[1], flag)
        try:
            step = float(parts[2])
        except ValueError:
            raise ValueError(f"{flag} {text}: step {parts[2]!r} is not a number") from None
        if not step > 0 or stop < start:
            raise ValueError(f"{flag} {text}: a range needs STEP > 0 and STOP >= START")
        span = (stop - start) / step
        count = math.floor(span + 1e-9) + 1 if math.isfinite(span) else math.inf
        if limit is not None and count > limit:
            shown = "over 1e308" if count == math.inf else f"{count:.3g}" if count > 1e12 else str(count)
            raise TooMany(f"{flag} {text}: the range holds {shown} values, more than the "
                          f"--max-runs {limit} a sweep may plan (every value is a trained run "
                          "per seed): give a larger STEP, or pass a larger --max-runs")
        # Rounded so that 0.1 steps give 0.3, not 0.30000000000000004, in folder names.
        values = [round(start + i * step, 10) for i in range(count)]
    else:
        values = [weight(v, flag) for v in text.replace(",", " ").split()]
    if not values:
        raise ValueError(f"{flag} holds no value")
    if len(set(values)) < len(values):
        raise ValueError(f"{flag} {text}: a value is listed twice")
    return values


class TooMany(ValueError):
    """A grid or plan past the sweep's --max-runs."""


def product_grid(w_sym: list[float], w_img: list[float], w_text: list[float]) -> list[Triple]:
    return [Weights(*t) for t in itertools.product(w_sym, w_img, w_text)]


def format_triple(triple: Sequence[float]) -> str:
    """Weights.shown of a triple the sweep read back as a plain list or tuple."""
    return Weights(*triple).shown()
