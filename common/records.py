"""Records the project writes as JSON or inside pickles and reads back (feature records,
provenance, exported configs, checkpoints' configs, sweep markers), checked against one schema
each when read.

A record edited by hand, cut short or written by another version would otherwise fail far from
where it was read, as a KeyError or an IndexError. A schema maps each required field to a rule;
`check` returns the record or raises one InputError naming the file, the field, what is wrong
and the command that remakes the file.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from common.errors import InputError, shown
from common.files import NotRegularFile, kind_of, open_regular

# A rule takes the value and returns None when it is fine, else what is wrong in a few words.
Rule = Callable[[object], "str | None"]


def _type_name(types: tuple[type, ...]) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
             list: "a list", dict: "an object", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def of(*types: type, check: Callable[[object], bool] | None = None, want: str = "") -> Rule:
    """A value of one of `types` (bool is not taken for a number, an int is for a float),
    for which `check` (when given) holds; `want` says what `check` asks for."""
    def rule(value: object) -> str | None:
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok and float in types and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            return f"is {_describe(value)}, not {_type_name(types)}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"is {value}, not a finite number"
        if check is not None and not check(value):
            return f"is {shown(repr(value), 60)}, not {want}"
        return None
    return rule


def whole(low: int = 0) -> Rule:
    return of(int, check=lambda v: v >= low, want=f"a whole number of at least {low}")


def optional(rule: Rule) -> Rule:
    return lambda value: None if value is None else rule(value)


def one_of(*choices: object) -> Rule:
    return lambda value: None if value in choices else \
        f"is {shown(repr(value), 60)}, not one of {', '.join(map(repr, choices))}"


def list_of(rule: Rule, length: int | None = None) -> Rule:
    def check_list(value: object) -> str | None:
        if not isinstance(value, list):
            return f"is {_describe(value)}, not a list"
        if length is not None and len(value) != length:
            return f"has {len(value)} entries, not {length}"
        for i, v in enumerate(value):
            wrong = rule(v)
            if wrong:
                return f"entry {i} {wrong}"
        return None
    return check_list


def _describe(value: object) -> str:
    if value is None:
        return "null"
    return _type_name((type(value),)) if type(value) in (bool, int, float, str, list, dict) \
        else type(value).__name__


def problem(record: object, schema: Mapping[str, Rule | Mapping], prefix: str = "") -> str | None:
    """The first thing wrong with `record` against `schema` ("field 'a.b' is missing"), or None.
    A nested Mapping in the schema is the schema of an object field."""
    if not isinstance(record, dict):
        return f"{'field ' + repr(prefix[:-1]) if prefix else 'the record'} is " \
               f"{_describe(record)}, not an object"
    for name, rule in schema.items():
        where = f"{prefix}{name}"
        if name not in record:
            return f"field {where!r} is missing"
        wrong = problem(record[name], rule, where + ".") if isinstance(rule, Mapping) \
            else rule(record[name])
        if wrong:
            return wrong if wrong.startswith("field ") else f"field {where!r} {wrong}"
    return None


def check(record: object, schema: Mapping[str, Rule | Mapping], path: str | os.PathLike,
          fix: str) -> dict:
    """`record`, or one InputError: `path: field 'x' is ...: fix`."""
    wrong = problem(record, schema)
    if wrong:
        raise InputError(f"{path}: {wrong}: {fix}")
    return record  # type: ignore[return-value]


def read_json(path: str | os.PathLike, fix: str) -> object:
    """The JSON value in `path` (a regular file: a FIFO is refused, never waited on), or one
    InputError ending in `fix`; nesting too deep for the parser is refused the same way."""
    try:
        with open_regular(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: not found: {fix}") from None
    except NotRegularFile as e:
        raise InputError(f"{path}: is {kind_of(e)}, not a regular file: {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InputError(f"{path}: unreadable ({type(e).__name__}): {fix}") from None


def read_record(path: str | os.PathLike, schema: Mapping[str, Rule | Mapping], fix: str) -> dict:
    return check(read_json(path, fix), schema, Path(path), fix)
