"""``tune`` and ``tune_abort`` commands end to end: the collector hands them to its Tuner,
the run's progress is retained on the tune topic, and the miner is busy meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiomqtt

from minerwatch.collector.service import Collector
from minerwatch.shared import schemas
from minerwatch.shared.config import (
    CollectorConfig,
    Config,
    ControlConfig,
    MinerConfig,
    MqttConfig,
    TuneConfig,
)
from minerwatch.shared.schemas import CommandResult, TuneProgress
from minerwatch.sim.fleet import Fleet

_ids = itertools.count(1)


class Requester:
    def __init__(self, client: aiomqtt.Client, base: str) -> None:
        self.client, self.base = client, base
        self.results: dict[str, CommandResult] = {}
        self.progress: list[TuneProgress] = []

    async def record(self) -> None:
        async for message in self.client.messages:
            if message.topic.value.endswith("/tune"):
                if message.payload:
                    self.progress.append(schemas.decode(message.payload,
                                                        TuneProgress))
            else:
                result = schemas.decode(message.payload, CommandResult)
                self.results[result.id] = result

    async def send(self, action: str) -> CommandResult:
        command_id = f"t{next(_ids)}"
        command = schemas.Command(id=command_id, miner_id="gamma", action=action,  # type: ignore[arg-type]
                                  by="test", ts=schemas.format_ts(datetime.now(UTC)))
        await self.client.publish(f"{self.base}/miners/gamma/command", schemas.encode(command),
                                  qos=1)
        await until(lambda: command_id in self.results)
        return self.results[command_id]


async def until(check: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(broker: Any, base: str, fleet: Fleet) -> AsyncIterator[
        tuple[Collector, Requester]]:
    tune = TuneConfig(settle_s=60.0, window_s=60.0, poll_s=0.2)  # a run that lasts
    config = Config(
        mqtt=MqttConfig(url=broker.url, base_topic=base, reconnect_min_s=0.1),
        collector=CollectorConfig(miners=[MinerConfig(url=fleet.miners[0].url, name="gamma")],
                                  poll_interval_s=0.5, timeout_s=1.0),
        control=ControlConfig(enabled=True, timeout_s=2.0, tune=tune),
    )
    collector = Collector(config)
    async with aiomqtt.Client(broker.host, broker.port,
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        requester = Requester(client, base)
        await client.subscribe(f"{base}/miners/gamma/command/result", qos=1)
        await client.subscribe(f"{base}/miners/gamma/tune", qos=1)
        tasks = [asyncio.create_task(requester.record()),
                 asyncio.create_task(collector.run())]
        try:
            await until(lambda: collector.commands.client is not None)
            yield collector, requester
        finally:
            for task in reversed(tasks):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await client.publish(f"{base}/miners/gamma/tune", b"", qos=1, retain=True)


async def test_tune_holds_the_miner_until_aborted(broker: Any, base_topic: str) -> None:
    async with Fleet(axeos=1, cgminer=0, seed=5, axeos_version="v2.14.0") as fleet:
        miner = fleet.axeos("axeos-0")
        original = dict(miner.control_state()["settings"])
        async with running(broker, base_topic, fleet) as (collector, requester):
            started = await requester.send("tune")
            assert started.status == "ok", started.message
            assert "autotune run" in started.message and f"{base_topic}/miners/gamma/tune" in (
                started.message)
            await until(lambda: any(p.state == "running" for p in requester.progress))
            assert collector.commands.tuner.busy("gamma")

            busy = await requester.send("restart")
            assert busy.status == "busy" and "tune_abort" in busy.message
            assert (await requester.send("tune")).status == "busy"
            assert (await requester.send("settings")).status == "ok"  # reads still work
            assert (await requester.send("identify")).status == "ok"
            assert miner.restarts == 0

            aborted = await requester.send("tune_abort")
            assert aborted.status == "ok", aborted.message
            await until(lambda: requester.progress and requester.progress[-1].state
                        == "aborted")
            assert not collector.commands.tuner.busy("gamma")
            settings = miner.control_state()["settings"]
            assert (settings["frequency_mhz"], settings["core_voltage_mv"]) == (
                original["frequency_mhz"], original["core_voltage_mv"])
            again = await requester.send("tune_abort")
            assert again.status == "refused" and "no autotune run" in again.message
