"""A TCP proxy that can stop forwarding without closing anything: a black-holed server.

What a failover that moves an address, or a hung server, looks like from the client: the
connection stays open and nothing comes back. ``pause()`` stops forwarding both ways (bytes
already read wait in the proxy, the rest in the kernel's buffers); ``resume()`` forwards again.
"""

from __future__ import annotations

import asyncio
import contextlib


class BlackHoleProxy:
    def __init__(self, target_host: str, target_port: int, *, listen: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listen = listen
        self.forwarding = asyncio.Event()
        self.forwarding.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def __aenter__(self) -> BlackHoleProxy:
        self._server = await asyncio.start_server(self._accept, self.listen, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task

    def pause(self) -> None:
        self.forwarding.clear()

    def resume(self) -> None:
        self.forwarding.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.forwarding.wait()  # a paused proxy answers no new connection either
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        for task in (self._pump(reader, up_writer), self._pump(up_reader, writer)):
            t = asyncio.create_task(task)
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.forwarding.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
