"""The polling HTTP client (drivers.http) against scripted servers on real sockets:
keep-alive, reconnects, framings, and every way a reply can go wrong -> one clear reason."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from minerwatch.collector.drivers.http import HttpClient
from minerwatch.collector.drivers.reading import PollError

OK = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
      b'{"ok": 1}\r\n')

#: What the server does with the n-th request on a connection (n from 0): the bytes to
#: send, then None to close at once or "keep" to go on reading requests, "hang" to stay
#: silent. ``Script(conn_no, request_no) -> (bytes, after)``.
Script = Callable[[int, int], tuple[bytes, str | None]]


@dataclass
class Server:
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


def keep(_: int, __: int) -> tuple[bytes, str | None]:
    return OK, "keep"


@contextlib.asynccontextmanager
async def server(script: Script = keep) -> AsyncIterator[Server]:
    state = Server()
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        number = state.connections
        state.connections += 1
        try:
            for request_no in range(1000):
                head = await reader.readuntil(b"\r\n\r\n")
                state.requests.append(head)
                reply, after = script(number, request_no)
                writer.write(reply)
                await writer.drain()
                if after == "hang":
                    await asyncio.sleep(3600)
                if after != "keep":
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            handlers.discard(task)

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = listener.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        listener.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


async def failure(call: Awaitable[object]) -> str:
    with pytest.raises(PollError) as caught:
        await call
    return caught.value.reason


async def test_one_connection_is_kept_alive_across_requests() -> None:
    async with server() as miner:
        client = HttpClient("127.0.0.1", miner.port, timeout_s=2.0,
                            headers=[("Accept", "application/json")])
        try:
            replies = [await client.get("/api/system/info") for _ in range(3)]
        finally:
            await client.aclose()
    assert replies == [(200, b'{"ok": 1}\r\n')] * 3
    assert miner.connections == client.connections == 1
    first = miner.requests[0].decode().split("\r\n")
    assert first[0] == "GET /api/system/info HTTP/1.1"
    assert f"host: 127.0.0.1:{miner.port}" in (line.lower() for line in first)
    assert "accept: application/json" in (line.lower() for line in first)
    assert not any(line.lower().startswith("origin") for line in first)


async def test_a_connection_the_miner_closed_while_idle_is_replaced() -> None:
    async with server(lambda conn, n: (OK, None)) as miner:  # one reply per connection
        client = HttpClient("127.0.0.1", miner.port, timeout_s=2.0)
        try:
            await client.get("/")
            await asyncio.sleep(0.05)  # the close reaches the client while it is idle
            assert (await client.get("/")).status == 200
        finally:
            await client.aclose()
    assert miner.connections == 2


async def test_a_request_swallowed_by_a_stale_connection_is_sent_again_once() -> None:
    # Each connection answers its first request and drops the second without a word:
    # the race of a miner closing an idle connection just as the next poll is sent.
    async with server(lambda conn, n: (OK, "keep") if n == 0 else (b"", None)) as miner:
        client = HttpClient("127.0.0.1", miner.port, timeout_s=2.0)
        try:
            await client.get("/")
            assert (await client.get("/")).status == 200
        finally:
            await client.aclose()
    assert miner.connections == 2
    assert len(miner.requests) == 3


async def test_a_fresh_connection_closed_without_a_reply_is_not_retried() -> None:
    async with server(lambda conn, n: (b"", None)) as miner:
        client = HttpClient("127.0.0.1", miner.port, timeout_s=2.0)
        try:
            assert await failure(client.get("/")) == "closed without a reply"
        finally:
            await client.aclose()
    assert miner.connections == 1


async def test_an_idle_connection_past_keepalive_is_not_reused() -> None:
    async with server() as miner:
        client = HttpClient("127.0.0.1", miner.port, timeout_s=2.0, keepalive_s=0.05)
        try:
            await client.get("/")
            await asyncio.sleep(0.1)
            await client.get("/")
        finally:
            await client.aclose()
    assert miner.connections == 2


async def test_connection_close_and_http_1_0_replies_end_their_connection() -> None:
    close = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi", "keep")
    old = (b"HTTP/1.0 200 OK\r\n\r\nread until the close", None)  # no length: until EOF
    async with server(lambda conn, n: close if conn == 0 else old) as miner:
        client = HttpClient("127.0.0.1", miner.port, timeout_s=2.0)
        try:
            assert await client.get("/") == (200, b"hi")
            assert await client.get("/") == (200, b"read until the close")
            assert await client.get("/") == (200, b"read until the close")
        finally:
            await client.aclose()
    assert miner.connections == 3


async def test_a_chunked_reply_is_put_together() -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\n{\"a\"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n")
    async with server(lambda conn, n: (chunked, "keep")) as miner:
        client = HttpClient("127.0.0.1", miner.port, timeout_s=2.0)
        try:
            assert await client.get("/") == (200, b'{"a": 1}')
            assert await client.get("/") == (200, b'{"a": 1}')
        finally:
            await client.aclose()
    assert miner.connections == 1


async def test_an_error_status_is_a_reply_not_a_failure() -> None:
    reply = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\n\r\nUnauthorized"
    async with server(lambda conn, n: (reply, "keep")) as miner:
        client = HttpClient("127.0.0.1", miner.port, timeout_s=2.0)
        try:
            assert await client.get("/") == (401, b"Unauthorized")
        finally:
            await client.aclose()


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"\xff\xfe garbage, not HTTP at all\r\n\r\n", r"^bad reply: not HTTP \(.+\)$"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"cut\": ",
         r"^closed mid-reply$"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,
         r"^bad reply: larger than 1000 bytes$"),
    ],
    ids=["garbage", "truncated", "too large"],
)
async def test_bad_replies_have_one_clear_reason(reply: bytes, reason: str) -> None:
    async with server(lambda conn, n: (reply, None)) as miner:
        client = HttpClient("127.0.0.1", miner.port, timeout_s=2.0, max_body=1000)
        try:
            result = await failure(client.get("/"))
        finally:
            await client.aclose()
    assert re.match(reason, result), result


async def test_timeout_drops_the_connection() -> None:
    async with server(lambda conn, n: (b"", "hang") if conn == 0 else (OK, "keep")) as miner:
        client = HttpClient("127.0.0.1", miner.port, timeout_s=0.2)
        try:
            started = asyncio.get_running_loop().time()
            assert await failure(client.get("/")) == "timeout after 0.2 s"
            assert 0.15 < asyncio.get_running_loop().time() - started < 1.0
            assert (await client.get("/")).status == 200  # not the hung connection
        finally:
            await client.aclose()
    assert miner.connections == 2


async def test_cancelled_mid_request_the_connection_is_not_reused() -> None:
    async with server(lambda conn, n: (b"", "hang") if conn == 0 else (OK, "keep")) as miner:
        client = HttpClient("127.0.0.1", miner.port, timeout_s=5.0)
        try:
            pending = asyncio.create_task(client.get("/"))
            await asyncio.sleep(0.1)
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            assert (await client.get("/")).status == 200
        finally:
            await client.aclose()
    assert miner.connections == 2


async def test_connection_refused(dead_port: int) -> None:
    client = HttpClient("127.0.0.1", dead_port, timeout_s=1.0)
    assert await failure(client.get("/")) == f"refused: nothing listens on port {dead_port}"
    await client.aclose()
