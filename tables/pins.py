"""The pin cache: pin_id -> full pin, so repins, comments and likes find their pin."""

from __future__ import annotations

from pinapp.adapters.kafka import topic_configs
from pinapp.domain.table_values import Pin
from pinapp.topology.app import app, settings

__all__ = ["pin_by_id"]

#: Co-partitioned with ``events`` (keyed by pin_id there): a pin's events and its cache
#: entry live on the same worker, and move together on rebalance.
pin_by_id = app.Table(
    "pin_by_id",
    key_type=bytes,  # pin_id as UTF-8: no serializer on the hot path
    value_type=Pin,
    partitions=settings.kafka.partitions,
    options=settings.worker.rocksdb_options(),
    extra_topic_configs=topic_configs(settings.kafka),
    help="pin_id -> full pin (the pin cache)",
)
