"""Collector test fixtures: tiny local miners on real sockets, and the fixture files.

``http_miner(body)`` starts an HTTP server on 127.0.0.1 that answers every request with
``body`` (an AxeOS stand-in); ``cgminer_miner({"summary": b"..."})`` a TCP server that
answers each command with its reply + NUL and closes (a CGMiner stand-in). Both record what
they receive and can be switched to misbehave: ``mode = "silent"`` (accept, never answer),
``"garbage"`` (answer non-protocol bytes), ``"close"`` (close without a word), and for
CGMiner ``"linger"`` (a complete reply without NUL, connection left open). With
``joins=True`` the CGMiner stand-in answers joined commands (``summary+pools``) like cgminer;
without, it refuses them as firmwares that do not know them do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> Any:
    """Fixture files may hold the real-world malformations; those are parsed elsewhere."""
    return json.loads(fixture_bytes(name))


@pytest.fixture
def load_fixture() -> Callable[[str], bytes]:
    return fixture_bytes


@pytest.fixture
def load_json() -> Callable[[str], Any]:
    return fixture_json


@dataclass
class FixtureServer:
    port: int = 0
    mode: str = "normal"
    requests: list[Any] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.handlers):
            task.cancel()
        for task in list(self.handlers):
            with contextlib.suppress(BaseException):
                await task
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)


@dataclass
class HttpMiner(FixtureServer):
    body: bytes = b"{}"
    status: int = 200


@dataclass
class CgminerMiner(FixtureServer):
    replies: dict[str, bytes] = field(default_factory=dict)
    joins: bool = False  # answer joined commands ("summary+pools") as real cgminer does


_INVALID_COMMAND = (b'{"STATUS":[{"STATUS":"E","When":0,"Code":14,'
                    b'"Msg":"Invalid command","Description":"bmminer 1.0.0"}],"id":1}')


def _cgminer_reply(miner: CgminerMiner, command: str) -> bytes:
    if miner.joins and "+" in command:  # each part's reply, as is, in a one-element list
        parts = [f'"{part}":['.encode() + _cgminer_reply(miner, part) + b"]"
                 for part in command.split("+")]
        return b"{" + b",".join(parts) + b',"id":1}'
    return miner.replies.get(command, _INVALID_COMMAND)


async def _serve_http(miner: HttpMiner, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
    miner.connections += 1
    try:
        while True:  # keep-alive: several requests per connection
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in lines[1:] if line)}
            miner.requests.append({"line": lines[0], "headers": headers})
            if miner.mode == "silent":
                await asyncio.sleep(3600)
            if miner.mode == "close":
                return
            if miner.mode == "garbage":
                writer.write(b"\xff\xfe garbage, not HTTP at all\r\n\r\n")
                await writer.drain()
                return
            reason = {200: "OK", 401: "Unauthorized", 500: "Internal Server Error"}
            writer.write(
                f"HTTP/1.1 {miner.status} {reason.get(miner.status, 'X')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(miner.body)}\r\n"
                "Connection: keep-alive\r\n\r\n".encode() + miner.body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _serve_cgminer(miner: CgminerMiner, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
    miner.connections += 1
    try:
        received = b""
        while True:  # one JSON request per connection, no terminator: read until it parses
            chunk = await reader.read(4096)
            if not chunk:
                return
            received += chunk
            try:
                request = json.loads(received)
                break
            except ValueError:
                if len(received) > 65536 or not received.lstrip().startswith(b"{"):
                    request = {"command": None, "raw": received.decode("latin-1")}
                    break
        miner.requests.append(request)
        if miner.mode == "silent":
            await asyncio.sleep(3600)
        if miner.mode == "close":
            return
        if miner.mode == "garbage":
            writer.write(b"\xff\xfe garbage \x00")
        elif miner.mode == "linger":  # a complete reply, no NUL, and the socket left open
            writer.write(miner.replies[str(request.get("command"))])
            await writer.drain()
            await asyncio.sleep(3600)
        else:
            writer.write(_cgminer_reply(miner, str(request.get("command"))) + b"\x00")
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _listen(miner: Any, serve: Callable[..., Awaitable[None]]) -> Any:
    """Start ``miner``'s server on a free loopback port; each connection runs ``serve``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        miner.handlers.add(task)
        try:
            await serve(miner, reader, writer)
        except asyncio.CancelledError:
            pass  # torn down: ending quietly keeps asyncio from logging the handler
        finally:
            miner.handlers.discard(task)

    miner.server = await asyncio.start_server(handle, "127.0.0.1", 0)
    miner.port = miner.server.sockets[0].getsockname()[1]
    return miner


@pytest.fixture
async def http_miner() -> AsyncIterator[Callable[..., Awaitable[HttpMiner]]]:
    started: list[HttpMiner] = []

    async def start(body: bytes = b"{}", status: int = 200, mode: str = "normal") -> HttpMiner:
        miner = HttpMiner(body=body, status=status, mode=mode)
        started.append(await _listen(miner, _serve_http))
        return miner

    yield start
    for miner in started:
        await miner.close()


@pytest.fixture
async def cgminer_miner() -> AsyncIterator[Callable[..., Awaitable[CgminerMiner]]]:
    started: list[CgminerMiner] = []

    async def start(replies: dict[str, bytes] | None = None, mode: str = "normal",
                    joins: bool = False) -> CgminerMiner:
        miner = CgminerMiner(replies=dict(replies or {}), mode=mode, joins=joins)
        started.append(await _listen(miner, _serve_cgminer))
        return miner

    yield start
    for miner in started:
        await miner.close()


@pytest.fixture
def s19_replies() -> dict[str, bytes]:
    """The S19 Pro's four replies, as the real unit sends them (stats malformed)."""
    return {
        command: fixture_bytes(f"antminer_s19pro_bmminer_{command}.json")
        for command in ("summary", "stats", "pools", "version")
    }


@pytest.fixture
def roomy_broker(own_broker: Any) -> Any:
    """``own_broker`` with the Receive Maximum of the production configs (mosquitto/):
    ``max_inflight_messages 100``, not Mosquitto's default of 20."""
    own_broker.local.stop()
    with own_broker.local.conf.open("a") as conf:
        conf.write("max_inflight_messages 100\n")
    own_broker.local.start()
    return own_broker


@pytest.fixture
def dead_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
