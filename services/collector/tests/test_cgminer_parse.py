"""CGMiner replies (Antminer bmminer first) -> normalized Reading; repairs and errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from minerwatch.collector.drivers import PollError
from minerwatch.collector.drivers.cgminer.antminer import parse_stats
from minerwatch.collector.drivers.cgminer.families import parse_version
from minerwatch.collector.drivers.cgminer.replies import (
    Pools,
    Summary,
    build_reading,
    hashrate_ths,
    parse_pools,
    parse_summary,
)
from minerwatch.collector.drivers.cgminer.transport import decode_reply, repair_json

LoadFixture = Callable[[str], bytes]


def s19(load_fixture: LoadFixture, command: str) -> dict[str, Any]:
    return decode_reply(load_fixture(f"antminer_s19pro_bmminer_{command}.json") + b"\x00")


def test_s19pro_stats_fixture_is_really_malformed(load_fixture: LoadFixture) -> None:
    raw = load_fixture("antminer_s19pro_bmminer_stats.json")
    assert b'"Antminer S19 Pro"}{"STATS":0' in raw
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    assert len(decode_reply(raw + b"\x00")["STATS"]) == 2


def test_antminer_s19pro_reading(load_fixture: LoadFixture) -> None:
    reading = build_reading(
        parse_summary(s19(load_fixture, "summary")),
        [parse_stats(s19(load_fixture, "stats"))],
        parse_pools(s19(load_fixture, "pools")),
        parse_version(s19(load_fixture, "version")),
    )
    assert reading.hashrate_ths == pytest.approx(109.87654)  # "GHS 5s", not "GHS av"
    assert reading.expected_hashrate_ths == pytest.approx(110.0)  # total_rateideal in GH
    assert reading.power_w is None  # stock Antminer firmware reports no power
    assert reading.temp_c == 77.0  # hottest chip: temp_chip2 "64-64-76-77"
    assert reading.vr_temp_c is None
    assert reading.fan_rpm == [5760, 5880, 5640, 5760]  # fan5/fan6 are 0: not fitted
    assert (reading.shares_accepted, reading.shares_rejected) == (45678, 23)
    assert reading.best_diff == 987654321.0
    assert reading.uptime_s == 345678
    assert reading.pool_url == "stratum+tcp://btc.f2pool.com:3333"
    assert reading.is_mining is True
    assert (reading.pool_fallback, reading.pool_connected, reading.blocks_found) == (
        False, True, 0)
    assert (reading.make, reading.model) == ("Antminer", "S19 Pro")
    assert reading.firmware == "BMMiner 1.0.0 (Fri Jun  9 09:42:57 CST 2023)"
    assert reading.mac is None and reading.hostname is None
    sample = reading.sample("s19", "2026-11-22T10:00:00.123Z")
    assert sample.efficiency_jth is None


def test_antminer_s9_stats_chip_temps_and_fans(load_fixture: LoadFixture) -> None:
    stats = parse_stats(decode_reply(load_fixture("antminer_s9_bmminer_stats_malformed.txt")))
    assert stats.temp_c == 81.0  # temp2_6..8 are the chips of chains 6-8
    assert stats.fan_rpm == [5880, 6120]  # fan3 and fan6
    assert stats.hashrate_ths == pytest.approx(13.61248)
    assert stats.expected_hashrate_ths == pytest.approx(13.5)  # no rate_unit: GH
    assert (stats.identity.make, stats.identity.model) == ("Antminer", "S9")


def test_identity_falls_back_to_the_stats_version_block(load_fixture: LoadFixture) -> None:
    reading = build_reading(
        parse_summary(s19(load_fixture, "summary")), [parse_stats(s19(load_fixture, "stats"))]
    )
    assert (reading.make, reading.model) == ("Antminer", "S19 Pro")
    assert reading.pool_url is None and reading.firmware is None


def test_pool_without_stratum_active_is_lowest_priority_alive(load_fixture: LoadFixture) -> None:
    reply = s19(load_fixture, "pools")
    pools = reply["POOLS"]
    pools[0].update({"Stratum Active": False, "Status": "Dead"})
    pools[1]["Stratum Active"] = False
    pools.append({"URL": "pool.backup:3333", "Status": "Alive", "Priority": 5})
    assert parse_pools(reply) == Pools("stratum+tcp://ss.antpool.com:3333", True, True)
    pools[1]["Status"] = "Dead"
    assert parse_pools(reply) == Pools("stratum+tcp://pool.backup:3333", True, True)
    pools[-1]["Status"] = "Dead"
    assert parse_pools(reply) == Pools(None, None, False)  # none in use: the pool is down


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        # The S19 Pro works for its first pool; the S9's first is Dead: on its fallback.
        ("antminer_s19pro_bmminer_pools.json",
         Pools("stratum+tcp://btc.f2pool.com:3333", fallback=False, connected=True)),
        ("antminer_s9_bmminer_pools.json",
         Pools("stratum+tcp://stratum.antpool.com:3333", fallback=True, connected=True)),
        ("avalon_nano3s_25021401_pools.json",
         Pools("stratum+tcp://fr1.letsmine.it:3339", fallback=False, connected=True)),
        # Whatsminer numbers its pools from 1; Priority still starts at 0.
        ("whatsminer_m30s+_20210322_pools.json",
         Pools("stratum+tcp://btc.viabtc.io:3333", fallback=False, connected=True)),
    ],
)
def test_pools_of_real_firmware(load_fixture: LoadFixture, fixture: str, expected: Pools) -> None:
    assert parse_pools(decode_reply(load_fixture(fixture) + b"\x00")) == expected


def test_pools_edge_cases(load_fixture: LoadFixture) -> None:
    reply = s19(load_fixture, "pools")
    reply["POOLS"][0]["Status"] = "Dead"  # still Stratum Active: the connection is down
    assert parse_pools(reply) == Pools("stratum+tcp://btc.f2pool.com:3333", False, False)
    del reply["POOLS"][0]["Priority"]  # no Priority: whether it is a fallback is unknown
    assert parse_pools(reply).fallback is None
    assert parse_pools({"STATUS": [{"STATUS": "S"}], "POOLS": []}) == Pools()
    assert parse_pools({"POOLS": [{"URL": "", "Status": "Dead"}]}) == Pools()


def test_found_blocks_from_the_summary_and_pools_into_the_reading(
    load_fixture: LoadFixture,
) -> None:
    summary = s19(load_fixture, "summary")
    assert parse_summary(summary).blocks_found == 0
    summary["SUMMARY"][0]["Found Blocks"] = 2
    pools = decode_reply(load_fixture("antminer_s9_bmminer_pools.json") + b"\x00")
    reading = build_reading(parse_summary(summary), [], parse_pools(pools))
    assert (reading.blocks_found, reading.pool_fallback, reading.pool_connected) == (2, True, True)
    sample = reading.sample("s9", "2026-11-22T10:00:00.123Z")
    assert (sample.blocks_found, sample.pool_fallback, sample.pool_connected) == (2, True, True)
    del summary["SUMMARY"][0]["Found Blocks"]
    bare = build_reading(parse_summary(summary))  # no pools reply, no counter: nothing said
    assert (bare.blocks_found, bare.pool_fallback, bare.pool_connected) == (None, None, None)


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ({"GHS 5s": "95012.34", "GHS av": 94000.0}, 95.01234),
        ({"GHS 5s": "", "GHS av": 94000.0}, 94.0),  # just started: no 5 s rate yet
        ({"MHS 5s": 95012340.5, "MHS av": 1.0}, 95.0123405),  # MH/s
        ({"MHS 30s": 6214350.0, "MHS av": 6180120.0}, 6.21435),  # Avalon logs 30 s
        ({"MHS av": 6180120.0}, 6.18012),
        ({"GHS 30m": 100.0, "GHS 5s": 200.0}, 0.2),  # the shortest window wins
        ({"GHS 5s": -1}, 0.0),  # present but impossible
        ({"Accepted": 1}, None),  # no hashrate at all
    ],
)
def test_hashrate_units_and_windows(block: dict[str, Any], expected: float | None) -> None:
    result = hashrate_ths(block)
    assert result == (pytest.approx(expected) if expected is not None else None)


def test_summary_without_hashrate_is_a_poll_error() -> None:
    with pytest.raises(PollError, match="no hashrate"):
        build_reading(Summary())
    with pytest.raises(PollError, match="no SUMMARY"):
        parse_summary({"STATUS": [{"STATUS": "S"}]})


def test_zero_hashrate_is_not_mining() -> None:
    reading = build_reading(parse_summary({"SUMMARY": [{"GHS 5s": "0.00", "Elapsed": 12}]}))
    assert (reading.hashrate_ths, reading.is_mining) == (0.0, False)


@pytest.mark.parametrize(
    ("broken", "fixed"),
    [
        ('{"a":[{"x":1}{"y":2}]}', {"a": [{"x": 1}, {"y": 2}]}),
        ('{"a":[{"x":1},],}', {"a": [{"x": 1}]}),
        ('{"a":[,{"x":1}]}', {"a": [{"x": 1}]}),
        ('{"t":inf,"u":-inf,"v":nan}', {"t": None, "u": None, "v": None}),
        ('{"a":1,""temp0":55}', {"a": 1, "temp0": 55}),
    ],
)
def test_known_malformations_are_repaired(broken: str, fixed: dict[str, Any]) -> None:
    assert json.loads(repair_json(broken)) == fixed
    assert decode_reply(broken.encode() + b"\x00") == fixed


def test_valid_replies_are_not_touched_by_repairs() -> None:
    reply = {"STATUS": [{"STATUS": "S", "Msg": "a }{ b ,} [, inf"}], "SUMMARY": []}
    assert decode_reply(json.dumps(reply).encode() + b"\x00") == reply


def test_raw_newlines_and_invalid_utf8_are_accepted() -> None:
    raw = b'{"STATUS":[{"STATUS":"S","Msg":"line\nbreak \xff\xfe"}],"id":1}\x00'
    reply = decode_reply(raw)
    assert reply["STATUS"][0]["Msg"] == "line\nbreak \ufffd\ufffd"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "bad reply: empty"),
        (b"\x00", "bad reply: empty"),
        (b'{"STATUS":[{"STATUS":"E","Code":14,"Msg":"Invalid command"}],"id":1}\x00',
         "bad reply: STATUS E: Invalid command"),
        (b'{"STATUS":[{"STATUS":"F","Msg":"Access denied"}]}',
         "bad reply: STATUS F: Access denied"),
        (b'{"STATUS":"E","Msg":{"error":"locked"}}', 'bad reply: STATUS E: {"error": "locked"}'),
        (b'{"STATUS":[{"STATUS":"S"}],"SUMMARY":[{"Elapsed":1',
         "bad reply: truncated JSON at byte 50"),
        (b"hello there", "bad reply: not JSON at byte 0"),
        (b"[1,2]", "bad reply: not a JSON object"),
    ],
)
def test_bad_replies_have_clear_reasons(raw: bytes, reason: str) -> None:
    with pytest.raises(PollError) as caught:
        decode_reply(raw)
    assert caught.value.reason == reason


def test_new_api_chain_temperatures() -> None:
    stats = parse_stats({"STATS": [{"chain": [
        {"index": 0, "temp_pcb": [40, 41, 55, 56], "temp_chip": [60, 61, 70, 72]},
        {"index": 1, "temp_pcb": [0, 0, 0, 0], "temp_chip": [-64, 0, 0, 0]},
    ]}]})
    assert stats.temp_c == 72.0


def test_version_of_other_cgminer_firmwares() -> None:
    avalon = parse_version({"VERSION": [{"PROD": "AvalonMiner Nano3s", "MODEL": "Nano3s",
                                         "LVERSION": "25021401_56abae7"}]})
    assert (avalon.make, avalon.model, avalon.firmware) == (
        "Avalon", "Nano3s", "25021401_56abae7")
    plain = parse_version({"VERSION": [{"CGMiner": "4.11.1", "API": "3.7"}]})
    assert (plain.make, plain.model, plain.firmware) == (None, None, "CGMiner 4.11.1")
