"""What ``pinapp audit`` found (:mod:`pinapp.tools.audit`), as data, JSON and text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate

from pinapp.adapters.rollup_check import RollupCheck
from pinapp.archive.verify import VerifyReport
from pinapp.domain.events import EventType

__all__ = ["AuditReport", "DeadLetterAudit", "Pending", "TypeAudit"]


@dataclass
class TypeAudit:
    """The reconciliation of one event type."""

    event_type: EventType
    expected: int = 0
    rows: int = 0
    missing: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    learned: int = 0
    archived: int | None = None
    archive_missing: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # no row yet, and not processed yet
    archive_pending: list[str] = field(default_factory=list)  # not archived yet, and beyond the archiver's commit


@dataclass
class DeadLetterAudit:
    """Bad inputs against the dead-letter topic, each source counted once."""

    expected: int  # bad inputs: the truth's malformed count, or the invalid records in the topic
    inputs: int = 0  # distinct sources with a dead letter
    resent: int = 0  # dead letters beyond the first of their source (a batch processed again)
    #: bad inputs without a dead letter: ``partition:offset`` when the topic is the source, else
    #: only their number (the truth does not know offsets)
    missing_ids: list[str] = field(default_factory=list)
    pending: int = 0  # bad records in the topic that the workers have not processed yet

    @property
    def missing(self) -> int:
        if self.missing_ids:
            return len(self.missing_ids)
        return max(0, self.expected - self.inputs - self.pending)


@dataclass(frozen=True)
class Pending:
    """What the pipeline has not processed yet: the topic's records beyond its positions."""

    rows: frozenset[str] = frozenset()  # valid event ids at or beyond the workers' positions
    bad: frozenset[str] = frozenset()  # invalid records there (``partition:offset``): dead letters to come
    archive: frozenset[str] = frozenset()  # valid event ids at or beyond the archiver's commit


@dataclass
class AuditReport:
    source: str
    strict: bool  # whether unexpected rows count as failures (the source covers every event)
    types: dict[EventType, TypeAudit]
    archive: VerifyReport | None = None
    rollups: RollupCheck | None = None
    dead_letters: DeadLetterAudit | None = None
    #: whether what is still pending counts (the audit waited for the pipeline to catch up)
    pending_counts: bool = False

    @property
    def pending(self) -> int:
        """Events and bad inputs not processed (or archived) yet: not missing."""
        n = sum(len(t.pending) + len(t.archive_pending) for t in self.types.values())
        return n + (self.dead_letters.pending if self.dead_letters is not None else 0)

    @property
    def discrepancies(self) -> int:
        n = self.pending if self.pending_counts else 0
        for t in self.types.values():
            n += len(t.missing) + len(t.duplicates) + len(t.archive_missing)
            n += len(t.unexpected) if self.strict else 0
        if self.archive is not None:
            n += sum(b - a + 1 for runs in self.archive.gaps.values() for a, b in runs)
            n += sum(b - a + 1 for runs in self.archive.duplicates.values() for a, b in runs)
        if self.rollups is not None:
            n += len(self.rollups.mismatches)
        if self.dead_letters is not None:
            n += self.dead_letters.missing
        return n

    @property
    def clean(self) -> bool:
        return self.discrepancies == 0

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "source": self.source,
            "clean": self.clean,
            "discrepancies": self.discrepancies,
            "pending": self.pending,
        }
        doc["types"] = {
            t.value: {
                "expected": a.expected,
                "rows": a.rows,
                "missing": a.missing,
                "pending": a.pending,
                "archive_pending": a.archive_pending,
                "duplicates": a.duplicates,
                "unexpected": a.unexpected,
                "learned_pin_rows": a.learned,
                "archived": a.archived,
                "archive_missing": a.archive_missing,
            }
            for t, a in self.types.items()
        }
        if self.rollups is not None:
            doc["rollups"] = {
                "minutes": self.rollups.minutes,
                "pins_checked": self.rollups.pins_checked,
                "mismatches": self.rollups.mismatches,
            }
        if self.dead_letters is not None:
            doc["dead_letters"] = {
                "expected": self.dead_letters.expected,
                "inputs": self.dead_letters.inputs,
                "resent": self.dead_letters.resent,
                "missing": self.dead_letters.missing,
                "missing_ids": self.dead_letters.missing_ids,
                "pending": self.dead_letters.pending,
            }
        if self.archive is not None:
            doc["archive_offsets"] = {
                "records": self.archive.records,
                "objects": self.archive.objects,
                "gaps": self.archive.gaps,
                "duplicates": self.archive.duplicates,
            }
        return doc

    def render(self, show: int = 10) -> list[str]:
        """The report as text: a table per event type, then each kind of discrepancy (``show`` ids
        of each), the archive, the rollups, the dead letters and the verdict."""
        out: list[str] = []
        rows = [
            (
                t.value,
                a.expected,
                a.rows,
                len(a.missing),
                len(a.pending),
                len(a.duplicates),
                len(a.unexpected),
                a.learned,
                "-" if a.archived is None else a.archived,
                len(a.archive_missing),
                "-" if a.archived is None else len(a.archive_pending),
            )
            for t, a in self.types.items()
        ]
        out.append(f"expected: {self.source}")
        out.append(
            tabulate(
                rows,
                headers=[
                    "type",
                    "expected",
                    "rows",
                    "missing",
                    "pending",
                    "duplicate",
                    "unexpected",
                    "learned",
                    "archived",
                    "not archived",
                    "archive pending",
                ],
            )
        )

        def ids(kind: str, t: str, found: list[str]) -> None:
            if found and show:
                more = f" (+{len(found) - show} more)" if len(found) > show else ""
                out.append(f"  {t} {kind}: {', '.join(found[:show])}{more}")

        for t, a in self.types.items():
            ids("missing", t.value, a.missing)
            ids("pending" + (" (still, after --wait)" if self.pending_counts else ""), t.value, a.pending)
            ids("duplicate", t.value, a.duplicates)
            ids(
                "unexpected" if self.strict else "unexpected (not counted: the topic lost old records)",
                t.value,
                a.unexpected,
            )
            ids("not archived", t.value, a.archive_missing)
        if self.archive is not None:
            arch = self.archive
            out.append(f"archive {arch.topic}: {arch.records} records in {arch.objects} objects")
            for partition, runs in sorted(arch.gaps.items()):
                out.append(f"  partition {partition}: offsets not archived {runs}")
            for partition, runs in sorted(arch.duplicates.items()):
                out.append(f"  partition {partition}: offsets archived twice {runs}")
        if self.rollups is not None:
            check = self.rollups
            verdict = "exact" if check.clean else f"{len(check.mismatches)} mismatches"
            out.append(
                f"rollups: {verdict} against the raw rows ({check.minutes} minutes; "
                f"top {check.top_n} pins checked over {check.pins_checked} kept)"
            )
            for line in check.mismatches[:show]:
                out.append(f"  {line}")
        if self.dead_letters is not None:
            dl = self.dead_letters
            out.append(
                f"dead letters: {dl.inputs} bad inputs of {dl.expected} expected, {dl.missing} missing, "
                f"{dl.pending} pending; {dl.resent} resent (a batch processed again; one per source offset counts)"
            )
            ids("without a dead letter", "input", dl.missing_ids)
        if self.pending:
            out.append(
                f"pending: {self.pending} events and bad inputs are in Kafka beyond the workers' positions "
                "or the archiver's commit, not processed yet"
                + (
                    ": still there after --wait (are the workers and the archiver running?)"
                    if self.pending_counts
                    else " (not counted; --wait S waits for them)"
                )
            )
        verdict = "CLEAN" if self.clean else f"{self.discrepancies} discrepancies"
        out.append(f"audit: {verdict}" + (f", {self.pending} pending" if self.pending and self.clean else ""))
        return out
