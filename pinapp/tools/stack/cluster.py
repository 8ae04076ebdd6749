"""A three-node Kafka cluster whose nodes are hosts of their own, for the fault tests.

Design notes: docs/architecture.md, "pinapp/tools/stack/cluster.py".
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from config import Settings
from pinapp.errors import StackError
from pinapp.tools.stack.kafka import KafkaService
from pinapp.tools.stack.packages import run_checked
from pinapp.tools.stack.process import ManagedProcess, port_open

__all__ = ["BRIDGE", "HOST_SIDE", "KafkaCluster", "Node"]

BRIDGE = "pinapp-br0"
HOST_SIDE = "10.77.0.1"  # the host namespace on the bridge
_PORT = 9092
_CONTROLLER_PORT = 9093
_RELAY = "pinapp.tools.stack.relay"


def _ip(*args: str, namespace: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(("netns", "exec", namespace, "ip") if namespace else ()), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
    if check and done.returncode != 0:
        raise StackError(f"`{' '.join(argv)}` failed: {done.stderr.strip()} (the cluster stack needs root)")
    return done


def _attach(namespace: str, link: str, address: str) -> None:
    """``namespace`` (made if missing) on the bridge through a veth pair, at ``address``."""
    if namespace not in _ip("netns", "list", check=False).stdout.split():
        _ip("netns", "add", namespace)
    inner = f"{namespace}n"
    if _ip("link", "show", link, check=False).returncode != 0:
        _ip("link", "add", link, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", namespace)
        _ip("addr", "add", f"{address}/24", "dev", inner, namespace=namespace)
    _ip("link", "set", link, "master", BRIDGE, "up")
    _ip("link", "set", "lo", "up", namespace=namespace)
    _ip("link", "set", inner, "up", namespace=namespace)


@dataclass
class Node:
    """One broker and controller, on a host (namespace) of its own."""

    node_id: int
    home: Path
    process: ManagedProcess = field(init=False)

    def __post_init__(self) -> None:
        self.process = ManagedProcess(self.namespace, self.home.parent / "run", marker=str(self.home / "server."))

    @property
    def namespace(self) -> str:
        return f"pinapp-k{self.node_id}"

    @property
    def address(self) -> str:
        return f"10.77.0.{10 + self.node_id}"

    @property
    def bootstrap(self) -> str:
        return f"{self.address}:{_PORT}"

    @property
    def link(self) -> str:
        """The host end of its veth pair: down cuts the node off, up heals it."""
        return f"{self.namespace}h"


class KafkaCluster:
    """Three KRaft nodes on the bridge; start, stop and break them one at a time."""

    def __init__(self, settings: Settings, home: Path, *, nodes: int = 3, heap: str = "512m") -> None:
        self.settings = settings
        self.home = home
        self.heap = heap
        self.nodes = [Node(i, home / f"node{i}") for i in range(1, nodes + 1)]
        self._libs = KafkaService(settings)  # its jars, resolved from Maven Central once
        self.relay = ManagedProcess("relay", home / "run", marker=f"{_RELAY} {HOST_SIDE}:")
        self._hosts: dict[str, str] = {}  # a client host's namespace -> its address

    @classmethod
    def of(cls, settings: Settings) -> KafkaCluster:
        """The cluster of ``settings``' stack (its data under ``stack.data_dir/cluster``)."""
        return cls(settings, settings.stack.data_dir.resolve() / "cluster")

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    def left_behind(self) -> bool:
        """Whether a node or the relay runs, or the bridge exists (a run that could not tear down)."""
        bridge = shutil.which("ip") is not None and _ip("link", "show", BRIDGE, check=False).returncode == 0
        return bridge or any(p.pid() is not None for p in (self.relay, *(n.process for n in self.nodes)))

    def node(self, node_id: int) -> Node:
        return self.nodes[node_id - 1]

    # -- network --------------------------------------------------------------------------

    def _network_up(self) -> None:
        if os.geteuid() != 0:
            raise StackError("the cluster stack puts each broker in a network namespace: run it as root")
        if _ip("link", "show", BRIDGE, check=False).returncode != 0:
            _ip("link", "add", BRIDGE, "type", "bridge")
            _ip("addr", "add", f"{HOST_SIDE}/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        for node in self.nodes:
            _attach(node.namespace, node.link, node.address)

    def _network_down(self) -> None:
        listed = _ip("netns", "list", check=False).stdout.split()
        for namespace in {n.namespace for n in self.nodes} | {n for n in listed if n.startswith("pinapp-")}:
            _ip("link", "del", f"{namespace}h", check=False)
            _ip("netns", "del", namespace, check=False)
        _ip("link", "del", BRIDGE, check=False)

    def host(self, index: int) -> str:
        """A client host of its own on the bridge (``pinapp-hN``, 10.77.0.(100+N)): its namespace.

        It reaches the brokers and the bridge's host side (:data:`HOST_SIDE`, where the relay
        forwards to the database and S3: :meth:`client_env`), nothing on the host's loopback.
        """
        if not 0 <= index < 100:
            raise ValueError(f"client host index {index} is outside 0-99")
        namespace, address = f"pinapp-h{index}", f"10.77.0.{100 + index}"
        _attach(namespace, f"{namespace}h", address)
        self._hosts[namespace] = address
        return namespace

    def client_env(self) -> dict[str, str]:
        """The settings a pinapp process on a client host needs: the brokers, and the database
        and S3 through the relay (the same ports, on the bridge's host side)."""
        env = {"PINAPP_KAFKA__BOOTSTRAP": self.bootstrap, "PINAPP_DB__HOST": HOST_SIDE}
        if s3 := self._s3():
            env["PINAPP_S3__ENDPOINT_URL"] = f"http://{HOST_SIDE}:{s3.port}"
        return env

    def _s3(self) -> SplitResult | None:
        return urlsplit(self.settings.s3.endpoint_url) if self.settings.s3.endpoint_url else None

    def _relay_up(self) -> None:
        routes = [f"{HOST_SIDE}:{self.settings.db.port}={self.settings.db.host}:{self.settings.db.port}"]
        if s3 := self._s3():
            routes.append(f"{HOST_SIDE}:{s3.port}={s3.hostname}:{s3.port}")
        self.relay.start([sys.executable, "-m", _RELAY, *routes])
        self.relay.wait_healthy(lambda: port_open(self.settings.db.port, HOST_SIDE), 30)

    def cut_from_brokers(self, namespace: str) -> None:
        """The client host ``namespace`` hears nothing from any broker (their answers to it are
        dropped), while it still reaches everything else: a zombie's view of a partition."""
        for node in self.nodes:
            _ip("route", "replace", "blackhole", f"{self._hosts[namespace]}/32", namespace=node.namespace)

    def reconnect_to_brokers(self, namespace: str) -> None:
        for node in self.nodes:
            _ip("route", "del", "blackhole", f"{self._hosts[namespace]}/32", namespace=node.namespace, check=False)

    # -- nodes ------------------------------------------------------------------------------

    def _properties(self, node: Node) -> str:
        voters = ",".join(f"{n.node_id}@{n.address}:{_CONTROLLER_PORT}" for n in self.nodes)
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={node.node_id}",
                f"controller.quorum.voters={voters}",
                f"listeners=PLAINTEXT://{node.address}:{_PORT},CONTROLLER://{node.address}:{_CONTROLLER_PORT}",
                f"advertised.listeners=PLAINTEXT://{node.bootstrap}",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                "controller.listener.names=CONTROLLER",
                f"log.dirs={node.home / 'data'}",
                "auto.create.topics.enable=false",
                "default.replication.factor=3",
                "min.insync.replicas=2",
                "unclean.leader.election.enable=false",
                "offsets.topic.replication.factor=3",
                "offsets.topic.num.partitions=8",
                "transaction.state.log.replication.factor=3",
                "transaction.state.log.min.isr=2",
                "share.coordinator.state.topic.replication.factor=3",
                "group.initial.rebalance.delay.ms=0",
                "file.delete.delay.ms=1000",
                "",
            ]
        )

    def _format(self) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        for node in self.nodes:
            shutil.rmtree(node.home, ignore_errors=True)
            (node.home / "data").mkdir(parents=True)
            (node.home / "server.properties").write_text(self._properties(node))
            (node.home / "log4j2.properties").write_text(
                "status = warn\nappender.console.type = Console\nappender.console.name = STDOUT\n"
                "appender.console.layout.type = PatternLayout\n"
                "appender.console.layout.pattern = [%d] %p %m (%c)%n\n"
                "rootLogger.level = WARN\nrootLogger.appenderRef.stdout.ref = STDOUT\n"
                "logger.server.name = kafka.server.KafkaRaftServer\nlogger.server.level = INFO\n"
            )
            run_checked(
                [
                    "java",
                    "-cp",
                    f"{self._libs.libs}/*",
                    "kafka.tools.StorageTool",
                    "format",
                    f"--cluster-id={cluster_id}",
                    "-c",
                    str(node.home / "server.properties"),
                ],
                f"formatting node {node.node_id}'s KRaft storage",
            )

    def start(self, node: Node) -> None:
        """Start ``node``'s broker in its namespace (its storage kept)."""
        node.process.start(
            [
                "ip",
                "netns",
                "exec",
                node.namespace,
                "java",
                f"-Xmx{self.heap}",
                "-Xms128m",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={node.home / 'log4j2.properties'}",
                "-cp",
                f"{self._libs.libs}/*",
                "kafka.Kafka",
                str(node.home / "server.properties"),
            ]
        )

    def wait_healthy(self, node: Node, timeout_s: float | None = None) -> None:
        timeout = timeout_s or self.settings.stack.start_timeout_s

        def started() -> bool:
            return port_open(_PORT, node.address) and "started (kafka.server.KafkaRaftServer)" in node.process.log_tail(
                400
            )

        node.process.wait_healthy(started, timeout)

    def up(self) -> None:
        """Network, fresh storage, three started nodes (a cluster left running is stopped first)."""
        self._libs.install()
        self.down()
        self._network_up()
        self._relay_up()
        self._format()
        for node in self.nodes:
            self.start(node)
        for node in self.nodes:
            self.wait_healthy(node)

    def down(self) -> None:
        """Kill every node and the relay (the next :meth:`up` formats fresh storage) and remove
        the network."""
        for node in self.nodes:
            self.kill(node)
        self.relay.stop(timeout_s=5)
        self._network_down()

    # -- faults ------------------------------------------------------------------------------

    def restart(self, node: Node) -> None:
        """A clean bounce: SIGTERM (controlled shutdown, leadership handed over), start, healthy."""
        node.process.stop(timeout_s=60)
        self.start(node)
        self.wait_healthy(node)

    def kill(self, node: Node) -> None:
        """SIGKILL: no shutdown, no handover."""
        pid = node.process.pid()
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)
            node.process.pidfile.unlink(missing_ok=True)

    def hang(self, node: Node) -> None:
        pid = node.process.pid()
        if pid is not None:
            os.killpg(pid, signal.SIGSTOP)

    def resume(self, node: Node) -> None:
        pid = node.process.pid()
        if pid is not None:
            os.killpg(pid, signal.SIGCONT)

    def cut_off(self, node: Node) -> None:
        """The node's host loses the network; it keeps running."""
        _ip("link", "set", node.link, "down")

    def heal(self, node: Node) -> None:
        _ip("link", "set", node.link, "up")
