"""One alert per condition: firing when it appears, resolved when it clears, nothing in between.

Design notes: docs/architecture.md, "pinapp/alerting/book.py".
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from pinapp.alerting.rules import Finding

__all__ = ["AlertBook", "Notification", "payload"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Notification:
    """A condition that started (``firing``) or ended (``resolved``)."""

    status: str
    finding: Finding
    started_at: float
    ended_at: float | None = None


@dataclass
class AlertBook:
    """What is firing now, by key."""

    firing: dict[str, tuple[Finding, float]] = field(default_factory=dict)

    def update(self, findings: Iterable[Finding], now: float) -> list[Notification]:
        """The notifications this round's ``findings`` make: new conditions fire, cleared ones resolve."""
        current = {f.key: f for f in findings}
        out = [Notification("firing", f, now) for key, f in current.items() if key not in self.firing]
        for key in [k for k in self.firing if k not in current]:
            finding, started = self.firing.pop(key)
            out.append(Notification("resolved", finding, started, now))
        for n in out:
            if n.status == "firing":
                self.firing[n.finding.key] = (n.finding, now)
        return out

    @classmethod
    def load(cls, path: Path | None) -> AlertBook:
        """The book kept in ``path`` (empty without one; an unreadable file is logged and ignored:
        its conditions are announced once more)."""
        if path is None or not path.exists():
            return cls()
        try:
            doc = orjson.loads(path.read_bytes())
            firing = {e["finding"]["key"]: (Finding(**e["finding"]), float(e["since"])) for e in doc["firing"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("alerts.state_file %s cannot be read (%r): starting with nothing firing", path, exc)
            return cls()
        return cls(firing)

    def save(self, path: Path | None) -> None:
        """Keep what is firing in ``path`` (nothing without one)."""
        if path is None:
            return
        doc = {"firing": [{"finding": asdict(f), "since": since} for f, since in self.firing.values()]}
        aside = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            aside.write_bytes(orjson.dumps(doc))
            os.replace(aside, path)
        except OSError as exc:  # a full disk must not stop the alerting itself
            logger.warning("alerts.state_file %s cannot be written (%r); firing alerts kept in memory", path, exc)
            with contextlib.suppress(OSError):
                aside.unlink()


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def payload(notification: Notification) -> dict[str, Any]:
    """The JSON a webhook receives for ``notification``."""
    f = notification.finding
    mark = "FIRING" if notification.status == "firing" else "RESOLVED"
    return {
        "text": f"[pinapp {mark}] {f.summary}",
        "status": notification.status,
        "alert": f.key,
        "rule": f.rule,
        "severity": f.severity,
        "summary": f.summary,
        "value": f.value,
        "started_at": _iso(notification.started_at),
        "ended_at": _iso(notification.ended_at),
        "source": "pinapp",
    }
