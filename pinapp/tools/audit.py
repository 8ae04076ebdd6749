"""``pinapp audit``: reconcile a run end to end, the user's tool to trust the pipeline.

Design notes: docs/architecture.md, "pinapp/tools/audit.py".
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from config import Settings
from pinapp.adapters.db import create_pool
from pinapp.adapters.kafka import partitions_of, read_topic
from pinapp.adapters.rollup_check import check_rollups
from pinapp.adapters.rollup_sql import read_positions
from pinapp.adapters.s3 import s3_client
from pinapp.archive.records import ArchivedRecord
from pinapp.archive.verify import VerifyReport, archiver_group, committed_offsets, verify_topic
from pinapp.domain.ddl import TABLES
from pinapp.domain.dead_letters import HEADER_PREFIX
from pinapp.domain.events import EventType, parse_event
from pinapp.errors import InvalidEvent, PinappError
from pinapp.tools.audit_report import AuditReport, DeadLetterAudit, Pending, TypeAudit

__all__ = [
    "AuditReport",
    "DeadLetterAudit",
    "Pending",
    "TypeAudit",
    "audit",
    "dead_letter_source",
    "expected_from_topic",
    "expected_from_truth",
    "reconcile",
]

ExpectedIds = dict[EventType, set[str]]
_NOTHING_PENDING = Pending()


def expected_from_truth(path: Path) -> ExpectedIds:
    """The valid unique event ids the generator wrote to its ground-truth file."""
    return _truth(path)[0]


def _truth(path: Path) -> tuple[ExpectedIds, int]:
    """The ground truth's valid unique event ids, and how many malformed inputs it wrote."""
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise PinappError(f"cannot read the ground-truth file {path}: {exc}") from None
    ids = doc.get("event_ids")
    if not isinstance(ids, dict):
        raise PinappError(
            f"{path} has no event ids (`pinapp generate` keeps them only with --count or --ids, and "
            "`make demo` runs it without): audit against the events topic instead: `pinapp audit`"
        )
    return {t: set(ids.get(t.value, ())) for t in EventType}, int(doc.get("malformed", 0))


async def expected_from_topic(
    settings: Settings, topic: str, invalid: set[str] | None = None
) -> tuple[ExpectedIds, bool]:
    """Valid unique event ids in ``topic`` (validated by the topology's own rules), and whether
    the topic still holds every record ever written (log start 0 in every partition).
    ``invalid``, when given, gets the ``partition:offset`` of every record the rules reject."""
    starts: dict[int, int] = {}
    expected: ExpectedIds = {t: set() for t in EventType}
    max_bytes = settings.pipeline.max_event_bytes
    async for rec in read_topic(settings.kafka, topic, log_starts=starts):
        try:
            event = parse_event(rec.value or b"", max_bytes=max_bytes)
        except InvalidEvent:
            if invalid is not None:
                invalid.add(f"{rec.partition}:{rec.offset}")
            continue
        expected[event.event_type].add(event.event_id)
    return expected, all(offset == 0 for offset in starts.values())


def dead_letter_source(headers: Any) -> tuple[str, ...] | None:
    """The bad input a dead letter stands for, from its headers: ``("topic", topic, partition,
    offset)`` from the topology, ``("file", host, path, offset)`` from Singer; the id to dedup on."""
    h = {name: value.decode(errors="replace") for name, value in headers or ()}

    def field_(name: str) -> str:
        return h.get(HEADER_PREFIX + name, "")

    if field_("topic"):
        return ("topic", field_("topic"), field_("partition"), field_("offset"))
    if field_("file"):
        return ("file", field_("host"), field_("file"), field_("offset"))
    return None


async def _dead_letters(
    settings: Settings, topic: str, expected: int, invalid: set[str] | None, pending: frozenset[str]
) -> DeadLetterAudit:
    """The dead letters of ``topic``'s inputs and of Singer's lines, by source (see the module).

    ``invalid``: the topic's rejected records (``partition:offset``), when the topic is the
    source of expectations; otherwise only ``expected``, a count, is checked. ``pending``: the
    rejected records the workers have not processed yet."""
    seen: Counter[tuple[str, ...]] = Counter()
    if (expected or invalid) and await partitions_of(settings.kafka, settings.kafka.dlq_topic):
        async for rec in read_topic(settings.kafka, settings.kafka.dlq_topic):
            source = dead_letter_source(rec.headers)
            if source is not None and (source[0] == "file" or source[1] == topic):
                seen[source] += 1
    lettered = {f"{s[2]}:{s[3]}" for s in seen if s[0] == "topic"}
    waiting = pending - lettered
    report = DeadLetterAudit(expected, inputs=len(seen), resent=sum(seen.values()) - len(seen), pending=len(waiting))
    if invalid is not None:
        report.missing_ids = sorted(invalid - lettered - waiting)
    return report


async def _table_ids(pool: Any) -> dict[EventType, list[str]]:
    out: dict[EventType, list[str]] = {}
    async with pool.acquire() as conn, conn.cursor() as cur:
        for event_type, spec in TABLES.items():
            await cur.execute(f"SELECT event_id FROM `{spec.name}`")  # noqa: S608 - fixed table names
            out[event_type] = [row[0] for row in await cur.fetchall()]
    return out


async def _archive(
    settings: Settings, topic: str, start: dict[int, int], committed: dict[int, int]
) -> tuple[VerifyReport, dict[EventType, set[str]]]:
    """The archive's offset check up to the archiver's ``committed`` offsets, and the valid event
    ids found in archived records (one read)."""
    found: dict[EventType, set[str]] = {t: set() for t in EventType}
    max_bytes = settings.pipeline.max_event_bytes

    def note_event(record: ArchivedRecord) -> None:
        try:
            event = parse_event(record.value or b"", max_bytes=max_bytes)
        except InvalidEvent:
            return
        found[event.event_type].add(event.event_id)

    async with s3_client(settings.s3) as s3:
        report = await verify_topic(
            s3, settings.s3.bucket, settings.archive.prefix, topic, start, committed, each_record=note_event
        )
    return report, found


async def _positions(pool: Any, topic: str) -> dict[int, int]:
    """The workers' positions: per partition, the offset before which every record is processed
    (its row, or its dead letter, written in the same transaction as the position)."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        return {p: stored.next_offset for p, stored in (await read_positions(cur, topic, None, lock=False)).items()}


async def _pending(
    settings: Settings, topic: str, positions: dict[int, int], archived_to: dict[int, int] | None
) -> Pending:
    """What ``topic`` holds at or beyond the workers' ``positions`` and the archiver's commit
    (``archived_to``; ``None``: the archive is not audited), in one read from the lower of the
    two (a partition not named: from its log start)."""
    below = positions if archived_to is None else {p: min(o, positions.get(p, 0)) for p, o in archived_to.items()}
    rows: set[str] = set()
    bad: set[str] = set()
    archive: set[str] = set()
    max_bytes = settings.pipeline.max_event_bytes
    async for rec in read_topic(settings.kafka, topic, from_offsets=below):
        unprocessed = rec.offset >= positions.get(rec.partition, 0)
        try:
            event_id = parse_event(rec.value or b"", max_bytes=max_bytes).event_id
        except InvalidEvent:
            if unprocessed:
                bad.add(f"{rec.partition}:{rec.offset}")
            continue
        if unprocessed:
            rows.add(event_id)
        if archived_to is not None and rec.offset >= archived_to.get(rec.partition, 0):
            archive.add(event_id)
    return Pending(frozenset(rows), frozenset(bad), frozenset(archive))


def reconcile(
    expected: ExpectedIds,
    tables: dict[EventType, list[str]],
    archived: dict[EventType, set[str]] | None,
    pending: Pending = _NOTHING_PENDING,
) -> dict[EventType, TypeAudit]:
    all_expected = set().union(*expected.values())
    out: dict[EventType, TypeAudit] = {}
    for event_type in EventType:
        want = expected[event_type]
        counts = Counter(tables.get(event_type, ()))
        audit_ = TypeAudit(event_type, expected=len(want), rows=sum(counts.values()))
        absent = want - counts.keys()
        audit_.pending = sorted(absent & pending.rows)
        audit_.missing = sorted(absent - pending.rows)
        audit_.duplicates = sorted(i for i, n in counts.items() if n > 1)
        extra = counts.keys() - want
        if event_type is EventType.PIN:  # pins learned from another event carry that event's id
            learned = extra & all_expected
            audit_.learned = len(learned)
            extra -= learned
        audit_.unexpected = sorted(extra)
        if archived is not None:
            audit_.archived = len(archived[event_type] & want)
            unarchived = want - archived[event_type]
            audit_.archive_pending = sorted(unarchived & pending.archive)
            audit_.archive_missing = sorted(unarchived - pending.archive)
        out[event_type] = audit_
    return out


async def audit(
    settings: Settings, *, truth: Path | None = None, archive: bool = True, wait_s: float = 0.0
) -> AuditReport:
    """Reconcile (see the module docstring). With ``wait_s``, again every few seconds until clean
    with nothing pending, or ``wait_s`` has passed; what is pending then counts. The expected
    events are read once."""
    topic = settings.kafka.events_topic
    invalid: set[str] | None = None
    if truth is not None:
        (expected, malformed), source, strict = _truth(truth), f"ground truth {truth}", True
    else:
        invalid = set()
        expected, strict = await expected_from_topic(settings, topic, invalid)
        malformed, source = len(invalid), f"topic {topic}"
    deadline = time.monotonic() + wait_s
    pool = await create_pool(settings.db, size=1, reader=True)  # one connection for every round
    try:
        while True:
            # Positions first: whatever is processed after this read is pending, never missing.
            positions = await _positions(pool, topic)
            archive_start: dict[int, int] = {}
            archived_to: dict[int, int] | None = None
            if archive:
                archive_start, archived_to = await committed_offsets(settings, topic, archiver_group(settings))
            pending = await _pending(settings, topic, positions, archived_to)
            tables = await _table_ids(pool)
            report: VerifyReport | None = None
            archived: dict[EventType, set[str]] | None = None
            if archived_to is not None:
                report, archived = await _archive(settings, topic, archive_start, archived_to)
            rollups = await check_rollups(pool)
            dead_letters = await _dead_letters(settings, topic, malformed, invalid, pending.bad)
            result = AuditReport(
                source,
                strict,
                reconcile(expected, tables, archived, pending),
                report,
                rollups,
                dead_letters,
                pending_counts=wait_s > 0,
            )
            if (result.clean and not result.pending) or time.monotonic() >= deadline:
                return result
            await asyncio.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    finally:
        pool.close()
        await pool.wait_closed()
