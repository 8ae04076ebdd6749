"""Every use of faust's, mode's and aiokafka's private internals, fenced in one package.

Design notes: docs/architecture.md, "pinapp/topology/faust_ext/__init__.py".
"""

from __future__ import annotations

from pinapp.topology.faust_ext.app import PinApp, PinConsumer, pin_consumer
from pinapp.topology.faust_ext.batches import FetchedBatches
from pinapp.topology.faust_ext.stores import open_partition_dbs, raw_get
from pinapp.topology.faust_ext.tables import BatchedTable

__all__ = ["BatchedTable", "FetchedBatches", "PinApp", "PinConsumer", "open_partition_dbs", "pin_consumer", "raw_get"]
