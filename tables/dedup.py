"""Dedup state: event_id -> where and when it was first accepted, for a bounded horizon.

Not a windowed table: faust's window expiry does not run for RocksDB after recovery
(faust #385). Expiry is explicit instead (see :mod:`pinapp.domain.dedup`): lookups ignore
entries older than the horizon, and a sweep deletes them, which writes tombstones to the
changelog, so neither local state nor the compacted changelog grows without bound.
"""

from __future__ import annotations

from pinapp.adapters.kafka import topic_configs
from pinapp.topology.app import app, settings

__all__ = ["seen_event_ids"]

seen_event_ids = app.Table(
    "seen_event_ids",
    key_type=bytes,  # event_id as UTF-8: no serializer on the hot path
    value_type=bytes,  # raw bytes: pinapp.domain.table_values.SeenEvent.to_bytes()
    partitions=settings.kafka.partitions,
    options=settings.worker.rocksdb_options(),
    extra_topic_configs=topic_configs(settings.kafka),
    help="event_id -> first acceptance (dedup, bounded by pipeline.dedup_horizon_s)",
)
