"""The reconnecting MQTT loop against a real Mosquitto: online/offline, Last Will, backoff."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import aiomqtt
import pytest

from minerwatch.shared.backoff import backoff_delays
from minerwatch.shared.config import MqttConfig
from minerwatch.shared.mqtt import MqttLink


async def retained(host: str, port: int, topic: str, timeout: float = 5.0) -> bytes:
    async with aiomqtt.Client(host, port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(timeout):
            async for message in client.messages:
                return bytes(message.payload)
    raise AssertionError("unreachable")


async def wait_until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def test_backoff_doubles_with_jitter_up_to_the_limit() -> None:
    next_delay = backoff_delays(1.0, 8.0)
    delays = [next_delay() for _ in range(6)]
    bounds = [(0.5, 1), (1, 2), (2, 4), (4, 8), (4, 8), (4, 8)]
    for delay, (low, high) in zip(delays, bounds, strict=True):
        assert low <= delay <= high


async def test_online_then_offline_on_cancel(broker, base_topic: str) -> None:
    link = MqttLink(MqttConfig(url=broker.url, base_topic=base_topic), "unit")
    sessions = 0

    async def session(client: aiomqtt.Client) -> None:
        nonlocal sessions
        sessions += 1
        await asyncio.Event().wait()

    task = asyncio.create_task(link.run(session))
    await wait_until(lambda: link.connected)
    topic = f"{base_topic}/services/unit/status"
    assert await retained(broker.host, broker.port, topic) == b"online"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not link.connected
    assert await retained(broker.host, broker.port, topic) == b"offline"
    assert sessions == 1


async def test_reconnects_after_the_broker_restarts(own_broker, base_topic: str) -> None:
    config = MqttConfig(url=own_broker.url, base_topic=base_topic, keepalive_s=2,
                        reconnect_min_s=0.1, reconnect_max_s=0.5)
    link = MqttLink(config, "unit")
    received: list[bytes] = []

    async def session(client: aiomqtt.Client) -> None:
        await client.subscribe(f"{base_topic}/echo", qos=1)
        async for message in client.messages:
            received.append(bytes(message.payload))

    task = asyncio.create_task(link.run(session))
    try:
        await wait_until(lambda: link.connected)
        own_broker.local.stop()
        await wait_until(lambda: not link.connected)
        await asyncio.sleep(0.5)  # a few failed attempts while the broker is away
        own_broker.local.start()
        await wait_until(lambda: link.connected)
        # The session ran again: its subscription is back.
        async with aiomqtt.Client(own_broker.host, own_broker.port) as client:
            await asyncio.sleep(0.2)
            await client.publish(f"{base_topic}/echo", b"after restart", qos=1)
        await wait_until(lambda: received == [b"after restart"])
        status = f"{base_topic}/services/unit/status"
        assert await retained(own_broker.host, own_broker.port, status) == b"online"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


SERVICE = """
import asyncio
from minerwatch.shared.mqtt import MqttLink
from minerwatch.shared.service import run_service

async def main(config):
    link = MqttLink(config.mqtt, "probe")
    async def session(client):
        print("ready", flush=True)
        await asyncio.Event().wait()
    await link.run(session)

run_service("probe", main)
"""


def start_service(broker, base_topic: str) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    env = {**os.environ, "MINERWATCH_MQTT_URL": broker.url, "MINERWATCH_BASE_TOPIC": base_topic}
    env.pop("MINERWATCH_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-c", SERVICE], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


async def test_sigterm_says_offline_and_exits_0(broker, base_topic: str) -> None:
    proc = start_service(broker, base_topic)
    topic = f"{base_topic}/services/probe/status"
    assert await retained(broker.host, broker.port, topic) == b"online"
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 10) == 0
    assert await retained(broker.host, broker.port, topic) == b"offline"
    assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]


async def test_sigkill_leaves_the_last_will(broker, base_topic: str) -> None:
    proc = start_service(broker, base_topic)
    topic = f"{base_topic}/services/probe/status"
    assert await retained(broker.host, broker.port, topic) == b"online"
    proc.kill()
    await asyncio.to_thread(proc.wait, 10)
    payload = b""
    async with asyncio.timeout(10):
        while payload != b"offline":  # the broker publishes the will once it sees the socket close
            payload = await retained(broker.host, broker.port, topic)
            await asyncio.sleep(0.1)
    assert payload == b"offline"
