"""Dead letters: the log's account (the first few per kind in full, then one line a burst), and a
record too large to send whole."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import pytest

from pinapp.domain.dead_letters import HEADER_PREFIX, KEPT_BYTES, DeadLetterLog, DeadLetters


def test_a_burst_logs_the_first_of_each_kind_then_one_summary(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = DeadLetterLog(
        logging.getLogger("test.dlq"), topic="events-dlq", first_per_kind=2, interval_s=10, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, "test.dlq"):
        for i in range(700):
            log.record("schema", f"events[1]@{i}", "validate", "schema: data must contain ['ts'] properties")
        for i in range(504):
            log.record("not_json", f"events[2]@{i}", "validate", "not JSON: unexpected end of data")
        log.flush_due()  # the interval has not ended
        assert len(caplog.records) == 4
        assert "events[1]@0 at validate (schema)" in caplog.records[0].getMessage()
        now[0] = 10.0
        log.flush_due()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5
    assert lines[-1].startswith("dead-lettered 1,204 events in the last 10 s: 700 schema, 504 not_json")
    assert "events-dlq" in lines[-1]


def test_an_interval_of_few_dead_letters_needs_no_summary(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = DeadLetterLog(logging.getLogger("test.dlq2"), first_per_kind=3, interval_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "test.dlq2"):
        log.record("bad_ip", "events[0]@5", "validate", "ip: '999.1.1.1' is not an IPv4 or IPv6 address")
        now[0] = 10.0
        log.flush_due()
    assert [r.getMessage().split(" at ")[0] for r in caplog.records] == ["dead-lettering events[0]@5"]


def test_steady_bad_input_costs_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """The demo's 1% malformed input, five kinds at ~20 a second: the first of each kind in full
    once, then one summary per interval; a kind that stopped for an interval is shown in full again."""
    now = [0.0]
    log = DeadLetterLog(logging.getLogger("test.dlq3"), first_per_kind=3, interval_s=10, clock=lambda: now[0])
    kinds = ["schema", "not_json", "bad_ip", "too_large", "unknown_type"]
    with caplog.at_level(logging.WARNING, "test.dlq3"):
        for second in range(60):
            now[0] = float(second)
            for i in range(20):
                log.record(kinds[i % 5], f"events[0]@{second * 20 + i}", "validate", "bad")
        now[0] = 60.0
        log.flush_due()
        first_minute = [r.getMessage() for r in caplog.records]
        caplog.clear()
        now[0] = 80.0
        log.flush_due()  # an interval with none: not_json starts again below
        now[0] = 81.0
        log.record("not_json", "events[0]@9999", "validate", "bad")
    assert len(first_minute) == 5 * 3 + 6  # each kind's first three, then six summaries
    assert all(line.startswith("dead-lettered 200 events in the last 10 s") for line in first_minute[15:])
    assert [r.getMessage().split(" at ")[0] for r in caplog.records] == ["dead-lettering events[0]@9999"]


async def test_a_record_too_large_to_send_whole_is_dead_lettered_cut_with_its_size_and_hash() -> None:
    """faust's producer refuses a request over 1,000,000 bytes: sending such a record whole would
    fail, leave its batch unacked and have it fetched again forever."""
    sent: list[dict[str, object]] = []

    async def send(**record: object) -> None:  # as a producer with max_request_size 1,000,000
        assert len(record["value"] or b"") + len(record["key"] or b"") < 1_000_000, "MessageSizeTooLargeError"  # type: ignore[arg-type]
        sent.append(record)

    @dataclass
    class Record:
        value: bytes
        key: bytes = b"k" * 5000
        topic: str = "events"
        partition: int = 3
        offset: int = 42
        timestamp: float = 1.0

    letters = DeadLetters(send, topic="events-dlq", logger=logging.getLogger("t"))
    huge = b"x" * 1_000_500
    await letters(Record(huge), "event is 1000500 bytes", kind="too_large", stage="validate")
    await letters(Record(b"small", key=b"p1"), "not JSON", kind="not_json", stage="validate")
    headers = {name.removeprefix(HEADER_PREFIX): value.decode() for name, value in sent[0]["headers"]}  # type: ignore[attr-defined]
    assert sent[0]["value"] == huge[:KEPT_BYTES] and len(sent[0]["key"]) == 1024  # type: ignore[arg-type]
    assert headers["original_bytes"] == "1000500" and headers["truncated"] == "true"
    assert headers["sha256"] == hashlib.sha256(huge).hexdigest()
    assert (headers["partition"], headers["offset"], headers["kind"]) == ("3", "42", "too_large")
    assert sent[1]["value"] == b"small" and not any(n.endswith("truncated") for n, _ in sent[1]["headers"])  # type: ignore[attr-defined]


async def test_a_dead_letter_kafka_did_not_take_is_sent_again_before_the_batch_is_acked() -> None:
    """faust's flush does not fail on a send that failed after its hand-off: unconfirmed() waits
    for each dead letter's answer and sends again the ones that failed."""
    sent: list[bytes] = []
    answers: list[asyncio.Future[object]] = []

    async def send(**record: Any) -> asyncio.Future[object]:
        sent.append(record["value"])
        answers.append(asyncio.get_running_loop().create_future())
        return answers[-1]

    @dataclass
    class Record:
        value: bytes
        key: bytes = b"k"
        topic: str = "events"
        partition: int = 0
        offset: int = 1
        timestamp: float = 1.0

    letters = DeadLetters(send, topic="events-dlq", logger=logging.getLogger("t"))
    await letters(Record(b"bad"), "not JSON", kind="not_json", stage="validate")
    answers[0].set_exception(ConnectionError("broker went away"))
    [error] = await letters.unconfirmed()
    assert isinstance(error, ConnectionError) and sent == [b"bad", b"bad"], "sent again"
    answers[1].set_result("taken")
    assert await letters.unconfirmed() == []
