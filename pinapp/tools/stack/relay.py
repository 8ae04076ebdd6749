"""Forward TCP from the cluster's bridge to services on the host's loopback.

MariaDB and the S3 server listen on 127.0.0.1 only (MariaDB's users exist @127.0.0.1), so a
process on a host of its own reaches them through this relay on the bridge's host side:
``python -m pinapp.tools.stack.relay 10.77.0.1:13306=127.0.0.1:13306 ...``. A connection the
service refuses is closed at once, as the service would; a stopped service looks stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable

__all__ = ["main", "parse_route"]


def parse_route(route: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """``LISTEN_HOST:PORT=TARGET_HOST:PORT`` as ((host, port), (host, port))."""
    listen, _, target = route.partition("=")
    (lhost, _, lport), (thost, _, tport) = listen.rpartition(":"), target.rpartition(":")
    if not (lhost and lport.isdigit() and thost and tport.isdigit()):
        raise ValueError(f"{route!r}: expected LISTEN_HOST:PORT=TARGET_HOST:PORT")
    return (lhost, int(lport)), (thost, int(tport))


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(256 * 1024):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()  # the other direction then reads EOF or an error and closes its side


def _forwarder(target: tuple[str, int]) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))

    return forward


async def _serve(routes: list[tuple[tuple[str, int], tuple[str, int]]]) -> None:
    servers = [await asyncio.start_server(_forwarder(target), *listen) for listen, target in routes]
    for (lhost, lport), (thost, tport) in routes:
        print(f"relay: {lhost}:{lport} -> {thost}:{tport}", flush=True)
    async with contextlib.AsyncExitStack() as stack:
        for server in servers:
            await stack.enter_async_context(server)
        await asyncio.gather(*(s.serve_forever() for s in servers))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        routes = [parse_route(a) for a in args]
    except ValueError as exc:
        raise SystemExit(f"relay: {exc}") from None
    if not routes:
        raise SystemExit("relay: give at least one LISTEN_HOST:PORT=TARGET_HOST:PORT")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(routes))


if __name__ == "__main__":
    main()
