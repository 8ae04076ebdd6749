"""The cluster stack's relay: routes parsed, bytes forwarded both ways, a refused target refused."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from pinapp.tools.stack import relay
from pinapp.tools.stack.process import port_open


def test_a_route_is_listen_equals_target() -> None:
    assert relay.parse_route("10.77.0.1:13306=127.0.0.1:13306") == (("10.77.0.1", 13306), ("127.0.0.1", 13306))


@pytest.mark.parametrize("route", ["10.77.0.1:13306", "10.77.0.1=127.0.0.1:1", ":1=127.0.0.1:x"])
def test_a_malformed_route_is_refused_with_the_expected_form(route: str) -> None:
    with pytest.raises(ValueError, match="LISTEN_HOST:PORT=TARGET_HOST:PORT"):
        relay.parse_route(route)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_bytes_go_both_ways_and_a_closed_service_closes_the_client() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write((await reader.readexactly(5)).upper())
        await writer.drain()
        writer.close()

    service = await asyncio.start_server(echo, "127.0.0.1", 0)
    target = service.sockets[0].getsockname()[1]
    listen, refused = _free_port(), _free_port()
    serving = asyncio.create_task(
        relay._serve([(("127.0.0.1", listen), ("127.0.0.1", target)), (("127.0.0.1", refused), ("127.0.0.1", 1))])
    )
    try:
        while not port_open(listen):
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", listen)
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"HELLO"
        assert await reader.read() == b""  # the service closed: so does the relay
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", refused)  # nothing listens on port 1
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        service.close()
