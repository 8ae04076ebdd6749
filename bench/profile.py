"""`make profile`: where one worker's CPU goes while it drains a backlog, sampled by py-spy.

The throughput benchmark's backlog (2% duplicates, 1% malformed) is produced to a fresh
topic; one worker drains it while py-spy samples its threads (the main thread and aiokafka's
consumer thread; idle waits in ``select`` count as samples) for ``--seconds``. Printed:
the functions with the largest share of samples *in* them (self) and *under* them (total),
grouped by function (file and name, not line). The collapsed stacks are kept in
bench-output/profile.txt (``flamegraph.pl`` or speedscope read them).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from pinapp.domain.geo import GeoLocator
from pinapp.tools.generator import GeneratorConfig, TrafficGenerator
from pinapp.tools.harness import Pipeline

OUT = Path("bench-output")
_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>.*?)(:\d+)?\)$")


def _function(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = re.sub(r".*/(site-packages|lib/python3[.0-9]*|main)/", "", m["file"])
    return f"{m['name']} ({path})"


def shares(collapsed: str) -> tuple[Counter[str], Counter[str], int]:
    """(self samples, total samples, all samples) per function from py-spy's raw output."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    n = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        n += k
        frames = [_function(f) for f in stack.split(";")]
        own[frames[-1]] += k
        for f in set(frames):
            total[f] += k
    return own, total, n


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=150_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    OUT.mkdir(exist_ok=True)
    raw = OUT / "profile.txt"
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Pipeline(Path(tmp), extra_env={"PINAPP_WORKER__LOG_LEVEL": "info"})
        gen = TrafficGenerator(
            GeneratorConfig(seed=9, duplicate_ratio=0.02, malformed_ratio=0.01), GeoLocator(), keep_ids=False
        )
        await pipeline.produce(next(gen) for _ in range(args.events))
        worker = pipeline.worker()
        try:
            worker.start()
            await worker.wait_ready()
            assert worker.proc is not None
            await asyncio.to_thread(
                subprocess.run,
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(worker.proc.pid),
                    "--duration",
                    str(int(args.seconds)),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                ],
                check=True,
                capture_output=True,
            )
        finally:
            pipeline.stop_all()
            await pipeline.drop()
    own, total, n = shares(raw.read_text())
    print(f"{n:,} samples of the worker's threads over {args.seconds:.0f} s ({raw})\n")
    for title, counts in (("self", own), ("total (in or under)", total)):
        print(f"| {title} | share |\n|---|---|")
        for name, k in counts.most_common(args.top):
            print(f"| `{name}` | {100 * k / n:.1f}% |")
        print()


if __name__ == "__main__":
    asyncio.run(main())
