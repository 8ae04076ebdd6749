"""The local stack's services: what each does (:class:`StackService`), MariaDB, moto's S3 server.

Each knows how to install what it needs from a package registry (Maven Central, Debian,
PyPI via the project's own install), lay out its data folder, start, and check health.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import subprocess
import sys
import urllib.request
from abc import ABC, abstractmethod
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from config import Settings
from pinapp.adapters.kafka import client_options, partitions_of
from pinapp.archive.verify import archiver_group, committed_offsets
from pinapp.errors import StackError
from pinapp.tools.stack.packages import ensure_debian_package, run_checked
from pinapp.tools.stack.process import ManagedProcess, port_open
from pinapp.tools.stack.tls import ensure_certificate

__all__ = ["MariaDBService", "S3Service", "StackService"]


class StackService(ABC):
    """A service the stack runs on loopback, with its data under ``stack.data_dir``."""

    name: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.stack.data_dir.resolve()
        self.home = self.root / self.name
        self.process = ManagedProcess(self.name, self.root / "run", marker=str(self.home))

    @property
    @abstractmethod
    def port(self) -> int: ...

    def install(self) -> None:  # noqa: B027 - an optional hook: doing nothing is its default
        """Fetch what the service needs (idempotent)."""

    def prepare(self) -> None:  # noqa: B027 - an optional hook: doing nothing is its default
        """Write config and initialise the data folder (idempotent)."""

    @abstractmethod
    def argv(self) -> list[str]: ...

    @abstractmethod
    def healthy(self) -> bool: ...

    def after_start(self) -> None:  # noqa: B027 - an optional hook: doing nothing is its default
        """One-off set-up once healthy (users, buckets...); idempotent."""

    def after_fresh_start(self) -> list[str]:
        """What a start of the stopped service does besides :meth:`after_start`: lines for
        ``stack up``'s report."""
        return []


class MariaDBService(StackService):
    """MariaDB from Debian's packages, standing in for SingleStore (same wire protocol)."""

    name = "mariadb"

    @property
    def port(self) -> int:
        return self.settings.stack.mariadb_port

    @property
    def socket(self) -> Path:
        return self.home / "mysqld.sock"

    def _binary(self, name: str) -> str | None:
        return shutil.which(name) or next(
            (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
        )

    def install(self) -> None:
        if self._binary("mariadbd"):
            return
        ensure_debian_package("mariadbd", ["mariadb-server", "mariadb-client"], found=self._binary)

    def _user_args(self) -> list[str]:
        return ["--user=root"] if os.geteuid() == 0 else []

    def prepare(self) -> None:
        data = self.home / "data"
        if (data / "mysql").exists():
            return
        data.mkdir(parents=True, exist_ok=True)
        install_db = self._binary("mariadb-install-db") or "mariadb-install-db"
        run_checked(
            [
                install_db,
                "--no-defaults",
                f"--datadir={data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *self._user_args(),
            ],
            "initialising MariaDB's data folder",
        )

    def argv(self) -> list[str]:
        return [
            self._binary("mariadbd") or "mariadbd",
            "--no-defaults",
            f"--datadir={self.home / 'data'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.socket}",
            f"--pid-file={self.home / 'mariadbd.pid'}",
            "--skip-name-resolve",
            "--max-connections=300",
            "--innodb-buffer-pool-size=512M",
            "--max-allowed-packet=64M",
            "--log-error=",
            *self._user_args(),
            *self._tls_args(),
        ]

    def _tls_args(self) -> list[str]:
        if not self.settings.stack.mariadb_tls:
            return []
        tls = ensure_certificate(self.settings, "mariadb")
        return [f"--ssl-ca={tls / 'ca.pem'}", f"--ssl-cert={tls / 'mariadb.pem'}", f"--ssl-key={tls / 'mariadb.key'}"]

    def _sql(self, statement: str) -> subprocess.CompletedProcess[str]:
        client = self._binary("mariadb") or "mariadb"
        return subprocess.run(  # noqa: S603 - the local server's client, our own statement
            [client, "--no-defaults", f"--socket={self.socket}", "-uroot", "-e", statement],
            check=False,
            capture_output=True,
            text=True,
        )

    def healthy(self) -> bool:
        return port_open(self.port) and self._sql("SELECT 1").returncode == 0

    def after_start(self) -> None:
        db = self.settings.db
        user = db.user.replace("'", "")
        password = db.password.get_secret_value().replace("'", "''")
        statements = []
        for host in ("127.0.0.1", "localhost"):
            statements += [
                f"CREATE USER IF NOT EXISTS '{user}'@'{host}' IDENTIFIED BY '{password}'",
                # Tests create a database each, so the local user may create any.
                f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'{host}'",
            ]
            if self.settings.stack.mariadb_tls:  # the same password, over TLS only
                tls_user = self.settings.stack.mariadb_tls_user.replace("'", "")
                statements += [
                    f"CREATE USER IF NOT EXISTS '{tls_user}'@'{host}' IDENTIFIED BY '{password}' REQUIRE SSL",
                    f"GRANT ALL PRIVILEGES ON *.* TO '{tls_user}'@'{host}'",
                ]
            if db.query_user:  # people's queries: SELECT only (no FILE, no writes), and bounded in time
                reader = db.query_user.replace("'", "")
                secret = db.query_password.get_secret_value().replace("'", "''")
                limit = self.settings.stack.mariadb_query_time_s
                statements += [
                    f"CREATE USER IF NOT EXISTS '{reader}'@'{host}' IDENTIFIED BY '{secret}'",
                    f"GRANT SELECT, SHOW VIEW ON *.* TO '{reader}'@'{host}' WITH MAX_STATEMENT_TIME {limit:g}",
                ]
        proc = self._sql("; ".join(statements))
        if proc.returncode != 0:
            raise StackError(f"creating the MariaDB user {user!r} failed: {proc.stderr.strip()}")


class S3Service(StackService):
    """moto's S3 API server (in-memory) on loopback."""

    name = "s3"

    @property
    def port(self) -> int:
        return self.settings.stack.s3_port

    def install(self) -> None:
        if importlib.util.find_spec("moto") is None:
            raise StackError(
                "s3: moto's S3 server is not installed: pip install 'pinapp[dev]' (make setup installs it)"
            )

    def argv(self) -> list[str]:
        # The trailing comment puts our data folder in the command line, marking the
        # process as ours for `status` and `down`.
        code = f"import sys; from moto.server import main; main(sys.argv[1:])  # {self.home}"
        return [sys.executable, "-c", code, "-H", "127.0.0.1", "-p", str(self.port)]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/moto-api/", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def after_start(self) -> None:
        """Create the archive bucket (moto keeps buckets in memory, so after every start)."""
        import boto3  # moto's own dependency; the stack's set-up is synchronous

        s3 = self.settings.s3
        client = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.port}",
            region_name=s3.region,
            aws_access_key_id=s3.access_key_id.get_secret_value(),
            aws_secret_access_key=s3.secret_access_key.get_secret_value(),
        )
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if s3.bucket not in existing:
            client.create_bucket(Bucket=s3.bucket)

    def after_fresh_start(self) -> list[str]:
        """The server keeps nothing across a restart, while Kafka keeps its log and the archiver
        group's commits: the archive would miss every offset committed before. So the group is set
        back to each partition's log start (it has no member running: the stack was stopped), and
        the archiver archives again everything Kafka holds."""
        return asyncio.run(_archive_again_from_log_start(self.settings))


async def _archive_again_from_log_start(settings: Settings) -> list[str]:
    group = archiver_group(settings)
    back: dict[TopicPartition, int] = {}
    for topic in settings.archive_topics:
        if await partitions_of(settings.kafka, topic):
            starts, committed = await committed_offsets(settings, topic, group)
            back |= {TopicPartition(topic, p): starts[p] for p, offset in committed.items() if starts[p] < offset}
    if not back:
        return []
    consumer = AIOKafkaConsumer(**client_options(settings.kafka), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(back))
        await consumer.commit(back)
    finally:
        await consumer.stop()
    return [
        (
            f"s3: started empty (the stack's S3 keeps nothing across restarts): consumer group {group} set back "
            f"to the log start of {len(back)} partition(s), so the archiver archives again what Kafka holds"
        )
    ]
