"""Retained state survives a broker that lost it: at every new broker session the collector
publishes the info and status of every miner it knows again, after what is queued, so a
broker restarted without persistence is whole after one reconnect and no status queued in
an outage ends up over the current one. Real broker, simulated miners on real sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt

from minerwatch.collector.fleet import MinerSlot
from minerwatch.collector.outbox import Outbox, Outgoing
from minerwatch.collector.service import Collector
from minerwatch.shared import schemas
from minerwatch.shared.config import CollectorConfig, Config, MinerConfig, MqttConfig
from minerwatch.shared.schemas import MinerInfo, MinerStatus, Sample
from minerwatch.sim.fleet import Fault, Fleet


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def retained(broker: Any, topic_filter: str, wait_s: float = 1.0) -> dict[str, Any]:
    """What a newcomer gets on subscribing: the retained payload of each topic."""
    got: dict[str, Any] = {}
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic_filter, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                async for message in client.messages:
                    if message.retain:
                        got[message.topic.value] = message.payload
    return got


@contextlib.asynccontextmanager
async def running(collector: Collector) -> AsyncIterator[None]:
    task = asyncio.create_task(collector.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def by_id(collector: Collector) -> dict[str, MinerSlot]:
    return {slot.miner_id: slot for slot in collector.fleet.slots}


def state_topics(base: str, collector: Collector) -> dict[str, MinerInfo | MinerStatus]:
    """The info and status topics of every miner, with what the collector says now."""
    expected: dict[str, MinerInfo | MinerStatus] = {}
    for slot in collector.fleet.slots:
        if slot.info is not None:
            expected[f"{base}/miners/{slot.miner_id}/info"] = slot.info
        if slot.status is not None:
            expected[f"{base}/miners/{slot.miner_id}/status"] = slot.status
    return expected


def decoded(topic: str, payload: bytes) -> MinerInfo | MinerStatus:
    return schemas.decode(payload, MinerInfo if topic.endswith("/info") else MinerStatus)


async def test_a_broker_restarted_without_persistence_is_whole_after_one_reconnect(
    own_broker: Any, base_topic: str, dead_port: int
) -> None:
    async with Fleet(axeos=2, cgminer=2, host="127.0.0.41", seed=41) as sims:
        bounced, stopped = sims.miners[0], sims.miners[2]  # an AxeOS and a CGMiner
        miners = [MinerConfig(url=miner.url) for miner in sims.miners]
        miners.append(MinerConfig(url=f"cgminer://127.0.0.1:{dead_port}", name="away"))
        config = Config(
            mqtt=MqttConfig(url=own_broker.url, base_topic=base_topic, reconnect_min_s=0.1,
                            reconnect_max_s=0.3),
            collector=CollectorConfig(poll_interval_s=0.1, timeout_s=0.5, miners=miners))
        collector = Collector(config)
        async with running(collector):
            # Every miner known: four reachable (info and status each), one never reached.
            await until(lambda: len(state_topics(base_topic, collector)) == 9
                        and collector.link.connected and len(collector.outbox) == 0)
            before = await retained(own_broker, f"{base_topic}/miners/+/+")
            assert set(state_topics(base_topic, collector)) <= set(before)

            own_broker.local.stop()  # and with it every retained message
            await until(lambda: not collector.link.connected)
            ids = {slot.driver.port: miner_id for miner_id, slot in by_id(collector).items()}
            # Meanwhile one miner pauses and resumes (idle, then online: both queued) and
            # another stops answering (offline, queued): the last of each is current.
            await bounced.set_fault(Fault.PAUSED)
            await until(lambda: by_id(collector)[ids[bounced.port]].health.state == "idle")
            await bounced.set_fault(Fault.NONE)
            await until(lambda: by_id(collector)[ids[bounced.port]].health.state == "online")
            await stopped.set_fault(Fault.REFUSE)
            await until(lambda: by_id(collector)[ids[stopped.port]].health.state == "offline")
            own_broker.local.start()  # empty: persistence is off

            await until(lambda: collector.link.connected)
            expected = state_topics(base_topic, collector)
            for _ in range(50):  # the state goes out after the samples queued meanwhile
                after = await retained(own_broker, f"{base_topic}/miners/+/+", wait_s=0.3)
                if set(expected) <= set(after):
                    break
    assert len(expected) == 9
    assert {topic: decoded(topic, after[topic]) for topic in expected} == expected
    states = {miner_id: slot.health.state for miner_id, slot in by_id(collector).items()}
    assert states[ids[bounced.port]] == "online"  # not the idle queued before it
    assert states[ids[stopped.port]] == "offline"
    assert states["away"] == "offline"


def test_current_state_goes_after_what_is_queued_and_never_twice() -> None:
    outbox = Outbox()
    idle = MinerStatus(state="idle", reason="not hashing", since="2026-11-22T10:00:00.000Z")
    online = MinerStatus(state="online", since="2026-11-22T10:00:05.000Z")
    offline = MinerStatus(state="offline", reason="connection refused",
                          since="2026-11-22T10:00:00.000Z", failures=3)
    info = MinerInfo(miner_id="a", driver="axeos", host="10.0.0.5", port=80)
    sample = Sample(miner_id="a", ts="2026-11-22T10:00:06.000Z", hashrate_ths=1.0)
    outbox.put(Outgoing.of("a", idle))  # queued in an outage
    outbox.put(Outgoing.of("a", online))  # the current one, queued too
    outbox.put(Outgoing.of("a", sample))
    current = [Outgoing.of("a", info), Outgoing.of("a", online), Outgoing.of("b", offline)]
    assert outbox.refresh(current) == 2
    assert [(item.miner_id, item.kind, item.message) for item in outbox._items] == [
        ("a", "status", idle), ("a", "status", online), ("a", "sample", sample),
        ("a", "info", info), ("b", "status", offline)]
