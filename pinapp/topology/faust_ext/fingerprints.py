"""The upstream functions this package copies or depends on, fingerprinted for the pinned versions.

Design notes: docs/architecture.md, "pinapp/topology/faust_ext/fingerprints.py".
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PINNED", "UPSTREAM", "Upstream", "changed", "fingerprint", "resolve"]

#: The versions the hashes below were taken from (pyproject.toml pins them).
PINNED = "faust-streaming 0.15.3, mode-streaming 0.7.1, aiokafka 0.14.0"


@dataclass(frozen=True)
class Upstream:
    """One upstream function and why pinapp depends on it."""

    name: str  # module:Qualified.name
    why: str  # the pinapp code to re-read it against
    sha256: str


UPSTREAM: tuple[Upstream, ...] = (
    # -- copied: pinapp runs its own version of these -----------------------------------------
    Upstream(
        "faust.transport.consumer:Consumer._drain_messages",
        "copied in handoff.HandoffConsumer._drain_messages",
        "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
    ),
    Upstream(
        "faust.transport.consumer:Consumer._new_offset",
        "replaced by guards.CommitGuards._new_offset",
        "1d2c7ea89a7ad4f1a216c1d51936e569162cd66bd56f889e13fd29c910b58eb0",
    ),
    Upstream(
        "aiokafka.client:AIOKafkaClient._get_conn",
        "copied in pinapp.topology.faust_ext.failover.FailoverClient._get_conn",
        "68ce5d8391719d3334eeee4c7d374d6ebb7eda5e6d402b2ada8c99725acae711",
    ),
    Upstream(
        "aiokafka.client:AIOKafkaClient._metadata_update",
        "copied in pinapp.topology.faust_ext.failover.FailoverClient._metadata_update",
        "06dc51ed3e0d38b8d64100fd59012f399b2235c2f4804dfd142fcec397412fda",
    ),
    # -- depended on: the fix and the guards assume how these behave --------------------------
    Upstream(
        "aiokafka.client:AIOKafkaClient.get_random_node",
        "failover.FailoverClient.get_random_node (the coordinator lookups' choice)",
        "0e2daf38b78e99a711cf0e929f623add6c5db734fdb65a403b83b55c1644b713",
    ),
    Upstream(
        "aiokafka.client:AIOKafkaClient.send",
        "failover.FailoverClient.send (a timeout or a failed connection raises these errors)",
        "246b277687d7b687d79fd81f0a9718633b61a5ead0a1e9898419a1151ae3a91d",
    ),
    Upstream(
        "faust.tables.recovery:Recovery.on_recovery_completed",
        "recovery.SeekFirstRecovery (resume partitions, seek, flow_control.resume, resume_flow)",
        "6ef567acf072e46da3fccbccc6d662371f634f622c3d510972d5df81f70ae3ac",
    ),
    Upstream(
        "faust.tables.manager:TableManager.recovery",
        "recovery.SeekFirstTableManager.recovery",
        "f0bf5de78b4c3d235c3554010480f407010ccb7c481c68852a985542b952df32",
    ),
    Upstream(
        "faust.transport.consumer:Consumer.getmany",
        "handoff: breaks on flow off and generation, not on seek",
        "4b168d84882a70d6e3e2f9804430a63b92f8fd117d3187cbb4aeb54305bda34e",
    ),
    Upstream(
        "faust.transport.consumer:Consumer._wait_next_records",
        "handoff: the fetch waits for flow first",
        "6218e1969a636b3ff504ad1b8e7ad58a113572e43d746cc96d684ed5153032c6",
    ),
    Upstream(
        "faust.transport.consumer:ThreadDelegateConsumer._getmany",
        "handoff.HandoffConsumer._getmany",
        "f9d47aa9010b5ff2b874ba65f927871f3612718d8a9db00b58601554a35236c4",
    ),
    Upstream(
        "faust.transport.consumer:Consumer.perform_seek",
        "handoff.HandoffConsumer.perform_seek (read offsets)",
        "0e8c130ff4b0afd82c0be9c5fd831316e10febc62c94032833911096e156d7c6",
    ),
    Upstream(
        "faust.transport.consumer:Consumer.seek",
        "handoff.HandoffConsumer.seek",
        "b86a9fe05f956b30cf299c787b6787c6e0349cbf1ae556f2456a1e97b15dbb22",
    ),
    Upstream(
        "faust.transport.consumer:Consumer.stop_flow",
        "recovery.SeekFirstRecovery",
        "cf7e875a2b0d40e8e45df69720709199c47b710c983cf79371cce3a58888a6ac",
    ),
    Upstream(
        "faust.transport.consumer:Consumer.resume_flow",
        "recovery.SeekFirstRecovery",
        "db59630f25b5819b092c90649e1046cbea184e91a0aff59368e7747665536dd5",
    ),
    Upstream(
        "faust.transport.consumer:Consumer.ack",
        "guards: _acked, _acked_index, committed offset check; CommitGuards.ack_batch does it per batch",
        "5fcf41cf45153475de3790dc56fec1b83335956dc8b3bf7ff6bbb2b57627f03f",
    ),
    Upstream(
        "faust.transport.consumer:Consumer._add_gap",
        "guards._refetch_skipped and the gap merge",
        "4df2573ded7c1c2cde04dc6bde6d4480cb5875ef565256e56966b585ae39b1c1",
    ),
    Upstream(
        "faust.transport.consumer:Consumer._filter_committable_offsets",
        "guards.CommitGuards._new_offset",
        "dc5e9baf5d994485473ce80aed1873b9318f02d735fde21e285de3d0c52a5e0e",
    ),
    Upstream(
        "faust.transport.consumer:Consumer._commit_offsets",
        "guards: _committed_offset after a commit",
        "1a6979904118844111259d182ca1c6e92ccc16364ccbe55c58e59d6e254a7adb",
    ),
    Upstream(
        "faust.transport.consumer:Consumer.track_message",
        "partitions.PartitionControl.release",
        "217d7f1399a4cd8e15a43a64ecf50413b9b738058e5433e057f0dc3927a3fc03",
    ),
    Upstream(
        "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._ensure_consumer",
        "partitions: pause, resume and seek in the consumer thread",
        "ff4a4c693b7ec63f4a76dfb61c419380bef70dd32383fe38ebcfcc27091605a6",
    ),
    Upstream(
        "mode.threads:QueueServiceThread.call_thread",
        "partitions: pause, resume and seek in the consumer thread",
        "479edda75b54734b48dabbb33071259949ded0a6f9fa6f82e81afdc42aff6e55",
    ),
    Upstream(
        "mode.utils.queues:FlowControlEvent.resume",
        "recovery: resume clears every stream queue",
        "4dcdc1253fd0dcb40de18a3702503c01d21e9da7e5e55b122fb92615f27648d9",
    ),
    Upstream(
        "faust.app.base:App._consumer_wait_empty",
        "app.PinApp._consumer_wait_empty (before_wait_empty)",
        "6bc313c48c064b1626be9fb38fcc8760ec731ac15305bf42a038742b9b7ad4be",
    ),
    Upstream(
        "faust.app.base:App._new_transport",
        "app.PinApp._new_transport",
        "42db531312dd776fc3937154a32f19eeb9ad7d4ebc2722a92d081a2d271baea1",
    ),
    Upstream(
        "faust.types.settings.settings:Settings._init_env_prefix",
        "app.PinApp: env={} means no environment",
        "d142d19d3720a0996bb7e7d9bef0e6334e7d50acf249a839b8f1e39d4974e5d8",
    ),
    Upstream(
        "faust.types.settings.settings:Settings.getenv",
        "app.PinApp: env={} means no environment",
        "2277ed5c749ded4fe476cf200287ab15987fe56ed2142ec9e9d5504cd2edde08",
    ),
    Upstream(
        "faust.stores.base:Store._encode_key",
        "tables.BatchedTable, stores.raw_get",
        "70702b179cc3502835585f53bd6b91d2c34308489c2be8cda19ef3b8aa302925",
    ),
    Upstream(
        "faust.stores.base:Store._encode_value",
        "tables.BatchedTable",
        "2c46367a493aa13c0a6d992ed04643f9286a75543a800bd661789f4d5f49975e",
    ),
    Upstream(
        "faust.stores.base:Store._decode_value",
        "tables.BatchedTable",
        "5fe35164ec2e2032bbf746009720537e5f0a8cc35a3a81f8dd6e28e3f0fcb6ca",
    ),
    Upstream(
        "faust.stores.rocksdb:Store._get",
        "tables.BatchedTable.get reads the partition db as this does with an event",
        "7ae8dfd6d7754a5952ae162d4d5cf0d51a8a020ed730a4a7c7dc7f7c84e73fb8",
    ),
    Upstream(
        "faust.stores.rocksdb:Store._set",
        "tables.BatchedTable.set writes the partition db as this does (without the key index)",
        "4227e561e288d9413bf663a3a67940fd4976f5484e70e49445858ce4d400d26e",
    ),
    Upstream(
        "faust.stores.rocksdb:Store._del",
        "tables.BatchedTable.delete deletes in the partition db (this searches the key index)",
        "07f42ff3caefffddb002ba3c316120ee8a608a15021fa226fd8e9ba2635004a9",
    ),
    Upstream(
        "faust.stores.rocksdb:Store._db_for_partition",
        "tables.BatchedTable",
        "cb7e67d5f9efc4bced7b7ab09a55fe717c352daad5b693594e3f7ca52a98787f",
    ),
    Upstream(
        "faust.stores.rocksdb:Store.set_persisted_offset",
        "tables.BatchedTable._persisted",
        "b4c811926678346ebb8c40486dbc46d0fbac2bbeaa592384bd955112556acf45",
    ),
    Upstream(
        "faust.transport.drivers.aiokafka:Producer._ensure_producer",
        "tables.BatchedTable.flush sends batches on it",
        "5592a4bbdf2513253f98233a4eac931ded2a531a86f269cddcc33bc3f5827db5",
    ),
    Upstream(
        "faust.transport.drivers.aiokafka:Producer.send",
        "tables.BatchedTable.flush does what this does, a batch at a time",
        "0b5bd08f52e5e2a90ff6307dbfc3c97afb01cb2687835e8fe8486c5bcad02dc1",
    ),
)


def resolve(name: str) -> Any:
    """The object ``module:Qualified.name`` names."""
    module_name, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = inspect.getattr_static(obj, part)
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        obj = obj.fget
    return obj


def fingerprint(obj: Any) -> str:
    """SHA-256 of ``obj``'s source."""
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()


def changed(entries: tuple[Upstream, ...] = UPSTREAM, lookup: Callable[[str], Any] = resolve) -> list[str]:
    """One line per entry whose source no longer has its recorded hash (or is gone)."""
    out = []
    for entry in entries:
        try:
            now = fingerprint(lookup(entry.name))
        except (ImportError, AttributeError, OSError, TypeError) as exc:
            out.append(f"{entry.name}: gone ({exc!r}); re-read {entry.why}")
            continue
        if now != entry.sha256:
            out.append(f"{entry.name}: source changed; re-read {entry.why}")
    return out


def _update(path: Path, current: Mapping[str, str]) -> None:
    text = path.read_text()
    for entry in UPSTREAM:
        old = f'"{entry.sha256}"'
        start = text.index(f'Upstream("{entry.name}"')
        at = text.index(old, start)
        text = text[:at] + f'"{current[entry.name]}"' + text[at + len(old) :]
    path.write_text(text)


if __name__ == "__main__":  # python -m pinapp.topology.faust_ext.fingerprints [--update]
    now = {e.name: fingerprint(resolve(e.name)) for e in UPSTREAM}
    if "--update" in sys.argv:
        _update(Path(__file__), now)
        print(f"recorded {len(now)} fingerprints; set PINNED to the versions installed now")
    else:
        print("\n".join(changed()) or f"all {len(UPSTREAM)} upstream functions match ({PINNED})")
