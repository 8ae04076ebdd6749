"""Database errors sorted by their code: outages are retried, row faults dead-letter the row."""

from __future__ import annotations

import pytest
from asyncmy.errors import DataError, IntegrityError, InternalError, OperationalError, ProgrammingError

from pinapp.adapters.db_errors import classify


@pytest.mark.parametrize(
    "exc",
    [
        ProgrammingError(1146, "Table 'pinapp.experiment_exposures' doesn't exist"),
        OperationalError(1054, "Unknown column 'x' in 'field list'"),
        ProgrammingError(1142, "INSERT command denied to user"),
        OperationalError(1290, "The MariaDB server is running with the --read-only option"),
        OperationalError(1205, "Lock wait timeout exceeded"),
        OperationalError(1213, "Deadlock found"),
        OperationalError(2013, "Lost connection to server during query"),
        InternalError(1021, "Disk full"),
        ProgrammingError(9999, "a code nobody has seen"),
    ],
    ids=lambda e: str(e.args[0]),
)
def test_a_fault_every_row_would_meet_is_an_outage(exc: Exception) -> None:
    assert classify(exc) == "outage"


@pytest.mark.parametrize(
    "exc",
    [
        DataError(1406, "Data too long for column 'title'"),
        DataError(1366, "Incorrect string value"),
        OperationalError(1292, "Incorrect datetime value"),
        IntegrityError(1048, "Column 'user_id' cannot be null"),
        ProgrammingError(1064, "You have an error in your SQL syntax"),
        DataError("no code"),
    ],
    ids=lambda e: str(e.args[0]),
)
def test_a_value_the_server_refuses_is_a_row_fault(exc: Exception) -> None:
    assert classify(exc) == "row_fault"
