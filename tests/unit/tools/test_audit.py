"""The audit's reconciliation rules (pure logic; the end-to-end audit runs in test_scale_out)."""

from __future__ import annotations

from pinapp.archive.verify import VerifyReport
from pinapp.domain.dead_letters import dlq_headers
from pinapp.domain.events import EventType
from pinapp.tools.audit import AuditReport, DeadLetterAudit, Pending, dead_letter_source, reconcile


def _expected(**ids: list[str]) -> dict[EventType, set[str]]:
    return {t: set(ids.get(t.value, [])) for t in EventType}


def test_missing_duplicate_and_unexpected_ids_are_each_reported() -> None:
    expected = _expected(like=["a", "b", "c"])
    tables = {EventType.LIKE: ["a", "a", "x"]}
    got = reconcile(expected, tables, archived=None)[EventType.LIKE]
    assert (got.expected, got.rows) == (3, 3)
    assert got.missing == ["b", "c"]
    assert got.duplicates == ["a"]
    assert got.unexpected == ["x"]
    assert got.archived is None


def test_a_pin_learned_from_a_repin_is_not_unexpected() -> None:
    expected = _expected(pin=["p-event"], repin=["r-event"])
    tables = {EventType.PIN: ["p-event", "r-event"], EventType.REPIN: ["r-event"]}
    got = reconcile(expected, tables, archived=None)
    assert got[EventType.PIN].learned == 1 and got[EventType.PIN].unexpected == []
    assert got[EventType.REPIN].missing == []


def test_events_missing_from_the_archive_are_reported_per_type() -> None:
    expected = _expected(login=["l1", "l2"])
    archived = {t: set() for t in EventType} | {EventType.LOGIN: {"l1"}}
    got = reconcile(expected, {EventType.LOGIN: ["l1", "l2"]}, archived)[EventType.LOGIN]
    assert got.archived == 1 and got.archive_missing == ["l2"]


def test_unexpected_rows_count_only_when_the_source_covers_every_event() -> None:
    types = reconcile(_expected(like=["a"]), {EventType.LIKE: ["a", "old"]}, archived=None)
    assert AuditReport("truth", strict=True, types=types).discrepancies == 1
    assert AuditReport("topic", strict=False, types=types).clean


def test_archive_offset_gaps_and_duplicates_count_per_offset() -> None:
    types = reconcile(_expected(), {}, archived=None)
    report = VerifyReport("events", gaps={0: [(5, 7)]}, duplicates={1: [(3, 3)]})
    assert AuditReport("truth", strict=True, types=types, archive=report).discrepancies == 4


def test_a_dead_letter_names_its_source_the_id_a_replayed_batch_repeats() -> None:
    topology = dlq_headers("not JSON", kind="not_json", stage="parse", topic="events", partition=2, offset=41)
    singer = dlq_headers("too long", kind="oversized", stage="singer", file="/var/log/a.log", offset=9, host="h1")
    assert dead_letter_source(topology) == ("topic", "events", "2", "41")
    assert dead_letter_source(singer) == ("file", "h1", "/var/log/a.log", "9")
    assert dead_letter_source([("other", b"x")]) is None


def test_bad_inputs_without_a_dead_letter_are_discrepancies_and_resent_ones_are_not() -> None:
    by_count = DeadLetterAudit(expected=5, inputs=4, resent=3)
    assert by_count.missing == 1
    by_offset = DeadLetterAudit(expected=2, inputs=1, missing_ids=["0:7"])
    assert by_offset.missing == 1
    report = AuditReport("t", True, reconcile(_expected(), {}, archived=None), dead_letters=by_count)
    assert report.discrepancies == 1 and not report.clean
    resent_only = AuditReport(
        "t", True, reconcile(_expected(), {}, archived=None), dead_letters=DeadLetterAudit(3, inputs=3, resent=7)
    )
    assert resent_only.clean


def test_events_beyond_the_workers_positions_are_pending_not_missing() -> None:
    """After a normal stop, records the workers had not reached yet have no row: pending."""
    expected = _expected(like=["done", "waiting", "lost"])
    pending = Pending(rows=frozenset({"waiting"}), archive=frozenset({"waiting", "lost"}))
    archived = {t: set() for t in EventType} | {EventType.LIKE: {"done"}}
    types = reconcile(expected, {EventType.LIKE: ["done"]}, archived, pending)
    got = types[EventType.LIKE]
    assert (got.missing, got.pending) == (["lost"], ["waiting"])
    assert (got.archive_missing, got.archive_pending) == ([], ["lost", "waiting"])
    report = AuditReport("truth", strict=True, types=types)
    assert (report.discrepancies, report.pending) == (1, 3)  # "lost" has no row though processed


def test_pending_counts_only_once_the_audit_waited_for_it() -> None:
    types = reconcile(_expected(like=["a"]), {}, archived=None, pending=Pending(rows=frozenset({"a"})))
    assert AuditReport("truth", strict=True, types=types).clean
    waited = AuditReport("truth", strict=True, types=types, pending_counts=True)
    assert (waited.clean, waited.discrepancies) == (False, 1)


def test_bad_inputs_the_workers_have_not_reached_are_pending_dead_letters() -> None:
    by_count = DeadLetterAudit(expected=5, inputs=3, pending=2)  # the truth knows only how many
    assert (by_count.missing, by_count.pending) == (0, 2)
    assert DeadLetterAudit(expected=5, inputs=2, pending=2).missing == 1
    report = AuditReport("truth", strict=True, types=reconcile(_expected(), {}, None), dead_letters=by_count)
    assert report.clean and report.pending == 2
