"""The reconnecting MQTT loop against a real Mosquitto: online/offline, Last Will, backoff,
and every way a session can end (raised, MQTT error, returned, cancelled, SIGKILLed)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from typing import Any

import aiomqtt
import pytest

from minerwatch.shared.backoff import backoff_delays
from minerwatch.shared.config import MqttConfig
from minerwatch.shared.mqtt import MqttClient, MqttError, MqttLink, PersistentLink, Subscription


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

    async def session(client: MqttClient) -> None:
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

    async def session(client: MqttClient) -> None:
        await client.subscribe([Subscription(f"{base_topic}/echo", qos=1)])
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
from minerwatch.shared.mqtt import MqttClient, MqttError, MqttLink, PersistentLink, Subscription
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


# --- no death unseen: every way a session ends ---------------------------------------------


def make_link(kind: str, config: MqttConfig, base_topic: str) -> MqttLink | PersistentLink:
    if kind == "persistent":
        return PersistentLink(config, "unit", client_id=f"{base_topic}-p", receive_maximum=10)
    return MqttLink(config, "unit", receive_maximum=10 if kind == "flow" else None)


class StatusWatch:
    """Every payload published on a service's status topic, live, from a subscriber that
    was there first."""

    def __init__(self, broker: Any, topic: str) -> None:
        self.broker = broker
        self.topic = topic
        self.seen: list[bytes] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StatusWatch:
        subscribed = asyncio.Event()

        async def watch() -> None:
            async with aiomqtt.Client(self.broker.host, self.broker.port) as client:
                await client.subscribe(self.topic, qos=1)
                subscribed.set()
                async for message in client.messages:
                    if not message.retain:
                        self.seen.append(bytes(message.payload))  # type: ignore[arg-type]

        self._task = asyncio.create_task(watch())
        async with asyncio.timeout(5):
            await subscribed.wait()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


KINDS = ["plain", "flow", "persistent"]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_session_that_raises_shows_offline_then_runs_again(
        broker: Any, base_topic: str, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    config = MqttConfig(url=broker.url, base_topic=base_topic, reconnect_min_s=0.2,
                        reconnect_max_s=0.4)
    link = make_link(kind, config, base_topic)
    calls = 0

    async def session(client: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom in the session")
        await asyncio.Event().wait()

    async with StatusWatch(broker, f"{base_topic}/services/unit/status") as watch:
        task = asyncio.create_task(link.run(session))
        try:
            await wait_until(lambda: calls == 2 and len(watch.seen) >= 3)
            assert watch.seen[:3] == [b"online", b"offline", b"online"]
            assert link.connected
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await wait_until(lambda: len(watch.seen) == 4)
        assert watch.seen[3] == b"offline"
    [failure] = [r for r in caplog.records
                 if r.name == "minerwatch.mqtt" and r.levelname == "ERROR"]
    assert "unit: session failed: RuntimeError: boom in the session; retrying in" in (
        failure.getMessage())
    assert failure.exc_info is not None  # the traceback is logged with it


@pytest.mark.parametrize("kind", KINDS)
async def test_an_mqtt_error_is_one_warning_line_and_offline_too(
        broker: Any, base_topic: str, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    config = MqttConfig(url=broker.url, base_topic=base_topic, reconnect_min_s=0.1,
                        reconnect_max_s=0.2)
    link = make_link(kind, config, base_topic)
    calls = 0

    async def session(client: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            # e.g. a subscription the broker refused: the connection itself is still up
            raise MqttError("subscription refused: 'x': 0x87 not authorized")

    async with StatusWatch(broker, f"{base_topic}/services/unit/status") as watch:
        async with asyncio.timeout(10):
            await link.run(session)  # the second session returns: the link ends
        await wait_until(lambda: len(watch.seen) == 4)
    assert watch.seen == [b"online", b"offline", b"online", b"offline"]
    assert not link.connected
    warnings = [r for r in caplog.records if r.name == "minerwatch.mqtt"
                and r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    assert "0x87 not authorized" in warnings[0].getMessage()
    status = f"{base_topic}/services/unit/status"
    assert await retained(broker.host, broker.port, status) == b"offline"


@pytest.mark.parametrize("kind", ["plain", "persistent"])
async def test_cancelling_a_lean_link_says_offline(broker: Any, base_topic: str,
                                                   kind: str) -> None:
    link = make_link(kind, MqttConfig(url=broker.url, base_topic=base_topic), base_topic)

    async def session(client: Any) -> None:
        await asyncio.Event().wait()

    topic = f"{base_topic}/services/unit/status"
    task = asyncio.create_task(link.run(session))
    await wait_until(lambda: link.connected)
    assert await retained(broker.host, broker.port, topic) == b"online"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not link.connected
    assert await retained(broker.host, broker.port, topic) == b"offline"


async def test_a_session_that_fails_at_once_is_retried_ever_more_slowly(
        broker: Any, base_topic: str) -> None:
    config = MqttConfig(url=broker.url, base_topic=base_topic, reconnect_min_s=0.1,
                        reconnect_max_s=0.8)
    link = MqttLink(config, "unit")
    starts: list[float] = []

    async def session(client: Any) -> None:
        starts.append(time.monotonic())
        if len(starts) < 5:
            raise RuntimeError("poison")

    async with asyncio.timeout(15):
        await link.run(session)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # Delays 0.05-0.1, 0.1-0.2, 0.2-0.4, 0.4-0.8 s: the backoff does not restart on a
    # connection that failed at once.
    assert gaps[3] >= 0.4, gaps


SIGKILLED = """
import asyncio, os, sys
from minerwatch.shared.config import MqttConfig
from minerwatch.shared.mqtt import MqttLink

async def main():
    config = MqttConfig(url=os.environ["URL"], base_topic=os.environ["BASE"], keepalive_s=2)
    link = MqttLink(config, "probe")
    async def session(client):
        print("ready", flush=True)
        await asyncio.Event().wait()
    await link.run(session)

asyncio.run(main())
"""


async def test_a_sigkilled_service_is_offline_within_one_and_a_half_keepalives(
        broker: Any, base_topic: str) -> None:
    topic = f"{base_topic}/services/probe/status"
    async with StatusWatch(broker, topic) as watch:
        env = {**os.environ, "URL": broker.url, "BASE": base_topic}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SIGKILLED, env=env, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            assert await proc.stdout.readline() == b"ready\n"
        await wait_until(lambda: watch.seen == [b"online"])
        proc.kill()
        killed = time.monotonic()
        async with asyncio.timeout(10):
            await proc.wait()
        await wait_until(lambda: len(watch.seen) == 2)
        elapsed = time.monotonic() - killed
    assert watch.seen == [b"online", b"offline"]  # the broker's Will
    assert elapsed <= 1.5 * 2, elapsed
