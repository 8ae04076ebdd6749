"""Worker processes run on jemalloc: with glibc's malloc, their memory grows with every partition move.

Measured (docs/benchmarks.md, "The soak"): two workers side by side, a third killed and
restarted every minute. With glibc's malloc a steady worker grew ~5 MiB a minute; the same
worker on jemalloc grew a third of that and levelled off. Python's own heap was flat in both
(tracemalloc and a census of live objects), and so was the number of open RocksDB databases:
the growth is native memory freed by RocksDB and aiokafka but kept, fragmented, by glibc's
arenas. RocksDB's own documentation recommends jemalloc for the same reason. Tuning glibc
(``arena_max``, fixed mmap and trim thresholds) did not help.

The allocator is chosen when a process starts, so ``pinapp worker`` re-executes itself once
with ``LD_PRELOAD``. A missing library is a warning, not an error: the worker still runs.
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import sys

from config import Settings

__all__ = ["JEMALLOC_PACKAGE", "ensure_jemalloc", "run_on_chosen_allocator"]

logger = logging.getLogger(__name__)

JEMALLOC_PACKAGE = "libjemalloc2"
# background_thread: purge freed pages from a thread of jemalloc's own, not on the next malloc.
_MALLOC_CONF = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000"
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
    """Re-execute this process with ``worker.allocator`` preloaded, unless it already is.

    Call first thing in a worker's command, before threads start. Returns when no
    re-execution is needed, or none is possible (with a warning that names the fix).
    """
    library = settings.worker.jemalloc_library
    if settings.worker.allocator != "jemalloc" or _loaded(library):
        return
    if os.environ.get(_REEXECUTED):
        logger.warning("worker.allocator: %s was preloaded but is not in use; running on the system allocator",
                       library)
        return
    if not _installed(library):
        logger.warning("worker.allocator is 'jemalloc' but %s is not installed: running on the system allocator, "
                       "whose fragmentation grows a worker's memory with every partition move. Fix: apt-get install "
                       "%s (make setup does), or set PINAPP_WORKER__ALLOCATOR=system to silence this.",
                       library, JEMALLOC_PACKAGE)
        return
    preload = " ".join(p for p in (os.environ.get("LD_PRELOAD", ""), library) if p)
    env = {**os.environ, "LD_PRELOAD": preload, _REEXECUTED: "1",
           "MALLOC_CONF": os.environ.get("MALLOC_CONF", _MALLOC_CONF)}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


def ensure_jemalloc() -> None:
    """Install Debian's jemalloc if it is missing (``make setup``); a warning if that cannot be done."""
    from pinapp.errors import PinappError
    from pinapp.stack.services import ensure_debian_package

    try:
        ensure_debian_package("libjemalloc", [JEMALLOC_PACKAGE], found=lambda _: ctypes.util.find_library("jemalloc"))
    except PinappError as exc:
        print(f"warning: {exc}\n  workers will run on the system allocator (see docs/operations.md)", file=sys.stderr)
