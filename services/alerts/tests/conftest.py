"""Fixtures of the alerts tests: a local HTTP receiver for Apprise ``json://`` notifications."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass
class Post:
    path: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A minimal HTTP/1.1 server on 127.0.0.1 that records each request body.

    ``hang`` makes it read requests and never answer, to stand in for a dead endpoint.
    """

    def __init__(self) -> None:
        self.posts: asyncio.Queue[Post] = asyncio.Queue()
        self.hang = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        pending = set(self._handlers)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def next_post(self, timeout: float = 5.0) -> Post:
        async with asyncio.timeout(timeout):
            return await self.posts.get()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            _, path, _ = head[0].split(" ", 2)
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in head[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if self.hang:
                await asyncio.sleep(30)
            await self.posts.put(Post(path, body))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            # A cancelled handler (server stopping) just ends: nobody awaits it.
            pass
        finally:
            writer.close()
            self._handlers.discard(task)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
