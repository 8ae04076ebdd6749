"""The faust Apps. Nothing else lives here: topics, tables and agents import them.

Design notes: docs/architecture.md, "pinapp/topology/app.py".
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from config import load_settings
from pinapp.adapters import web_auth
from pinapp.topology.broker import faust_credentials
from pinapp.topology.faust_ext import PinApp

__all__ = ["app", "archive_app", "main", "settings"]

settings = load_settings()


def _web_security(web_port: int) -> dict[str, Any]:
    """faust's web settings for the token check (pinapp.adapters.web_auth) and TLS, when configured."""
    options: dict[str, Any] = {}
    check = web_auth.middleware(settings.worker)
    if check is not None:
        options["web_application_options"] = {"middlewares": [check]}
    if settings.worker.web_tls_cert_file is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.worker.web_tls_cert_file, settings.worker.web_tls_key_file)
        options["web_ssl_context"] = context
        options["canonical_url"] = f"https://{settings.worker.web_host}:{web_port}"  # what other workers call
    return options


def _faust_app(
    app_id: str, *, datadir: Path, web_port: int, autodiscover: list[str], instance_suffix: str = ""
) -> PinApp:
    instance = settings.worker.group_instance_id
    return PinApp(
        app_id,
        # Every faust setting pinapp cares about is passed from the one settings object.
        broker=[f"kafka://{host}" for host in settings.kafka.bootstrap.split(",")],
        broker_credentials=faust_credentials(settings.kafka),
        store="rocksdb://",
        datadir=str(datadir),
        # faust's origin-based autodiscovery only scans `pinapp`; agents/ and tables/ are
        # top-level packages, so they are listed explicitly.
        autodiscover=autodiscover,
        origin="pinapp",
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        table_standby_replicas=settings.worker.table_standby_replicas,
        broker_session_timeout=settings.worker.session_timeout_s,
        # A hung broker: requests to it fail after this, and the clients move to the new leader
        # (faust refuses a consumer request timeout below the session timeout).
        producer_request_timeout=settings.kafka.request_timeout_s,
        broker_request_timeout=max(settings.kafka.request_timeout_s, settings.worker.session_timeout_s),
        # the worker and the archiver are members of different groups, each under its own id
        consumer_group_instance_id=f"{instance}{instance_suffix}" if instance else None,
        broker_heartbeat_interval=min(3.0, settings.worker.session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_host=settings.worker.web_host,
        web_bind=settings.worker.web_host,
        **_web_security(web_port),
        web_port=web_port,
        # faust's default (4,096) is two sink batches: the fetch loop then waits on the agent
        # while it writes, and a worker spent 60% of a backlog drain waiting for input
        # (docs/benchmarks.md, "The batch-native hot path").
        stream_buffer_maxsize=settings.pipeline.stream_buffer_events,
        commit_guards=settings.testing.commit_guards,
        # Agents run with concurrency 1: faust #606 commits past in-flight messages otherwise.
    )


app = _faust_app(
    settings.worker.app_id,
    datadir=settings.worker.data_dir,
    web_port=settings.worker.web_port,
    autodiscover=[
        "tables",
        "agents.engagement",
        "agents.rollups",
        "pinapp.web.ops",
        "pinapp.web.table_views",
        "pinapp.web.pages",
    ],
)

archive_app = _faust_app(
    f"{settings.worker.app_id}-archiver",
    datadir=settings.worker.data_dir / "archiver",
    web_port=settings.archive.web_port,
    autodiscover=["agents.archive", "pinapp.web.ops"],
    instance_suffix="-archiver",
)


def main() -> None:
    """Entry point of ``faust -A pinapp.topology.app``-style command lines."""
    app.main()
