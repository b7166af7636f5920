"""Antminer stock firmware: S9 (chains 6-8, malformed stats), S19 Pro, S19j Pro new_api."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from minerwatch.collector.drivers.cgminer.antminer import parse_stats, parse_version
from minerwatch.collector.drivers.cgminer.driver import CgminerDriver
from minerwatch.collector.drivers.cgminer.families import ANTMINER
from minerwatch.collector.drivers.cgminer.transport import decode_reply

StartServer = Callable[..., Awaitable[Any]]
LoadFixture = Callable[[str], bytes]
TS = "2026-11-22T10:00:00.123Z"


def s9_replies(load_fixture: LoadFixture) -> dict[str, bytes]:
    return {
        "version": load_fixture("antminer_s9_bmminer_version.json"),
        "summary": load_fixture("antminer_s9_bmminer_summary.json"),
        "stats": load_fixture("antminer_s9_bmminer_stats_malformed.txt"),
        "pools": load_fixture("antminer_s9_bmminer_pools.json"),
    }


@pytest.mark.parametrize("joins", [False, True])
async def test_s9_end_to_end(
    cgminer_miner: StartServer, load_fixture: LoadFixture, joins: bool
) -> None:
    miner = await cgminer_miner(s9_replies(load_fixture), joins=joins)
    driver = CgminerDriver("127.0.0.1", miner.port, timeout_s=2.0)
    reading = await driver.fetch()
    assert driver.quirks.family is ANTMINER
    sample = reading.sample("s9", TS)
    assert sample.hashrate_ths == pytest.approx(13.61248)  # "GHS 5s" string, GH/s
    assert sample.expected_hashrate_ths == pytest.approx(13.5)  # total_rateideal, no unit: GH
    assert sample.temp_c == 81.0  # hottest chip of chains 6-8 (temp2_8)
    assert sample.fan_rpm == [5880, 6120]  # fan3 and fan6; empty slots read 0
    assert sample.power_w is None and sample.efficiency_jth is None  # stock: no power
    assert (sample.shares_accepted, sample.shares_rejected) == (11872, 9)
    assert sample.best_diff == pytest.approx(52.1e6)  # "52.1M"
    assert sample.uptime_s == 81234
    # pool 0 is dead; the active one has no scheme in its URL
    assert sample.pool_url == "stratum+tcp://stratum.antpool.com:3333"
    assert sample.is_mining is True
    assert (reading.make, reading.model) == ("Antminer", "S9")
    assert reading.firmware == "CGMiner 4.9.0 (Fri Aug 25 17:28:57 CST 2017)"


def test_s9_stats_is_malformed_and_repaired(load_fixture: LoadFixture) -> None:
    raw = load_fixture("antminer_s9_bmminer_stats_malformed.txt")
    assert b'"Type":"Antminer S9"}{"STATS":0' in raw
    assert len(decode_reply(raw)["STATS"]) == 2


def test_s19_new_api_stats(load_fixture: LoadFixture) -> None:
    details = parse_stats(decode_reply(load_fixture("antminer_s19_new_api_stats.json")))
    assert details.hashrate_ths == pytest.approx(69.40218)  # rate_5s in GH/s
    assert details.expected_hashrate_ths == pytest.approx(104.0)  # rate_ideal
    assert details.temp_c == 80.0  # hottest temp_chip; the dead board's zeros ignored
    assert details.fan_rpm == [5400, 5460, 5340, 5400]
    assert (details.identity.make, details.identity.model) == ("Antminer", "S19j Pro")


@pytest.mark.parametrize(
    ("stats", "temp", "fans"),
    [
        # dash-joined strings; a negative value doubles the dash
        ({"temp_chip1": "2--1-20-22", "temp_pcb1": "40-41"}, 22.0, None),
        # boards only when no chip temperature is reported
        ({"temp1": 55, "temp2": 57, "temp3": 0}, 57.0, None),
        # unpopulated chains read 0 / -64; impossible readings are not the hottest
        ({"temp2_1": 0, "temp2_2": -64, "temp2_3": 255, "temp2_4": 71}, 71.0, None),
        ({"fan1": "0", "fan2": "6000", "fan10": 5900, "fan3": -1}, None, [6000, 5900]),
    ],
)
def test_stats_quirks(stats: dict[str, Any], temp: float | None, fans: list[int] | None) -> None:
    details = parse_stats({"STATS": [{"Type": "Antminer S19"}, stats]})
    assert details.temp_c == temp
    assert details.fan_rpm == fans


def test_version_identity(load_fixture: LoadFixture) -> None:
    identity = parse_version(decode_reply(load_fixture("antminer_s19pro_bmminer_version.json")))
    assert (identity.make, identity.model) == ("Antminer", "S19 Pro")
    assert identity.firmware == "BMMiner 1.0.0 (Fri Jun  9 09:42:57 CST 2023)"


STATS_WITHOUT_SENSORS = (b'{"STATUS":[{"STATUS":"S","Msg":"CGMiner stats"}],'
                         b'"STATS":[{"BMMiner":"1.0.0","Type":"Antminer S19j Pro"},'
                         b'{"STATS":0,"Elapsed":172800,"GHS 5s":"69402.18","GHS av":68998.04}],'
                         b'"id":1}')


async def serve_by_api(replies: dict[str, bytes], new_api_stats: bytes,
                       asked: list[dict[str, Any]]) -> asyncio.Server:
    """A cgminer stand-in that answers ``stats`` differently when ``new_api`` is set."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.read(4096))
            asked.append(request)
            command = request["command"]
            if command == "stats" and request.get("new_api"):
                reply = new_api_stats
            elif "+" in command:
                reply = b"{" + b",".join(f'"{c}":['.encode() + replies[c] + b"]"
                                         for c in command.split("+")) + b"}"
            else:
                reply = replies[command]
            writer.write(reply + b"\x00")
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("richer", ["has sensors", "has none", "is refused"])
async def test_stats_without_sensors_tries_new_api_once(
    load_fixture: LoadFixture, s19_replies: dict[str, bytes], richer: str
) -> None:
    replies = {**s19_replies, "stats": STATS_WITHOUT_SENSORS}
    richer_has_sensors = richer == "has sensors"
    new_api = {
        "has sensors": load_fixture("antminer_s19_new_api_stats.json"),
        "has none": b'{"STATUS":{"STATUS":"S"},"STATS":[{"rate_5s":1,"rate_unit":"GH/s"}]}',
        "is refused": b'{"STATUS":[{"STATUS":"E","Code":14,"Msg":"Invalid command"}]}',
    }[richer]
    asked: list[dict[str, Any]] = []
    server = await serve_by_api(replies, new_api, asked)
    driver = CgminerDriver("127.0.0.1", server.sockets[0].getsockname()[1], timeout_s=2.0)
    try:
        readings = [await driver.fetch() for _ in range(4)]
    finally:
        server.close()
    assert readings[0].temp_c is None and readings[0].fan_rpm == []
    stats_asked = [bool(r.get("new_api")) for r in asked if "stats" in r["command"]]
    if richer_has_sensors:
        assert [r.temp_c for r in readings[1:]] == [80.0] * 3
        assert readings[3].fan_rpm == [5400, 5460, 5340, 5400]
        assert stats_asked == [False, True, True, True]  # kept from then on
    else:
        assert all(r.temp_c is None for r in readings)
        assert stats_asked == [False, True, False, False]  # tried once, then plain again
    assert readings[3].hashrate_ths == pytest.approx(109.87654)  # the summary's, always
