"""Avalon (Canaan): estats ``MM ID0`` Key[value] string, ``MHS 30s``, impossible sensors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from minerwatch.collector.drivers.cgminer.avalon import module_fields, parse_estats, parse_version
from minerwatch.collector.drivers.cgminer.driver import CgminerDriver
from minerwatch.collector.drivers.cgminer.families import AVALON
from minerwatch.collector.drivers.cgminer.transport import decode_reply

StartServer = Callable[..., Awaitable[Any]]
LoadFixture = Callable[[str], bytes]
TS = "2026-11-22T10:00:00.123Z"
NANO3S = "avalon_nano3s_25021401"


def nano3s_replies(load_fixture: LoadFixture) -> dict[str, bytes]:
    return {command: load_fixture(f"{NANO3S}_{command}.json")
            for command in ("version", "summary", "estats", "pools")}


@pytest.mark.parametrize("joins", [False, True])
async def test_nano3s_end_to_end(
    cgminer_miner: StartServer, load_fixture: LoadFixture, joins: bool
) -> None:
    miner = await cgminer_miner(nano3s_replies(load_fixture), joins=joins)
    driver = CgminerDriver("127.0.0.1", miner.port, timeout_s=2.0)
    reading = await driver.fetch()
    await driver.fetch()
    assert driver.quirks.family is AVALON
    sample = reading.sample("nano", TS)
    assert sample.hashrate_ths == pytest.approx(6.21435111)  # "MHS 30s", MH/s
    assert sample.temp_c == 88.0  # TMax; ITemp[-273] is "no sensor"
    assert sample.fan_rpm == [2460]  # Fan1 RPM; FanR is a percentage
    assert sample.power_w == 133.0  # PS[...] 7th value
    assert sample.efficiency_jth == pytest.approx(133 / 6.21435111)
    assert (sample.shares_accepted, sample.shares_rejected) == (2612, 2)
    assert sample.best_diff == 224199508.0
    assert sample.uptime_s == 133923
    assert sample.pool_url == "stratum+tcp://fr1.letsmine.it:3339"
    assert sample.is_mining is True
    assert (reading.make, reading.model, reading.firmware) == (
        "Avalon", "Nano3s", "25021401_56abae7")
    assert reading.mac == "E0:E1:A9:3F:30:53"
    assert "stats" not in [r["command"] for r in miner.requests]


def test_module_string_values_hold_spaces_and_lists() -> None:
    fields = module_fields("Ver[Nano3s-2502] SYSTEMSTATU[Work: In Work, Hash Board: 1 ] "
                           "PS[0 0 27541 4 0 3756 133] FanR[49%] FACOPTS0[] TMax[78]")
    assert fields == {"Ver": "Nano3s-2502", "SYSTEMSTATU": "Work: In Work, Hash Board: 1",
                      "PS": "0 0 27541 4 0 3756 133", "FanR": "49%", "FACOPTS0": "",
                      "TMax": "78"}


def test_a_series_summary_key_wallpower_and_several_fans() -> None:
    reply = {"STATS": [{"STATS": 0, "ID": "AVA100", "MM ID0:Summary":
                        "Ver[1246-83-21042001_4ec6bb0_61407fa] Temp[31] TMax[-273] "
                        "MTmax[77 81 79] Fan1[4275] Fan2[4282] FanR[49%] "
                        "PS[0 1209 1187 297 3526 1188 3731] WALLPOWER[3731] "
                        "GHSspd[85241.07] SoftOFF[0]"}]}
    details = parse_estats(reply)
    assert details.temp_c == 81.0  # TMax impossible: the hottest module temperature
    assert details.fan_rpm == [4275, 4282]
    assert details.power_w == 3731.0
    assert details.hashrate_ths == pytest.approx(85.24107)
    assert details.identity.model == "1246-83"
    assert details.paused is False


def test_standby_is_not_mining(load_fixture: LoadFixture) -> None:
    raw = load_fixture(f"{NANO3S}_estats.json").replace(b"SoftOFF[0]", b"SoftOFF[1]")
    assert parse_estats(decode_reply(raw)).paused is True


@pytest.mark.parametrize(
    "mm",
    ["", "garbage without brackets", "TMax[hot] Fan1[-5] PS[x y] GHSspd[nan]"],
)
def test_unreadable_module_strings_give_nothing_not_errors(mm: str) -> None:
    details = parse_estats({"STATS": [{"MM ID0": mm}]})
    assert (details.temp_c, details.fan_rpm, details.power_w, details.hashrate_ths) == (
        None, None, None, None)


def test_version_identity(load_fixture: LoadFixture) -> None:
    identity = parse_version(decode_reply(load_fixture(f"{NANO3S}_version.json")))
    assert (identity.make, identity.model, identity.firmware, identity.mac) == (
        "Avalon", "Nano3s", "25021401_56abae7", "E0:E1:A9:3F:30:53")
    product_only = parse_version({"VERSION": [{"PROD": "AvalonMiner 1246", "LVERSION": "x"}]})
    assert product_only.model == "1246"
