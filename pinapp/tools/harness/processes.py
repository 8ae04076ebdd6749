"""A pinapp process started for real (worker, archiver, Singer), on this host or another's namespace."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["REPO", "WorkerProcess", "cli_entry", "free_port", "in_netns"]

REPO = Path(__file__).resolve().parents[3]  # the checkout
_T = TypeVar("_T")
_CLONE_NEWNET = 0x40000000


def in_netns(namespace: str | None, call: Callable[[], _T]) -> _T:
    """``call()`` with its sockets in network namespace ``namespace`` (``None``: this one).

    setns(2) moves only the calling thread, so ``call`` runs on a thread of its own that ends
    with it: a worker on a host of its own serves ``/health`` on that host's loopback.
    """
    if namespace is None:
        return call()
    outcome: list[Any] = []

    def enter_and_call() -> None:
        try:
            fd = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({namespace}) failed")
            finally:
                os.close(fd)
            outcome.append((True, call()))
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=enter_and_call, name=f"netns-{namespace}")
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_entry(repo: Path) -> str:
    """``python -c`` code running the CLI of the checkout ``repo``.

    ``pinapp.cli``, but a baseline checkout (``make bench BASELINE=...``) between the layouts of
    issues 17 and 31 has it at ``pinapp/tools/cli.py``.
    """
    module = "pinapp.tools.cli" if (repo / "pinapp" / "tools" / "cli.py").exists() else "pinapp.cli"
    return f"from {module} import main; main()"


@dataclass
class WorkerProcess:
    """``pinapp worker`` (or ``pinapp archiver``) as a child process with its own environment."""

    env: dict[str, str]
    log_path: Path
    web_port: int
    command: str = "worker"
    ready_marker: str = "Worker ready"
    repo: Path = REPO  # the checkout whose code runs (bench: a baseline commit's worktree)
    netns: str | None = None  # run on this network namespace's host (the cluster tests)
    proc: subprocess.Popen[bytes] | None = None
    _ready_seen: int = 0  # "Worker ready" lines already waited for (restarts append to the log)

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            on_host = ["ip", "netns", "exec", self.netns] if self.netns else []
            self.proc = subprocess.Popen(
                [*on_host, sys.executable, "-c", cli_entry(self.repo), "--profile", "test", self.command],
                cwd=self.repo,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait for the ready line (faust's 'Worker ready': partitions assigned, tables recovered)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.log_path.read_text(errors="replace").count(self.ready_marker) > self._ready_seen:
                self._ready_seen += 1
                return
            await asyncio.sleep(0.3)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise AssertionError(f"worker ignored {sig!r} for {timeout}s:\n{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no commit."""
        self.stop(signal.SIGKILL)

    def metrics(self) -> dict[str, float]:
        """This worker's Prometheus samples, by name plus labels."""
        _, _, body = self.fetch("/metrics")
        text = body.decode()
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return samples

    def health(self) -> tuple[int, dict[str, Any]]:
        """``GET /health``: the status code and the JSON document."""
        status, _, body = self.fetch("/health", timeout=5)
        return status, json.loads(body)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        """``GET path`` on this worker's web server: status code and JSON body."""
        status, _, body = self.fetch(path, headers)
        return status, json.loads(body)

    def fetch(
        self, path: str, headers: dict[str, str] | None = None, timeout: float = 10
    ) -> tuple[int, dict[str, str], bytes]:
        """``GET path``: status, headers and the raw body, whatever the content type (from the
        process's host, when it runs on one of its own)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.web_port}{path}", headers=headers or {})

        def get() -> tuple[int, dict[str, str], bytes]:
            try:
                with urllib.request.urlopen(request, timeout=timeout) as resp:
                    return resp.status, dict(resp.headers), resp.read()
            except urllib.error.HTTPError as err:
                with err:
                    return err.code, dict(err.headers), err.read()

        return in_netns(self.netns, get)

    @contextlib.asynccontextmanager
    async def globe_stream(self) -> AsyncIterator[list[dict[str, Any]]]:
        """Collect what ``/globe/stream`` sends from its ``ready`` event on; each point gets
        ``received_ms``, the wall-clock time it arrived."""
        received: list[dict[str, Any]] = []
        ready = asyncio.Event()

        async def read() -> None:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{self.web_port}/globe/stream") as response,
            ):
                assert response.status == 200 and response.content_type == "text/event-stream"
                event = None
                async for raw in response.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "ready":
                        ready.set()
                    elif line.startswith("data: "):
                        now_ms = time.time() * 1000
                        received.extend({**p, "received_ms": now_ms} for p in json.loads(line[6:]))
                    elif not line:
                        event = None

        task = asyncio.create_task(read())
        waiting = asyncio.create_task(ready.wait())
        try:
            await asyncio.wait({task, waiting}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # the stream failed: raise its error
            assert ready.is_set(), "/globe/stream sent no ready event within 30 s"
            yield received
        finally:
            waiting.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def rss_mb(self) -> float:
        """Resident memory of the worker process, in MiB (from /proc)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def generations(self) -> list[int]:
        """The consumer group generations this process's log says it joined, in order."""
        log = self.log_path.read_text(errors="replace")
        return [int(g) for g in re.findall(r"Joined group '[^']+' \(generation (\d+)\)", log)]

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def diagnose(self, max_lines: int = 200) -> str:
        """What a stuck worker is doing: its ``/health`` and where each asyncio task waits.

        mode's worker prints every thread and task stack on SIGUSR1 (to the log); only the
        task names and their frames are kept here, without the local variables.
        """
        if not self.alive:
            return f"{self.command} (exited {self.proc.returncode if self.proc else None}):\n{self.log_tail()}"
        try:
            status, doc = self.health()
            health = f"/health {status}: {json.dumps(doc)[:2000]}"
        except Exception as exc:  # noqa: BLE001 - a stuck web server is itself the finding
            health = f"/health failed: {exc!r}"
        before = len(self.log_path.read_text(errors="replace"))
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGUSR1)
        time.sleep(3)
        dump = self.log_path.read_text(errors="replace")[before:].splitlines()
        frames = [
            re.sub(r'File ".*/(site-packages|lib/python3[.0-9]*)/', 'File "', line)
            for line in dump
            if line.lstrip().startswith(("TASK ", "File ", "THREAD "))
        ]
        return "\n".join([health, f"task stacks (SIGUSR1, {len(frames)} lines):", *frames[-max_lines:]])
