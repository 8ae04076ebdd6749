"""A worker's start-up, before faust is imported: allocator, data dir, topics, faust's command line.

faust reads ``FAUST_*``/``F_*`` variables when it is imported, so this module imports the
faust app only once they are cleared (``tests/unit/topology/test_faust_env.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from config import Settings
from pinapp.errors import ConfigError
from pinapp.topology.allocator import run_on_chosen_allocator, tune_gc

__all__ = ["faust_options", "make_data_dir", "run_archiver", "run_worker"]

logger = logging.getLogger("pinapp")


def run_worker(settings: Settings, args: Sequence[str]) -> None:
    """Run the engagement worker (``args``: more of faust's ``worker`` options)."""
    run_on_chosen_allocator(settings)  # may re-execute this process on jemalloc
    make_data_dir(settings.worker.data_dir)
    asyncio.run(_ensure_topics(settings, [settings.kafka.events_topic, settings.kafka.dlq_topic]))
    options = faust_options(settings, settings.worker.data_dir)
    from pinapp.topology.app import app

    sys.argv = ["pinapp", *options, *args]
    tune_gc(settings)
    app.main()


def run_archiver(settings: Settings, args: Sequence[str]) -> None:
    """Run the archiver worker, in its own consumer group."""
    run_on_chosen_allocator(settings)
    asyncio.run(_check_bucket(settings))  # a missing bucket or bad credentials: one clear line, now
    asyncio.run(_ensure_topics(settings, list(settings.archive_topics)))
    make_data_dir(settings.worker.data_dir / "archiver")
    options = faust_options(settings, settings.worker.data_dir / "archiver")
    from pinapp.topology.app import archive_app

    sys.argv = ["pinapp", *options, *args]
    tune_gc(settings)
    archive_app.main()


def make_data_dir(path: Path) -> None:
    """``worker.data_dir`` with its parents; a folder that cannot be made fails in one line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"worker.data_dir={str(path)!r} cannot be created ({exc.strerror}); set "
            "PINAPP_WORKER__DATA_DIR (or [worker] data_dir) to a folder this user can write"
        ) from None


def faust_options(settings: Settings, data_dir: Path) -> list[str]:
    """faust's command line (after the program name), from pinapp's settings only.

    faust's own variables are dropped from this process's environment first, with a warning
    (``FAUST_WORKDIR`` even changes directory, ``FAUST_DEBUG`` turns on its blocking detector).
    """
    assert "faust" not in sys.modules, "faust read its environment before pinapp could clear it"
    for name in sorted(n for n in os.environ if n.startswith(("FAUST_", "F_"))):
        logger.warning("ignoring %s: pinapp's settings configure the worker (see docs/operations.md)", name)
        del os.environ[name]
    return ["--no-debug", "--datadir", str(data_dir), "worker", "--loglevel", settings.worker.log_level]


async def _ensure_topics(settings: Settings, topics: list[str]) -> None:
    """The topics a worker consumes, made before it joins its group: a topic the group's leader
    does not know when it assigns stays unassigned until the next metadata refresh (5 minutes).
    Brokers not reachable yet: the worker goes on, and connects (and faust creates them) later."""
    from pinapp.adapters.kafka import ensure_topics

    try:
        await asyncio.wait_for(ensure_topics(settings.kafka, topics), settings.kafka.request_timeout_s * 3)
    except Exception as exc:  # noqa: BLE001 - anything: faust creates the topics itself later
        logger.warning("could not make sure topics %s exist now (%r); going on", topics, exc)


async def _check_bucket(settings: Settings) -> None:
    from pinapp.adapters.s3 import credential_source, s3_client
    from pinapp.archive.writer import ArchiveWriter

    logging.getLogger("pinapp.archive").info("archive: S3 credentials from %s", await credential_source(settings.s3))
    async with s3_client(settings.s3) as s3:
        archive = settings.archive
        await ArchiveWriter(
            s3, settings.s3.bucket, archive.prefix, conditional_writes=archive.conditional_writes
        ).check_bucket()
