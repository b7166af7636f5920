"""The collector as a whole (fleet, scheduler, publisher, MQTT link) against a real broker
and tiny local miners: topics, retained payloads, offline detection, id decisions."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import aiomqtt
import pytest

from minerwatch.collector.service import serve
from minerwatch.shared import schemas
from minerwatch.shared.config import CollectorConfig, Config, MinerConfig, MqttConfig
from minerwatch.shared.schemas import MinerInfo, MinerStatus, Sample, parse_ts

StartServer = Callable[..., Awaitable[Any]]
GAMMA = "bitaxe_gamma_v2.11.0_system_info.json"
GAMMA_ID = "24dcc34a1b2c"


class Recorder:
    """Every message under ``{base}/#``, decoded by kind, in arrival order."""

    def __init__(self, broker: Any, base: str) -> None:
        self.broker, self.base = broker, base
        self.messages: list[aiomqtt.Message] = []
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port) as client:
            await client.subscribe(f"{self.base}/#", qos=1)
            self.ready.set()
            async for message in client.messages:
                self.messages.append(message)

    def of(self, miner_id: str, kind: str) -> list[Any]:
        topic = f"{self.base}/miners/{miner_id}/{kind}"
        types = {"sample": Sample, "status": MinerStatus, "info": MinerInfo}
        return [schemas.decode(m.payload, types[kind])  # type: ignore[arg-type]
                for m in self.messages if m.topic.value == topic and m.payload]

    def cleared(self, miner_id: str, kind: str) -> bool:
        topic = f"{self.base}/miners/{miner_id}/{kind}"
        return any(m.topic.value == topic and m.payload == b"" for m in self.messages)

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                topics = sorted({m.topic.value for m in self.messages})
                raise AssertionError(f"timed out; topics so far: {topics}")
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def collector(broker: Any, base: str, miners: list[MinerConfig], **collector: Any
                    ) -> AsyncIterator[Recorder]:
    recorder = Recorder(broker, base)
    listening = asyncio.create_task(recorder.run())
    await asyncio.wait_for(recorder.ready.wait(), 5)
    config = Config(
        mqtt=MqttConfig(url=broker.url, base_topic=base, reconnect_min_s=0.1),
        collector=CollectorConfig(miners=miners, **collector),
    )
    service = asyncio.create_task(serve(config))
    try:
        yield recorder
    finally:
        for task in (service, listening):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def retained(broker: Any, topic_filter: str, expect: int, wait_s: float = 3.0
                   ) -> dict[str, aiomqtt.Message]:
    """What a newcomer gets on subscribing: the retained messages (``expect`` of them,
    or whatever came within ``wait_s``)."""
    got: dict[str, aiomqtt.Message] = {}
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic_filter, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                async for message in client.messages:
                    got[message.topic.value] = message
                    if len(got) >= expect:
                        break
    return got


async def test_samples_status_and_info_on_their_topics_retained(
    broker: Any, base_topic: str, http_miner: StartServer, cgminer_miner: StartServer,
    load_fixture: Callable[[str], bytes], s19_replies: dict[str, bytes],
) -> None:
    bitaxe = await http_miner(load_fixture(GAMMA))
    antminer = await cgminer_miner(s19_replies)
    miners = [MinerConfig(url=f"axeos://127.0.0.1:{bitaxe.port}"),
              MinerConfig(url=f"cgminer://127.0.0.1:{antminer.port}", name="s19")]
    async with collector(broker, base_topic, miners, poll_interval_s=0.25,
                         timeout_s=1.0) as seen:
        await seen.until(lambda: len(seen.of(GAMMA_ID, "sample")) >= 4
                         and len(seen.of("s19", "sample")) >= 4)

    gamma = seen.of(GAMMA_ID, "sample")[-1]
    assert gamma.miner_id == GAMMA_ID  # no name configured: the MAC
    assert gamma.hashrate_ths == pytest.approx(1.2093785)
    assert gamma.fan_rpm == [4412] and gamma.temp_c == 59.5
    s19 = seen.of("s19", "sample")[-1]
    assert s19.hashrate_ths == pytest.approx(109.87654)
    assert s19.power_w is None and s19.temp_c == 77.0

    [gamma_info] = seen.of(GAMMA_ID, "info")  # once: it did not change between polls
    assert (gamma_info.driver, gamma_info.host, gamma_info.port) == (
        "axeos", "127.0.0.1", bitaxe.port)
    assert (gamma_info.make, gamma_info.model, gamma_info.mac) == (
        "Bitaxe", "Gamma BM1370", "24:DC:C3:4A:1B:2C")
    [s19_info] = seen.of("s19", "info")
    assert (s19_info.make, s19_info.model, s19_info.driver) == ("Antminer", "S19 Pro", "cgminer")

    [status] = seen.of(GAMMA_ID, "status")  # published on change only
    assert (status.state, status.reason, status.failures) == ("online", None, 0)
    assert status.since == seen.of(GAMMA_ID, "sample")[0].ts

    # fixed cadence: polls 0.25 s apart, not 0.25 s + the poll's duration
    stamps = [parse_ts(s.ts) for s in seen.of(GAMMA_ID, "sample")]
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    assert all(timedelta(seconds=0.15) < gap < timedelta(seconds=0.4) for gap in gaps), gaps

    got = await retained(broker, f"{base_topic}/miners/#", expect=6)
    for miner_id in (GAMMA_ID, "s19"):
        for kind in ("sample", "status", "info"):
            message = got[f"{base_topic}/miners/{miner_id}/{kind}"]
            assert message.retain is True
            assert message.qos == 1


async def test_a_miner_that_stops_answering_goes_offline_after_three_polls(
    broker: Any, base_topic: str, http_miner: StartServer, load_fixture: Callable[[str], bytes]
) -> None:
    bitaxe = await http_miner(load_fixture(GAMMA))
    miners = [MinerConfig(url=f"axeos://127.0.0.1:{bitaxe.port}", name="gamma")]
    # Margins wide enough that a loaded 2-core CI machine never times out a good poll.
    async with collector(broker, base_topic, miners, poll_interval_s=0.4,
                         timeout_s=0.3) as seen:
        await seen.until(lambda: len(seen.of("gamma", "sample")) >= 2)
        bitaxe.mode = "silent"
        silent_from = len(bitaxe.requests)
        await seen.until(lambda: len(seen.of("gamma", "status")) >= 2)
        samples_at_offline = len(seen.of("gamma", "sample"))
        offline = seen.of("gamma", "status")[-1]
        polls_until_offline = len(bitaxe.requests) - silent_from
        await asyncio.sleep(1.3)  # three more polls, all failing
        assert len(seen.of("gamma", "sample")) == samples_at_offline  # stale is never live
        assert len(seen.of("gamma", "status")) == 2  # offline is said once

        bitaxe.mode = "normal"
        await seen.until(lambda: len(seen.of("gamma", "status")) >= 3)
        await seen.until(lambda: len(seen.of("gamma", "sample")) > samples_at_offline)

    assert (offline.state, offline.reason, offline.failures) == (
        "offline", "timeout after 0.3 s", 3)
    assert polls_until_offline == 3
    last_good = seen.of("gamma", "sample")[samples_at_offline - 1]
    assert offline.last_seen == last_good.ts
    assert parse_ts(offline.since) > parse_ts(last_good.ts)
    assert seen.of("gamma", "status")[-1].state == "online"


async def test_idle_miner_and_a_mac_miner_reached_late(
    broker: Any, base_topic: str, http_miner: StartServer, load_json: Callable[[str], Any]
) -> None:
    paused = await http_miner(json.dumps({**load_json(GAMMA), "miningPaused": True,
                                          "macAddr": "AA:BB:CC:00:11:22"}).encode())
    late = await http_miner(json.dumps(load_json(GAMMA)).encode(), mode="close")
    slug = f"127-0-0-1-{late.port}"
    miners = [MinerConfig(url=f"axeos://127.0.0.1:{paused.port}"),
              MinerConfig(url=f"axeos://127.0.0.1:{late.port}")]
    async with collector(broker, base_topic, miners, poll_interval_s=0.1,
                         timeout_s=0.5) as seen:
        # Never reached yet: offline under the host-port slug (its MAC is unknown).
        await seen.until(lambda: len(seen.of(slug, "status")) >= 1)
        assert seen.of(slug, "status")[0].state == "offline"
        assert seen.of(slug, "status")[0].last_seen is None
        late.mode = "normal"
        await seen.until(lambda: len(seen.of(GAMMA_ID, "sample")) >= 1)
        await seen.until(lambda: seen.cleared(slug, "status"))

    [idle] = seen.of("aabbcc001122", "status")
    assert (idle.state, idle.reason) == ("idle", "not hashing")
    assert seen.of("aabbcc001122", "sample")[0].is_mining is False
    assert seen.of(GAMMA_ID, "status")[0].state == "online"
    got = await retained(broker, f"{base_topic}/miners/{slug}/#", expect=1, wait_s=0.5)
    assert got == {}  # the slug's offline status did not stay behind
