"""Control of CGMiner-API miners: the privileged API (restart, switchpool), a stock
Antminer's web CGI reboot (end to end over MQTT), and Avalon's ascset, against the
simulator's S19 and, for Avalon's own replies, a fake replaying Nano3s fixtures."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import pytest

from minerwatch.collector.control.antminer import AntminerWebControl
from minerwatch.collector.control.cgminer import AvalonControl, CgminerControl
from minerwatch.collector.control.driver import ControlDriver
from minerwatch.collector.control.executor import carry_out
from minerwatch.collector.service import Collector
from minerwatch.shared import schemas
from minerwatch.shared.config import (
    CollectorConfig,
    Config,
    ControlConfig,
    MinerConfig,
    MqttConfig,
)
from minerwatch.shared.schemas import Command, CommandResult, MinerSettings, Pool, Pools
from minerwatch.sim.fleet import CGMinerMiner, Fleet

CONTROL = ControlConfig(enabled=True, timeout_s=2.0, restart_timeout_s=10.0)
USER = "minerwatchsim.cgminer0"


def command(action: str, settings: MinerSettings | None = None) -> Command:
    return Command(id=f"{action}-1", miner_id="s19", action=action,  # type: ignore[arg-type]
                   by="test", ts=schemas.format_ts(datetime.now(UTC)), settings=settings)


@contextlib.asynccontextmanager
async def s19(web: bool = False) -> AsyncIterator[CGMinerMiner]:
    async with Fleet(axeos=0, cgminer=1, seed=9, web=web) as fleet:
        miner = fleet.cgminer("cgminer-0")
        miner.quirks.restart_s = 0.3
        miner.quirks.restart_delay_s = 0.1
        yield miner


@contextlib.asynccontextmanager
async def driver_of(made: ControlDriver) -> AsyncIterator[ControlDriver]:
    try:
        yield made
    finally:
        await made.aclose()


async def test_privileged_restart() -> None:
    async with s19() as miner, driver_of(CgminerControl(miner.host, miner.port, 1.0)) as api:
        result = await carry_out(command("restart"), api, CONTROL)
        assert result.status == "ok", result.message
        assert miner.restarts == 1


async def test_privileged_denied_names_api_allow() -> None:
    async with s19() as miner, driver_of(CgminerControl(miner.host, miner.port, 1.0)) as api:
        miner.quirks.privileged = False
        result = await carry_out(command("restart"), api, CONTROL)
        assert result.status == "failed"
        assert "--api-allow W:127.0.0.1" in result.message
        assert miner.restarts == 0


async def test_switchpool_through_the_pools_setting() -> None:
    async with s19() as miner, driver_of(CgminerControl(miner.host, miner.port, 1.0)) as api:
        read = await carry_out(command("settings"), api, CONTROL)
        assert read.settings is not None and read.settings.pools is not None
        assert read.settings.pools.primary == Pool(
            url="stratum+tcp://pool.minerwatch.test:3333", user=USER)
        assert read.limits is not None and read.limits.frequency_mhz is None
        backup = Pool(url="backup.minerwatch.test:3334", user=USER)
        result = await carry_out(command("configure", MinerSettings(pools=Pools(
            primary=backup))), api, CONTROL)
        assert result.status == "ok", result.message
        assert result.changed == ["pools.primary"]
        assert miner.control_state()["pool_priority"][0] == 1
        unknown = Pool(url="stratum+tcp://elsewhere.test:3333", user=USER)
        refused = await carry_out(command("configure", MinerSettings(pools=Pools(
            primary=unknown))), api, CONTROL)
        assert refused.status == "unsupported" and "only switches" in refused.message
        tuned = await carry_out(command("configure", MinerSettings(frequency_mhz=600)), api,
                                CONTROL)
        assert tuned.status == "unsupported" and "frequency_mhz" in tuned.message
        paused = await carry_out(command("pause"), api, CONTROL)
        assert paused.status == "unsupported"


async def test_avalon_ascset_against_the_simulator() -> None:
    async with s19() as miner, driver_of(AvalonControl(miner.host, miner.port, 1.0)) as api:
        paused = await carry_out(command("pause"), api, CONTROL)
        assert paused.status == "ok", paused.message
        assert miner.control_state()["paused"] is True
        resumed = await carry_out(command("resume"), api, CONTROL)
        assert resumed.status == "ok", resumed.message
        assert miner.control_state()["paused"] is False
        restarted = await carry_out(command("restart"), api, CONTROL)
        assert restarted.status == "ok", restarted.message
        assert miner.restarts == 1


async def test_avalon_nano3s_replies(cgminer_miner: Callable[..., Any],
                                     load_fixture: Callable[[str], bytes]) -> None:
    """The Nano3s says whether it is in standby (estats SoftOFF): pause is verified."""
    replies = {name: load_fixture(f"avalon_nano3s_25021401_{name}.json")
               for name in ("summary", "pools", "version")}
    replies["estats"] = load_fixture("avalon_nano3s_25021401_estats_softoff.json")
    replies["ascset"] = load_fixture("avalon_nano3s_25021401_ascset_ok.json")
    fake = await cgminer_miner(replies)
    async with driver_of(AvalonControl("127.0.0.1", fake.port, 1.0)) as api:
        result = await carry_out(command("pause"), api, CONTROL)
        assert (result.status, result.message) == ("ok", "paused")
        [ascset] = [r for r in fake.requests if r.get("command") == "ascset"]
        device, verb, when = ascset["parameter"].split(",")
        assert (device, verb) == ("0", "softoff")
        assert when.startswith("1:") and abs(int(when[2:]) - datetime.now(UTC).timestamp()) < 60
        read = await api.read()
        assert read.facts.device_model == "Nano3s" and read.uptime_s == 133923
        assert read.settings.pools is not None and read.settings.pools.primary is not None
        assert read.settings.pools.primary.url == "stratum+tcp://fr1.letsmine.it:3339"
        fake.replies["ascset"] = load_fixture("avalon_nano3s_25021401_ascset_denied.json")
        denied = await carry_out(command("resume"), api, CONTROL)
        assert denied.status == "failed" and "--api-allow W:127.0.0.1" in denied.message


async def test_antminer_web_reboot_without_password_is_unsupported() -> None:
    async with s19(web=True) as miner:
        assert miner.web_port
        api = AntminerWebControl(miner.host, miner.port, miner.web_port, 1.0, user="root",
                                 password=None)
        async with driver_of(api):
            result = await carry_out(command("restart"), api, CONTROL)
            assert result.status == "unsupported"
            assert "antminer_password" in result.message
            wrong = AntminerWebControl(miner.host, miner.port, miner.web_port, 1.0,
                                       user="root", password="wrong")
            async with driver_of(wrong):
                refused = await carry_out(command("restart"), wrong, CONTROL)
            assert refused.status == "failed" and "refused" in refused.message
            for action in ("pause", "identify"):
                assert (await carry_out(command(action), api, CONTROL)).status == "unsupported"
        assert miner.restarts == 0


async def test_antminer_web_reboot_over_mqtt(broker: Any, base_topic: str) -> None:
    async with s19(web=True) as miner:
        assert miner.web_port
        config = Config(
            mqtt=MqttConfig(url=broker.url, base_topic=base_topic, reconnect_min_s=0.1),
            collector=CollectorConfig(
                miners=[MinerConfig(url=miner.url, name="s19", web_port=miner.web_port)],
                poll_interval_s=0.5, timeout_s=1.0),
            control=ControlConfig(enabled=True, restart_timeout_s=10.0,
                                  antminer_password="root"),
        )
        collector = Collector(config)
        running = asyncio.create_task(collector.run())
        try:
            async with aiomqtt.Client(broker.host, broker.port,
                                      protocol=aiomqtt.ProtocolVersion.V5) as client:
                await client.subscribe(f"{base_topic}/miners/s19/command/result", qos=1)
                deadline = asyncio.get_running_loop().time() + 10
                # until the collector listens and knows the S19 as an Antminer (first poll)
                while collector.commands.client is None or not collector.fleet.slots[0].info:
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.02)
                await client.publish(f"{base_topic}/miners/s19/command",
                                     schemas.encode(command("restart")), qos=1)
                async with asyncio.timeout(15):
                    async for message in client.messages:
                        result = schemas.decode(message.payload,
                                                CommandResult)
                        break
        finally:
            running.cancel()
            with contextlib.suppress(BaseException):
                await running
        assert result.status == "ok", result.message
        assert result.message.startswith("restarted")
        assert miner.restarts == 1 and miner.web_requests >= 1


@pytest.mark.parametrize("reply", [b'{"STATUS":"RESTART"}', b""])
async def test_restart_reply_of_a_miner_that_quits(cgminer_miner: Callable[..., Any],
                                                   reply: bytes) -> None:
    """cgminer answers restart with a bare STATUS, or quits before answering at all."""
    fake = await cgminer_miner({"restart": reply})
    async with driver_of(CgminerControl("127.0.0.1", fake.port, 1.0)) as api:
        await api.act("restart")
    assert [r.get("command") for r in fake.requests] == ["restart"]
