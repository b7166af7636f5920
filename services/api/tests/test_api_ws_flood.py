"""WS /ws under a client that sends commands and never reads the answers: it is closed,
the api's memory stays bounded, and the other clients are served promptly meanwhile."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from minerwatch.api.relay import MAX_UNREAD_REPLIES
from minerwatch.shared.schemas import Sample, encode, now_ts

StartApi = Callable[..., Any]
Publish = Callable[..., Awaitable[None]]

COMMANDS = 10_000
RETAINED = 300


def rss_mb() -> float:
    """This process's resident memory (the api runs in it, under uvicorn)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def sample(miner_id: str, hashrate_ths: float, **fields: Any) -> bytes:
    return encode(Sample(miner_id=miner_id, ts=now_ts(), hashrate_ths=hashrate_ths, **fields))


async def receive(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def test_a_client_sending_commands_it_never_reads_is_closed(
    start_api: StartApi, publish: Publish, base_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Retained state to replay: every `subscribe` asks for RETAINED frames of ~1 KB.
    async with start_api(send_buffer=16384) as api:
        for i in range(RETAINED):
            await publish(f"{base_topic}/miners/m{i}/sample",
                          sample(f"m{i}", 1.0, pool_url="stratum+tcp://" + "p" * 600),
                          retain=True)
        deadline = time.monotonic() + 10
        while len(api.relay.retained) < RETAINED:
            assert time.monotonic() < deadline, len(api.relay.retained)
            await asyncio.sleep(0.05)

        flood_sock = socket.socket()
        flood_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        flood_sock.connect(("127.0.0.1", int(api.url.rsplit(":", 1)[1])))
        async with (
            websockets.connect(api.ws_url, sock=flood_sock, max_queue=1) as flood,
            websockets.connect(api.ws_url) as fast,
        ):
            live_topic = f"{base_topic}/miners/live/sample"
            await fast.send(json.dumps({"subscribe": live_topic}))
            assert await receive(fast) == {"subscribed": live_topic}
            before_mb = rss_mb()
            peak_backlog = 0
            sent = 0

            async def flood_commands() -> None:
                nonlocal sent
                command = json.dumps({"subscribe": f"{base_topic}/#"})
                try:
                    for _ in range(COMMANDS):
                        await flood.send(command)
                        sent += 1
                        if sent % 50 == 0:
                            await asyncio.sleep(0)  # a client of its own, not our event loop
                except ConnectionClosed:
                    pass

            async def watch_backlogs() -> None:
                nonlocal peak_backlog
                while True:
                    for subscriber in list(api.relay.subscribers):
                        peak_backlog = max(peak_backlog, subscriber.backlog)
                    await asyncio.sleep(0.001)

            watcher = asyncio.create_task(watch_backlogs())
            flooder = asyncio.create_task(flood_commands())
            latencies: list[float] = []
            started = time.monotonic()
            # The fast client reads live samples all along; the flood must not delay them.
            for i in range(100):
                published = time.monotonic()
                await publish(live_topic, sample("live", float(i)))
                message = await receive(fast)
                latencies.append(time.monotonic() - published)
                assert message["payload"]["hashrate_ths"] == float(i)
                await asyncio.sleep(0.02)
            # By now the flooding client must be gone from the relay.
            deadline = time.monotonic() + 10
            while len(api.relay.subscribers) > 1:
                assert time.monotonic() < deadline, "the flooding client was not closed"
                await asyncio.sleep(0.05)
            grown_mb = rss_mb() - before_mb
            elapsed = time.monotonic() - started
            for task in (flooder, watcher):
                task.cancel()
            await asyncio.gather(flooder, watcher, return_exceptions=True)

            latencies.sort()
            p99 = latencies[int(len(latencies) * 0.99) - 1]
            print(f"\nflood: {sent} commands sent (to the kernel's buffers) in {elapsed:.1f} s; "
                  f"peak backlog {peak_backlog}; memory grew {grown_mb:.1f} MB; "
                  f"the other client's latency p99 {p99 * 1000:.0f} ms, max "
                  f"{latencies[-1] * 1000:.0f} ms")
            closing = [r for r in caplog.records if "closing a WebSocket client" in r.message]
            assert len(closing) == 1, [r.message for r in caplog.records]
            assert peak_backlog <= api.relay.backlog_limit
            assert grown_mb < 40, f"the api's memory grew {grown_mb:.1f} MB"
            assert p99 < 0.5, f"the other client waited up to {p99:.2f} s"

            # Reading at last, the flooding client finds the api closed it (1008), after
            # at most what was already on its way.
            frames = 0
            try:
                async with asyncio.timeout(20):
                    while True:
                        await flood.recv()
                        frames += 1
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 1008, closed
            assert frames <= MAX_UNREAD_REPLIES * (RETAINED + 1) + api.relay.backlog_limit

            # The fast client is still served.
            await publish(live_topic, sample("live", 500.0))
            assert (await receive(fast))["payload"]["hashrate_ths"] == 500.0


async def test_a_client_pipelining_its_commands_is_served(
    start_api: StartApi, publish: Publish, base_topic: str
) -> None:
    """Commands sent back to back without reading in between (the dashboard sends two)
    are not a reason to close: only replies left unread past the limit are."""
    async with start_api() as api, websockets.connect(api.ws_url) as ws:
        filters = [f"{base_topic}/miners/m{i}/+" for i in range(MAX_UNREAD_REPLIES // 2)]
        for topic_filter in filters:
            await ws.send(json.dumps({"subscribe": topic_filter}))
        for topic_filter in filters:
            await ws.send(json.dumps({"unsubscribe": topic_filter}))
        replies = [await receive(ws) for _ in range(2 * len(filters))]
        assert replies == ([{"subscribed": f} for f in filters]
                           + [{"unsubscribed": f} for f in filters])
        await ws.send(json.dumps({"subscribe": f"{base_topic}/miners/+/sample"}))
        assert await receive(ws) == {"subscribed": f"{base_topic}/miners/+/sample"}
        await publish(f"{base_topic}/miners/m1/sample", sample("m1", 2.0))
        assert (await receive(ws))["payload"]["hashrate_ths"] == 2.0
