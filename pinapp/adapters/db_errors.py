"""Which database errors are outages and which are row faults, by the server's error code.

Design notes: docs/architecture.md, "pinapp/adapters/db_errors.py".
"""

from __future__ import annotations

from typing import Final, Literal

from asyncmy.errors import DataError, IntegrityError

__all__ = ["ROW_FAULT_CODES", "Kind", "classify", "error_code"]

Kind = Literal["outage", "row_fault"]

#: Codes a row's values cause (MySQL/MariaDB, which SingleStore shares).
ROW_FAULT_CODES: Final = frozenset(
    {
        1048,  # column cannot be null
        1062,  # duplicate entry (a unique key the upserts do not cover)
        1064,  # syntax error: a value the encoding got wrong
        1264,  # out of range value
        1265,  # data truncated
        1292,  # incorrect date/time value
        1300,  # invalid character string
        1366,  # incorrect string value (e.g. bytes that are not UTF-8)
        1406,  # data too long for the column
        1411,  # incorrect value for a function
        3140,  # invalid JSON text
    }
)


def error_code(exc: BaseException) -> int | None:
    """The server's error number of a driver error (``None`` for a non-server error)."""
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def classify(exc: BaseException) -> Kind:
    """Whether ``exc`` (raised by a sink statement) is an outage or a row fault."""
    code = error_code(exc)
    if code in ROW_FAULT_CODES:
        return "row_fault"
    if code is None and isinstance(exc, DataError | IntegrityError):
        return "row_fault"
    return "outage"
