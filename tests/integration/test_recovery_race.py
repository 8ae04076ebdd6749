"""The recovery race (faust #596) on the real stack, with both commit guards switched off.

Traffic flows into ``events`` while workers of an app with tables join, leave and are
SIGKILLed: each change is a rebalance, and each worker recovers its tables and seeks its
stream partitions while records are in flight. With the gap and hole guards off
(``testing.commit_guards = false``), nothing but the fix (pinapp.topology.faust_ext.recovery and the
fetch loop's seek epochs) keeps faust from dropping records it handed over:

* every (partition, offset) produced was processed by some worker (each worker appends what
  its agent processed to ``testing.processed_log``, before the batch is acked);
* after traffic stops, every partition's committed offset reaches its end offset within a
  few commit intervals (a hole in the acked offsets would hold it forever).

``make race`` repeats this (20 runs by default) and prints how many passed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pinapp.domain.geo import GeoLocator
from pinapp.tools.generator import GeneratorConfig, TrafficGenerator
from pinapp.tools.harness import Pipeline, WorkerProcess

RATE = 700  # events/s: a load two workers keep up with on 2 cores
COMMIT_WAIT_S = 45  # a few commit intervals (faust commits every 2.8 s) plus the last backlog


def _processed(logs: list[Path]) -> set[tuple[int, int]]:
    seen: set[tuple[int, int]] = set()
    for log in logs:
        if log.exists():
            for line in log.read_text().splitlines():
                partition, offset = line.split()
                seen.add((int(partition), int(offset)))
    return seen


async def test_rebalances_with_the_guards_off_drop_nothing_and_commits_reach_the_end(pipeline: Pipeline) -> None:
    gen = TrafficGenerator(GeneratorConfig(seed=61, duplicate_ratio=0.02, malformed_ratio=0.01), GeoLocator())
    records = [next(gen) for _ in range(RATE * 40)]
    logs = [pipeline.tmp / f"processed{i}.log" for i in range(3)]

    def worker(i: int) -> WorkerProcess:
        return pipeline.worker(i, PINAPP_TESTING__COMMIT_GUARDS="false", PINAPP_TESTING__PROCESSED_LOG=str(logs[i]))

    w0, w1, w2 = worker(0), worker(1), worker(2)
    w0.start()
    await w0.wait_ready(180)
    producing = asyncio.create_task(pipeline.produce(records, rate=RATE))
    try:
        await asyncio.sleep(4)
        w1.start()  # rebalance: w1 joins
        await w1.wait_ready(180)
        await asyncio.sleep(4)
        w0.kill()  # rebalance after the session timeout: w1 takes w0's partitions mid-batch
        w2.start()  # and w2 joins meanwhile
        await w2.wait_ready(180)
        await asyncio.sleep(4)
        w1.stop()  # a graceful leave: rebalance
        w0.start()  # the killed worker comes back: rebalance
        await w0.wait_ready(180)
        await asyncio.sleep(3)
        w2.kill()  # rebalance again, while traffic still flows
        await producing
    finally:
        if not producing.done():
            producing.cancel()
    group, topic = pipeline.settings.worker.app_id, pipeline.settings.kafka.events_topic
    ends = await pipeline.wait_committed(topic, group, timeout=COMMIT_WAIT_S + 60)  # w2's session timeout first

    produced = {(p, o) for p, end in ends.items() for o in range(end)}
    assert len(produced) == len(records)
    processed = _processed(logs)
    missing = sorted(produced - processed)
    logs_tail = "\n".join(w.log_tail(20) for w in (w0, w1, w2))
    assert not missing, f"{len(missing)} offsets committed but never processed, e.g. {missing[:10]}\n{logs_tail}"
    assert processed == produced
    for w in (w0, w1, w2):
        text = w.log_path.read_text(errors="replace")
        assert "fetching them again" not in text, "a guard fired though both are off"
