"""Labels and forgetting, through a real broker and simulated miners on real sockets: the
collector folds the api's label topic into the info it publishes (over the config's
label), and a miner whose retained info was cleared comes back at its next good poll."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt

from minerwatch.collector.forget import forget
from minerwatch.collector.service import Collector
from minerwatch.shared import schemas
from minerwatch.shared.config import CollectorConfig, Config, MinerConfig, MqttConfig
from minerwatch.shared.schemas import MinerInfo, MinerLabel, MinerStatus, now_ts
from minerwatch.sim.fleet import Fleet


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(collector: Collector) -> AsyncIterator[None]:
    task = asyncio.create_task(collector.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


class Watcher:
    """Every message on a filter, as (topic, payload, retained), in arrival order."""

    def __init__(self, broker: Any, topic_filter: str) -> None:
        self.broker = broker
        self.filter = topic_filter
        self.got: list[tuple[str, bytes, bool]] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Watcher:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task

    async def _run(self) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port) as client:
            await client.subscribe(self.filter, qos=1)
            self._ready.set()
            async for message in client.messages:
                payload = message.payload
                assert isinstance(payload, bytes)
                self.got.append((message.topic.value, payload, message.retain))

    def infos(self, topic: str) -> list[MinerInfo | None]:
        return [schemas.decode(payload, MinerInfo) if payload else None
                for got, payload, _ in self.got if got == topic]


async def publish(broker: Any, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.publish(topic, payload, qos=1, retain=True)


def label(text: str | None) -> bytes:
    return schemas.encode(MinerLabel(label=text, ts=now_ts()))


def config_of(broker: Any, base: str, miners: list[MinerConfig]) -> Config:
    return Config(
        mqtt=MqttConfig(url=broker.url, base_topic=base, reconnect_min_s=0.1,
                        reconnect_max_s=0.3),
        collector=CollectorConfig(poll_interval_s=0.1, timeout_s=0.5, miners=miners))


def last_label(watcher: Watcher, topic: str) -> Callable[[], bool | str | None]:
    def current() -> bool | str | None:
        infos = watcher.infos(topic)
        return False if not infos or infos[-1] is None else infos[-1].label
    return current


async def test_the_label_topic_wins_over_the_config_and_null_gives_it_back(
    broker: Any, base_topic: str
) -> None:
    garage = f"{base_topic}/miners/garage/info"
    shed = f"{base_topic}/miners/shed/info"
    # Set before the collector ever polled "garage": kept, and in its very first info.
    await publish(broker, f"{base_topic}/miners/garage/label", label("From the API"))
    async with Fleet(axeos=1, cgminer=1, host="127.0.0.43", seed=43) as sims:
        config = config_of(broker, base_topic, [
            MinerConfig(url=sims.miners[0].url, name="garage", label="Garage Bitaxe"),
            MinerConfig(url=sims.miners[1].url, name="shed")])
        collector = Collector(config)
        async with Watcher(broker, f"{base_topic}/miners/+/info") as watcher, \
                running(collector):
            now = last_label(watcher, garage)
            await until(lambda: now() == "From the API" and last_label(watcher, shed)() is None)
            # Polls never wait for the broker: the very first info may have gone out with
            # the config's label before the retained label arrived.
            first = [info.label for info in watcher.infos(garage) if info]
            assert first in (["From the API"], ["Garage Bitaxe", "From the API"])

            await publish(broker, f"{base_topic}/miners/garage/label", label(None))
            await until(lambda: now() == "Garage Bitaxe")  # the config's again

            await publish(broker, f"{base_topic}/miners/shed/label", label("Shed Rig ✓"))
            await until(lambda: last_label(watcher, shed)() == "Shed Rig ✓")
            await publish(broker, f"{base_topic}/miners/shed/label", b"")  # cleared
            await until(lambda: last_label(watcher, shed)() is None)

            # Bad input is counted and logged, the session lives on.
            for bad in (b"not json", b'{"label": "x\\u0000y", "ts": "2026-11-22T10:00:00.000Z"}',
                        b'{"label": "' + b"x" * 101 + b'", "ts": "2026-11-22T10:00:00.000Z"}'):
                await publish(broker, f"{base_topic}/miners/garage/label", bad)
            await until(lambda: collector.listener.rejects.counts["label"] == 3)
            await publish(broker, f"{base_topic}/miners/garage/label", label("Garage 2"))
            await until(lambda: now() == "Garage 2")
            # one info per change, never one per poll
            labels = [info.label for info in watcher.infos(garage) if info][len(first):]
            assert labels == ["Garage Bitaxe", "Garage 2"]
            assert collector.link.connected
    await publish(broker, f"{base_topic}/miners/garage/label", b"")


async def test_a_forgotten_miner_that_answers_comes_back(broker: Any, base_topic: str) -> None:
    info_topic = f"{base_topic}/miners/garage/info"
    status_topic = f"{base_topic}/miners/garage/status"
    alert_topic = f"{base_topic}/alerts/garage/offline"
    async with Fleet(axeos=1, host="127.0.0.44", seed=44) as sims:
        config = config_of(broker, base_topic, [
            MinerConfig(url=sims.miners[0].url, name="garage", label="Garage")])
        collector = Collector(config)
        async with Watcher(broker, f"{base_topic}/#") as watcher, running(collector):
            await until(lambda: any(t == status_topic for t, _, _ in watcher.got))
            await publish(broker, alert_topic, b'{"retained": "alert"}')
            await until(lambda: any(t == alert_topic for t, _, _ in watcher.got))
            seen = len(watcher.got)

            cleared = await forget(config.mqtt, "garage", listen_s=2.0, quiet_s=0.3)
            assert cleared[-1] == info_topic  # the info last
            assert set(cleared) == {f"{base_topic}/miners/garage/{kind}"
                                    for kind in ("sample", "status", "info", "label", "tune")} | {
                alert_topic}

            # The collector, still polling it, publishes info and status again.
            def back() -> bool:
                later = watcher.got[seen:]
                cleared_at = max(i for i, (t, p, _) in enumerate(later)
                                 if t == info_topic and not p)
                again = {t for t, p, _ in later[cleared_at:] if p}
                return {info_topic, status_topic} <= again
            await until(lambda: any(t == info_topic and not p for t, p, _ in watcher.got[seen:]))
            await until(back)
            info = watcher.infos(info_topic)[-1]
            assert info is not None and info.label == "Garage"
            status = schemas.decode(
                next(p for t, p, _ in reversed(watcher.got) if t == status_topic and p),
                MinerStatus)
            assert status.state == "online"
    # The alert stays cleared: nothing republishes it.
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(f"{base_topic}/alerts/#", qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                async for message in client.messages:
                    raise AssertionError(f"retained alert left: {message.topic}")
