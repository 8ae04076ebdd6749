"""The failover client against the real broker and a hung one beside it.

The hung broker takes TCP connections and never answers, as a SIGSTOPped broker does; the
client is told of it as a second node of the cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.structs import BrokerMetadata

from config import Settings
from pinapp.adapters.kafka import client_options
from pinapp.topology.faust_ext import failover
from pinapp.topology.faust_ext.failover import FailoverClient

HUNG = 9_999  # the hung node's id


class HungBroker:
    """A broker that takes TCP connections and never answers, as a SIGSTOPped one does."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0  # connections taken
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> HungBroker:
        self._server = await asyncio.start_server(self._silent, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _silent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while await reader.read(65536):  # requests are read, never answered, until the client hangs up
                pass
        finally:
            writer.close()


@pytest.fixture
async def hung(test_stack: Settings) -> AsyncIterator[HungBroker]:
    async with HungBroker() as broker:
        yield broker


async def _client(cls: type[AIOKafkaClient], settings: Settings, hung: HungBroker) -> AIOKafkaClient:
    client = cls(**client_options(settings.kafka), request_timeout_ms=3_000)
    await client.bootstrap()
    _tell_of_hung(client, hung)
    return client


def _tell_of_hung(client: AIOKafkaClient, hung: HungBroker) -> None:
    """Add the hung node to the client's view of the cluster (a metadata update drops it)."""
    client.cluster._brokers[HUNG] = BrokerMetadata(HUNG, "127.0.0.1", hung.port, None)


async def _connect_beside_a_hung_handshake(client: AIOKafkaClient) -> bool:
    """Whether a new connection to the live broker is made while one to the hung node is still
    in its handshake."""
    (live,) = [b.nodeId for b in client.cluster.brokers() if b.nodeId != HUNG]
    handshake = asyncio.create_task(client._get_conn(HUNG))
    await asyncio.sleep(0.2)  # connected; the API-versions request waits for an answer
    assert not handshake.done()
    conn = await client._get_conn(live, group=ConnectionGroup.COORDINATION)
    beside = not handshake.done()
    assert conn is not None and await handshake is None
    return beside


async def test_a_connection_is_made_while_another_node_hangs_in_its_handshake(
    test_stack: Settings, hung: HungBroker
) -> None:
    client = await _client(FailoverClient, test_stack, hung)
    try:
        assert await _connect_beside_a_hung_handshake(client)
    finally:
        await client.close()


async def test_aiokafkas_own_client_waits_for_the_hung_handshake(test_stack: Settings, hung: HungBroker) -> None:
    """What FailoverClient changes: aiokafka holds one lock over every handshake."""
    client = await _client(AIOKafkaClient, test_stack, hung)
    try:
        assert not await _connect_beside_a_hung_handshake(client)
    finally:
        await client.close()


async def test_a_node_that_timed_out_is_asked_last_for_metadata_and_coordinators(
    test_stack: Settings, hung: HungBroker
) -> None:
    client = await _client(FailoverClient, test_stack, hung)
    try:
        assert isinstance(client, FailoverClient)
        assert await client._get_conn(HUNG) is None
        await client._maybe_wait_metadata()  # the update the failed connection asked for
        suspected_at = client._suspect[HUNG]
        (live,) = [b.nodeId for b in client.cluster.brokers() if b.nodeId != HUNG]
        _tell_of_hung(client, hung)
        assert {client.get_random_node() for _ in range(50)} == {live}
        assert await client.coordinator_lookup(0, "pinapp-failover-test") == live
        _tell_of_hung(client, hung)
        assert await client._metadata_update(client.cluster, set())
        assert client._suspect[HUNG] == suspected_at, "a request went to the hung node first"
    finally:
        await client.close()


async def test_a_suspected_node_is_tried_again_after_a_backoff_with_a_short_handshake(
    test_stack: Settings, hung: HungBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer's retry went to the old leader before the metadata refresh came back, and each
    such try held its batch a whole request timeout (3 s here) on the hung node."""
    monkeypatch.setattr(failover, "SUSPECT_HANDSHAKE_S", 0.5)
    client = await _client(FailoverClient, test_stack, hung)
    try:
        assert await client._get_conn(HUNG) is None  # the first handshake waits the request timeout
        await client._maybe_wait_metadata()  # the refresh it asked for (which forgets the hung node)
        assert hung.accepted == 1
        _tell_of_hung(client, hung)
        assert await client._get_conn(HUNG) is None
        assert hung.accepted == 1, "reconnected within the backoff"
        await asyncio.sleep(failover.RECONNECT_BACKOFF_S)
        await client._maybe_wait_metadata()
        _tell_of_hung(client, hung)
        again = asyncio.create_task(client._get_conn(HUNG))
        done, _ = await asyncio.wait({again}, timeout=2.0)  # the request timeout would be 3 s
        assert again in done, "the handshake to a suspected node waited more than its bound"
        assert again.result() is None
        assert hung.accepted == 2
    finally:
        await client.close()


async def test_install_gives_every_aiokafka_client_the_failover_client(test_stack: Settings) -> None:
    failover.install()
    options = client_options(test_stack.kafka)
    consumer, producer = AIOKafkaConsumer(**options), AIOKafkaProducer(**options)
    admin = AIOKafkaAdminClient(**options)
    try:
        assert isinstance(consumer._client, FailoverClient)
        assert isinstance(producer.client, FailoverClient)
        assert isinstance(admin._client, FailoverClient)
    finally:
        await admin.close()
        await producer.stop()
        await consumer.stop()
