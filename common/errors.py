"""The project-wide input error and how a message quotes what the user gave."""
from __future__ import annotations


class InputError(ValueError):
    """Bad input: the message is one line naming the file or item and the fix."""


QUOTE_LIMIT = 80    # characters of a quoted input a message shows


def shown(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text` as a message or a terminal line may show it: characters that are not printable
    (newlines, escape sequences, bidirectional overrides) escaped, so that one input cannot
    break the line or take over the terminal, and cut after `limit` characters, the full
    length said."""
    s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text)[:limit])
    return s if len(str(text)) <= limit else f"{s}... ({len(str(text))} characters)"


def quoted(text: str, limit: int = QUOTE_LIMIT) -> str:
    """shown(text) in quotes: for a value a message names (an id, a query)."""
    return f"'{shown(text, limit)}'"
