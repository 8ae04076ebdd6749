"""The soak test (``make soak``, not CI): a steady stream for ten minutes, a worker killed every
minute, then ``pinapp audit``; the memory of the workers that stay up must be flat, and neither
commit guard may fire (pinapp.topology.faust_ext.guards).

``PINAPP_SOAK_MINUTES`` shortens or lengthens it (default 10).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path

import pytest

from config import Settings
from pinapp.tools.harness import Pipeline, WorkerProcess, assert_clean, start, traffic

pytestmark = pytest.mark.slow

RATE = 300  # events/s: well inside what three workers and the archiver do on 2 cores


async def test_ten_minutes_with_a_worker_killed_every_minute(test_stack: Settings, tmp_path: Path) -> None:
    minutes = float(os.environ.get("PINAPP_SOAK_MINUTES", "10"))
    # Bounded state, so that "flat memory" can tell a leak from state filling up by design:
    # a 2-minute dedup horizon (default 24 h) and 2,000 decoded pins in memory (default
    # 100,000, which ten minutes of new pins never fill), and RocksDB memtables and block
    # caches of 1 MiB per table partition (default 4 x 2 and 8 MiB: at 300 events/s they
    # would still be filling after ten minutes).
    pipeline = Pipeline(
        tmp_path,
        extra_env={
            "PINAPP_KAFKA__PARTITIONS": "6",
            "PINAPP_PIPELINE__DEDUP_HORIZON_S": "120",
            "PINAPP_PIPELINE__PIN_LRU_SIZE": "2000",
            "PINAPP_WORKER__ROCKSDB_WRITE_BUFFER_MB": "1",
            "PINAPP_WORKER__ROCKSDB_BLOCK_CACHE_MB": "1",
        },
    )
    try:
        records, truth, _ = traffic(pipeline, seed=61, count=int(RATE * 60 * minutes))
        await pipeline.create_bucket()
        steady = [pipeline.worker(0), pipeline.worker(1)]
        victim, archiver = pipeline.worker(2), pipeline.archiver()
        await start(*steady, victim, archiver)

        producing = asyncio.create_task(pipeline.produce(records, rate=RATE))
        rss: dict[int, list[tuple[float, float]]] = {0: [], 1: []}
        rocksdb: dict[int, list[float]] = {0: [], 1: []}
        started = time.monotonic()
        next_kill = started + 60
        kills = 0
        while not producing.done():
            await asyncio.sleep(5)
            now = time.monotonic() - started
            for i, w in enumerate(steady):
                assert w.alive, f"worker {i} died:\n{w.log_tail()}"
                rss[i].append((now, w.rss_mb()))
                rocksdb[i].append(_rocksdb_mb(w))
            if time.monotonic() >= next_kill:
                victim.kill()
                kills += 1
                await asyncio.sleep(10)
                victim.start()
                next_kill += 60
        await producing
        assert kills >= int(minutes) - 1
        assert_clean(pipeline, truth, *steady, victim, archiver)
        _assert_no_guard_fired(*steady, victim)

        # The RSS trail, for reading a failure (or a pass) minute by minute.
        trail = Path("test-output/soak/rss.csv")
        trail.parent.mkdir(parents=True, exist_ok=True)
        trail.write_text(
            "worker,seconds,rss_mb,rocksdb_mb\n"
            + "".join(
                f"{i},{t:.0f},{mb:.1f},{rocksdb[i][n]:.1f}\n"
                for i, samples in rss.items()
                for n, (t, mb) in enumerate(samples)
            )
        )

        # Flat memory: the last minute's median RSS is within 20% of the median of the
        # minute after a three-minute warm-up (the dedup horizon plus a minute).
        for i, samples in rss.items():
            warm = [mb for t, mb in samples if 180 <= t < 240]
            last = [mb for t, mb in samples if t >= samples[-1][0] - 60]
            assert warm and last, samples
            first_mb, last_mb = statistics.median(warm), statistics.median(last)
            assert last_mb <= first_mb * 1.2, (
                i,
                first_mb,
                last_mb,
                [round(mb) for _, mb in samples],
                "rocksdb MB:",
                [round(mb) for mb in rocksdb[i]],
            )
    finally:
        pipeline.stop_all()
        await pipeline.drop()


GUARD_WARNINGS = ("fetching them again",)  # both guards' WARNING lines (pinapp.topology.faust_ext.guards)


def _assert_no_guard_fired(*workers: WorkerProcess) -> None:
    """Neither commit guard fired: by the counters of the workers still up, and by the WARNING
    lines of every run of every worker (a killed worker's counters die with it)."""
    for w in workers:
        fired = [
            line
            for line in w.log_path.read_text(errors="replace").splitlines()
            if any(marker in line for marker in GUARD_WARNINGS)
        ]
        assert not fired, f"a commit guard fired in {w.log_path.name}:\n" + "\n".join(fired[:10])
        if w.alive:
            samples = w.metrics()
            counted = {
                k: v
                for k, v in samples.items()
                if k.startswith(("pinapp_fetch_gaps_total", "pinapp_commit_holes_total")) and v
            }
            assert not counted, counted


def _rocksdb_mb(worker: WorkerProcess) -> float:
    """RocksDB's own memory figure for the worker's table partitions (``nan`` if unreadable)."""
    try:
        samples = worker.metrics()
    except OSError:
        return float("nan")
    return sum(v for k, v in samples.items() if k.startswith("pinapp_rocksdb_memory_bytes{")) / 2**20
