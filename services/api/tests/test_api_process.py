"""The ``minerwatch-api`` console script as a real process: config from the environment,
serving, and a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import websockets

SCRIPT = Path(sys.executable).with_name("minerwatch-api")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api_env(broker: Any, base_topic: str, db_url: str, listen: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINERWATCH_")}
    env.update(
        MINERWATCH_MQTT_URL=broker.url,
        MINERWATCH_BASE_TOPIC=base_topic,
        MINERWATCH_DB_URL=db_url,
        MINERWATCH_API_LISTEN=listen,
        MINERWATCH_POLL_INTERVAL_S="4",
        MINERWATCH_API_AUTH="lan",  # reads open, as this test reads
    )
    return env


async def retained(broker: Any, topic: str) -> bytes:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic)
        async with asyncio.timeout(5):
            async for message in client.messages:
                return bytes(message.payload)  # type: ignore[arg-type]
    raise AssertionError("unreachable")


async def test_serves_and_stops_cleanly_on_sigterm(
    broker: Any, base_topic: str, db_url: str, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "api.log"
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            str(SCRIPT),
            env=api_env(broker, base_topic, db_url, f"127.0.0.1:{port}"),
            cwd=tmp_path,
            stderr=log_file,
        )
    try:
        deadline = time.monotonic() + 15
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            while True:
                try:
                    body = (await http.get("/healthz")).json()
                    if (body["broker"], body["database"]) == ("up", "up"):
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the api did not become healthy"
                await asyncio.sleep(0.1)
            assert (await http.get("/api/config")).json() == {
                "base_topic": base_topic, "poll_interval_s": 4.0, "stale_after_s": 12.0}
            assert (await http.get("/")).status_code == 200
        assert await retained(broker, f"{base_topic}/services/api/status") == b"online"

        # A connected WebSocket client must not hold the stop up.
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send(json.dumps({"subscribe": f"{base_topic}/#"}))
            assert json.loads(await ws.recv()) == {"subscribed": f"{base_topic}/#"}
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    stderr = log.read_text()
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr
    # Stopping said goodbye on MQTT (not left to the Last Will).
    assert await retained(broker, f"{base_topic}/services/api/status") == b"offline"


async def test_bad_database_url_stops_with_one_line(
    broker: Any, base_topic: str, tmp_path: Path
) -> None:
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT),
        env=api_env(broker, base_topic, "mysql://db/minerwatch", f"127.0.0.1:{free_port()}"),
        cwd=tmp_path,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 2
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("minerwatch-api: config:")
    assert "MINERWATCH_DB_URL" in lines[0]
