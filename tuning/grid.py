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


def parse_values(text: str, flag: str) -> list[float]:
    """'0,0.1,0.2' (a list) or '0:0.4:0.1' (start:stop:step, stop included) -> the values."""
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
        count = math.floor((stop - start) / step + 1e-9) + 1
        # Rounded so that 0.1 steps give 0.3, not 0.30000000000000004, in folder names.
        values = [round(start + i * step, 10) for i in range(count)]
    else:
        values = [weight(v, flag) for v in text.replace(",", " ").split()]
    if not values:
        raise ValueError(f"{flag} holds no value")
    if len(set(values)) < len(values):
        raise ValueError(f"{flag} {text}: a value is listed twice")
    return values


def product_grid(w_sym: list[float], w_img: list[float], w_text: list[float]) -> list[Triple]:
    return [Weights(*t) for t in itertools.product(w_sym, w_img, w_text)]


def format_triple(triple: Sequence[float]) -> str:
    """Weights.shown of a triple the sweep read back as a plain list or tuple."""
    return Weights(*triple).shown()
