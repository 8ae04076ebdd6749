"""Running the traffic generator into Kafka or a JSON-lines file, paced and stoppable.

SIGINT/SIGTERM stop it cleanly: every record sent is acknowledged (or written) and the
ground truth is written before it exits, so the truth file always matches what was sent.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

from config import Settings
from pinapp.adapters.kafka import ensure_topics, make_producer
from pinapp.tools.generator import TrafficGenerator

__all__ = ["rotate", "run_generator"]

logger = logging.getLogger(__name__)

_CHUNK = 500
_PROGRESS_EVERY_S = 5.0


def rotate(path: Path, keep: int) -> None:
    """Rename-style rotation, as logrotate does it: ``app.log.N`` -> ``.N+1`` ..., ``app.log`` -> ``.1``.

    The oldest beyond ``keep`` rotated files is deleted.
    """
    oldest = path.with_name(f"{path.name}.{keep}")
    if oldest.exists():
        oldest.unlink()
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            older.rename(path.with_name(f"{path.name}.{n + 1}"))
    if path.exists():
        path.rename(path.with_name(f"{path.name}.1"))


async def run_generator(
    gen: TrafficGenerator,
    settings: Settings,
    *,
    target: str,
    path: Path | None,
    topic: str,
    count: int | None,
    duration: float | None,
    rate: float | None,
    truth_path: Path | None,
    rotate_bytes: int | None = None,
    rotate_keep: int = 5,
) -> int:
    """Send records until ``count``, ``duration`` or a signal; returns how many were sent."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    producer = None
    out = None
    if target == "kafka":
        await ensure_topics(settings.kafka, [topic, settings.kafka.dlq_topic])
        producer = make_producer(settings.kafka)
        await producer.start()
    else:
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        out = path.open("ab")

    sent = 0
    started = last_report = time.monotonic()
    pending: list[asyncio.Future[object]] = []
    try:
        while not stop.is_set():
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                break
            want = _CHUNK if count is None else min(_CHUNK, count - sent)
            if want <= 0:
                break
            if rate is not None:
                due = int((now - started) * rate) - sent
                if due <= 0:
                    await asyncio.sleep(min(0.01, 1.0 / rate))
                    continue
                want = min(want, due)
            records = [next(gen) for _ in range(want)]
            if producer is not None:
                for rec in records:
                    pending.append(await producer.send(topic, rec.value, key=rec.key))
                if len(pending) >= 20_000:
                    await asyncio.gather(*pending)
                    pending.clear()
            else:
                assert out is not None and path is not None
                out.write(b"".join(rec.value + b"\n" for rec in records))
                if rotate_bytes is not None and out.tell() >= rotate_bytes:
                    out.close()
                    rotate(path, rotate_keep)
                    out = path.open("ab")
            sent += want
            if time.monotonic() - last_report >= _PROGRESS_EVERY_S:
                last_report = time.monotonic()
                logger.info("generated %d records (%.0f/s)", sent, sent / (last_report - started))
                if truth_path is not None:
                    gen.truth.write(truth_path)
            else:
                await asyncio.sleep(0)
    finally:
        if pending:
            await asyncio.gather(*pending)
        if producer is not None:
            await producer.stop()
        if out is not None:
            out.close()
        if truth_path is not None:
            gen.truth.write(truth_path)
    return sent
