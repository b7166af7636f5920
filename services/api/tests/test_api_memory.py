"""The ``minerwatch-api`` process under hostile load: its memory, read from /proc, stays
within a stated bound through junk topics and a client that floods it with commands."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from minerwatch.shared.mqtt.client import Client as LeanClient
from minerwatch.shared.schemas import Sample, encode, now_ts

SCRIPT = Path(sys.executable).with_name("minerwatch-api")
#: What the api may add to its resident memory under the load below (it starts at about
#: 70 MB; the relay's own structures stay under a few MB by their bounds).
BOUND_MB = 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def sample(miner_id: str, hashrate_ths: float, **fields: Any) -> bytes:
    return encode(Sample(miner_id=miner_id, ts=now_ts(), hashrate_ths=hashrate_ths, **fields))


async def receive(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def junk(base: str, start: int, count: int) -> list[tuple[str, bytes, bool]]:
    """``count`` distinct junk topics from ``start`` on, a quarter of them retained."""
    kinds = [
        lambda i: (f"{base}/junk/{i}/x", b'{"x": 1}'),
        lambda i: (f"{base}/miners/BAD{i}/sample", b"{}"),
        lambda i: (f"{base}/miners/j{i}/info", b'{"miner_id": "j"}'),
        lambda i: (f"{base}/miners/j{i}/sample", b"[" * 5000 + b"]" * 5000),
    ]
    return [(*kinds[i % len(kinds)](i), i % 4 == 1) for i in range(start, start + count)]


async def test_the_api_process_stays_within_its_memory_bound(
    own_broker: Any, base_topic: str, db_url: str, tmp_path: Path,
    bulk_publish: Callable[..., Awaitable[None]],
) -> None:
    """Junk at QoS 1, as every publisher of the contract sends: the broker's in-flight
    window then bounds what waits in the api's MQTT client. (A QoS 0 flood faster than
    the relay decodes has no such bound in the client yet.)"""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINERWATCH_")}
    env.update(MINERWATCH_MQTT_URL=own_broker.url, MINERWATCH_BASE_TOPIC=base_topic,
               MINERWATCH_DB_URL=db_url, MINERWATCH_API_LISTEN=f"127.0.0.1:{port}",
               MINERWATCH_API_AUTH="lan")
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(str(SCRIPT), env=env, cwd=tmp_path,
                                                       stderr=log_file)
    base = base_topic
    peak = 0.0
    figures: dict[str, float] = {}

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_mb(process.pid))
            await asyncio.sleep(0.05)

    watcher: asyncio.Task[None] | None = None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            deadline = time.monotonic() + 15
            while True:
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the api did not become healthy"
                await asyncio.sleep(0.1)
            ws_url = f"ws://127.0.0.1:{port}/ws"
            async with LeanClient(own_broker.host, own_broker.port) as client, \
                    websockets.connect(ws_url) as reader:
                for i in range(300):  # a fleet's retained state, for the replays below
                    await client.publish(f"{base}/miners/m{i}/sample",
                                         sample(f"m{i}", 1.0, pool_url="p" * 600),
                                         qos=1, retain=True)
                marker = f"{base}/miners/marker/sample"
                await reader.send(json.dumps({"subscribe": marker}))
                assert await receive(reader) == {"subscribed": marker}
                figures["start"] = rss_mb(process.pid)
                watcher = asyncio.create_task(watch())

                # 100,000 junk topics, then 50,000 more: the second round must cost next to
                # nothing (the memory reached a ceiling, it does not grow with each topic).
                for round_, (start, count) in enumerate(((0, 100_000), (100_000, 50_000))):
                    await bulk_publish(own_broker, [
                        *junk(base, start, count),
                        (marker, sample("marker", float(round_)), False)])
                    message = await receive(reader, timeout=60)
                    assert message["payload"]["hashrate_ths"] == float(round_)
                    figures[f"after junk round {round_ + 1}"] = rss_mb(process.pid)

                # A client that floods commands and reads nothing, while another reads.
                flood_sock = socket.socket()
                flood_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                flood_sock.connect(("127.0.0.1", port))
                async with websockets.connect(ws_url, sock=flood_sock, max_queue=1) as flood:
                    command = json.dumps({"subscribe": f"{base}/#"})
                    try:
                        for n in range(10_000):
                            await flood.send(command)
                            if n % 50 == 49:
                                await asyncio.sleep(0.001)
                    except ConnectionClosed:
                        pass
                    for i in range(20):
                        await client.publish(marker, sample("marker", 10.0 + i), qos=1)
                        message = await receive(reader)
                        assert message["payload"]["hashrate_ths"] == 10.0 + i
                        await asyncio.sleep(0.05)
                    figures["after the command flood"] = rss_mb(process.pid)
    finally:
        if watcher is not None:
            watcher.cancel()
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 15)
    log = log_path.read_text()
    summary = ", ".join(f"{name} {mb:.0f} MB" for name, mb in figures.items())
    print(f"\napi memory: {summary}, peak {peak:.0f} MB")
    assert peak - figures["start"] < BOUND_MB, summary
    assert (figures["after junk round 2"] - figures["after junk round 1"]) < 5, summary
    assert "bad sample message ignored" in log
    assert "closing a WebSocket client" in log
    assert "Traceback" not in log, log[-3000:]
