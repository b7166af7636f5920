"""Hostile and broken miners: truncated, non-UTF-8, huge and trickling replies end in one
clear line, within the poll timeout, for both drivers and for ``probe``.

The servers here write raw bytes on real loopback sockets; the "huge" ones stream up to
100 MB and stop when the client hangs up, so nothing that large is ever held in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from minerwatch.collector.drivers import PollError
from minerwatch.collector.drivers.axeos import AxeosDriver
from minerwatch.collector.drivers.cgminer.driver import CgminerDriver

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
COLLECTOR = str(Path(sys.executable).parent / "minerwatch-collector")
HUNDRED_MB = 100 * 1024 * 1024
CHUNK = b"a" * 65536
HTTP_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Behaviour], Awaitable[int]]]:
    """``await raw_server(behaviour)`` -> a loopback port whose connections run it."""
    servers: list[asyncio.Server] = []
    tasks: set[asyncio.Task[None]] = set()

    async def start(behaviour: Behaviour) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await reader.read(4096)  # the request (HTTP head or JSON command)
                await behaviour(reader, writer)
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()
                tasks.discard(task)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def trickle(first: bytes) -> Behaviour:
    """``first``, then one byte every 20 ms, forever: never complete, never silent."""
    async def behaviour(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(first)
        while True:
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(b" ")
    return behaviour


def huge(first: bytes) -> Behaviour:
    """``first``, then up to 100 MB as fast as the client takes it."""
    async def behaviour(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(first)
        sent = 0
        while sent < HUNDRED_MB:
            writer.write(CHUNK)
            await writer.drain()
            sent += len(CHUNK)
    return behaviour


def once(reply: bytes) -> Behaviour:
    async def behaviour(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(reply)
        await writer.drain()
    return behaviour


def http(body: bytes) -> bytes:
    return HTTP_HEAD % len(body) + body


async def poll_error(driver: AxeosDriver | CgminerDriver) -> tuple[str, float]:
    started = time.monotonic()
    try:
        with pytest.raises(PollError) as caught:
            await driver.fetch()
    finally:
        await driver.aclose()
    reason = caught.value.reason
    assert "\n" not in reason and reason == reason.strip()
    return reason, time.monotonic() - started


# --- CGMiner --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (trickle(b'{"STATUS":[{"STATUS":"S"}],"SUMMARY":[{"GHS 5s":'), "timeout after 0.5 s"),
        (huge(b'{"STATUS":[{"STATUS":"S"}],"SUMMARY":[{"x":"'),
         "bad reply: larger than 1048576 bytes"),
        (once(b'{"STATUS":[{"STATUS":"S"}],"SUMMARY":[{"GHS 5s":"1'),
         "bad reply: truncated JSON at byte 48"),
        (once(b"\xff\xfe\xfd\x80\x81 \x00"), "bad reply: not JSON at byte 0"),
        (once(b'{"STATUS":[{"STATUS":"S","Msg":"\xff\xfe"}],"SUMMARY":[]}\x00'),
         "bad reply: no SUMMARY section"),
        (once(b"[" * 100_000 + b"\x00"), "bad reply: JSON nested too deep"),
        (once(b'STATUS=S,When=1,Code=11,Msg=Summary|SUMMARY,Elapsed=5|\x00'),
         "bad reply: not JSON at byte 0"),  # the plain-text API: not what was asked
        (once(b"\x00"), "bad reply: empty"),
    ],
    ids=["trickle", "100MB", "truncated", "binary", "non-utf8-no-summary", "deep", "plain",
         "nul-only"],
)
async def test_cgminer_hostile_replies(
    raw_server: Callable[[Behaviour], Awaitable[int]], behaviour: Behaviour, reason: str
) -> None:
    port = await raw_server(behaviour)
    got, elapsed = await poll_error(CgminerDriver("127.0.0.1", port, timeout_s=0.5))
    assert got == reason
    assert elapsed < 0.5 + 0.3


# --- AxeOS ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (trickle(HTTP_HEAD % 500 + b'{"hashRate":'), "timeout after 0.5 s"),
        (trickle(b"HTTP/1.1 200 OK\r\nX-Slow: "), "timeout after 0.5 s"),  # headers trickle
        (huge(HTTP_HEAD % HUNDRED_MB), "bad reply: larger than 1048576 bytes"),
        (huge(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100000000\r\n"),
         "bad reply: larger than 1048576 bytes"),
        (once(http(b'{"hashRate": 1209.3, "temp": 5')), "bad reply: truncated JSON at byte 30"),
        (once(http(b"\xff\xfe\xfd\x80")), "bad reply: not JSON at byte 0"),
        (once(http(b"[" * 100_000)), "bad reply: JSON nested too deep"),
    ],
    ids=["trickle-body", "trickle-head", "100MB", "100MB-chunked", "truncated", "binary",
         "deep"],
)
async def test_axeos_hostile_replies(
    raw_server: Callable[[Behaviour], Awaitable[int]], behaviour: Behaviour, reason: str
) -> None:
    port = await raw_server(behaviour)
    got, elapsed = await poll_error(AxeosDriver("127.0.0.1", port, timeout_s=0.5))
    assert got == reason
    assert elapsed < 0.5 + 0.3


async def test_axeos_non_utf8_inside_a_good_reply_is_replaced(
    raw_server: Callable[[Behaviour], Awaitable[int]],
) -> None:
    port = await raw_server(once(http(b'{"hashRate": 500.5, "hostname": "bit\xffaxe\xc3"}')))
    driver = AxeosDriver("127.0.0.1", port, timeout_s=1.0)
    try:
        reading = await driver.fetch()
    finally:
        await driver.aclose()
    assert reading.hostname == "bit\ufffdaxe\ufffd"


# --- probe: one line on stderr, exit 1, within the timeout ------------------------------


async def run_probe(*args: str) -> tuple[int, str, str, float]:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        COLLECTOR, "probe", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode(), time.monotonic() - started


@pytest.mark.parametrize(
    ("driver", "behaviour", "reason"),
    [
        ("cgminer", trickle(b'{"STATUS":'), "timeout after 1.0 s"),
        ("cgminer", huge(b'{"x":"'), "bad reply: larger than 1048576 bytes"),
        ("axeos", trickle(HTTP_HEAD % 500 + b"{"), "timeout after 1.0 s"),
        ("axeos", huge(HTTP_HEAD % HUNDRED_MB), "bad reply: larger than 1048576 bytes"),
    ],
    ids=["cgminer-trickle", "cgminer-100MB", "axeos-trickle", "axeos-100MB"],
)
async def test_probe_on_hostile_miners(
    raw_server: Callable[[Behaviour], Awaitable[int]], driver: str, behaviour: Behaviour,
    reason: str,
) -> None:
    port = await raw_server(behaviour)
    code, out, err, elapsed = await run_probe(f"127.0.0.1:{port}", "--driver", driver,
                                              "--timeout", "1")
    assert (code, out) == (1, "")
    assert err == f"minerwatch-collector: probe 127.0.0.1:{port}: {reason}\n"
    assert elapsed < 1 + 3  # the timeout, plus start-up of the interpreter


async def test_probe_auto_on_a_hostile_port_names_both_failures(
    raw_server: Callable[[Behaviour], Awaitable[int]],
) -> None:
    port = await raw_server(trickle(b"\xff"))
    code, out, err, elapsed = await run_probe(f"127.0.0.1:{port}", "--timeout", "1")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"axeos on port {port}: " in err and f"cgminer on port {port}: " in err
    assert elapsed < 1 + 3
