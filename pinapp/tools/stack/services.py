"""The three services of the local stack: Apache Kafka (KRaft), MariaDB, moto's S3 server.

Each knows how to install what it needs from a package registry (Maven Central, Debian,
PyPI via the project's own install), lay out its data folder, start, and check health.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from abc import ABC, abstractmethod
from importlib import resources
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from config import Settings
from pinapp.adapters.kafka import client_options, partitions_of
from pinapp.archive.verify import archiver_group, committed_offsets
from pinapp.errors import StackError
from pinapp.tools.stack.process import ManagedProcess, port_open

__all__ = ["KafkaService", "MariaDBService", "S3Service", "StackService", "ensure_debian_package"]


#: The broker's key store's password: a file of the local stack's, beside the key it protects.
_KEYSTORE_PASSWORD = "pinapp-local-stack"  # noqa: S105 - the local test stack's, never a deployment's


def stack_ca_file(settings: Settings) -> Path:
    """The local stack's own CA certificate (PEM): what clients of its TLS listeners trust."""
    return settings.stack.data_dir.resolve() / "tls" / "ca.pem"


def ensure_certificate(settings: Settings, name: str) -> Path:
    """``<name>.pem`` and ``<name>.key`` for ``IP:127.0.0.1`` and ``localhost``, signed by the
    stack's CA (made first if need be), with Debian's openssl; their folder."""
    tls = stack_ca_file(settings).parent
    if (tls / f"{name}.pem").exists():
        return tls
    if shutil.which("openssl") is None:
        raise StackError("the stack's TLS listeners need openssl for their certificates (apt-get install openssl)")
    tls.mkdir(parents=True, exist_ok=True)
    if not (tls / "ca.pem").exists():
        _run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem.tmp",
                "-days",
                "3650",
                "-subj",
                "/CN=pinapp local stack CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            "making the stack's CA",
            cwd=tls,
        )
        (tls / "ca.pem.tmp").rename(tls / "ca.pem")
    (tls / f"{name}.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    for argv, what in [
        (
            [
                "openssl",
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                f"{name}.key",
                "-out",
                f"{name}.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
            f"making {name}'s key",
        ),
        (
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                f"{name}.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                f"{name}.pem.tmp",
                "-days",
                "3650",
                "-extfile",
                f"{name}.ext",
            ],
            f"signing {name}'s certificate",
        ),
    ]:
        _run(argv, what, cwd=tls)
    (tls / f"{name}.pem.tmp").rename(tls / f"{name}.pem")
    return tls


def _run(argv: list[str], what: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]  # noqa: S603 - our own argv
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise StackError(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}")
    return proc


def ensure_debian_package(binary: str, packages: list[str], *, found: Any = shutil.which) -> str:
    """The path of ``binary``, installing Debian ``packages`` with apt-get first when it is missing.

    Raises:
        StackError: not root or no apt-get (with the command to run), or the install failed.
    """
    path = found(binary)
    if path:
        return str(path)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(f"{binary} is not installed; run: sudo apt-get install -y {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-q"], "apt-get update", env=env)
    _run(["apt-get", "install", "-y", "-q", *packages], f"installing {' '.join(packages)}", env=env)
    path = found(binary)
    if not path:
        raise StackError(f"{binary} is still missing after apt-get install {' '.join(packages)}")
    return str(path)


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


class KafkaService(StackService):
    """One Apache Kafka node in KRaft mode (broker + controller), jars from Maven Central."""

    name = "kafka"
    heap = "1g"

    @property
    def port(self) -> int:
        return self.settings.stack.kafka_port

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    def install(self) -> None:
        pom = resources.files("pinapp.tools.stack").joinpath("pom.xml")
        digest = hashlib.sha256(pom.read_bytes()).hexdigest()
        stamp = self.libs / ".pom-sha256"
        if stamp.exists() and stamp.read_text() == digest:
            return
        if shutil.which("mvn") is None or shutil.which("java") is None:
            raise StackError("Kafka needs Java 17+ and Maven on PATH (apt-get install openjdk-17-jre-headless maven)")
        shutil.rmtree(self.libs, ignore_errors=True)
        with resources.as_file(pom) as pom_path:
            _run(
                [
                    "mvn",
                    "-q",
                    "-B",
                    "-f",
                    str(pom_path),
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={self.libs}",
                    "-DincludeScope=runtime",
                ],
                "resolving the Kafka broker's jars from Maven Central",
            )
        stamp.write_text(digest)

    def _ensure_tls(self) -> Path:
        """The broker's key store (PKCS12, for Kafka) of a certificate from the stack's CA."""
        tls = ensure_certificate(self.settings, "kafka")
        if not (tls / "kafka.p12").exists():
            _run(
                [
                    "openssl",
                    "pkcs12",
                    "-export",
                    "-in",
                    "kafka.pem",
                    "-inkey",
                    "kafka.key",
                    "-certfile",
                    "ca.pem",
                    "-name",
                    "kafka",
                    "-out",
                    "kafka.p12.tmp",
                    "-passout",
                    f"pass:{_KEYSTORE_PASSWORD}",
                ],
                "writing the broker's key store",
                cwd=tls,
            )
            (tls / "kafka.p12.tmp").rename(tls / "kafka.p12")
        return tls

    def _listeners(self) -> list[str]:
        s = self.settings.stack
        plain = f"PLAINTEXT://127.0.0.1:{s.kafka_port}"
        controller = f"CONTROLLER://127.0.0.1:{s.kafka_controller_port}"
        if s.kafka_sasl_ssl_port is None:
            return [
                f"listeners={plain},{controller}",
                f"advertised.listeners={plain}",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            ]
        secured = f"SASL_SSL://127.0.0.1:{s.kafka_sasl_ssl_port}"
        return [
            f"listeners={plain},{secured},{controller}",
            f"advertised.listeners={plain},{secured}",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
            "inter.broker.listener.name=PLAINTEXT",
            # SCRAM for every client (singer's librdkafka is the confluent-kafka wheel's: 2.6.1+
            # logs in to Kafka 4); PLAIN (same user) too, the other mechanism clusters offer.
            "sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN",
            (
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            (
                "listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule "
                f'required user_{s.kafka_scram_user}="{s.kafka_scram_password.get_secret_value()}";'
            ),
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.location={stack_ca_file(self.settings).parent / 'kafka.p12'}",
            f"ssl.keystore.password={_KEYSTORE_PASSWORD}",
            f"ssl.key.password={_KEYSTORE_PASSWORD}",
        ]

    def prepare(self) -> None:
        s = self.settings.stack
        data = self.home / "data"
        scram_marker = data / ".pinapp-scram-user"
        if s.kafka_sasl_ssl_port is not None:
            self._ensure_tls()
            meta = data / "meta.properties"
            if meta.exists() and "cluster.id=" in meta.read_text(errors="replace") and not scram_marker.exists():
                # SCRAM users are added when the storage is formatted; this stack's was formatted
                # without one. Only a stack with a secured listener (the test profile's) gets here.
                print(f"kafka: reformatting {data} to add the SCRAM user of the SASL_SSL listener", file=sys.stderr)
                shutil.rmtree(data)
        data.mkdir(parents=True, exist_ok=True)
        (self.home / "server.properties").write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{s.kafka_controller_port}",
                    *self._listeners(),
                    "controller.listener.names=CONTROLLER",
                    f"log.dirs={data}",
                    # pinapp creates its topics with the partition count it needs; a typo'd or
                    # early producer must not create one with the wrong count.
                    "auto.create.topics.enable=false",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=8",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.retention.hours=168",
                    # Tests delete their topics; remove the files soon, not a minute later.
                    "file.delete.delay.ms=1000",
                    "",
                ]
            )
        )
        # Logs of deleted topics that a stop interrupted mid-removal ("<topic>-<n>.<id>-delete").
        # Kafka 4.1 retries their removal at start and, finding a file already gone, takes the
        # whole log directory offline, i.e. the broker. They belong to no topic any more.
        for leftover in data.glob("*-delete"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
        (self.home / "log4j2.properties").write_text(
            "status = warn\n"
            "appender.console.type = Console\nappender.console.name = STDOUT\n"
            "appender.console.layout.type = PatternLayout\n"
            "appender.console.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = WARN\nrootLogger.appenderRef.stdout.ref = STDOUT\n"
            "logger.server.name = kafka.server.KafkaRaftServer\nlogger.server.level = INFO\n"
        )
        if not (data / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            scram = []
            if s.kafka_sasl_ssl_port is not None:
                password = s.kafka_scram_password.get_secret_value()
                scram = ["--add-scram", f"SCRAM-SHA-512=[name={s.kafka_scram_user},password={password}]"]
            _run(
                [
                    "java",
                    "-cp",
                    f"{self.libs}/*",
                    "kafka.tools.StorageTool",
                    "format",
                    # "=" form: a random id may start with "-", which argparse takes for an option
                    f"--cluster-id={cluster_id}",
                    "-c",
                    str(self.home / "server.properties"),
                    *scram,
                ],
                "formatting Kafka's KRaft storage",
            )
            if scram:
                scram_marker.write_text(s.kafka_scram_user)

    def argv(self) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            "-Xms256m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
            "kafka.Kafka",
            str(self.home / "server.properties"),
        ]

    def healthy(self) -> bool:
        secured = self.settings.stack.kafka_sasl_ssl_port
        if not port_open(self.port) or (secured is not None and not port_open(secured)):
            return False
        # The listener opens before the broker is unfenced; wait for the startup line.
        return "started (kafka.server.KafkaRaftServer)" in self.process.log_tail(400)


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
        _run(
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
