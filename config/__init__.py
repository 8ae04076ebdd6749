"""pinapp settings: one typed, frozen object, loaded from a profile plus the environment.

Profiles live beside this file (``local.toml``, ``test.toml``, ``production.toml``) and are
chosen by ``PINAPP_PROFILE`` (default ``local``). Any setting can be overridden by an
environment variable named ``PINAPP_<SECTION>__<FIELD>``, e.g. ``PINAPP_KAFKA__BOOTSTRAP``.
"""

from config.settings import (
    PROFILES,
    AlertSettings,
    ArchiveSettings,
    DatabaseSettings,
    ExperimentSettings,
    KafkaSettings,
    PipelineSettings,
    RollupSettings,
    S3Settings,
    Settings,
    SingerSettings,
    SingerStream,
    StackSettings,
    TestingSettings,
    TrendSettings,
    WorkerSettings,
    load_settings,
)

__all__ = [
    "PROFILES",
    "AlertSettings",
    "ArchiveSettings",
    "DatabaseSettings",
    "ExperimentSettings",
    "KafkaSettings",
    "PipelineSettings",
    "RollupSettings",
    "S3Settings",
    "Settings",
    "SingerSettings",
    "SingerStream",
    "StackSettings",
    "TestingSettings",
    "TrendSettings",
    "WorkerSettings",
    "load_settings",
]
