"""Every use of faust's, mode's and aiokafka's private internals, fenced in one package.

pinapp depends on faust-streaming 0.15.3 (pinned) beyond its public API in five ways, one
module each; the rest of pinapp calls only the small public API exported here:

* :mod:`.handoff`: the consumer's fetch loop (faust's ``_drain_messages`` with a task-free
  hand-off and seek epochs, so no record of a batch fetched before a seek is handed over),
  which hands a batch-read topic's records over a partition's run at a time
  (:mod:`.batches`: :class:`FetchedBatches`, the engagement and archive agents' input);
* :mod:`.guards`: the commit rule (never past an unacknowledged offset) and the two guards
  that fetch again what faust would lose, each counted and logged;
* :mod:`.partitions`: pause and resume fetching without loss, and giving records up
  without acking them (the archiver's partition control);
* :mod:`.tables`: table reads and writes per batch (:class:`BatchedTable`);
* :mod:`.stores`: reads of a table's local RocksDB partitions outside an event;

and :mod:`.recovery` (table recovery that stops flow while it seeks: the fix for faust #596)
and :mod:`.app` (``PinApp``, which puts them together and reads no environment variable).

Each module's docstring names the private names it still uses and why. Two tests hold the
fence: ``tests/unit/test_faust_fence.py`` fails when code outside this package touches a
private name of faust, mode, aiokafka or prometheus_client, and
``tests/unit/test_faust_fingerprints.py`` fails, listing what to re-read, when an upstream
function this package copies or depends on changes (:mod:`.fingerprints`; the upgrade
procedure is in docs/operations.md).
"""

from __future__ import annotations

from pinapp.topology.faust_ext.app import PinApp, PinConsumer, pin_consumer
from pinapp.topology.faust_ext.batches import FetchedBatches
from pinapp.topology.faust_ext.stores import open_partition_dbs, raw_get
from pinapp.topology.faust_ext.tables import BatchedTable

__all__ = ["BatchedTable", "FetchedBatches", "PinApp", "PinConsumer", "open_partition_dbs", "pin_consumer", "raw_get"]
