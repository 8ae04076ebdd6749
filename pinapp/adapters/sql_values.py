"""Rows as one pre-encoded multi-row ``INSERT``: the sink's text, built a column at a time.

Design notes: docs/architecture.md, "pinapp/adapters/sql_values.py".
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any, Final

from asyncmy.constants.SERVER_STATUS import SERVER_STATUS_NO_BACKSLASH_ESCAPES

__all__ = ["backslash_escapes", "encode_rows", "insert_statements", "sql_literal"]

_NEEDS_ESCAPE: Final = re.compile(r"[\0\n\r\\'\"\x1a]")
_TZINFO: Final = attrgetter("tzinfo")
_NONE: Final = type(None)
#: Literals of the floats written lately (the geo table's coordinates repeat): bounded, cleared when full.
_FLOATS: dict[float | None, str] = {}
_FLOATS_MAX: Final = 65_536
_ESCAPES: Final = {"\0": "\\0", "\n": "\\n", "\r": "\\r", "\\": "\\\\", "'": "\\'", '"': '\\"', "\x1a": "\\Z"}


def _needs_escape(text: str) -> bool:
    """Whether ``text`` holds a character a literal escapes (7 scans in C: a fifth of the regex's time)."""
    return "'" in text or "\\" in text or '"' in text or "\n" in text or "\r" in text or "\0" in text or "\x1a" in text


def _float_literals(column: Sequence[Any]) -> tuple[str, ...] | None:
    """``column``'s literals (floats and ``None``) through the cache; ``None`` if it holds a value
    that is not finite, or a zero (``0.0 == -0.0``: one key, two literals)."""
    cache = _FLOATS
    new = set(column).difference(cache)
    if new:
        new.discard(None)
        if 0.0 in new or not all(map(math.isfinite, new)):
            return None
        if len(cache) + len(new) > _FLOATS_MAX:
            cache.clear()
            new = set(column) - {None}
        cache.update(zip(new, map(repr, new), strict=True))
        cache[None] = "NULL"
    return tuple(map(cache.__getitem__, column))


def _escape(match: re.Match[str]) -> str:
    return _ESCAPES[match.group()]


def sql_literal(value: Any) -> str:
    """The SQL literal of one sink value.

    Raises:
        TypeError: for a type no sink column holds, or a float that is not finite.
    """
    kind = type(value)
    if kind is str:
        if _NEEDS_ESCAPE.search(value) is None:
            return f"'{value}'"
        return "'" + _NEEDS_ESCAPE.sub(_escape, value) + "'"
    if value is None:
        return "NULL"
    if kind is float:
        if not math.isfinite(value):
            raise TypeError(f"{value!r} has no SQL literal")
        return repr(value)
    if kind is datetime:
        if value.tzinfo is not None:
            raise TypeError(f"{value!r}: sink datetimes are naive UTC")
        return f"'{value.isoformat(' ')}'"
    if kind is int:
        return str(value)
    raise TypeError(f"{kind.__name__} is not a sink value: {value!r}")


def encode_rows(rows: Sequence[Sequence[Any]]) -> list[str]:
    """Each row as its ``(literal,...)`` text, the same text :func:`sql_literal` gives value by value.

    A sink batch's columns are each of one type (or that type and ``NULL``) with nothing to
    escape: ids, times, numbers. So a column is checked once for the whole batch (its types
    in one pass, its strings for a character needing an escape in one scan of their
    concatenation), and every row is then formatted in one ``%`` (``str`` of a datetime is
    its ISO form with a space, of a float its ``repr``, as :func:`sql_literal` writes them).
    A column holding one value (a batch's ``ingested_at``) is written into the template
    once. A float's literal comes from a cache (the geo table's coordinates repeat). A string
    column holding a character to escape has each distinct value escaped once; a column that
    mixes other types goes value by value through :func:`sql_literal`.

    Raises:
        TypeError: as :func:`sql_literal` does.
    """
    if not rows:
        return []
    marks: list[str] = []
    formatted: list[Sequence[Any]] = []
    for column in zip(*rows, strict=True):
        kinds = set(map(type, column))
        nullable = _NONE in kinds and len(kinds) == 2
        if nullable:
            kinds.discard(_NONE)
        kind = kinds.pop() if len(kinds) == 1 else None
        if kind is datetime and column.count(column[0]) == len(column):
            marks.append(sql_literal(column[0]).replace("%", "%%"))  # raises for an aware one
            continue
        if kind is str and not _needs_escape("".join(filter(None, column))):
            if nullable:
                column = tuple(["NULL" if v is None else "'" + v + "'" for v in column])
            mark = "%s" if nullable else "'%s'"
        elif kind is str:  # a few values need escapes (a city's apostrophe): each distinct one escaped once
            literals = {v: sql_literal(v) for v in set(column)}
            column = tuple(map(literals.__getitem__, column))
            mark = "%s"
        elif kind is int and not nullable:
            mark = "%s"
        elif kind is float and (floats := _float_literals(column)) is not None:
            column = floats
            mark = "%s"
        elif kind is datetime and not nullable and not any(map(_TZINFO, column)):
            mark = "'%s'"
        else:
            column = tuple([sql_literal(v) for v in column])
            mark = "%s"
        marks.append(mark)
        formatted.append(column)
    template = "(" + ",".join(marks) + ")"
    if not formatted:
        return [template] * len(rows)
    return [template % row for row in zip(*formatted, strict=True)]


def insert_statements(
    prefix: str, rows: Sequence[Sequence[Any]], suffix: str, *, max_bytes: int = 1_000_000
) -> Iterator[bytes]:
    """``prefix (row),(row)... suffix`` as UTF-8, one statement per ``max_bytes`` or so.

    ``prefix`` ends with ``VALUES``; ``suffix`` is what follows the rows (``ON DUPLICATE KEY
    UPDATE ...``). A single row longer than ``max_bytes`` still gets a statement of its own.
    """
    head, tail = f"{prefix} ".encode(), f" {suffix}".encode()
    parts: list[bytes] = []
    size = len(head) + len(tail)
    for encoded in map(str.encode, encode_rows(rows)):
        if parts and size + len(encoded) + 1 > max_bytes:
            yield head + b",".join(parts) + tail
            parts, size = [], len(head) + len(tail)
        parts.append(encoded)
        size += len(encoded) + 1
    if parts:
        yield head + b",".join(parts) + tail


def backslash_escapes(conn: Any) -> bool:
    """Whether the server reads backslash escapes in string literals (its default)."""
    return not (getattr(conn, "server_status", 0) & SERVER_STATUS_NO_BACKSLASH_ESCAPES)
