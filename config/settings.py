"""The typed settings object and its loader.

Precedence, highest first: keyword arguments to :func:`load_settings`, ``PINAPP_*``
environment variables, the profile's TOML file, the defaults below. faust's own
environment variables (``BROKER_URL``, ``WEB_PORT``, ``APP_DATADIR``, ``FAUST_DEBUG``...)
are *not* a source at all: :class:`pinapp.topology.faust_ext.PinApp` builds faust's settings with
an empty environment from what :mod:`pinapp.topology.app` passes from this object, and the worker
command passes faust's command-line options whose defaults faust reads from the
environment (``tests/unit/topology/test_faust_env.py``).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pinapp.errors import ConfigError

__all__ = [
    "PROFILES",
    "ArchiveSettings",
    "DatabaseSettings",
    "KafkaSettings",
    "PipelineSettings",
    "RollupSettings",
    "S3Settings",
    "Settings",
    "SingerSettings",
    "SingerStream",
    "StackSettings",
    "TestingSettings",
    "WorkerSettings",
    "load_settings",
]

PROFILE_DIR = Path(__file__).resolve().parent
PROFILES = ("local", "test", "production")
ENV_PREFIX = "PINAPP_"
ENV_NESTED = "__"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: not known to stay on this machine
        return False


def _tls_file_check(section: str) -> Any:
    """A validator of a section's ``ssl_*_file`` settings: each file exists, and a client
    certificate comes with its key (``ssl_key_file`` is validated last, and by default)."""

    def check(cls: type, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no file at {value} ({section}.{info.field_name})")
        if info.field_name == "ssl_key_file" and (value is None) != (info.data.get("ssl_cert_file") is None):
            raise ValueError(
                f"a client certificate needs its key: set both {section}.ssl_cert_file and {section}.ssl_key_file"
            )
        return value

    return classmethod(check)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    """Where the broker is and how pinapp's topics are laid out."""

    bootstrap: str = "127.0.0.1:19092"
    events_topic: str = "events"
    dlq_topic: str = "events-dlq"
    live_topic: str = Field("repins-live", description="repins as written, for every worker's /globe feed")
    partitions: int = Field(4, ge=1, description="partitions of events; caps worker parallelism")
    replication_factor: int = Field(1, ge=1)
    min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description="min.insync.replicas of pinapp's topics (default: replication_factor - 1, at least 1): "
        "how many copies an acks=all write needs; below it, writes stall rather than keep one copy",
    )
    request_timeout_s: float = Field(
        10.0,
        gt=0,
        description="how long the workers' producers and consumers, and Singer's producer, wait for a broker's "
        "answer before they "
        "give up on it and find the partition's new leader (faust's defaults, 1,200 s for a producer, let a "
        "hung broker stall the pipeline for as long as it hangs); at least worker.session_timeout_s is used "
        "for the consumer",
    )
    # How every client pinapp makes connects (pinapp.adapters.kafka.client_options and its siblings).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (Confluent Cloud, MSK with SCRAM...)"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str = Field("", validate_default=True)
    sasl_password: SecretStr = Field(SecretStr(""), validate_default=True)
    ssl_ca_file: Path | None = Field(
        None, description="PEM CA bundle the broker's certificate is checked against (empty: the system's CAs)"
    )
    ssl_cert_file: Path | None = Field(None, description="PEM client certificate (mutual TLS), with ssl_key_file")
    ssl_key_file: Path | None = Field(None, validate_default=True)
    ssl_key_password: SecretStr = SecretStr("")
    ssl_check_hostname: bool = Field(True, description="the broker's certificate must name the host connected to")
    allow_sasl_plaintext: bool = Field(
        False, description="let the production profile send SASL credentials unencrypted (SASL_PLAINTEXT)"
    )

    @property
    def insync_replicas(self) -> int:
        """The min.insync.replicas pinapp's topics get."""
        return self.min_insync_replicas or max(1, self.replication_factor - 1)

    @model_validator(mode="after")
    def _insync_within_replicas(self) -> KafkaSettings:
        if self.insync_replicas > self.replication_factor:
            raise ValueError(
                f"kafka.min_insync_replicas={self.insync_replicas} is above kafka.replication_factor="
                f"{self.replication_factor}: no write could ever succeed; lower it"
            )
        return self

    @field_validator("sasl_username", "sasl_password")
    @classmethod
    def _sasl_needs_credentials(cls, value: str | SecretStr, info: ValidationInfo) -> str | SecretStr:
        given = value.get_secret_value() if isinstance(value, SecretStr) else value
        if str(info.data.get("security_protocol", "")).startswith("SASL") and not given:
            raise ValueError(
                f"SASL needs kafka.{info.field_name} (a {info.data.get('sasl_mechanism')} "
                f"{'password' if isinstance(value, SecretStr) else 'user'})"
            )
        return value

    _tls_files = field_validator("ssl_ca_file", "ssl_cert_file", "ssl_key_file")(_tls_file_check("kafka"))


class DatabaseSettings(_Section):
    """SingleStore (or, for local work and tests, MariaDB over the same wire protocol)."""

    host: str = "127.0.0.1"
    port: int = Field(13306, ge=1, le=65535)
    user: str = "pinapp"
    password: SecretStr = SecretStr("pinapp")
    database: str = "pinapp"
    dialect: Literal["singlestore", "mysql"] = "mysql"
    pool_size: int = Field(4, ge=1)
    multi_statements: bool = Field(
        True,
        description="the sink sends a batch's statements in a few multi-statement round trips; false: one "
        "statement a round trip, for a server or proxy that refuses multi-statement queries",
    )
    query_user: str = Field(
        "",
        description="a SELECT-only account for the queries people send (`pinapp query`, the dashboard, the "
        "alerter, the audit); empty: the writer's (the production profile then refuses ad-hoc SQL)",
    )
    query_password: SecretStr = SecretStr("")
    read_timeout_s: float = Field(
        120.0,
        gt=0,
        description="the longest a statement's reply is awaited (a hung server, or a failover that black-holes "
        "the old address); keep it above the server's innodb_lock_wait_timeout (50 s) and pinapp's longest "
        "statement; a timed-out write is an outage, retried (ad-hoc `pinapp query --sql` waits without it)",
    )
    tls: Literal["DISABLED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY"] = Field(
        "DISABLED",
        description="the MySQL client's ssl-mode: REQUIRED encrypts, VERIFY_CA also checks the server's "
        "certificate against ssl_ca_file (else the system's CAs), VERIFY_IDENTITY also its host name",
    )
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = Field(None, description="client certificate (PEM), with ssl_key_file")
    ssl_key_file: Path | None = Field(None, validate_default=True)

    _tls_files = field_validator("ssl_ca_file", "ssl_cert_file", "ssl_key_file")(_tls_file_check("db"))


class RollupSettings(_Section):
    """The rollups the queries read (pinapp.domain.rollups) and how long rows are kept."""

    seal_interval_s: float = Field(5.0, gt=0, description="how often the leader worker seals the pin rollup's minutes")
    raw_retention_days: int = Field(
        0, ge=0, description="raw event rows older than this are deleted (0: kept for ever); rollups keep their counts"
    )
    minute_retention_days: int = Field(
        7, ge=1, description="per-minute rollup rows older than this are deleted; per-hour rows are kept"
    )
    retention_interval_s: float = Field(60.0, gt=0, description="how often the retention job runs")
    delete_batch_rows: int = Field(
        10_000, ge=100, description="rows one DELETE removes at most (SingleStore has no partitions to drop)"
    )


class S3Settings(_Section):
    """The S3 API endpoint (moto's server locally; AWS or compatible in production)."""

    endpoint_url: str | None = "http://127.0.0.1:15000"
    region: str = "us-east-1"
    bucket: str = "pinapp-archive"
    access_key_id: SecretStr = Field(
        SecretStr("pinapp"),
        description="empty: AWS's credential chain (environment, "
        "shared config, instance or workload role), as every AWS tool",
    )
    secret_access_key: SecretStr = SecretStr("pinapp-secret")
    addressing_style: Literal["path", "virtual", "auto"] = Field(
        "path", description="bucket in the path (MinIO, Ceph, moto) or in the host name (AWS's virtual-hosted style)"
    )

    @field_validator("endpoint_url")
    @classmethod
    def _empty_means_default(cls, value: str | None) -> str | None:
        return value or None


class StackSettings(_Section):
    """The local stack `pinapp stack up` runs on loopback (never used in production)."""

    data_dir: Path = Path(".stack/local")
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_sasl_ssl_port: int | None = Field(
        None, description="also a SASL_SSL (SCRAM-SHA-512) listener on this port, with a CA of the stack's own"
    )
    kafka_scram_user: str = "pinapp"
    kafka_scram_password: SecretStr = SecretStr("pinapp-scram-secret")
    mariadb_tls: bool = Field(
        False,
        description="MariaDB also serves TLS (a certificate of the stack's CA), and "
        "mariadb_tls_user may only connect over it (REQUIRE SSL)",
    )
    mariadb_tls_user: str = "pinapp_tls"
    mariadb_query_time_s: float = Field(
        60.0, gt=0, description="MAX_STATEMENT_TIME of db.query_user: an ad-hoc query cannot hold the server longer"
    )
    mariadb_port: int = 13306
    s3_port: int = 15000
    start_timeout_s: float = Field(90.0, gt=0)


class PipelineSettings(_Section):
    """Knobs of the topology itself."""

    max_event_bytes: int = Field(16_384, ge=256, le=900_000, description="larger inputs are dead-lettered")
    dedup_horizon_s: float = Field(24 * 3600, gt=0, description="how long an event_id is remembered")
    dedup_sweep_per_event: int = Field(2, ge=1, description="seen-table keys examined for expiry per processed event")
    batch_size: int = Field(2000, ge=1, description="events per sink batch (take)")
    batch_within_s: float = Field(0.2, gt=0, description="max wait to fill a batch")
    stream_buffer_events: int = Field(
        16_384, ge=1, description="events the fetch loop may queue ahead of the agent (faust's stream_buffer_maxsize)"
    )
    geoip_db_path: Path | None = Field(
        None, description="MaxMind-format .mmdb; default: the bundled GeoLite2 City (2018)"
    )
    sink_retry_max_s: float = Field(30.0, gt=0, description="cap on the sink's retry backoff")
    state_retry_max_s: float = Field(
        300.0,
        gt=0,
        description="how long a batch is retried while the worker's local table store fails (a full disk, an "
        "unreadable file) before the worker stops, naming worker.data_dir",
    )
    future_skew_s: float = Field(
        120.0,
        ge=0,
        description="an event time up to this far past the worker's clock is on time; a later one is written "
        "and counted in its own minute, but does not move the processed event time (the rollups' watermark)",
    )
    pin_lru_size: int = Field(
        100_000, ge=0, description="decoded pins kept in memory in front of the pin cache table (~1-2 KB each)"
    )


class TrendSettings(_Section):
    """How developing trends are scored (pinapp.domain.trends) and when one is alerted on."""

    baseline_factor: int = Field(
        6, ge=1, le=168, description="the baseline is this many times the recent window, just before it"
    )
    min_count: int = Field(10, ge=1, description="an item needs this many recent events to be ranked")
    min_share: float = Field(
        0.002, ge=0, lt=1, description="and this share of the recent window's events (0.002: one in 500)"
    )
    prior: float = Field(5.0, gt=0, description="pseudo-count of variance: items without history need more to rank")
    alert_score: float = Field(8.0, gt=0, description="a trend scoring this or more is alerted on")


class ExperimentSettings(_Section):
    """Experiments (pinapp.domain.experiments): where they are defined, and the sample-ratio test."""

    definitions_file: Path | None = Field(None, description="TOML file of the experiments; none: no experiments")
    srm_p_value: float = Field(
        0.001, gt=0, lt=1, description="a chi-square p-value below this is a sample ratio mismatch"
    )
    min_users: int = Field(100, ge=2, description="no verdict before an experiment has this many users")


class AlertSettings(_Section):
    """``pinapp alerter``: what it watches, when it alerts, and where it sends alerts."""

    webhook_url: str = Field(
        "", description="POST each alert and its resolution here as JSON (Slack-compatible); empty: log only"
    )
    interval_s: float = Field(15.0, gt=0, description="evaluate the rules this often")
    worker_urls: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:6066"], description="the workers' web, whose /metrics are read"
    )
    trend_minutes: int = Field(5, ge=1, description="the trend rule's recent window (trends.* score it)")
    trend_top: int = Field(3, ge=1, description="alert on at most this many trending items of each kind (the best)")
    lag_max_events: int = Field(100_000, ge=1, description="consumer lag of one worker above this is alerted on")
    freshness_max_s: float = Field(
        60.0, gt=0, description="no row written for this long while events wait in Kafka is alerted on"
    )
    dead_letter_rate_max: float = Field(10.0, ge=0, description="dead letters per second above this are alerted on")
    retry_max_s: float = Field(60.0, gt=0, description="cap on the backoff while the webhook fails")
    state_file: Path | None = Field(
        None,
        description="keep what is firing in this JSON file, so a restarted alerter resolves what cleared while it "
        "was down and does not announce again what still holds (unset: kept in memory only)",
    )
    metrics_port: int = Field(6266, ge=0, le=65535, description="the alerter's own /metrics; 0: off")
    metrics_host: str = Field("127.0.0.1", description="where its /metrics listens (0.0.0.0: for a scraper elsewhere)")


class WorkerSettings(_Section):
    """The faust worker process."""

    app_id: str = "pinapp"
    data_dir: Path = Path(".stack/local/worker")
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=1, le=65535)
    # Beyond loopback, every web route asks for the token (pinapp.adapters.web_auth).
    web_token: SecretStr = Field(
        SecretStr(""),
        description="bearer token, or HTTP basic password, that every web "
        "request must carry when web_host is not a loopback address",
    )
    web_tls_cert_file: Path | None = Field(None, description="serve the web over TLS with this certificate (PEM)")
    web_tls_key_file: Path | None = None
    web_behind_tls_proxy: bool = Field(
        False,
        description="a TLS-terminating proxy is in front: the token may "
        "travel over plain HTTP between it and the worker",
    )
    web_open_health: bool = Field(True, description="/health and /metrics answer without the token (probes, scrapes)")
    frontend_dir: Path | None = Field(
        None, description="the pages and their npm packages (default: frontend/ beside the pinapp package)"
    )
    table_standby_replicas: int = Field(1, ge=0)
    session_timeout_s: float = Field(
        10.0, gt=0, description="a worker silent this long (e.g. killed) loses its partitions"
    )
    group_instance_id: str = Field(
        "",
        pattern=r"^[A-Za-z0-9._-]{0,200}$",
        description="static group membership (KIP-345): a stable id per worker host (a StatefulSet's pod "
        "name), unique in the group; a worker restarted within session_timeout_s takes its partitions back "
        "without a rebalance. Empty: dynamic membership",
    )
    log_level: Literal["crit", "error", "warn", "info", "debug"] = "info"
    # faust opens one RocksDB per table partition, each with its own memtables and block
    # cache (faust's defaults: 3 x 64 MiB memtables and a 2 GiB cache, per partition). A
    # worker that takes over partitions would grow by hundreds of MB before any flush;
    # these bound each partition's share (see docs/benchmarks.md, the soak).
    rocksdb_write_buffer_mb: int = Field(
        4, ge=1, le=1024, description="memtable size per table partition before RocksDB flushes it"
    )
    rocksdb_max_write_buffers: int = Field(2, ge=2, le=16, description="memtables per table partition")
    rocksdb_block_cache_mb: int = Field(8, ge=1, description="block cache per table partition")
    allocator: Literal["jemalloc", "system"] = Field(
        "jemalloc",
        description="jemalloc: Python's objects in jemalloc (PYTHONMALLOC=malloc), which gives freed pages back",
    )
    jemalloc_library: str = Field(
        "libjemalloc.so.2", description="preloaded when allocator is jemalloc (Debian: libjemalloc2)"
    )
    gc_threshold: int = Field(
        50_000,
        ge=1,
        description="allocations between passes of Python's garbage collector over its youngest "
        "generation (Python's default: 700); see pinapp.topology.allocator",
    )

    @property
    def web_auth_required(self) -> bool:
        """Whether the web is reachable beyond this machine, and so asks for the token."""
        return not _is_loopback(self.web_host)

    @model_validator(mode="after")
    def _web_beyond_loopback_is_authenticated(self) -> WorkerSettings:
        if not self.web_auth_required:
            return self
        if not self.web_token.get_secret_value():
            raise ValueError(
                f"worker.web_host={self.web_host!r} is reachable beyond this machine: set worker.web_token "
                "(PINAPP_WORKER__WEB_TOKEN), or bind to 127.0.0.1"
            )
        if self.web_tls_cert_file is None and not self.web_behind_tls_proxy:
            raise ValueError(
                "worker.web_token would cross the network in clear: set worker.web_tls_cert_file and "
                "web_tls_key_file, or worker.web_behind_tls_proxy=true if a TLS proxy is in front"
            )
        if (self.web_tls_cert_file is None) != (self.web_tls_key_file is None):
            raise ValueError("set both worker.web_tls_cert_file and worker.web_tls_key_file")
        return self

    def rocksdb_options(self) -> dict[str, int]:
        """faust table ``options=``: this worker's RocksDB memory bounds per table partition."""
        return {
            "write_buffer_size": self.rocksdb_write_buffer_mb * 1024 * 1024,
            "max_write_buffer_number": self.rocksdb_max_write_buffers,
            "block_cache_size": self.rocksdb_block_cache_mb * 1024 * 1024,
        }


class ArchiveSettings(_Section):
    """The S3 archiver (Secor's role): its own faust app and consumer group, so an S3 outage
    pauses archiving without stalling the SingleStore tables."""

    topics: tuple[str, ...] = Field(
        (), description="topics to archive; empty means kafka.events_topic and kafka.dlq_topic"
    )
    prefix: str = Field("raw", description="key prefix in the bucket: s3://BUCKET/PREFIX/TOPIC/dt=/hr=/")
    format: Literal["jsonl.gz", "parquet"] = "jsonl.gz"
    max_events: int = Field(100_000, ge=1, description="upload a partition's buffer at this many events")
    max_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="... or at this many raw bytes")
    max_age_s: float = Field(60.0, gt=0, description="... or when its oldest event waited this long")
    max_buffered_events: int = Field(
        200_000, ge=1, description="over this many events held in all buffers, the largest is uploaded early"
    )
    check_interval_s: float = Field(1.0, gt=0, description="how often buffer ages are checked")
    retry_max_s: float = Field(30.0, gt=0, description="cap on the backoff between S3 retries")
    request_timeout_s: float = Field(
        120.0,
        gt=0,
        description="a cut's upload (its intent and objects), or a read of intents, not finished in this long is "
        "given up and retried: a server that takes the request and never answers must not hold the archive",
    )
    revoke_flush_timeout_s: float = Field(
        5.0, gt=0, description="on revocation, give up flushing after this long (the next owner re-reads)"
    )
    finalize_delay_s: float = Field(
        600.0, ge=0, description="_SUCCESS goes into an hour folder once every partition is this far past it"
    )
    finalize_interval_s: float = Field(30.0, gt=0, description="how often the finalizer runs")
    future_skew_s: float = Field(
        120.0,
        ge=0,
        description="a record dated further than this past the archiver's clock is archived in its hour but is "
        "no progress: _SUCCESS never goes into an hour the clock has not passed",
    )
    intent_retention_s: float = Field(
        86_400.0,
        ge=0,
        description="a committed cut's intent is kept this long: it fences an archiver that lost the partition "
        "out of those offsets; one held up longer (a host frozen for a day) could double them, which "
        "`pinapp archive verify` reports",
    )
    conditional_writes: bool = Field(
        True,
        description="put intents and objects only where none is (S3 If-None-Match): an archiver that lost its "
        "partitions cannot double the new owner's cuts; false only for an S3 API without conditional writes",
    )
    web_port: int = Field(6166, ge=1, le=65535, description="the archiver worker's web server (/metrics, /health)")


class SingerStream(_Section):
    """One log stream: the files an application writes, current and rotated, by glob."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="names the watermark file")
    paths: tuple[str, ...] = Field(min_length=1, description="glob patterns, e.g. /var/log/app/events.log*")


class SingerSettings(_Section):
    """``pinapp singer``: ships JSON-lines log files to Kafka, at least once (Singer's role)."""

    streams: tuple[SingerStream, ...] = (SingerStream(name="app", paths=(".stack/local/logs/app.log*",)),)
    data_dir: Path = Field(Path(".stack/local/singer"), description="watermarks and the local status file")
    topic: str = Field("", description="where lines go; empty means kafka.events_topic")
    status_topic: str = "singer-status"
    batch_lines: int = Field(50_000, ge=1, description="lines per acknowledged batch (and watermark step)")
    batch_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="... or bytes; Singer holds two batches per stream (one read ahead)"
    )
    max_line_bytes: int = Field(
        0,
        ge=0,
        le=900_000,
        description="longer lines go to the DLQ; 0 means pipeline.max_event_bytes (at most 900,000: a record "
        "must stay under the producers' and the broker's limit of about 1 MB)",
    )
    dlq_max_bytes: int = Field(
        900_000, ge=1024, description="a dead-lettered line longer than this is cut to it (Kafka's 1 MB message cap)"
    )
    poll_interval_s: float = Field(0.2, gt=0, description="wait this long when every stream is shipped")
    heartbeat_interval_s: float = Field(30.0, gt=0, description="status record to status_topic this often")
    retry_max_s: float = Field(30.0, gt=0, description="cap on the backoff while the broker fails")
    request_timeout_s: float = Field(
        30.0, gt=0, description="a batch not acknowledged in this long is sent again by a new producer"
    )
    partial_line_grace_s: float = Field(
        60.0, gt=0, description="a rotated file's unterminated last line goes to the DLQ after this long"
    )
    retention_s: float = Field(0.0, ge=0, description="delete shipped rotated files older than this; 0 keeps them")
    linger_ms: int = Field(10, ge=0)
    metrics_port: int = Field(0, ge=0, le=65535, description="Singer's own /metrics (Prometheus); 0: off")
    metrics_host: str = Field("127.0.0.1", description="where /metrics listens (0.0.0.0: for a scraper elsewhere)")


class TestingSettings(_Section):
    """Fault injection for pinapp's own tests (:mod:`pinapp.topology.fault_hooks`): the production
    profile refuses any of it. Read once at start-up; nothing here is checked per event."""

    __test__: ClassVar[bool] = False  # not a test class, for pytest

    poison_user_id: str | None = Field(
        None,
        description="enrichment raises for this user's events (validation leaves no real input that crashes "
        "a stage), to prove such an event is dead-lettered",
    )
    commit_guards: bool = Field(
        True,
        description="false turns off the gap and hole guards (pinapp.topology.faust_ext.guards): the race reproduction",
    )
    processed_log: Path | None = Field(
        None, description="append 'partition offset' of every event the agent processed: the race reproduction"
    )
    archive_crash_at: Literal["", "before_intent", "after_intent", "mid_upload", "after_upload", "after_ack"] = Field(
        "", description="SIGKILL the archiver at this point of its Nth cut"
    )
    archive_crash_on_cut: int = Field(2, ge=1, description="which cut archive_crash_at applies to")

    @property
    def injected(self) -> list[str]:
        """The settings that differ from their defaults."""
        return [name for name, field in type(self).model_fields.items() if getattr(self, name) != field.default]


class Settings(BaseSettings):
    """Everything pinapp reads from its environment, in one frozen object."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED,
        frozen=True,
        extra="forbid",
    )

    profile: Literal["local", "test", "production"] = "local"
    kafka: KafkaSettings = KafkaSettings()
    db: DatabaseSettings = DatabaseSettings()
    rollups: RollupSettings = RollupSettings()
    s3: S3Settings = S3Settings()
    stack: StackSettings = StackSettings()
    pipeline: PipelineSettings = PipelineSettings()
    trends: TrendSettings = TrendSettings()
    alerts: AlertSettings = AlertSettings()
    experiments: ExperimentSettings = ExperimentSettings()
    worker: WorkerSettings = WorkerSettings()
    archive: ArchiveSettings = ArchiveSettings()
    singer: SingerSettings = SingerSettings()
    testing: TestingSettings = TestingSettings()

    @field_validator("testing")
    @classmethod
    def _no_fault_injection_in_production(cls, testing: TestingSettings, info: ValidationInfo) -> TestingSettings:
        if info.data.get("profile") == "production" and testing.injected:
            names = ", ".join(_env_name(("testing", name)) for name in testing.injected)
            raise ValueError(f"fault injection is for pinapp's tests, never production: unset {names}")
        return testing

    @field_validator("kafka")
    @classmethod
    def _no_clear_text_credentials_in_production(cls, kafka: KafkaSettings, info: ValidationInfo) -> KafkaSettings:
        if (
            info.data.get("profile") == "production"
            and kafka.security_protocol == "SASL_PLAINTEXT"
            and not kafka.allow_sasl_plaintext
        ):
            raise ValueError(
                "kafka.security_protocol=SASL_PLAINTEXT sends the SASL password unencrypted: use "
                "SASL_SSL, or set kafka.allow_sasl_plaintext=true (PINAPP_KAFKA__ALLOW_SASL_PLAINTEXT) "
                "if the network is private"
            )
        return kafka

    @property
    def archive_topics(self) -> tuple[str, ...]:
        """The topics the archiver consumes (its setting, else the events topic and the DLQ)."""
        return self.archive.topics or (self.kafka.events_topic, self.kafka.dlq_topic)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        profile = _chosen_profile(init_settings)
        toml = TomlConfigSettingsSource(settings_cls, toml_file=PROFILE_DIR / f"{profile}.toml")
        return (init_settings, env_settings, toml)


def _chosen_profile(init_settings: PydanticBaseSettingsSource) -> str:
    init_kwargs: dict[str, Any] = getattr(init_settings, "init_kwargs", {})
    return str(init_kwargs.get("profile") or os.environ.get(f"{ENV_PREFIX}PROFILE") or "local")


def _env_name(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + ENV_NESTED.join(str(part).upper() for part in loc)


def _shown(loc: tuple[Any, ...], value: Any) -> str:
    """`` (got ...)`` for a plain value; nothing for a secret or a whole section (it may hold one)."""
    secret = any(word in str(loc[-1]) for word in ("password", "secret", "token")) if loc else True
    if secret or not isinstance(value, str | int | float | bool | None) or isinstance(value, SecretStr):
        return ""
    return f" (got {value!r})"


def load_settings(profile: str | None = None, **overrides: Any) -> Settings:
    """Load the settings for ``profile`` (default: ``$PINAPP_PROFILE`` or ``local``).

    Raises:
        ConfigError: naming each bad setting, where it can be set, and what is wrong.
    """
    chosen = profile or os.environ.get(f"{ENV_PREFIX}PROFILE") or "local"
    if chosen not in PROFILES:
        raise ConfigError(
            f"PINAPP_PROFILE={chosen!r} is not a profile; use one of {', '.join(PROFILES)} (files in {PROFILE_DIR})."
        )
    try:
        return Settings(profile=chosen, **overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            dotted = ".".join(str(p) for p in loc)
            if len(loc) == 1 and loc[0] in Settings.model_fields and loc[0] != "profile":
                # A rule across a section's settings: the message names them and their variables.
                problems.append(f"  {dotted}: {err['msg']}; fix it in config/{chosen}.toml [{dotted}] or its variables")
                continue
            problems.append(
                f"  {dotted}: {err['msg']}{_shown(loc, err.get('input'))}; fix it in "
                f"config/{chosen}.toml [{'.'.join(str(p) for p in loc[:-1]) or 'top level'}] "
                f"or with the environment variable {_env_name(loc)}"
            )
        raise ConfigError("invalid pinapp settings:\n" + "\n".join(problems)) from None
