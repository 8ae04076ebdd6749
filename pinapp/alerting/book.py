"""One alert per condition: firing when it appears, resolved when it clears, nothing in between.

:class:`AlertBook` is the alerter's memory of what is firing (held in the process: a restarted
alerter announces the conditions still holding once more). :func:`payload` is what a webhook
receives: Slack's ``text`` (an incoming webhook shows it as it is) beside the fields a generic
receiver reads (status, alert key, rule, severity, summary, value, start and end).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pinapp.alerting.rules import Finding

__all__ = ["AlertBook", "Notification", "payload"]


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
