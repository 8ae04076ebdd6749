"""The allocator choice when it cannot be made: a warning that names the fix, and no re-execution."""

from __future__ import annotations

import logging

import pytest

from config import load_settings
from pinapp.topology import allocator


@pytest.fixture
def no_exec(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, ...]]:
    calls: list[tuple[object, ...]] = []
    monkeypatch.setattr(allocator.os, "execve", lambda *args: calls.append(args))
    monkeypatch.delenv("PYTHONMALLOC", raising=False)
    monkeypatch.delenv("PINAPP_ALLOCATOR_REEXEC", raising=False)
    return calls


def test_a_missing_jemalloc_is_a_warning_naming_the_package_and_the_setting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, no_exec: list[tuple[object, ...]]
) -> None:
    monkeypatch.setenv("PINAPP_WORKER__JEMALLOC_LIBRARY", "/nonexistent/libjemalloc.so.2")
    with caplog.at_level(logging.WARNING):
        allocator.run_on_chosen_allocator(load_settings("test"))
    assert not no_exec, "nothing to re-execute on"
    assert "libjemalloc2" in caplog.text and "PINAPP_WORKER__ALLOCATOR=system" in caplog.text


def test_the_system_setting_never_re_executes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, no_exec: list[tuple[object, ...]]
) -> None:
    monkeypatch.setenv("PINAPP_WORKER__ALLOCATOR", "system")
    with caplog.at_level(logging.WARNING):
        allocator.run_on_chosen_allocator(load_settings("test"))
    assert not no_exec and not caplog.text


def test_an_installed_jemalloc_re_executes_with_python_objects_in_it(no_exec: list[tuple[object, ...]]) -> None:
    settings = load_settings("test")
    if not allocator._installed(settings.worker.jemalloc_library):
        pytest.fail("libjemalloc2 is not installed: `make setup` installs it (apt-get install libjemalloc2)")
    allocator.run_on_chosen_allocator(settings)
    assert len(no_exec) == 1
    env = no_exec[0][2]
    assert isinstance(env, dict)
    assert env["PYTHONMALLOC"] == "malloc" and "libjemalloc" in env["LD_PRELOAD"]
