"""The outbox and the publishing session against a real broker, including outages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from minerwatch.collector.outbox import Outbox, Outgoing
from minerwatch.collector.publisher import Publisher
from minerwatch.shared import schemas
from minerwatch.shared.config import MqttConfig
from minerwatch.shared.mqtt import MqttClient, MqttLink
from minerwatch.shared.schemas import Sample


def sample(n: int, miner_id: str = "rig-1") -> Sample:
    return Sample(miner_id=miner_id, ts=f"2026-11-22T10:00:{n % 60:02d}.000Z",
                  hashrate_ths=1.0, uptime_s=n)


class Subscriber:
    """A client that records every message under a filter, in arrival order."""

    def __init__(self, host: str, port: int, topic_filter: str) -> None:
        self.host, self.port, self.filter = host, port, topic_filter
        self.messages: list[aiomqtt.Message] = []
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with aiomqtt.Client(self.host, self.port) as client:
            await client.subscribe(self.filter, qos=1)
            self.ready.set()
            async for message in client.messages:
                self.messages.append(message)

    async def start(self) -> Subscriber:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), 5)
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    def uptimes(self, topic: str) -> list[int]:
        return [schemas.decode(m.payload, Sample).uptime_s  # type: ignore[arg-type, misc]
                for m in self.messages if m.topic.value == topic and m.payload]

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; got {len(self.messages)} messages")
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(coro: Any) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def test_outbox_drops_the_oldest_when_full_and_says_what(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outbox = Outbox(maxsize=3)
    with caplog.at_level(logging.WARNING):
        for n in range(6):
            outbox.put(Outgoing.of("rig-1", sample(n)))
        outbox.report_drops()  # what a new broker session does first
    assert outbox.dropped == 3
    assert len(outbox) == 3
    assert [item.message.uptime_s for item in outbox._items] == [3, 4, 5]  # type: ignore[union-attr]
    lines = [r.getMessage() for r in caplog.records if "outbox full" in r.getMessage()]
    # One line per burst (the first drop), then the rest when the broker is back.
    assert lines == [
        "outbox full (3 messages; broker unreachable?): dropped the oldest: 1 sample "
        "(samples taken 2026-11-22T10:00:00.000Z to 2026-11-22T10:00:00.000Z)",
        "outbox full (3 messages; broker unreachable?): dropped the oldest: 2 sample "
        "(samples taken 2026-11-22T10:00:01.000Z to 2026-11-22T10:00:02.000Z)",
    ]


def test_outbox_drops_samples_before_status_changes() -> None:
    outbox = Outbox(maxsize=3)
    offline = schemas.MinerStatus(state="offline", reason="connection refused",
                                  since="2026-11-22T10:00:00.000Z", failures=3)
    outbox.put(Outgoing.of("rig-2", offline))  # the oldest, but a state change
    for n in range(3):
        outbox.put(Outgoing.of("rig-1", sample(n)))
    assert [item.kind for item in outbox._items] == ["status", "sample", "sample"]
    assert [item.message.uptime_s for item in list(outbox._items)[1:]] == [1, 2]  # type: ignore[union-attr]
    assert outbox.dropped == 1


async def test_outbox_put_front_keeps_order() -> None:
    outbox = Outbox(maxsize=10)
    outbox.put(Outgoing.of("rig-1", sample(3)))
    outbox.put_front([Outgoing.of("rig-1", sample(1)), Outgoing.of("rig-1", sample(2))])
    got = [await outbox.get() for _ in range(3)]
    assert [item.message.uptime_s for item in got] == [1, 2, 3]  # type: ignore[union-attr]


async def test_publishes_are_pipelined_in_order_retained(
    roomy_broker: Any, base_topic: str
) -> None:
    broker = roomy_broker  # its Receive Maximum (100) leaves max_inflight the bound
    outbox = Outbox()
    publisher = Publisher(outbox, base_topic, max_inflight=32)
    topic = f"{base_topic}/miners/rig-1/sample"
    subscriber = await Subscriber(broker.host, broker.port, f"{base_topic}/#").start()
    config = MqttConfig(url=broker.url, base_topic=base_topic)
    link = MqttLink(config, "collector")
    try:
        for n in range(300):
            outbox.put(Outgoing.of("rig-1", sample(n)))
        async with running(link.run(publisher.session)):
            await subscriber.wait_for(lambda: len(subscriber.uptimes(topic)) >= 300)
            # the broker may forward the last one before its PUBACK reaches the publisher
            await subscriber.wait_for(lambda: publisher.published == 300)
        assert subscriber.uptimes(topic) == list(range(300))
        # Many unacknowledged at once, never more than allowed: not one at a time.
        assert publisher.most_inflight == 32
        assert len(outbox) == 0
    finally:
        await subscriber.stop()

    late = await Subscriber(broker.host, broker.port, topic).start()
    try:
        await late.wait_for(lambda: late.messages)
        assert late.messages[0].retain is True
        assert late.uptimes(topic) == [299]
    finally:
        await late.stop()


async def test_never_more_unsettled_than_the_brokers_receive_maximum(
    broker: Any, base_topic: str
) -> None:
    outbox = Outbox()
    publisher = Publisher(outbox, base_topic, max_inflight=1024)
    config = MqttConfig(url=broker.url, base_topic=base_topic)
    for n in range(2000):
        outbox.put(Outgoing.of("rig-1", sample(n)))
    async with running(MqttLink(config, "collector").run(publisher.session)):
        await asyncio.wait_for(_until(lambda: publisher.published == 2000), 10)
    # Mosquitto's default Receive Maximum is 20: sending more would be a protocol error.
    assert publisher.most_inflight == 20
    assert len(outbox) == 0 and publisher.refused == 0


async def test_samples_go_out_while_other_publishes_hold_the_whole_window(
    broker: Any, base_topic: str
) -> None:
    """Home Assistant's configs are awaited publishes on the same connection: while they
    fill the broker's Receive Maximum (20 here, with more waiting for room) the publisher
    can be left with nothing of its own in flight and no acknowledgement of its own to wake
    it. It must still send the samples (it once waited for ever, the outbox growing)."""
    outbox = Outbox()
    started = asyncio.Event()

    async def hold_the_window(client: MqttClient) -> None:
        started.set()
        for _ in range(5):  # batches of 64 awaited publishes, as the discovery sends them
            await asyncio.gather(*(client.publish(f"{base_topic}/other/{i}", b"x", qos=1)
                                   for i in range(64)))
        await asyncio.Event().wait()  # then it listens on, as the discovery does

    publisher = Publisher(outbox, base_topic, listen=hold_the_window)
    config = MqttConfig(url=broker.url, base_topic=base_topic)
    async with running(MqttLink(config, "collector").run(publisher.session)):
        await asyncio.wait_for(started.wait(), 5)
        for n in range(200):  # polls finishing one by one, as the collector's do
            outbox.put(Outgoing.of("rig-1", sample(n)))
            await asyncio.sleep(0.002)
        await asyncio.wait_for(_until(lambda: publisher.published == 200), 10)
    assert len(outbox) == 0


async def test_messages_the_broker_refuses_are_counted_not_sent_again(
    own_broker: Any, base_topic: str, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    acl = tmp_path / "acl"  # anonymous clients may write their status and one miner
    acl.write_text(f"topic readwrite {base_topic}/services/#\n"
                   f"topic readwrite {base_topic}/miners/allowed/#\n")
    own_broker.local.stop()
    with own_broker.local.conf.open("a") as conf:
        conf.write(f"acl_file {acl}\n")
    own_broker.local.start()
    outbox = Outbox()
    publisher = Publisher(outbox, base_topic)
    for n in range(100):
        outbox.put(Outgoing.of("allowed" if n % 4 else "denied", sample(n)))
    config = MqttConfig(url=own_broker.url, base_topic=base_topic)
    with caplog.at_level(logging.WARNING):
        async with running(MqttLink(config, "collector").run(publisher.session)):
            await asyncio.wait_for(_until(lambda: publisher.published == 100), 10)
            await asyncio.sleep(0.2)  # nothing goes out again
    assert (publisher.refused, publisher.published, len(outbox)) == (25, 100, 0)
    [line] = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert "0x87" in line and "/miners/denied/sample" in line


async def test_messages_wait_while_the_broker_is_down_then_go_out_in_order(
    own_broker: Any, base_topic: str
) -> None:
    outbox = Outbox()
    publisher = Publisher(outbox, base_topic)
    topic = f"{base_topic}/miners/rig-1/sample"
    # The harness holds each new session until the test's subscriber is listening, so the
    # test sees every message delivered after the reconnect.
    gate = asyncio.Event()
    gate.set()
    sessions = 0

    async def session(client: MqttClient) -> None:
        nonlocal sessions
        sessions += 1
        await gate.wait()
        await publisher.session(client)

    config = MqttConfig(url=own_broker.url, base_topic=base_topic, reconnect_min_s=0.1,
                        reconnect_max_s=0.3)
    link = MqttLink(config, "collector")
    async with running(link.run(session)):
        subscriber = await Subscriber(own_broker.host, own_broker.port, topic).start()
        for n in range(5):
            outbox.put(Outgoing.of("rig-1", sample(n)))
        await subscriber.wait_for(lambda: subscriber.uptimes(topic) == [0, 1, 2, 3, 4])
        await subscriber.stop()

        gate.clear()
        own_broker.local.stop()
        for n in range(5, 55):  # the registry goes on while the broker is away
            outbox.put(Outgoing.of("rig-1", sample(n)))
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)
        assert len(outbox) == 50  # nothing lost, nothing sent
        own_broker.local.start()

        await asyncio.wait_for(_until(lambda: sessions >= 2), 10)  # reconnected, held
        subscriber = await Subscriber(own_broker.host, own_broker.port, topic).start()
        gate.set()
        try:
            await subscriber.wait_for(lambda: 54 in subscriber.uptimes(topic), timeout=10)
            assert subscriber.uptimes(topic) == list(range(5, 55))
            assert len(outbox) == 0
        finally:
            await subscriber.stop()


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.02)


async def test_empty_payload_clears_a_retained_message(broker: Any, base_topic: str) -> None:
    outbox = Outbox()
    publisher = Publisher(outbox, base_topic)
    status_topic = f"{base_topic}/miners/old-id/status"
    config = MqttConfig(url=broker.url, base_topic=base_topic)
    link = MqttLink(config, "collector")
    subscriber = await Subscriber(broker.host, broker.port, status_topic).start()
    async with running(link.run(publisher.session)):
        outbox.put(Outgoing.of("old-id", schemas.MinerStatus(
            state="offline", reason="connection refused", since="2026-11-22T10:00:00.000Z",
            failures=3)))
        outbox.put(Outgoing.clear("old-id", "status"))
        await subscriber.wait_for(lambda: len(subscriber.messages) == 2)
    await subscriber.stop()
    assert subscriber.messages[1].payload == b""
    late = await Subscriber(broker.host, broker.port, status_topic).start()
    await asyncio.sleep(0.3)
    await late.stop()
    assert late.messages == []  # nothing retained any more
