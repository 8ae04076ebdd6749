"""Health of a worker process, for orchestrators: ``GET /health`` (see :mod:`pinapp.web.ops`).

Design notes: docs/architecture.md, "pinapp/telemetry/health.py".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pinapp.telemetry import metrics

__all__ = ["SinkHealth", "sink", "sinks"]


@dataclass(slots=True)
class SinkHealth:
    """State of one sink, updated by its retry loop."""

    name: str
    failing_since: float | None = None
    failed_attempts: int = 0
    last_error: str = ""
    last_success: float | None = None

    def failed(self, error: BaseException | str) -> None:
        """A write failed and will be retried."""
        if self.failing_since is None:
            self.failing_since = time.time()
        self.failed_attempts += 1
        # The exception's type and message only: a DSN or credential never sits in either.
        self.last_error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"[:300]
        metrics.SINK_FAILING.labels(sink=self.name).set(1)

    def succeeded(self) -> None:
        self.failing_since = None
        self.failed_attempts = 0
        self.last_success = time.time()
        metrics.SINK_FAILING.labels(sink=self.name).set(0)
        metrics.SINK_LAST_SUCCESS.labels(sink=self.name).set(self.last_success)

    @property
    def ok(self) -> bool:
        return self.failing_since is None

    def to_json(self, now: float) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "state": "ok" if self.ok else "retrying",
            "last_success_s_ago": None if self.last_success is None else round(now - self.last_success, 3),
        }
        if not self.ok:
            assert self.failing_since is not None
            doc.update(
                failing_for_s=round(now - self.failing_since, 3),
                failed_attempts=self.failed_attempts,
                last_error=self.last_error,
            )
        return doc


_SINKS: dict[str, SinkHealth] = {}


def sink(name: str) -> SinkHealth:
    """The process-wide health record of sink ``name`` (created on first use)."""
    return _SINKS.setdefault(name, SinkHealth(name))


def sinks() -> dict[str, SinkHealth]:
    """Every sink registered in this process."""
    return dict(_SINKS)
