"""Does `make demo` keep up? Watch a running demo's lag and its globe's freshness.

Run beside `make demo` (another terminal): ``python -m bench.demo_watch --minutes 5``. Every
``--every`` seconds it reads the worker's and the archiver's ``/health`` (``lag_total``: events
in Kafka not yet processed by that process's partitions) and the generator's log size; all the
while it reads the worker's ``/globe/stream`` as a browser does and, for each repin point,
notes how long after its event entered Kafka it arrived (what the globe shows as "s from
Kafka to this page"). At the end: the samples, the globe's delays per minute (p50/p99) and a
verdict. The demo keeps up when, over the last half of the watch, neither lag grows (its
last sample is no more than ``--lag-slack`` events above its lowest) and the globe's p99
delay of the last minute is under 2 s.

``--dashboards N`` adds N dashboard clients for the whole watch, each fetching the dashboard's
seven queries at once every 5 s as its page does (``--window`` minutes), and reports their
rounds' times and errors: the dashboards must not make the demo fall behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from typing import Any

import aiohttp


def _health(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:  # 503 while a sink retries: still a health document
        return json.loads(err.read())
    except (OSError, ValueError):
        return None


async def _globe(port: int, points: list[tuple[float, float]]) -> None:
    """(received, delay in s) of every point the globe stream sends, until cancelled."""
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/globe/stream") as response:
        event = None
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event != "ready":
                now = time.time()
                points.extend((now, now - p["kafka_ts"] / 1000) for p in json.loads(line[6:]))
            elif not line:
                event = None


#: What the dashboard's page fetches every 5 s (frontend/src/dashboard.js): (query, minutes, limit).
def _dashboard_round(minutes: int) -> list[tuple[str, int, int]]:
    trend = 5
    return [
        ("events-per-minute", minutes, (minutes + 2) * 5),
        ("top-categories", minutes, 10),
        ("top-countries", minutes, 10),
        ("most-repinned", minutes, 10),
        ("trending-pins", trend, 8),
        ("trending-categories", trend, 5),
        ("trending-countries", trend, 5),
    ]


async def _dashboard(port: int, minutes: int, rounds: list[float], errors: list[str]) -> None:
    """One dashboard client: a round of its queries every 5 s (each round's seconds), until cancelled."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def get(name: str, window: int, limit: int) -> None:
            url = f"http://127.0.0.1:{port}/api/query/{name}?minutes={window}&limit={limit}"
            async with session.get(url) as response:
                await response.read()
                if response.status != 200:
                    errors.append(f"{name}: HTTP {response.status}")

        while True:
            began = time.monotonic()
            try:
                await asyncio.gather(*(get(*q) for q in _dashboard_round(minutes)))
                rounds.append(time.monotonic() - began)
            except (TimeoutError, aiohttp.ClientError) as exc:
                errors.append(repr(exc))
            await asyncio.sleep(max(0.0, 5.0 - (time.monotonic() - began)))


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--every", type=float, default=15, help="seconds between /health samples")
    parser.add_argument("--worker-port", type=int, default=6066)
    parser.add_argument("--archiver-port", type=int, default=6166)
    parser.add_argument("--dashboards", type=int, default=0, help="dashboard clients polling as the page does")
    parser.add_argument("--window", type=int, default=15, help="the dashboards' window, minutes (15, 60, 360, 1440)")
    parser.add_argument(
        "--lag-slack",
        type=int,
        default=20_000,
        help="events a lag may end above its lowest of the last half and still count as bounded",
    )
    args = parser.parse_args()

    points: list[tuple[float, float]] = []
    globe = asyncio.create_task(_globe(args.worker_port, points))
    rounds: list[float] = []
    errors: list[str] = []
    dashboards = [
        asyncio.create_task(_dashboard(args.worker_port, args.window, rounds, errors)) for _ in range(args.dashboards)
    ]
    started = time.time()
    samples: list[tuple[float, int | None, int | None]] = []
    print("| t (s) | worker lag | archiver lag |\n|---|---|---|", flush=True)
    try:
        while time.time() - started < args.minutes * 60:
            worker, archiver = _health(args.worker_port), _health(args.archiver_port)
            sample = (time.time() - started, worker and worker["lag_total"], archiver and archiver["lag_total"])
            samples.append(sample)
            print(f"| {sample[0]:.0f} | {sample[1]} | {sample[2]} |", flush=True)
            if globe.done():
                globe.result()  # the stream failed: say why
            await asyncio.sleep(args.every)
    finally:
        for task in (globe, *dashboards):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await task

    print("\n| minute | repins on the globe | delay p50 | delay p99 |\n|---|---|---|---|")
    for minute in range(int(args.minutes + 0.999)):
        delays = [d for t, d in points if minute * 60 <= t - started < (minute + 1) * 60]
        print(
            f"| {minute + 1} | {len(delays)} | {_percentile(delays, 0.5):.2f} s | {_percentile(delays, 0.99):.2f} s |"
        )

    if dashboards:
        print(
            f"\n{args.dashboards} dashboards ({args.window}-minute window): {len(rounds)} rounds, "
            f"p50 {_percentile(rounds, 0.5):.3f} s, p99 {_percentile(rounds, 0.99):.3f} s, "
            f"max {max(rounds, default=float('nan')):.3f} s; {len(errors)} errors {errors[:3]}"
        )
    half = [s for s in samples if s[0] >= args.minutes * 30]
    verdicts = []
    for name, index in (("worker", 1), ("archiver", 2)):
        lags = [s[index] for s in half if s[index] is not None]
        bounded = bool(lags) and lags[-1] - min(lags) <= args.lag_slack
        verdicts.append(bounded)
        print(
            f"\n{name} lag over the last half: {lags[:1]} ... {lags[-1:]} (lowest {min(lags, default=None)}): "
            f"{'bounded' if bounded else 'GROWING or unknown'}"
        )
    last = [d for t, d in points if t >= time.time() - 60]
    fresh = bool(last) and _percentile(last, 0.99) < 2.0
    verdicts.append(fresh)
    if dashboards:
        verdicts.append(not errors and bool(rounds))
    print(
        f"globe, last minute: p99 {_percentile(last, 0.99):.2f} s over {len(last)} repins: "
        f"{'under 2 s' if fresh else 'NOT under 2 s'}"
    )
    print("verdict:", "the demo keeps up" if all(verdicts) else "the demo does NOT keep up")
    raise SystemExit(0 if all(verdicts) else 1)


if __name__ == "__main__":
    asyncio.run(main())
