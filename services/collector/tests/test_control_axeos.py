"""Commands end to end over MQTT: a real broker, a running collector and the simulator's
AxeOS miners (in process), each action carried out and answered on the result topic."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import msgspec
import pyotp
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from minerwatch.collector.service import Collector
from minerwatch.shared import schemas
from minerwatch.shared.config import (
    CollectorConfig,
    Config,
    ControlConfig,
    MinerConfig,
    MqttConfig,
)
from minerwatch.shared.schemas import CommandResult, MinerSettings, Pool, Pools, format_ts
from minerwatch.sim.fleet import Fleet

OTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DP"
_ids = itertools.count(1)


@dataclass
class Stack:
    """A running collector, the simulated fleet it polls and an MQTT v5 requester."""

    base: str
    fleet: Fleet
    collector: Collector
    client: aiomqtt.Client
    messages: list[aiomqtt.Message] = field(default_factory=list)

    def results(self, command_id: str) -> list[aiomqtt.Message]:
        return [m for m in self.messages if m.topic.matches(f"{self.base}/miners/+/command/"
                                                            "result")
                and json.loads(m.payload)["id"] == command_id]

    async def publish(self, miner_id: str, payload: bytes, *, reply_to: str | None = None,
                      correlation: bytes | None = None, retain: bool = False) -> None:
        properties = None
        if reply_to is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = reply_to
            if correlation is not None:
                properties.CorrelationData = correlation
        await self.client.publish(f"{self.base}/miners/{miner_id}/command", payload, qos=1,
                                  retain=retain, properties=properties)

    async def send(self, miner_id: str, action: str, *, settings: MinerSettings | None = None,
                   ts: datetime | None = None, reply_to: str | None = None,
                   correlation: bytes | None = None, timeout: float = 10.0) -> CommandResult:
        """Send a command and wait for its result on the result topic."""
        command_id = f"c{next(_ids)}"
        command = schemas.Command(id=command_id, miner_id=miner_id, action=action,  # type: ignore[arg-type]
                                  by="test", ts=format_ts(ts or datetime.now(UTC)),
                                  settings=settings)
        await self.publish(miner_id, schemas.encode(command), reply_to=reply_to,
                           correlation=correlation)
        return await self.result(command_id, timeout)

    async def result(self, command_id: str, timeout: float = 10.0) -> CommandResult:
        deadline = asyncio.get_running_loop().time() + timeout
        while not (found := self.results(command_id)):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no result for {command_id} within {timeout} s")
            await asyncio.sleep(0.02)
        return schemas.decode(found[0].payload, CommandResult)

    async def ready(self) -> None:
        """Until the collector's command subscription is in place (it attaches its session
        to the commands once the broker acknowledged the subscription)."""
        deadline = asyncio.get_running_loop().time() + 10
        while self.collector.commands.client is None:
            assert asyncio.get_running_loop().time() < deadline, "the collector never subscribed"
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def stack(broker: Any, base: str, fleet: Fleet, miners: list[MinerConfig],
                **control: Any) -> AsyncIterator[Stack]:
    control.setdefault("enabled", True)
    config = Config(
        mqtt=MqttConfig(url=broker.url, base_topic=base, reconnect_min_s=0.1),
        collector=CollectorConfig(miners=miners, poll_interval_s=0.5, timeout_s=1.0),
        control=ControlConfig(**control),
    )
    collector = Collector(config)
    async with aiomqtt.Client(broker.host, broker.port,
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        found = Stack(base, fleet, collector, client)
        await client.subscribe(f"{base}/miners/+/command/result", qos=1)
        await client.subscribe(f"{base}/replies/#", qos=1)
        await client.subscribe(f"{base}/elsewhere/#", qos=1)

        async def record() -> None:
            async for message in client.messages:
                found.messages.append(message)

        recording = asyncio.create_task(record())
        running = asyncio.create_task(collector.run())
        try:
            await found.ready()
            yield found
        finally:
            for task in (running, recording):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


@contextlib.asynccontextmanager
async def sim(axeos: int = 1, version: str = "v2.14.0", **options: Any
              ) -> AsyncIterator[Fleet]:
    async with Fleet(axeos=axeos, cgminer=0, seed=5, axeos_version=version,
                     **options) as fleet:
        for miner in fleet.miners:  # restarts quick enough for a test
            miner.quirks.restart_s = 0.3
            miner.quirks.restart_delay_s = 0.1
        yield fleet


def gamma(fleet: Fleet, index: int = 0, **options: Any) -> MinerConfig:
    return MinerConfig(url=fleet.miners[index].url, name=f"gamma{index}", **options)


async def test_restart_is_confirmed_by_the_uptime(broker: Any, base_topic: str) -> None:
    async with sim() as fleet, stack(broker, base_topic, fleet, [gamma(fleet)]) as seen:
        miner = fleet.axeos("axeos-0")
        result = await seen.send("gamma0", "restart")
        assert result.status == "ok", result.message
        assert result.message.startswith("restarted")
        assert miner.restarts == 1
        assert miner.control_state()["uptime_s"] < 10  # booted again during the test
        assert (result.requested, result.by, result.action) == (
            result.requested, "test", "restart")


async def test_pause_resume_identify(broker: Any, base_topic: str) -> None:
    async with sim() as fleet, stack(broker, base_topic, fleet, [gamma(fleet)]) as seen:
        miner = fleet.axeos("axeos-0")
        paused = await seen.send("gamma0", "pause")
        assert (paused.status, paused.message) == ("ok", "paused")
        assert miner.control_state()["paused"] is True
        resumed = await seen.send("gamma0", "resume")
        assert (resumed.status, resumed.message) == ("ok", "resumed")
        assert miner.control_state()["paused"] is False
        identified = await seen.send("gamma0", "identify")
        assert identified.status == "ok"
        assert miner.control_state()["identified_at"] is not None


async def test_pause_needs_v2_14(broker: Any, base_topic: str) -> None:
    async with sim(version="v2.11.0") as fleet, stack(broker, base_topic, fleet,
                                                      [gamma(fleet)]) as seen:
        result = await seen.send("gamma0", "pause")
        assert result.status == "unsupported"
        assert "v2.14" in result.message and "v2.11.0" in result.message
        assert fleet.axeos("axeos-0").control_state()["paused"] is False


async def test_settings_and_configure_within_range(broker: Any, base_topic: str) -> None:
    async with sim() as fleet, stack(broker, base_topic, fleet, [gamma(fleet)]) as seen:
        miner = fleet.axeos("axeos-0")
        read = await seen.send("gamma0", "settings")
        assert read.status == "ok" and read.settings is not None and read.limits is not None
        assert (read.settings.frequency_mhz, read.settings.core_voltage_mv) == (600, 1150)
        assert read.limits.frequency_mhz is not None
        assert (read.limits.frequency_mhz.min, read.limits.frequency_mhz.max) == (400, 625)
        # temp_target_c is what it is already: not written
        change = MinerSettings(frequency_mhz=575, core_voltage_mv=1200,
                               temp_target_c=read.settings.temp_target_c)
        result = await seen.send("gamma0", "configure", settings=change)
        assert result.status == "ok", result.message
        assert result.changed == ["frequency_mhz", "core_voltage_mv"]
        assert result.before is not None and result.before.frequency_mhz == 600
        assert result.after is not None and result.after.frequency_mhz == 575
        state = miner.control_state()
        assert (state["settings"]["frequency_mhz"], state["settings"]["core_voltage_mv"]) == (
            575, 1200)
        assert state["writes"] == 1
        assert state["last_patch"] == {"frequency": 575, "coreVoltage": 1200}
        again = await seen.send("gamma0", "configure", settings=change)
        assert (again.status, again.message, again.changed) == ("ok", "nothing to change", [])
        assert miner.control_state()["writes"] == 1  # nothing sent the second time


async def test_configure_fans_and_pools(broker: Any, base_topic: str) -> None:
    async with sim() as fleet, stack(broker, base_topic, fleet, [gamma(fleet)]) as seen:
        miner = fleet.axeos("axeos-0")
        pool = Pool(url="stratum+tcp://solo.example:3333", user="me.w1", password="secret")
        change = MinerSettings(fan_mode="manual", fan_percent=80,
                               pools=Pools(fallback=pool))
        result = await seen.send("gamma0", "configure", settings=change)
        assert result.status == "ok", result.message
        assert result.changed == ["fan_mode", "fan_percent", "pools.fallback"]
        patch = miner.control_state()["last_patch"]
        assert patch == {"autofanspeed": 0, "manualFanSpeed": 80,
                         "fallbackStratumURL": "solo.example", "fallbackStratumPort": 3333,
                         "fallbackStratumUser": "me.w1", "fallbackStratumPassword": "secret"}
        assert miner.control_state()["settings"]["pools"]["fallback"]["password"] == "secret"
        # the password goes to the miner and nowhere else
        assert all(b"secret" not in m.payload for m in seen.messages)
        assert result.after is not None and result.after.pools is not None
        assert result.after.pools.fallback == Pool(url=pool.url, user="me.w1")


async def test_out_of_range_is_refused_and_nothing_sent(broker: Any, base_topic: str) -> None:
    async with sim() as fleet, stack(broker, base_topic, fleet, [gamma(fleet)]) as seen:
        miner = fleet.axeos("axeos-0")
        result = await seen.send("gamma0", "configure",
                                 settings=MinerSettings(frequency_mhz=700, core_voltage_mv=1500))
        assert result.status == "refused"
        assert "400-625 MHz" in result.message and "1000-1250 mV" in result.message
        assert "BM1370" in result.message
        assert result.limits is not None and result.limits.frequency_mhz is not None
        assert result.limits.frequency_mhz.max == 625
        assert miner.control_state()["patch_requests"] == 0


async def test_overclock_widens_to_the_bound(broker: Any, base_topic: str) -> None:
    async with sim() as fleet, stack(broker, base_topic, fleet, [gamma(fleet)],
                                     allow_overclock=True) as seen:
        result = await seen.send("gamma0", "configure",
                                 settings=MinerSettings(frequency_mhz=700))
        assert result.status == "ok", result.message
        assert result.limits is not None and result.limits.overclock is True
        refused = await seen.send("gamma0", "configure",
                                  settings=MinerSettings(frequency_mhz=1100))
        assert refused.status == "refused" and "350-1000 MHz" in refused.message


async def test_the_firmware_options_narrow_the_range(broker: Any, base_topic: str) -> None:
    async with sim() as fleet:
        miner = fleet.axeos("axeos-0")
        miner.quirks.frequency_options = (400, 490, 525, 550)
        async with stack(broker, base_topic, fleet, [gamma(fleet)]) as seen:
            result = await seen.send("gamma0", "configure",
                                     settings=MinerSettings(frequency_mhz=600))
            assert result.status == "refused"
            assert "400-550 MHz" in result.message and "narrowed" in result.message
            assert miner.control_state()["patch_requests"] == 0
            fine = await seen.send("gamma0", "configure",
                                   settings=MinerSettings(frequency_mhz=550))
            assert fine.status == "ok", fine.message


async def test_a_write_that_does_not_take_is_unverified(broker: Any, base_topic: str) -> None:
    async with sim() as fleet, stack(broker, base_topic, fleet, [gamma(fleet)],
                                     timeout_s=1.0) as seen:
        miner = fleet.axeos("axeos-0")
        miner.quirks.ignore_writes = True
        result = await seen.send("gamma0", "configure",
                                 settings=MinerSettings(frequency_mhz=550, core_voltage_mv=1150))
        assert result.status == "unverified"
        assert "frequency_mhz 550 (reads 600)" in result.message
        assert result.changed == ["frequency_mhz"]
        assert miner.control_state()["writes"] == 1


async def test_otp_is_sent_when_configured(broker: Any, base_topic: str) -> None:
    async with sim(axeos=2, otp_secret=OTP_SECRET) as fleet:
        miners = [gamma(fleet, 0), gamma(fleet, 1, otp_secret=OTP_SECRET)]
        async with stack(broker, base_topic, fleet, miners) as seen:
            without = await seen.send("gamma0", "identify")
            assert without.status == "failed"
            assert "OTP" in without.message and "otp_secret" in without.message
            assert pyotp.TOTP(OTP_SECRET).now()  # the secret is a valid one
            with_secret = await seen.send("gamma1", "identify")
            assert with_secret.status == "ok", with_secret.message
            assert fleet.axeos("axeos-1").control_state()["identified_at"] is not None
            assert fleet.axeos("axeos-0").control_state()["identified_at"] is None


async def test_control_disabled_sends_nothing(broker: Any, base_topic: str) -> None:
    async with sim() as fleet, stack(broker, base_topic, fleet, [gamma(fleet)],
                                     enabled=False) as seen:
        miner = fleet.axeos("axeos-0")
        for action in ("restart", "pause"):
            result = await seen.send("gamma0", action)
            assert result.status == "disabled" and "[control] enabled" in result.message
        result = await seen.send("gamma0", "configure",
                                 settings=MinerSettings(frequency_mhz=550))
        assert result.status == "disabled"
        state = miner.control_state()
        assert (state["restarts"], state["patch_requests"], state["paused"]) == (0, 0, False)


async def test_stale_and_unknown_commands(broker: Any, base_topic: str) -> None:
    async with sim() as fleet, stack(broker, base_topic, fleet, [gamma(fleet)]) as seen:
        stale = await seen.send("gamma0", "restart",
                                ts=datetime.now(UTC) - timedelta(days=1))
        assert stale.status == "refused" and stale.message.startswith("stale command")
        assert fleet.axeos("axeos-0").restarts == 0
        unknown = await seen.send("nosuchminer", "restart")
        assert unknown.status == "unknown" and "nosuchminer" in unknown.message


async def test_response_topic_and_correlation_data(broker: Any, base_topic: str) -> None:
    async with sim() as fleet, stack(broker, base_topic, fleet, [gamma(fleet)]) as seen:
        reply_to = f"{base_topic}/replies/tester"
        result = await seen.send("gamma0", "identify", reply_to=reply_to,
                                 correlation=b"corr-1")
        assert result.status == "ok"

        def replies() -> list[aiomqtt.Message]:
            return [m for m in seen.messages if m.topic.value == reply_to]

        deadline = asyncio.get_running_loop().time() + 5
        while not replies():
            assert asyncio.get_running_loop().time() < deadline, "no reply"
            await asyncio.sleep(0.02)
        [reply] = replies()
        assert schemas.decode(reply.payload, CommandResult) == result
        assert reply.properties is not None
        assert reply.properties.CorrelationData == b"corr-1"  # type: ignore[attr-defined]
        assert reply.retain is False

        elsewhere = f"{base_topic}/elsewhere/tester"
        other = await seen.send("gamma0", "identify", reply_to=elsewhere, correlation=b"2")
        assert other.status == "ok"  # carried out, answered on the result topic only
        later = await seen.send("gamma0", "settings")  # answered after the one before
        assert later.status == "ok"
        assert not [m for m in seen.messages if m.topic.value == elsewhere]
        assert seen.collector.commands.rejects.counts["response_topic"] == 1


async def test_hostile_commands_are_rejected_and_survived(broker: Any,
                                                          base_topic: str) -> None:
    async with sim() as fleet, stack(broker, base_topic, fleet, [gamma(fleet)]) as seen:
        listener = seen.collector.listener
        before = listener.rejects.total
        now = format_ts(datetime.now(UTC))
        good = {"id": "h1", "miner_id": "gamma0", "action": "restart", "by": "x", "ts": now}
        hostile = [
            b"{not json",
            b"\xff\xfe\x00garbage",
            b"[" * 10_000 + b"]" * 10_000,
            b"x" * 100_000,
            json.dumps({**good, "action": "selfdestruct"}).encode(),
            json.dumps({**good, "miner_id": "someoneelse"}).encode(),
            json.dumps({**good, "id": "../../etc"}).encode(),
            json.dumps({**good, "ts": "yesterday"}).encode(),
            json.dumps({**good, "settings": {"frequency_mhz": 500}}).encode(),
            json.dumps({**good, "action": "configure",
                        "settings": {"frequency_mhz": "fast"}}).encode(),
            json.dumps({**good, "action": "configure",
                        "settings": {"frequency_mhz": 500, "exploit": 1}}).encode(),
        ]
        for payload in hostile:
            await seen.publish("gamma0", payload)
        deadline = asyncio.get_running_loop().time() + 5
        while listener.rejects.total < before + len(hostile):
            assert asyncio.get_running_loop().time() < deadline, listener.rejects.counts
            await asyncio.sleep(0.02)
        # a retained command is never carried out, now or at the next connect
        await seen.publish("gamma0", json.dumps({**good, "id": "r1"}).encode(), retain=True)
        result = await seen.send("gamma0", "identify")
        assert result.status == "ok"  # still listening and carrying out commands
        assert fleet.axeos("axeos-0").restarts == 0
        assert not seen.results("h1") and not seen.results("r1")
        await seen.publish("gamma0", b"", retain=True)  # clear it for the broker's sake


async def test_commands_to_one_miner_run_in_order(broker: Any, base_topic: str) -> None:
    async with sim() as fleet, stack(broker, base_topic, fleet, [gamma(fleet)]) as seen:
        ids = []
        for frequency in (500, 525, 550):
            command = schemas.Command(
                id=f"o{frequency}", miner_id="gamma0", action="configure", by="test",
                ts=format_ts(datetime.now(UTC)),
                settings=MinerSettings(frequency_mhz=frequency))
            ids.append(command.id)
            await seen.publish("gamma0", msgspec.json.encode(command))
        results = [await seen.result(command_id) for command_id in ids]
        assert [r.status for r in results] == ["ok", "ok", "ok"]
        assert [r.after.frequency_mhz for r in results if r.after] == [500, 525, 550]
        assert fleet.axeos("axeos-0").control_state()["settings"]["frequency_mhz"] == 550
