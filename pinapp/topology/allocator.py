"""Worker processes keep Python's objects in jemalloc: with Python's own allocator their memory
grows with every partition move.

Measured (docs/benchmarks.md, "The soak"): workers side by side, another killed and restarted
every minute. Python's small-object allocator (obmalloc) carves 1 MiB arenas into 16 KiB pools
and returns an arena to the system only when every object in it is gone. Each partition move
is a burst of short-lived objects (recovery, the backlog) among long-lived ones (caches,
tables), so arenas end up mostly empty but pinned: ``sys._debugmallocstats()`` in a steady
worker showed live objects flat at ~48 MB while arenas grew from 46 to 79 MiB, 26-30 MiB of
them empty pools, ~2-4 MiB a minute with no plateau. That was the soak's growth.

``PYTHONMALLOC=malloc`` sends those objects to malloc instead, and jemalloc (with a background
thread purging freed pages after a few seconds) gives the memory back page by page. In a
12-minute A/B run the worker so configured levelled off after 4 minutes (177 -> 194 MiB);
the control grew 173 -> 227 MiB, and ``PYTHONMALLOC=malloc`` on glibc's malloc was worse
(177 -> 251 MiB). jemalloc alone does nothing here: obmalloc maps its arenas itself.

Both are chosen when a process starts, so ``pinapp worker`` and ``pinapp archiver``
re-execute themselves once with ``LD_PRELOAD`` and ``PYTHONMALLOC``. A missing library is a
warning, not an error: the worker still runs, on Python's allocator.

**The garbage collector** (:func:`tune_gc`). A worker draining a backlog makes tens of
thousands of short-lived containers a second (records, events, rows), so with Python's
default threshold (a pass over the youngest generation every 700 net allocations) the
collector ran 120-190 times a second and, with its older-generation passes over every object
of faust, aiokafka and the tables, took 10-15% of the worker's CPU (measured with
``gc.callbacks`` while one worker drained 100,000 events: 0.5-1.2 s of 5-8 s). The pipeline
makes few reference cycles (a few thousand objects over that drain): nearly all of that work found nothing. With a
threshold of 50,000 (``worker.gc_threshold``) and the objects of start-up frozen out of the
collector's view (``gc.freeze``), the same drain spent 0.2 s in it. Cycles are still
collected, tens of times a second instead of 120-190.
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
