"""The steps a test or a bench run is made of: traffic and its truth, start, wait, audit clean."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from pathlib import Path

from pinapp.domain.geo import GeoLocator
from pinapp.tools.generator import GeneratedRecord, GeneratorConfig, TrafficGenerator
from pinapp.tools.harness.pipeline import Pipeline
from pinapp.tools.harness.processes import WorkerProcess

__all__ = ["assert_clean", "placeable_repins", "start", "traffic", "wait_for"]


def placeable_repins(records: Iterable[GeneratedRecord], geo: GeoLocator) -> set[str]:
    """Event ids of the valid repins among ``records`` that the geo database locates: the ones
    the globe can place (and so the ones its feed carries)."""
    return {
        doc["event_id"]
        for r in records
        if r.kind == "valid" and r.event_type == "repin"
        for doc in [json.loads(r.value)]
        if geo.lookup(doc["ip"]).latitude is not None
    }


def traffic(pipeline: Pipeline, seed: int, count: int) -> tuple[list[GeneratedRecord], Path, dict[str, list[str]]]:
    """``count`` generated records and their ground-truth file."""
    gen = TrafficGenerator(GeneratorConfig(seed=seed, duplicate_ratio=0.03, malformed_ratio=0.01), GeoLocator())
    records = [next(gen) for _ in range(count)]
    truth = pipeline.tmp / "truth.json"
    gen.truth.write(truth)
    return records, truth, gen.truth.event_ids


def assert_clean(pipeline: Pipeline, truth: Path, *workers: WorkerProcess) -> str:
    """``pinapp audit`` against ``truth`` is clean (else the workers' log tails say why); its report."""
    audit = pipeline.audit(truth)
    logs = "\n".join(w.log_tail(30) for w in workers)
    assert audit.returncode == 0, f"{audit.stdout}{audit.stderr}\n{logs}"
    assert "audit: CLEAN" in audit.stdout
    return audit.stdout


async def wait_for(check: object, what: str, timeout: float = 90.0) -> None:
    """Until ``check()`` is true, or fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


async def start(*workers: WorkerProcess) -> None:
    """Start ``workers``, then wait until each is ready."""
    for w in workers:
        w.start()
    for w in workers:
        await w.wait_ready(180)
