"""The pure parts of control: AxeOS JSON <-> MinerSettings, comparing settings, CGMiner
pools, the checks before a command runs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from minerwatch.collector.control.axeos import (
    facts_of,
    manual_fan_key,
    patch_body,
    read_back_of,
    settings_of,
)
from minerwatch.collector.control.cgminer import configured_pools, pools_of, switch_target
from minerwatch.collector.control.driver import ControlError
from minerwatch.collector.control.drivers import control_kind
from minerwatch.collector.control.executor import precheck
from minerwatch.collector.control.settings import differences, not_taken, without_passwords
from minerwatch.shared.config import ControlConfig
from minerwatch.shared.schemas import Command, MinerSettings, Pool, Pools, format_ts

LoadJson = Callable[[str], Any]
PUBLIC_POOL = "stratum+tcp://public-pool.io:21496"


def test_settings_of_esp_miner_v2_15(load_json: LoadJson) -> None:
    info = load_json("bitaxe_gamma_v2.15.0_system_info.json")
    settings = settings_of(info)
    assert settings == MinerSettings(
        frequency_mhz=550, core_voltage_mv=1200, fan_mode="auto",
        fan_percent=100,  # manualFanSpeed: the set speed, not the speed now (68.5)
        temp_target_c=60,
        pools=Pools(
            primary=Pool(url=PUBLIC_POOL,
                         user="bc1qexampleexampleexampleexampleexample0.gamma05"),
            fallback=Pool(url="stratum+tcp://solo.ckpool.org:3333",
                          user="bc1qexampleexampleexampleexampleexample0.gamma05")))
    assert settings.pools is not None and settings.pools.primary is not None
    assert settings.pools.primary.password is None  # never read back


def test_settings_of_older_and_forks(load_json: LoadJson) -> None:
    tls = settings_of(load_json("bitaxe_gamma_v2.13.1_system_info.json"))
    assert tls.frequency_mhz == 538  # 537.5 MHz rounds to a whole MHz
    assert tls.pools is not None and tls.pools.primary is not None
    assert tls.pools.primary.url == "stratum+ssl://stratum.braiins.com:3334"  # stratumTLS 1
    old = settings_of(load_json("bitaxe_gamma_v2.10.2_system_info.json"))
    assert (old.fan_mode, old.fan_percent) == ("auto", 66)  # no manualFanSpeed: fanspeed
    nerd = settings_of(load_json("nerdqaxe_plusplus_v1.0.36_fallback_system_info.json"))
    assert nerd.fan_mode == "auto"  # autofanspeed 2: NerdQAxe's PID mode
    assert nerd.frequency_mhz is None  # it does not say
    assert nerd.pools is not None and nerd.pools.fallback is not None
    assert nerd.pools.fallback.url == "stratum+tcp://solo.ckpool.org:3333"  # a whole URL
    manual = settings_of({"hashRate": 1, "autofanspeed": False, "fanspeed": 40.4})
    assert (manual.fan_mode, manual.fan_percent, manual.pools) == ("manual", 40, None)


def test_odd_pool_strings_never_spoil_the_settings() -> None:
    info = {"hashRate": 1, "stratumURL": "pool.example", "stratumPort": 3333,
            "stratumUser": "bad\x01user", "fallbackStratumURL": "x" * 300,
            "fallbackStratumPort": 1}
    assert settings_of(info).pools is None


def test_facts_and_read_back(load_json: LoadJson) -> None:
    info = load_json("bitaxe_gamma_v2.15.0_system_info.json")
    asic = load_json("bitaxe_gamma_v2.15.0_system_asic.json")
    facts = facts_of(info, asic)
    assert (facts.asic, facts.device_model, facts.firmware) == ("BM1370", "Gamma", "v2.15.0")
    assert facts.frequency_options == (400, 490, 525, 550, 600, 625)
    assert facts.voltage_options == (1000, 1060, 1100, 1150, 1200, 1250)
    assert (facts.small_cores, facts.asic_count) == (2040, 1)
    # No asic reply and no asicCount: counted from expectedHashrate = MHz x cores x chips.
    assert facts_of(info, {}).asic_count == 1
    nerd = facts_of(load_json("nerdqaxe_plusplus_v1.0.36_fallback_system_info.json"), {})
    assert (nerd.device_model, nerd.asic_count, nerd.frequency_options) == (
        "NerdQAxe++", 4, ())
    back = read_back_of(info, asic)
    assert (back.uptime_s, back.paused) == (2419200, False)
    assert read_back_of(load_json("bitaxe_gamma_v2.11.0_system_info.json"), {}).paused is None


def test_patch_body_names_only_what_changes(load_json: LoadJson) -> None:
    v215 = load_json("bitaxe_gamma_v2.15.0_system_info.json")
    assert patch_body(MinerSettings(frequency_mhz=575, core_voltage_mv=1180), v215) == {
        "frequency": 575, "coreVoltage": 1180}
    assert patch_body(MinerSettings(fan_mode="manual", fan_percent=70), v215) == {
        "autofanspeed": 0, "manualFanSpeed": 70}
    v210 = load_json("bitaxe_gamma_v2.10.2_system_info.json")
    assert manual_fan_key(v210) == "fanspeed"
    assert patch_body(MinerSettings(fan_percent=70, temp_target_c=55), v210) == {
        "fanspeed": 70, "temptarget": 55}
    assert manual_fan_key({"version": "v2.11.0"}) == "manualFanSpeed"
    pool = Pool(url="stratum+ssl://pool.example:4444", user="me.w1", password="x")
    assert patch_body(MinerSettings(pools=Pools(fallback=pool)), v215) == {
        "fallbackStratumURL": "pool.example", "fallbackStratumPort": 4444,
        "fallbackStratumUser": "me.w1", "fallbackStratumPassword": "x",
        "fallbackStratumTLS": 1}
    plain = Pool(url="pool.example:3333", user="me")
    assert patch_body(MinerSettings(pools=Pools(primary=plain)), v210) == {
        "stratumURL": "pool.example", "stratumPort": 3333, "stratumUser": "me"}
    with pytest.raises(ControlError, match="TLS") as raised:
        patch_body(MinerSettings(pools=Pools(primary=pool)), v210)
    assert raised.value.unsupported


def test_differences_and_verification() -> None:
    current = MinerSettings(frequency_mhz=550, core_voltage_mv=1200, fan_mode="auto",
                            pools=Pools(primary=Pool(url=PUBLIC_POOL, user="me")))
    same_pool = Pool(url="public-pool.io:21496", user="me")  # the same pool, written short
    change = MinerSettings(frequency_mhz=575, core_voltage_mv=1200, fan_mode="auto",
                           pools=Pools(primary=same_pool))
    wanted, names = differences(change, current)
    assert names == ["frequency_mhz"]
    assert wanted == MinerSettings(frequency_mhz=575)
    with_password = Pool(url=PUBLIC_POOL, user="me", password="secret")
    wanted, names = differences(MinerSettings(pools=Pools(primary=with_password)), current)
    assert names == ["pools.primary"]  # a given password always counts as a change
    assert not_taken(wanted, current) == []  # and is never checked: it cannot be read
    other = MinerSettings(pools=Pools(fallback=Pool(url="stratum+tcp://b:1", user="me")))
    assert not_taken(other, current) == ["pools.fallback stratum+tcp://b:1 me (reads nothing)"]
    assert not_taken(MinerSettings(frequency_mhz=575), current) == [
        "frequency_mhz 575 (reads 550)"]
    blanked = without_passwords(MinerSettings(pools=Pools(primary=with_password)))
    assert blanked is not None and blanked.pools is not None
    assert blanked.pools.primary == Pool(url=PUBLIC_POOL, user="me")


def test_cgminer_pools_and_switch_targets(load_json: LoadJson) -> None:
    reply = load_json("antminer_s19pro_bmminer_pools.json")
    assert configured_pools(reply) == [
        (0, "stratum+tcp://btc.f2pool.com:3333", "farm01.s19pro01"),
        (1, "stratum+tcp://ss.antpool.com:3333", "farm01.s19pro01")]  # pool 2: no URL
    assert pools_of(reply) == Pools(
        primary=Pool(url="stratum+tcp://btc.f2pool.com:3333", user="farm01.s19pro01"),
        fallback=Pool(url="stratum+tcp://ss.antpool.com:3333", user="farm01.s19pro01"))
    assert switch_target(reply, Pool(url="ss.antpool.com:3333", user="farm01.s19pro01")) == 1
    with pytest.raises(ControlError, match="cannot change a pool's user"):
        switch_target(reply, Pool(url="ss.antpool.com:3333", user="someone.else"))
    with pytest.raises(ControlError, match="not configured on this miner") as raised:
        switch_target(reply, Pool(url="stratum+tcp://new.pool:3333", user="x"))
    assert raised.value.unsupported


def test_control_kind_follows_the_identity() -> None:
    assert control_kind("axeos") == "axeos"
    assert control_kind("cgminer", make="Antminer") == "antminer"
    assert control_kind("cgminer", family="antminer") == "antminer"
    assert control_kind("cgminer", make="Avalon") == "avalon"
    assert control_kind("cgminer", make="Canaan") == "avalon"
    assert control_kind("cgminer", make="Whatsminer", family="whatsminer") == "cgminer"
    assert control_kind("cgminer") == "cgminer"


def _command(ts: datetime) -> Command:
    return Command(id="c1", miner_id="m1", action="restart", by="test", ts=format_ts(ts))


def test_precheck_disabled_stale_and_future() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    on = ControlConfig(enabled=True)
    assert precheck(_command(now - timedelta(seconds=30)), on, now) is None
    disabled = precheck(_command(now), ControlConfig(), now)
    assert disabled is not None and disabled.status == "disabled"
    assert "enabled" in disabled.message
    stale = precheck(_command(now - timedelta(hours=24)), on, now)
    assert stale is not None and stale.status == "refused"
    assert stale.message.startswith("stale command")
    ahead = precheck(_command(now + timedelta(minutes=5)), on, now)
    assert ahead is not None and ahead.status == "refused" and "future" in ahead.message
