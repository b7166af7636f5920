"""A TCP proxy on 127.0.0.1 that a test can cut: a real network cut for the client behind
it (its connection ends without a word from the broker, and, refused, its reconnects fail)
while the broker itself stays up.

Imported by name (tests/ is on pytest's ``pythonpath``).
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """``127.0.0.1:port`` forwarding to ``127.0.0.1:target``. ``cut()`` aborts every
    connection (and with ``refuse`` stops listening); ``restore()`` listens again on the
    same port."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._transports: set[asyncio.WriteTransport] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._transports |= {writer.transport, up_writer.transport}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pump = asyncio.create_task(self._pump(source, sink))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        # one side ended: so does the other
        sink.transport.abort()
        self._transports.discard(sink.transport)

    async def cut(self, *, refuse: bool = True) -> None:
        """Abort every connection through the proxy; with ``refuse``, new ones are refused
        until ``restore``."""
        if refuse and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def restore(self) -> None:
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        await self.cut(refuse=True)
