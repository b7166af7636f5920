"""Broker outages through a real broker that is stopped and started again (own_broker):
nothing acknowledged is lost, nothing is reordered, and a full buffer drops the oldest
samples and says which."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiomqtt
import pytest

from minerwatch.collector.outbox import Outbox, Outgoing
from minerwatch.collector.publisher import Publisher
from minerwatch.collector.service import Collector
from minerwatch.shared import schemas
from minerwatch.shared.config import CollectorConfig, Config, MinerConfig, MqttConfig
from minerwatch.shared.mqtt import MqttClient, MqttLink
from minerwatch.shared.schemas import Sample, parse_ts

GAMMA = "bitaxe_gamma_v2.11.0_system_info.json"


def sample(n: int) -> Sample:
    return Sample(miner_id="rig-1", ts=f"2026-11-22T10:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
                  hashrate_ths=1.0, uptime_s=n)


class Subscriber:
    """Every message under a filter, in arrival order, while running."""

    def __init__(self, broker: Any, topic_filter: str) -> None:
        self.broker, self.filter = broker, topic_filter
        self.messages: list[aiomqtt.Message] = []
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port) as client:
            await client.subscribe(self.filter, qos=1)
            self.ready.set()
            async for message in client.messages:
                self.messages.append(message)

    def samples(self) -> list[Sample]:
        return [schemas.decode(m.payload, Sample) for m in self.messages  # type: ignore[arg-type]
                if m.payload and m.topic.value.endswith("/sample")]


@contextlib.asynccontextmanager
async def listening(broker: Any, topic_filter: str) -> AsyncIterator[Subscriber]:
    subscriber = Subscriber(broker, topic_filter)
    task = asyncio.create_task(subscriber.run())
    await asyncio.wait_for(subscriber.ready.wait(), 5)
    try:
        yield subscriber
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


@contextlib.asynccontextmanager
async def running(coro: Any) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def dropped_samples(caplog: pytest.LogCaptureFixture) -> int:
    return sum(int(match.group(1)) for record in caplog.records
               if (match := re.search(r"dropped the oldest: (\d+) sample", record.getMessage())))


class HeldSessions:
    """Each new broker session waits until the test's subscriber listens, so the test sees
    everything delivered after a reconnect."""

    def __init__(self, session: Callable[[MqttClient], Awaitable[None]]) -> None:
        self.inner = session
        self.gate = asyncio.Event()
        self.gate.set()
        self.count = 0

    async def session(self, client: MqttClient) -> None:
        self.count += 1
        await self.gate.wait()
        await self.inner(client)


def link(broker: Any, base_topic: str) -> MqttLink:
    config = MqttConfig(url=broker.url, base_topic=base_topic, reconnect_min_s=0.1,
                        reconnect_max_s=0.3)
    return MqttLink(config, "collector")


async def test_a_full_buffer_keeps_the_newest_and_says_what_it_dropped(
    own_broker: Any, base_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = Outbox(maxsize=20)
    sessions = HeldSessions(Publisher(outbox, base_topic).session)
    async with running(link(own_broker, base_topic).run(sessions.session)):
        await until(lambda: sessions.count == 1)
        own_broker.local.stop()
        await asyncio.sleep(0.2)
        sessions.gate.clear()
        with caplog.at_level(logging.WARNING):
            for n in range(50):  # the registry goes on while the broker is away
                outbox.put(Outgoing.of("rig-1", sample(n)))
            assert len(outbox) == 20 and outbox.dropped == 30
            own_broker.local.start()
            await until(lambda: sessions.count == 2)  # reconnected, held
            async with listening(own_broker, f"{base_topic}/#") as seen:
                sessions.gate.set()
                await until(lambda: len(seen.samples()) == 20)
    assert [s.uptime_s for s in seen.samples()] == list(range(30, 50))
    assert dropped_samples(caplog) == 30  # every drop accounted for in the log
    last = [r.getMessage() for r in caplog.records if "outbox full" in r.getMessage()][-1]
    assert "samples taken 2026-11-22T10:00:01.000Z to 2026-11-22T10:00:29.000Z" in last


async def test_unacknowledged_messages_go_out_again_after_the_broker_died(
    own_broker: Any, base_topic: str
) -> None:
    total = 20_000
    outbox = Outbox(maxsize=total)
    publisher = Publisher(outbox, base_topic)
    sessions = HeldSessions(publisher.session)
    for n in range(total):
        outbox.put(Outgoing.of("rig-1", sample(n)))
    link_up = link(own_broker, base_topic)
    async with running(link_up.run(sessions.session)):
        await until(lambda: publisher.published >= 500)
        own_broker.local.stop()  # mid-stream: some sent, unacknowledged
        sessions.gate.clear()
        # Nothing lost: what the broker did not acknowledge is back in the outbox.
        await until(lambda: not link_up.connected and len(outbox) + publisher.published == total)
        acknowledged = publisher.published
        assert 500 <= acknowledged < total
        own_broker.local.start()
        await until(lambda: sessions.count == 2)
        async with listening(own_broker, f"{base_topic}/miners/rig-1/sample") as seen:
            sessions.gate.set()
            await until(lambda: publisher.published == total, timeout=20)
            await until(lambda: len(seen.messages) == total - acknowledged)
    # Everything not acknowledged went out again, in order, after the reconnect.
    assert [s.uptime_s for s in seen.samples()] == list(range(acknowledged, total))


async def test_the_collector_buffers_polls_through_an_outage(
    own_broker: Any, base_topic: str, http_miner: Any, load_fixture: Callable[[str], bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    miner = await http_miner(load_fixture(GAMMA))
    config = Config(
        mqtt=MqttConfig(url=own_broker.url, base_topic=base_topic, reconnect_min_s=0.2,
                        reconnect_max_s=0.2),
        collector=CollectorConfig(poll_interval_s=0.05, timeout_s=1.0, buffer_messages=8,
                                  miners=[MinerConfig(url=f"axeos://127.0.0.1:{miner.port}",
                                                      name="gamma")]),
    )
    collector = Collector(config)
    assert collector.outbox.maxsize == 8
    held = HeldSessions(collector.publisher.session)
    collector.publisher.session = held.session  # type: ignore[method-assign]
    async with running(collector.run()), listening(own_broker, f"{base_topic}/#") as before:
        await until(lambda: len(before.samples()) >= 3)
        with caplog.at_level(logging.WARNING):
            own_broker.local.stop()
            held.gate.clear()
            stopped = len(miner.requests)
            await until(lambda: len(miner.requests) >= stopped + 20)  # polling goes on
            own_broker.local.start()
            await until(lambda: held.count == 2)
            async with listening(own_broker, f"{base_topic}/miners/gamma/sample") as after:
                held.gate.set()
                await until(lambda: len(after.samples()) >= 12)
    last_before = parse_ts(before.samples()[-1].ts)
    stamps = [parse_ts(s.ts) for s in after.samples()]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # in order, once
    # The first ones after the reconnect were polled while the broker was away: the newest
    # that fit in 8 messages; the older ones were dropped, and the log says so.
    assert all(stamp > last_before for stamp in stamps)
    assert dropped_samples(caplog) >= 10
    assert stamps[7] - stamps[0] < (stamps[8] - stamps[0])  # 8 buffered, then live ones
