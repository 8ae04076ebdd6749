"""A live-topic record Kafka refuses is counted, and its error read (no traceback at GC)."""

from __future__ import annotations

import asyncio
import gc

from prometheus_client import REGISTRY

from pinapp.topology import topics


def _failed() -> float:
    return REGISTRY.get_sample_value("pinapp_live_send_failed_total") or 0.0


async def test_a_refused_live_record_is_counted_and_its_error_read() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    before = _failed()
    refused, taken, cancelled = (loop.create_future() for _ in range(3))
    for sent in (refused, taken, cancelled):
        sent.add_done_callback(topics._count_failed_live_send)
    refused.set_exception(ConnectionError("broker down"))
    taken.set_result(None)
    cancelled.cancel()
    await asyncio.sleep(0)  # the callbacks run
    assert _failed() == before + 1
    del refused
    gc.collect()  # an unread error would be reported here: "exception was never retrieved"
    loop.set_exception_handler(previous)
    assert reported == []
