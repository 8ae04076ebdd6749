"""Worker processes keep Python's objects in jemalloc: with Python's own allocator their memory
grows with every partition move.

Design notes: docs/architecture.md, "pinapp/topology/allocator.py".
"""

from __future__ import annotations

import ctypes.util
import gc
import logging
import os
import sys

from config import Settings

__all__ = ["JEMALLOC_PACKAGE", "run_on_chosen_allocator", "tune_gc"]

logger = logging.getLogger(__name__)

JEMALLOC_PACKAGE = "libjemalloc2"
# background_thread: purge freed pages from a thread of jemalloc's own, not on the next malloc.
_MALLOC_CONF = "background_thread:true,dirty_decay_ms:5000,muzzy_decay_ms:5000"
_REEXECUTED = "PINAPP_ALLOCATOR_REEXEC"  # set in the re-executed process: never loop


def _loaded(library: str) -> bool:
    """Is ``library`` mapped into this process?"""
    name = os.path.basename(library)
    try:
        with open("/proc/self/maps") as maps:
            return any(name in line for line in maps)
    except OSError:
        return False


def _installed(library: str) -> bool:
    if "/" in library:
        return os.path.exists(library)
    return ctypes.util.find_library(library.removeprefix("lib").split(".so")[0]) is not None


def run_on_chosen_allocator(settings: Settings) -> None:
    """Re-execute this process on jemalloc with ``PYTHONMALLOC=malloc``, unless it already runs so.

    Call first thing in a worker's command, before threads start. Returns when no
    re-execution is needed, or none is possible (with a warning that names the fix).
    """
    library = settings.worker.jemalloc_library
    if settings.worker.allocator != "jemalloc" or (_loaded(library) and os.environ.get("PYTHONMALLOC") == "malloc"):
        return
    if os.environ.get(_REEXECUTED):
        logger.warning("worker.allocator: %s was preloaded but is not in use; running on the system allocator", library)
        return
    if not _installed(library):
        logger.warning(
            "worker.allocator is 'jemalloc' but %s is not installed: running on the system allocator, "
            "where a worker's memory grows with every partition move. Fix: apt-get install "
            "%s (make setup does), or set PINAPP_WORKER__ALLOCATOR=system to silence this.",
            library,
            JEMALLOC_PACKAGE,
        )
        return
    preload = " ".join(p for p in (os.environ.get("LD_PRELOAD", ""), library) if p)
    env = {
        **os.environ,
        "LD_PRELOAD": preload,
        "PYTHONMALLOC": "malloc",
        _REEXECUTED: "1",
        "MALLOC_CONF": os.environ.get("MALLOC_CONF", _MALLOC_CONF),
    }
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)  # noqa: S606 - this process again, as it was started


def tune_gc(settings: Settings) -> None:
    """Freeze what start-up made and collect the youngest generation every ``worker.gc_threshold``
    allocations (module docstring). Call once the worker's modules are imported."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(settings.worker.gc_threshold, older, oldest)
