"""The weights of the objective's three neighbourhood terms, (w_sym, w_img, w_text), as one type:
the trainer's positional arguments, the log folder's name, the sweep's grid point. A NamedTuple,
so a triple still compares, hashes and indexes as the plain tuple the sweep and its JSON hold."""
from __future__ import annotations

import argparse
import math
from typing import NamedTuple, Sequence

NAMES = ("w_sym", "w_img", "w_text")    # the trainer's positional arguments, in order


def exact_number(w: float) -> str:
    """The shortest text that reads back as exactly `w`: '0.3' for 0.3, '0.3000001' where %g
    would round it to '0.3' (and two sweep runs would share a folder)."""
    short = f"{w:g}"
    return short if float(short) == w else repr(float(w))


def weight(text: str, what: str) -> float:
    """One weight read from the command line: a finite number, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what}: {text!r} is not a finite number")
    if value < 0:
        raise ValueError(f"{what}: {text} is negative: every weight must be 0 or more")
    return value


class Weights(NamedTuple):
    sym: float      # L_sym: text -> its image
    img: float      # L_img: image -> a text-neighbour's image
    text: float     # L_text: text -> a neighbour's text

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Weights":
        return cls(*(getattr(args, name) for name in NAMES))

    @classmethod
    def parse(cls, fields: Sequence[str], what: str) -> "Weights":
        """Three numbers of a --grid entry (their count is the caller's to check)."""
        return cls(*(weight(f, what) for f in fields))

    def check(self) -> None:
        for name, w in zip(NAMES, self):
            if w < 0:
                raise ValueError(f"{name} must be >= 0, got {w}")

    def zeroed(self) -> "Weights":
        """The validation loss's weights: L_i2t alone, as the release computes it."""
        return type(self)(0.0, 0.0, 0.0)

    def shown(self) -> str:
        """(1.0, 0.3, 0.0) -> '1 0.3 0', as the trainer's command line takes it; each weight exact
        (0.3000001 stays 0.3000001), so two triples never print alike."""
        return " ".join(map(exact_number, self))

    def run_name(self) -> str:
        """The authors' log folder name: l_i2t_l_sym_1_l_img_0_3_l_text_0_2 for 1 0.3 0.2; every
        weight written exactly, so two weights never share a folder."""
        f = lambda w: exact_number(w).replace(".", "_")  # noqa: E731
        return f"l_i2t_l_sym_{f(self.sym)}_l_img_{f(self.img)}_l_text_{f(self.text)}"

    def negatives_problem(self, batch_size: int, negatives: str) -> str | None:
        """Why a loss term would have no negative at this batch size, or None. Checked at parse
        time: such a run logs a loss of 0 and marks it best while it trains nothing."""
        if batch_size >= 2:
            return None
        if negatives == "clean":
            return (f"--batch-size {batch_size} with --negatives clean: a batch of one row has no "
                    "other image, so no term has a negative and nothing trains: pass --batch-size 2 "
                    "or more")
        terms = [name for name, w in (("L_sym (w_sym)", self.sym), ("L_img (w_img)", self.img))
                 if w > 0]
        if terms:
            return (f"--batch-size {batch_size}: the only image of a batch of one is the anchor's "
                    f"own, so {' and '.join(terms)} would have no negative: pass --batch-size 2 or "
                    "more")
        return None
