"""Whatsminer (btminer): MH/s, Power, chip temperatures, fans in/out, STATUS as a string."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from minerwatch.collector.drivers.cgminer.driver import CgminerDriver
from minerwatch.collector.drivers.cgminer.families import WHATSMINER, family_of
from minerwatch.collector.drivers.cgminer.replies import build_reading, parse_summary
from minerwatch.collector.drivers.cgminer.transport import decode_reply
from minerwatch.collector.drivers.cgminer.whatsminer import model_name
from minerwatch.collector.drivers.cgminer.whatsminer import parse_summary as wm_summary

StartServer = Callable[..., Awaitable[Any]]
LoadFixture = Callable[[str], bytes]
TS = "2026-11-22T10:00:00.123Z"
M30S = "whatsminer_m30s+_20210322"


def m30s_replies(load_fixture: LoadFixture) -> dict[str, bytes]:
    # no "stats": btminer does not know it (the stand-in answers Invalid command)
    return {command: load_fixture(f"{M30S}_{command}.json")
            for command in ("version", "summary", "devdetails", "pools")}


@pytest.mark.parametrize("joins", [False, True])
async def test_m30s_plus_end_to_end(
    cgminer_miner: StartServer, load_fixture: LoadFixture, joins: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    miner = await cgminer_miner(m30s_replies(load_fixture), joins=joins)
    driver = CgminerDriver("127.0.0.1", miner.port, timeout_s=2.0)
    with caplog.at_level("WARNING"):
        reading = await driver.fetch()
        again = await driver.fetch()
    assert driver.quirks.family is WHATSMINER  # its version error names it
    sample = reading.sample("m30s", TS)
    assert sample.hashrate_ths == pytest.approx(101.20329548)  # "MHS 5s", MH/s
    assert sample.expected_hashrate_ths == pytest.approx(100.347)  # "Factory GHS"
    assert sample.power_w == 3344.0
    assert sample.efficiency_jth == pytest.approx(3344 / 101.20329548)
    assert sample.temp_c == 72.0  # Chip Temp Max reads 0.0 on this firmware: Temperature
    assert sample.fan_rpm == [4860, 4830]  # in, out
    assert (sample.shares_accepted, sample.shares_rejected) == (148655, 37)
    assert sample.best_diff == 3111029565.0
    assert sample.uptime_s == 394368  # Elapsed (the miner), not Uptime (the controller)
    assert sample.pool_url == "stratum+tcp://btc.viabtc.io:3333"
    assert sample.is_mining is True
    assert (reading.make, reading.model, reading.firmware) == (
        "Whatsminer", "M30S+", "20210322.22.REL")
    assert reading.mac == "C6:07:20:00:1A:2B"
    assert (again.model, again.mac) == ("M30S+", "C6:07:20:00:1A:2B")
    commands = [r["command"] for r in miner.requests]
    assert "stats" not in commands and commands.count("devdetails") == 1
    assert not [r for r in caplog.records if "failed" in r.getMessage()]


def test_status_string_and_msg_object_with_btminer_malformations(
    load_fixture: LoadFixture,
) -> None:
    raw = load_fixture("whatsminer_m50s_20240321_summary_msg_malformed.txt")
    assert b'""temp0"' in raw and b",}" in raw  # really malformed
    reply = decode_reply(raw + b"\x00")
    reading = build_reading(parse_summary(reply), [wm_summary(reply)])
    assert reading.hashrate_ths == pytest.approx(123.107336)  # no "MHS 5s": "MHS 1m"
    assert reading.temp_c == 101.25  # Chip Temp Max, measured on this one
    assert reading.power_w == 3593.0
    assert reading.best_diff == pytest.approx(12.5e9)
    assert reading.firmware == "20240321.21.REL"
    assert family_of(reply) is WHATSMINER


def test_version_error_names_the_family(load_fixture: LoadFixture) -> None:
    error = decode_reply(load_fixture(f"{M30S}_version.json"), check=False)
    assert family_of(error) is WHATSMINER


@pytest.mark.parametrize(
    ("model", "expected"),
    [("M30S+V40", "M30S+"), ("M31SV10", "M31S"), ("M50VH50", "M50"), ("M30S++VG30", "M30S++"),
     ("M60S", "M60S"), ("", None), (None, None)],
)
def test_model_names(model: object, expected: str | None) -> None:
    assert model_name(model) == expected


async def test_summary_alone_tells_a_whatsminer_whose_version_says_nothing(
    cgminer_miner: StartServer, load_fixture: LoadFixture
) -> None:
    replies = m30s_replies(load_fixture)
    replies["version"] = b'{"STATUS":[{"STATUS":"S","Msg":"versions"}],"VERSION":[{}]}'
    miner = await cgminer_miner(replies)
    driver = CgminerDriver("127.0.0.1", miner.port, timeout_s=2.0)
    reading = await driver.fetch()
    assert driver.quirks.family is WHATSMINER
    assert (reading.temp_c, reading.power_w, reading.model) == (72.0, 3344.0, "M30S+")
