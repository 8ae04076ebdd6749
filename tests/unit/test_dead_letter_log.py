"""The log's account of dead letters: the first few per kind in full, then one line a burst."""

from __future__ import annotations

import logging

import pytest

from pinapp.domain.dead_letters import DeadLetterLog


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
        now[0] = 11.0
        log.record("bad_ip", "events[0]@9", "validate", "ip: '1.2.3' is not an IPv4 or IPv6 address")
        now[0] = 22.0
        log.flush_due()
    assert [r.getMessage().split(" at ")[0] for r in caplog.records] == [
        "dead-lettering events[0]@5",
        "dead-lettering events[0]@9",
    ]  # a new interval logs in full again
