"""What the two benchmarks share."""
from __future__ import annotations

import json
from pathlib import Path


def save(results: dict, out: str | None) -> None:
    """Written after every stage, so that a run cut short still leaves what it measured."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=2, default=str))


def report(results: dict, text: str, out: str | None) -> None:
    """Print the table; with `out`, the results as JSON there and the table beside it (.md)."""
    print(text)
    save(results, out)
    if out:
        Path(out).with_suffix(".md").write_text(text + "\n")
        print(f"wrote {out} and {Path(out).with_suffix('.md')}")
