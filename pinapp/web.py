"""HTTP views served by each worker's faust web server (read-only), the archiver's included."""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pinapp.app import app, archive_app

__all__ = ["MetricsView"]


@archive_app.page("/metrics")
@app.page("/metrics")
class MetricsView(View):
    """Prometheus exposition of this worker's counters (see :mod:`pinapp.metrics`)."""

    async def get(self, request: Request, **kwargs: Any) -> Response:
        return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])
