"""The engagement topology's agent: ``events`` -> validate -> dedup -> pin cache -> enrich -> SingleStore.

All stages run in one faust agent, on batches taken from ``events``. Each further faust
hop (an intermediate topic between stages) costs a full per-message consume/produce cycle,
and faust's per-message overhead (~10k events/s for a trivial agent on 2 cores) would
then cap the pipeline far below its target; see docs/architecture.md. The stages and
their order are :mod:`pinapp.engagement.stages`'s, free of faust; this module gives them
faust's parts: the records in batches as fetched (:class:`pinapp.topology.faust_ext.FetchedBatches`:
a partition's run of records in one hand-off, no faust ``Event`` per record), the tables
through :class:`~pinapp.topology.faust_ext.BatchedTable`, the dead-letter and live topics,
and the acknowledgement of each batch once it is committed.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket

from faust.types import StreamT

from pinapp.adapters.db import EngagementStore, create_pool, migrate
from pinapp.adapters.kafka import ensure_topic_configs
from pinapp.domain.geo import GeoLocator
from pinapp.domain.positions import Claim
from pinapp.engagement.overlap import OverlappedBatches
from pinapp.engagement.stages import EngagementStages
from pinapp.errors import StateStoreLost
from pinapp.telemetry import health
from pinapp.topology import fault_hooks
from pinapp.topology.app import app, settings
from pinapp.topology.broker import watch_brokers
from pinapp.topology.faust_ext import BatchedTable, FetchedBatches
from pinapp.topology.topics import dead_letter_topic, dead_letters, events_topic, live_topic, publish_live
from tables import pin_by_id, seen_event_ids

logger = logging.getLogger(__name__)

__all__ = ["process_engagement"]


@app.timer(interval=5.0)
async def summarize_dead_letters() -> None:
    """A burst of bad input that stopped is still summarized in the log (pinapp.domain.dead_letters)."""
    dead_letters.flush_log()


@app.task
async def report_brokers() -> None:
    """``/health``'s ``brokers``: whether this worker reaches Kafka at all."""
    await watch_brokers(app)


@app.agent(events_topic, name="process_engagement", concurrency=1)
async def process_engagement(stream: StreamT) -> None:
    """Validate, dedup, enrich and sink engagement events, a batch at a time."""
    cfg = settings.pipeline
    health.sink("singlestore")  # listed in /health from the start
    # Topics this agent only writes: faust creates the ones it consumes, not these.
    await dead_letter_topic.maybe_declare()
    await live_topic.maybe_declare()
    # Topics made by an earlier version (or by faust, before the setting) get min.insync.replicas.
    topics = [events_topic, dead_letter_topic, live_topic, seen_event_ids.changelog_topic, pin_by_id.changelog_topic]
    try:
        await ensure_topic_configs(settings.kafka, [t.get_topic_name() for t in topics])
    except Exception as exc:  # noqa: BLE001 - a topic's settings are the operator's: say so, go on
        logger.warning("could not set min.insync.replicas on pinapp's topics: %s; set it with kafka-configs.sh", exc)
    await migrate(settings.db)  # tables are created by the app; idempotent
    pool = await create_pool(settings.db)
    geo = GeoLocator(cfg.geoip_db_path)
    # This writer: the static member (whose generation outlives a restart: Kafka fences a second
    # process under its id), else this process.
    owner = settings.worker.group_instance_id or f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
    stages = EngagementStages(
        EngagementStore(
            pool,
            retry_max_s=cfg.sink_retry_max_s,
            topic=events_topic.get_topic_name(),
            multi_statements=settings.db.multi_statements,
        ),
        geo,
        seen=BatchedTable(seen_event_ids),
        pins=BatchedTable(pin_by_id),
        dead_letter=dead_letters,
        publish_live=publish_live,
        settings=cfg,
        # The group generation the batch was fetched in: a zombie's is older than its successor's.
        claim=lambda batch: Claim(owner, min(getattr(m, "generation_id", None) or 0 for m in batch)),
        row_builder=fault_hooks.row_builder(settings.testing),
    )
    done = fault_hooks.processed_log(settings.testing.processed_log) or (lambda batch: None)

    batches = FetchedBatches(
        stream, max_events=cfg.batch_size, within=cfg.batch_within_s, buffer_events=cfg.stream_buffer_events
    )
    overlapped = OverlappedBatches(
        stages,
        batches.ack,
        done,
        state_retry_max_s=cfg.state_retry_max_s,
        data_dir=str(settings.worker.data_dir),
    )
    try:
        async for batch in batches:
            await overlapped.submit(batch)
    except StateStoreLost as exc:  # the local tables cannot be written: stop, saying where
        logger.critical("%s", exc)
        await app.crash(exc)
    finally:
        await overlapped.cancel()
        geo.close()
        pool.close()
        await pool.wait_closed()
