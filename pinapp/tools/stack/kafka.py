"""The local stack's Apache Kafka (KRaft, one node): installed from Maven Central, started on loopback."""

from __future__ import annotations

import base64
import hashlib
import shutil
import sys
import uuid
from importlib import resources
from pathlib import Path

from pinapp.errors import StackError
from pinapp.tools.stack.packages import run_checked
from pinapp.tools.stack.process import port_open
from pinapp.tools.stack.services import StackService
from pinapp.tools.stack.tls import KEYSTORE_PASSWORD, ensure_certificate, stack_ca_file

__all__ = ["KafkaService"]


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
            run_checked(
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
            run_checked(
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
                    f"pass:{KEYSTORE_PASSWORD}",
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
            f"ssl.keystore.password={KEYSTORE_PASSWORD}",
            f"ssl.key.password={KEYSTORE_PASSWORD}",
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
            run_checked(
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
