"""`pinapp stack up|down|status`: start, stop and inspect the local services.

``up`` is idempotent: a service already running (ours, healthy) is left alone. A port
held by a process we did not start is an error naming the setting to change. ``down``
stops only processes recorded in our pidfiles.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from config import Settings
from pinapp.errors import StackError
from pinapp.tools.stack.cluster import KafkaCluster
from pinapp.tools.stack.kafka import KafkaService
from pinapp.tools.stack.process import port_open
from pinapp.tools.stack.services import MariaDBService, S3Service, StackService

__all__ = ["ServiceStatus", "Stack"]

logger = logging.getLogger(__name__)

_PORT_SETTING = {"kafka": "stack.kafka_port", "mariadb": "stack.mariadb_port", "s3": "stack.s3_port"}


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    port: int
    pid: int | None
    port_in_use: bool
    healthy: bool
    log: str

    @property
    def state(self) -> str:
        if self.pid is None:
            return "port held by another process" if self.port_in_use else "stopped"
        return "healthy" if self.healthy else "unhealthy"


class Stack:
    """The local stack for one settings profile (its own ports and data folder)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services: list[StackService] = [KafkaService(settings), MariaDBService(settings), S3Service(settings)]

    def up(self) -> list[str]:
        """Start every service not already running; returns a line per service."""
        report = []
        timeout = self.settings.stack.start_timeout_s
        for svc in self.services:
            proc = svc.process
            if proc.pid() is not None:
                proc.wait_healthy(svc.healthy, timeout)
                svc.after_start()
                report.append(f"{svc.name}: already running (pid {proc.pid()}, port {svc.port})")
                continue
            if port_open(svc.port):
                setting = _PORT_SETTING[svc.name]
                raise StackError(
                    f"{svc.name}: port {svc.port} is in use by a process this stack did not start; "
                    f"stop it or set {setting} (env PINAPP_{setting.upper().replace('.', '__')})"
                )
            logger.info("%s: checking its install and data folder (a first run downloads packages)", svc.name)
            svc.install()
            svc.prepare()
            logger.info("%s: starting on port %d", svc.name, svc.port)
            pid = proc.start(svc.argv())
            proc.wait_healthy(svc.healthy, timeout)
            svc.after_start()
            report.append(f"{svc.name}: started (pid {pid}, port {svc.port}, log {proc.logfile})")
            report += svc.after_fresh_start()
        return report

    def down(self) -> list[str]:
        """Stop what ``up`` started, in reverse order, and a fault tests' cluster left behind."""
        report = []
        cluster = KafkaCluster.of(self.settings)
        if cluster.left_behind():
            cluster.down()
            report.append("kafka cluster (fault tests): stopped, its relay, namespaces and links removed")
        for svc in reversed(self.services):
            stopped = svc.process.stop()
            report.append(f"{svc.name}: {'stopped' if stopped else 'was not running'}")
        return report

    def status(self) -> list[ServiceStatus]:
        return [self._status(svc) for svc in self.services]

    @staticmethod
    def _status(svc: StackService) -> ServiceStatus:
        pid = svc.process.pid()
        healthy = pid is not None and svc.healthy()
        return ServiceStatus(svc.name, svc.port, pid, port_open(svc.port), healthy, str(svc.process.logfile))
