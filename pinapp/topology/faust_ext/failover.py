"""aiokafka's client, passing over a broker that stopped answering while another one answers.

Design notes: docs/architecture.md, "pinapp/topology/faust_ext/failover.py".
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable
from typing import Any

import aiokafka.admin.client
import aiokafka.consumer.consumer
import aiokafka.producer.producer
from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.cluster import ClusterMetadata
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, RequestTimedOutError, StaleMetadata
from aiokafka.protocol.metadata import MetadataRequest

__all__ = ["RECONNECT_BACKOFF_S", "SUSPECT_HANDSHAKE_S", "SUSPECT_S", "FailoverClient", "install", "order_nodes"]

log = logging.getLogger("aiokafka.client")  # its messages stay where aiokafka's own are

#: How long a broker that timed out or refused a connection is asked last.
SUSPECT_S = 60.0
#: After a suspected broker's failure, no new connection to it for this long (Java's
#: ``reconnect.backoff.ms`` tops out at 1 s): a retry meanwhile fails at once, and the metadata
#: refresh the failure asked for can name the partition's new leader first.
RECONNECT_BACKOFF_S = 1.0
#: A connection to a suspected broker must finish each step of its handshake in this long (one
#: that answers does in milliseconds; a hung one would hold the request timeout).
SUSPECT_HANDSHAKE_S = 2.0

#: The aiokafka modules that construct the client (``install`` points them at ours).
_BUILDERS = (aiokafka.consumer.consumer, aiokafka.producer.producer, aiokafka.admin.client)


def order_nodes(nodes: Iterable[Any], suspect: dict[Any, float], now: float) -> list[Any]:
    """``nodes`` in the order to ask them: shuffled, those suspected in the last
    :data:`SUSPECT_S` last (the least recently suspected first among them)."""
    fresh = [n for n in nodes if now - suspect.get(n, -SUSPECT_S) >= SUSPECT_S]
    stale = sorted((n for n in nodes if n not in fresh), key=lambda n: suspect[n])
    random.shuffle(fresh)
    return fresh + stale


class FailoverClient(AIOKafkaClient):
    """``AIOKafkaClient`` with three changes, for a broker that hangs (its sockets still open):

    - a node whose request timed out or whose connection failed is asked for metadata and
      coordinators last, for :data:`SUSPECT_S` or until it answers again (aiokafka picks at
      random, so half the lookups waited a request timeout on the hung node);
    - connecting to one node no longer holds up connecting to the others (aiokafka holds one
      lock over every handshake, and a handshake to a hung node waits the request timeout);
    - a suspected node is not reconnected to for :data:`RECONNECT_BACKOFF_S` after it failed,
      and then with :data:`SUSPECT_HANDSHAKE_S` per handshake step. A producer retried its batch
      at the old leader before the metadata refresh came back, and each such try held the batch
      a whole request timeout.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._suspect: dict[Any, float] = {}
        self._conn_locks: dict[tuple[Any, ConnectionGroup], asyncio.Lock] = {}

    def _suspected(self, node_id: Any) -> None:
        self._suspect[node_id] = time.monotonic()

    def _answered(self, node_id: Any) -> None:
        self._suspect.pop(node_id, None)

    def get_random_node(self) -> Any:
        nodes = order_nodes([b.nodeId for b in self.cluster.brokers()], self._suspect, time.monotonic())
        return nodes[0] if nodes else None

    async def send(self, node_id: Any, request: Any, *, group: ConnectionGroup = ConnectionGroup.DEFAULT) -> Any:
        try:
            response = await super().send(node_id, request, group=group)
        except RequestTimedOutError:  # a failed connection marked it already (a refused one must not)
            self._suspected(node_id)
            raise
        self._answered(node_id)
        return response

    # Copied from aiokafka 0.14.0 (AIOKafkaClient._metadata_update; fingerprinted): the nodes
    # are asked in order_nodes' order instead of a plain shuffle.
    async def _metadata_update(self, cluster_metadata: ClusterMetadata, topics: Any) -> bool:
        assert isinstance(cluster_metadata, ClusterMetadata)
        metadata_request = MetadataRequest(list(topics) if topics else None)
        nodeids: list[Any] = [b.nodeId for b in self.cluster.brokers()]
        bootstrap_id = ("bootstrap", ConnectionGroup.DEFAULT)
        if bootstrap_id in self._conns:
            nodeids.append("bootstrap")
        for node_id in order_nodes(nodeids, self._suspect, time.monotonic()):
            conn = await self._get_conn(node_id)
            if conn is None:
                continue
            log.debug("Sending metadata request %s to node %s", metadata_request, node_id)
            try:
                metadata = await conn.send(metadata_request)
            except (TimeoutError, KafkaError) as err:
                log.warning("Unable to request metadata from node with id %s: %r", node_id, err)
                self._suspected(node_id)
                continue
            self._answered(node_id)
            if not metadata.brokers:
                return False
            cluster_metadata.update_metadata(metadata)
            if bootstrap_id in self._conns and len(self.cluster.brokers()):
                self._conns.pop(bootstrap_id).close()
            break
        else:
            log.error("Unable to update metadata from %s", nodeids)
            cluster_metadata.failed_update(None)
            return False
        return True

    def _handshake_timeout_ms(self, node_id: Any) -> int | None:
        """The handshake's timeout for a new connection to ``node_id``; ``None``: not now."""
        since = time.monotonic() - self._suspect.get(node_id, -SUSPECT_S)
        if since >= SUSPECT_S:
            return int(self._request_timeout_ms)
        if since < RECONNECT_BACKOFF_S:
            return None
        return int(min(self._request_timeout_ms, SUSPECT_HANDSHAKE_S * 1000))

    # Copied from aiokafka 0.14.0 (AIOKafkaClient._get_conn; fingerprinted): a lock per
    # connection instead of one for all, a suspected node's reconnection backed off and its
    # handshake bounded, and a failed connection marks its node.
    async def _get_conn(
        self, node_id: Any, *, group: ConnectionGroup = ConnectionGroup.DEFAULT, no_hint: bool = False
    ) -> Any:
        conn_id = (node_id, group)
        if conn_id in self._conns:
            conn = self._conns[conn_id]
            if not conn.connected():
                del self._conns[conn_id]
            else:
                return conn
        try:
            broker = self.cluster.broker_metadata(node_id)
            if broker is None:
                raise StaleMetadata(f"Broker id {node_id} not in current metadata")
            log.debug("Initiating connection to node %s at %s:%s", node_id, broker.host, broker.port)
            async with self._conn_locks.setdefault(conn_id, asyncio.Lock()):
                if conn_id in self._conns:
                    return self._conns[conn_id]
                handshake_ms = self._handshake_timeout_ms(node_id)
                if handshake_ms is None:
                    self.force_metadata_update()
                    return None
                conn = await create_conn(
                    broker.host,
                    broker.port,
                    client_id=self._client_id,
                    request_timeout_ms=handshake_ms,
                    ssl_context=self._ssl_context,
                    security_protocol=self._security_protocol,
                    on_close=self._on_connection_closed,
                    max_idle_ms=self._connections_max_idle_ms,
                    sasl_mechanism=self._sasl_mechanism,
                    sasl_plain_username=self._sasl_plain_username,
                    sasl_plain_password=self._sasl_plain_password,
                    sasl_kerberos_service_name=self._sasl_kerberos_service_name,
                    sasl_kerberos_domain_name=self._sasl_kerberos_domain_name,
                    sasl_oauth_token_provider=self._sasl_oauth_token_provider,
                )
                conn._request_timeout = self._request_timeout_ms / 1000  # requests get the full timeout
                self._conns[conn_id] = conn
        except (TimeoutError, OSError, KafkaError) as err:
            log.error("Unable connect to node with id %s: %s", node_id, err)
            self._suspected(node_id)
            self.force_metadata_update()
            return None
        else:
            return self._conns[conn_id]


def install() -> None:
    """Make every aiokafka consumer, producer and admin client in this process a
    :class:`FailoverClient` (idempotent; faust builds its clients through aiokafka's)."""
    for module in _BUILDERS:
        module.AIOKafkaClient = FailoverClient
