"""Workers keep Python's objects in jemalloc (pinapp/topology/allocator.py): the re-executed process has it
mapped and runs with ``PYTHONMALLOC=malloc``."""

from __future__ import annotations

from pathlib import Path

from pinapp.tools.harness import Pipeline


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _environ(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


async def test_a_worker_runs_on_jemalloc_and_the_setting_turns_it_off(pipeline: Pipeline) -> None:
    await pipeline.produce([])
    on = pipeline.worker(0)
    off = pipeline.worker(1)
    off.env["PINAPP_WORKER__ALLOCATOR"] = "system"
    on.start()
    off.start()
    await on.wait_ready()
    await off.wait_ready()
    assert on.proc is not None and off.proc is not None
    assert "libjemalloc" in _maps(on.proc.pid), on.log_tail()  # same pid: the worker re-executed itself
    assert b"PYTHONMALLOC=malloc" in _environ(on.proc.pid)
    assert "libjemalloc" not in _maps(off.proc.pid)
    assert b"PYTHONMALLOC=malloc" not in _environ(off.proc.pid)
    assert "not installed" not in on.log_path.read_text()
