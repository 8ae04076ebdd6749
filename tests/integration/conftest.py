"""Integration fixtures: the real local stack (test profile), started if needed.

A stack that cannot start fails the tests with the reason: a skipped integration test
would hide a broken stack.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from config import Settings, load_settings
from pinapp.errors import PinappError
from pinapp.tools.harness import Pipeline
from pinapp.tools.stack import Stack


@pytest.fixture(scope="session")
def test_stack() -> Settings:
    settings = load_settings("test")
    try:
        Stack(settings).up()
    except PinappError as exc:
        pytest.fail(f"the local test stack (Kafka, MariaDB, S3) could not start:\n{exc}", pytrace=False)
    return settings


@pytest.fixture
async def pipeline(test_stack: Settings, tmp_path: Path) -> AsyncIterator[Pipeline]:
    p = Pipeline(tmp_path)
    yield p
    p.stop_all()
    await p.drop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
