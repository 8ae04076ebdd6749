"""Prometheus metrics of a worker (served at ``/metrics`` by :mod:`pinapp.web.ops`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = [
    "ALERTS_FIRING",
    "ALERT_NOTIFICATIONS",
    "ARCHIVE_BUFFERED",
    "ARCHIVE_BYTES",
    "ARCHIVE_CUTS",
    "ARCHIVE_CUT_CONFLICTS",
    "ARCHIVE_EVENTS",
    "ARCHIVE_FUTURE_EVENTS",
    "ARCHIVE_HOLES",
    "ARCHIVE_S3_ERRORS",
    "COMMIT_HOLES",
    "CONSUMER_LAG",
    "DEAD_LETTERED",
    "DUPLICATES_DROPPED",
    "EVENTS_IN",
    "FETCH_GAPS",
    "LIVE_DROPPED",
    "LIVE_PUBLISHED",
    "LIVE_SEND_FAILED",
    "LIVE_SUBSCRIBERS",
    "PIN_CACHE",
    "ROCKSDB_MEMORY",
    "ROWS_WRITTEN",
    "SINK_BATCH_ROWS",
    "SINK_BATCH_SECONDS",
    "SINK_FAILING",
    "SINK_LAST_SUCCESS",
    "STAGE_EVENTS",
    "WEB_QUERY_SECONDS",
    "SingerCollector",
]

EVENTS_IN = Counter("pinapp_events_in", "Events read from the events topic")
STAGE_EVENTS = Counter(
    "pinapp_stage_events",
    "Events leaving each stage of the topology, by outcome (out = passed on to the next stage)",
    ["stage", "outcome"],
)
ROCKSDB_MEMORY = Gauge(
    "pinapp_rocksdb_memory_bytes",
    "RocksDB memory of this worker's table partitions (memtables, block cache, index/filter readers)",
    ["table", "kind"],
)
CONSUMER_LAG = Gauge(
    "pinapp_consumer_lag",
    "Events in Kafka not yet committed by this worker (high watermark - committed)",
    ["topic", "partition"],
)
# The two commit guards (pinapp.topology.faust_ext.guards): each time one fired. Both stay 0 unless faust
# dropped records it had handed over or fetched; the soak asserts they did not fire.
COMMIT_HOLES = Counter(
    "pinapp_commit_holes",
    "Commits held by offsets handed to a stream and never acknowledged, fetched again (the hole guard)",
    ["topic", "partition"],
)
FETCH_GAPS = Counter(
    "pinapp_fetch_gaps",
    "Offsets skipped between two fetched records, fetched again instead of committed (the gap guard)",
    ["topic", "partition"],
)
DEAD_LETTERED = Counter("pinapp_dead_lettered", "Inputs sent to the dead-letter topic", ["kind"])
DUPLICATES_DROPPED = Counter("pinapp_duplicates_dropped", "Events dropped as duplicates of an accepted event_id")
PIN_CACHE = Counter("pinapp_pin_cache", "Pin resolutions by where the pin came from", ["result"])
FUTURE_EVENTS = Counter(
    "pinapp_future_events",
    "Events dated more than pipeline.future_skew_s past the worker's clock: written, kept out of the watermark",
)
ROWS_WRITTEN = Counter("pinapp_rows_written", "Rows written to SingleStore", ["table"])
SINK_BATCH_ROWS = Histogram(
    "pinapp_sink_batch_rows", "Rows per sink batch", buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000)
)
SINK_BATCH_SECONDS = Histogram("pinapp_sink_batch_seconds", "Time to write one sink batch (retries included)")

SINK_FAILING = Gauge("pinapp_sink_failing", "1 while a sink's writes fail and are being retried", ["sink"])
SINK_LAST_SUCCESS = Gauge(
    "pinapp_sink_last_success_timestamp_seconds", "When a sink last wrote successfully (Unix time)", ["sink"]
)

ARCHIVE_EVENTS = Counter("pinapp_archive_events", "Records written to the S3 archive", ["topic"])
ARCHIVE_BYTES = Counter("pinapp_archive_bytes", "Object bytes written to the S3 archive", ["topic"])
ARCHIVE_FUTURE_EVENTS = Counter(
    "pinapp_archive_future_events",
    "Records dated past archive.future_skew_s from the archiver's clock: archived, but no progress for _SUCCESS",
    ["topic"],
)
ARCHIVE_CUTS = Counter("pinapp_archive_cuts", "Cuts (uploads of one offset range) written", ["topic"])
ARCHIVE_HOLES = Counter(
    "pinapp_archive_holes",
    "Partitions adopted with a committed offset past the archive's end (offsets committed, never "
    "archived): fetched again, or logged as lost where retention deleted them",
    ["topic"],
)
ARCHIVE_CUT_CONFLICTS = Counter(
    "pinapp_archive_cut_conflicts",
    "Cuts refused because another archiver's intent starts at their first offset (re-cut there)",
    ["topic"],
)
ARCHIVE_S3_ERRORS = Counter("pinapp_archive_s3_errors", "Failed S3 calls of the archiver (each is retried)")
ARCHIVE_BUFFERED = Gauge("pinapp_archive_buffered", "Records held in memory, not yet in S3")


class SingerCollector:
    """Singer's figures, read at scrape time from the per-stream status it keeps anyway
    (``Singer.status()["streams"]``): nothing is counted twice, and the files are listed for
    ``bytes_behind`` only when a scraper asks."""

    #: (metric, help, the status field, counter or gauge)
    FIGURES = (
        ("pinapp_singer_lines_shipped", "Log lines Singer shipped, acknowledged by Kafka", "lines_shipped", True),
        ("pinapp_singer_bytes_shipped", "Log bytes Singer shipped, acknowledged by Kafka", "bytes_shipped", True),
        (
            "pinapp_singer_dead_lettered",
            "Log lines Singer sent to the dead-letter topic (too long, unterminated)",
            "dead_lettered",
            True,
        ),
        (
            "pinapp_singer_batch_retries",
            "Batches Kafka did not acknowledge, sent again from the watermark",
            "errors",
            True,
        ),
        ("pinapp_singer_bytes_behind", "Bytes of the stream's log files not yet shipped", "bytes_behind", False),
        (
            "pinapp_singer_last_shipped_timestamp_seconds",
            "When Singer last shipped a batch (Unix time)",
            "last_shipped_at",
            False,
        ),
    )

    def __init__(self, streams: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
        self._streams = streams

    def describe(self) -> list[Metric]:
        return self._families([])

    def collect(self) -> list[Metric]:
        return self._families(list(self._streams()))

    def _families(self, streams: list[Mapping[str, Any]]) -> list[Metric]:
        families: list[Metric] = []
        for name, help_, field, counter in self.FIGURES:
            family = (CounterMetricFamily if counter else GaugeMetricFamily)(name, help_, labels=["stream"])
            for stream in streams:
                if stream[field] is not None:
                    family.add_metric([stream["name"]], stream[field])
            families.append(family)
        return families


LIVE_PUBLISHED = Counter("pinapp_live_points_published", "Repin points published to the live topic")
LIVE_SEND_FAILED = Counter(
    "pinapp_live_send_failed",
    "Live topic records Kafka did not take (the globe misses their repins; nothing else does)",
)
LIVE_SUBSCRIBERS = Gauge("pinapp_live_subscribers", "Browsers connected to this worker's live globe feed")
LIVE_DROPPED = Counter("pinapp_live_dropped", "Point batches dropped for browsers that did not keep up")
WEB_QUERY_SECONDS = Histogram("pinapp_web_query_seconds", "Time of the dashboard's SingleStore queries", ["query"])

ALERTS_FIRING = Gauge("pinapp_alerts_firing", "Conditions the alerter has alerted on and not yet seen clear", ["rule"])
ALERT_ROUND_ERRORS = Counter("pinapp_alert_round_errors", "Alerter rounds that failed with an unexpected error")
ALERT_NOTIFICATIONS = Counter(
    "pinapp_alert_notifications", "Webhook deliveries of alerts and resolutions, by outcome", ["status", "outcome"]
)
