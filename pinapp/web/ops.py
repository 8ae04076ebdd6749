"""HTTP views every worker serves (the archiver's included): ``/metrics`` and ``/health``.

Read-only. The topology's table views live in :mod:`pinapp.web.table_views`.
"""

from __future__ import annotations

import time
from typing import Any

from faust.types import TP, AppT
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pinapp.telemetry import health, metrics
from pinapp.topology.app import app, archive_app
from pinapp.topology.faust_ext import open_partition_dbs, pin_consumer

__all__ = ["HealthView", "MetricsView", "partition_lag", "worker_health"]


@archive_app.page("/metrics")
@app.page("/metrics")
class MetricsView(View):
    """Prometheus exposition of this worker's counters (see :mod:`pinapp.telemetry.metrics`)."""

    async def get(self, request: Request, **kwargs: Any) -> Response:
        # Consumer lag is read at scrape time, for the partitions this worker owns now.
        metrics.CONSUMER_LAG.clear()
        for tp, lag in partition_lag(self.app).items():
            metrics.CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
        for table in self.app.tables.values():
            for kind, size in rocksdb_memory(table).items():
                metrics.ROCKSDB_MEMORY.labels(table=table.name, kind=kind).set(size)
        return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


#: RocksDB properties that make up most of its memory, by the name the metric uses.
_ROCKSDB_MEMORY_PROPERTIES = {
    "memtables": "rocksdb.cur-size-all-mem-tables",
    "block_cache": "rocksdb.block-cache-usage",
    "table_readers": "rocksdb.estimate-table-readers-mem",
}


def rocksdb_memory(table: Any) -> dict[str, int]:
    """Bytes of each memory kind over ``table``'s open partition databases (RocksDB's own figures)."""
    totals = dict.fromkeys(_ROCKSDB_MEMORY_PROPERTIES, 0)
    for db in open_partition_dbs(table).values():
        for kind, prop in _ROCKSDB_MEMORY_PROPERTIES.items():
            totals[kind] += int(db.property_int_value(prop) or 0)
    return totals


def _source_partitions(faust_app: AppT) -> list[TP]:
    """The active partitions of the topics this app's agents consume (not changelogs or faust's own)."""
    sources = {name for agent in faust_app.agents.values() for name in agent.channel.topics}
    return sorted(tp for tp in faust_app.assignor.assigned_actives() if tp.topic in sources)


def partition_lag(faust_app: AppT) -> dict[TP, int]:
    """High watermark minus committed offset per source partition: events in Kafka this worker
    has not yet made durable downstream. A partition not fetched yet (just assigned) has no
    high watermark and is left out."""
    consumer = pin_consumer(faust_app)
    committed = consumer.committed_offsets()  # PinConsumer's (faust has no public per-partition view)
    lag: dict[TP, int] = {}
    for tp in _source_partitions(faust_app):
        highwater, offset = consumer.highwater(tp), committed.get(tp)
        if highwater is not None and highwater >= 0:
            lag[tp] = max(0, highwater - (offset or 0))
    return lag


def worker_health(faust_app: AppT) -> dict[str, Any]:
    """Partitions owned, lag (:func:`partition_lag`), last commit and sink state of this worker."""
    now = time.time()
    consumer = faust_app.consumer
    actives = _source_partitions(faust_app)
    standbys = sorted(faust_app.assignor.assigned_standbys())
    lag = {f"{tp.topic}:{tp.partition}": n for tp, n in partition_lag(faust_app).items()}
    last_commit = getattr(consumer, "last_commit_at", None)
    sinks = {name: s.to_json(now) for name, s in sorted(health.sinks().items())}
    return {
        "status": "ok" if all(s["state"] == "ok" for s in sinks.values()) else "degraded",
        "app_id": faust_app.conf.id,
        "url": str(faust_app.conf.canonical_url),
        "rebalancing": bool(faust_app.rebalancing),
        "partitions": [f"{tp.topic}:{tp.partition}" for tp in actives],
        "standby_table_partitions": [f"{tp.topic}:{tp.partition}" for tp in standbys],
        "lag": lag,
        "lag_total": sum(lag.values()),
        "last_commit_s_ago": None if last_commit is None else round(now - last_commit, 3),
        "sinks": sinks,
    }


@archive_app.page("/health")
@app.page("/health")
class HealthView(View):
    """``200`` with the worker's state; ``503`` while a sink is failing (readiness, not liveness)."""

    async def get(self, request: Request, **kwargs: Any) -> Response:
        doc = worker_health(self.app)
        return self.json(doc, status=200 if doc["status"] == "ok" else 503)
