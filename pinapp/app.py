"""The faust App. Nothing else lives here: topics, tables and agents import the app.

Run a worker with ``pinapp worker`` (or ``faust -A pinapp.app worker``).
"""

from __future__ import annotations

from config import load_settings
from pinapp.transport import PinApp

__all__ = ["app", "main", "settings"]

settings = load_settings()

app = PinApp(
    settings.worker.app_id,
    # Every faust setting pinapp cares about is passed from the one settings object.
    broker=[f"kafka://{host}" for host in settings.kafka.bootstrap.split(",")],
    store="rocksdb://",
    datadir=str(settings.worker.data_dir),
    # faust's origin-based autodiscovery only scans `pinapp`; agents/ and tables/ are
    # top-level packages, so they are listed explicitly.
    autodiscover=["tables", "agents", "pinapp.web"],
    origin="pinapp",
    topic_partitions=settings.kafka.partitions,
    topic_replication_factor=settings.kafka.replication_factor,
    table_standby_replicas=settings.worker.table_standby_replicas,
    broker_session_timeout=settings.worker.session_timeout_s,
    broker_heartbeat_interval=min(3.0, settings.worker.session_timeout_s / 3),
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    web_host=settings.worker.web_host,
    web_bind=settings.worker.web_host,
    web_port=settings.worker.web_port,
    # Agents run with concurrency 1: faust #606 commits past in-flight messages otherwise.
)


def main() -> None:
    """Entry point of ``faust -A pinapp.app``-style command lines."""
    app.main()
