"""The C producer's own bookkeeping (pinapp/singer/_rdkafka.c), on real librdkafka with no broker
to reach: failures counted by kind, librdkafka's log lines kept, and close() during a flush."""

from __future__ import annotations

import threading
import time

import pytest

from pinapp.errors import PinappError
from pinapp.singer._rdkafka import KafkaError, Producer

NOWHERE = {"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": "300"}


def test_undelivered_lines_and_heartbeats_are_counted_apart_with_the_first_reason() -> None:
    producer = Producer(NOWHERE, ("pin",))
    producer.produce("events", b'{"event_type":"login","user_id":"u1"}', b"u1")
    assert producer.produce_lines("events", [b'{"event_type":"pin","user_id":"u1","pin_id":"p1"}', b"x"], 0) == 1
    producer.produce("singer-status", b"{}", b"host", heartbeat=True)
    assert producer.flush(5) == 0  # every record failed by now (message.timeout.ms)
    lines, first, heartbeats = producer.take_failures()
    assert (lines, heartbeats) == (2, 1)
    assert first is not None and "timed out" in first
    assert producer.take_failures() == (0, None, 0)  # taken
    assert any(facility == "FAIL" and "127.0.0.1:1" in message for _, facility, message in producer.take_logs())
    assert producer.fatal_error() is None
    producer.close()


def test_close_waits_for_a_flush_in_another_thread_and_later_calls_raise() -> None:
    producer = Producer({**NOWHERE, "message.timeout.ms": "5000"}, ("pin",))
    producer.produce("events", b"{}")
    left: list[int] = []
    flushing = threading.Thread(target=lambda: left.append(producer.flush(3.0)))
    flushing.start()
    time.sleep(0.5)  # the flush is under way (it waits 3 s for a broker that is not there)
    producer.close()  # must not destroy librdkafka under the running flush
    assert left == [1], "close returned before the flush in the other thread had finished"
    flushing.join()
    with pytest.raises(KafkaError, match="closed"):
        producer.flush(0)
    assert issubclass(KafkaError, PinappError)


def test_a_bad_setting_names_itself() -> None:
    with pytest.raises(ValueError, match=r"linger\.ms=soon"):
        Producer({"bootstrap.servers": "127.0.0.1:1", "linger.ms": "soon"}, ("pin",))
