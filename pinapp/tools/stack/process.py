"""A service process the local stack started: pidfile, log, health wait, stop.

Only processes whose pidfile we wrote, and whose command line still names our data
folder, are ever signalled: ``down`` stops what ``up`` started and nothing else.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pinapp.errors import StackError

__all__ = ["ManagedProcess", "port_open"]

logger = logging.getLogger(__name__)


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class ManagedProcess:
    """One long-running service started in its own session, logging to a file."""

    name: str
    run_dir: Path
    marker: str  # a string our command line contains (the data folder), to recognise our process
    _child: int | None = field(default=None, init=False, repr=False)

    @property
    def pidfile(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def logfile(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid of our running process, or ``None`` (a stale pidfile is removed)."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            self.pidfile.unlink(missing_ok=True)
            return None
        if self.marker not in cmdline:
            self.pidfile.unlink(missing_ok=True)
            return None
        return pid

    def start(self, argv: Sequence[str], *, env: dict[str, str] | None = None) -> int:
        """Spawn ``argv`` in a new session (it outlives us), output appended to the log."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.logfile.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            log.flush()
            pid = os.posix_spawnp(
                argv[0],
                list(argv),
                {**os.environ, **(env or {})},
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, log.fileno(), 1),
                    (os.POSIX_SPAWN_DUP2, log.fileno(), 2),
                ],
                setsid=True,
            )
        self.pidfile.write_text(str(pid))
        self._child = pid
        return pid

    def _running(self) -> bool:
        # Until exec, a fresh child's /proc cmdline is still ours, so a child we spawned in
        # this process is judged by waitpid (which also reaps it if it died).
        if self._child is not None:
            try:
                done, _ = os.waitpid(self._child, os.WNOHANG)
            except ChildProcessError:
                return False
            return done == 0
        return self.pid() is not None

    def wait_healthy(self, check: Callable[[], bool], timeout_s: float) -> None:
        """Wait until ``check()`` passes; on death or timeout raise with the log's tail."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return
            if not self._running():
                raise StackError(f"{self.name} exited during start-up; log tail:\n{self.log_tail()}")
            time.sleep(0.5)
        raise StackError(
            f"{self.name} not healthy after {timeout_s:.0f}s (raise stack.start_timeout_s if the "
            f"machine is slow); log tail:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM our process (SIGKILL after ``timeout_s``). False if it was not running."""
        pid = self.pid()
        if pid is None:
            return False
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
            time.sleep(0.2)
        if Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
            logger.warning("%s did not stop in %.0fs; killing it", self.name, timeout_s)
            os.killpg(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (OSError, IndexError):
        return True
