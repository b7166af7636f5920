"""AxeOS / ESP-Miner ``/api/system/info`` -> normalized Reading, per firmware generation."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from minerwatch.collector.drivers import PollError
from minerwatch.collector.drivers.axeos import parse_system_info, stratum_url

LoadJson = Callable[[str], Any]


def test_bitaxe_gamma_v2_11_numeric_best_diff(load_json: LoadJson) -> None:
    reading = parse_system_info(load_json("bitaxe_gamma_v2.11.0_system_info.json"))
    assert reading.hashrate_ths == pytest.approx(1.2093785)
    assert reading.expected_hashrate_ths == pytest.approx(1.254)
    assert reading.power_w == pytest.approx(17.8125)
    assert reading.temp_c == 59.5  # the hotter of temp (58.25) and temp2 (59.5)
    assert reading.vr_temp_c == 51.0
    assert reading.fan_rpm == [4412]  # fan2rpm 0: no second fan fitted
    assert reading.shares_accepted == 18342
    assert reading.shares_rejected == 17
    assert reading.best_diff == 4294967296.0
    assert reading.uptime_s == 345612
    assert reading.pool_url == "stratum+tcp://public-pool.io:21496"
    assert reading.is_mining is True
    assert (reading.make, reading.model, reading.firmware) == ("Bitaxe", "Gamma BM1370", "v2.11.0")
    assert reading.hostname == "bitaxe-gamma-01"
    assert reading.mac == "24:DC:C3:4A:1B:2C"
    sample = reading.sample("24dcc34a1b2c", "2026-11-22T10:00:00.123Z")
    assert sample.efficiency_jth == pytest.approx(17.8125 / 1.2093785)


def test_bitaxe_supra_v2_4_suffixed_best_diff_and_fanrpm(load_json: LoadJson) -> None:
    reading = parse_system_info(load_json("bitaxe_supra_v2.4.0_system_info.json"))
    assert reading.hashrate_ths == pytest.approx(0.6027135)
    assert reading.expected_hashrate_ths is None  # expectedHashrate only from v2.8
    assert reading.power_w == pytest.approx(13.6640625)
    assert reading.temp_c == 55.375
    assert reading.vr_temp_c == 47.0
    assert reading.fan_rpm == [3821]  # fanrpm is RPM; fanspeed (48) is a percentage
    assert reading.best_diff == pytest.approx(4.29e9)  # "4.29G"
    assert (reading.shares_accepted, reading.shares_rejected) == (9021, 4)
    assert reading.uptime_s == 86211
    assert reading.pool_url == "stratum+tcp://solo.ckpool.org:3333"
    assert (reading.make, reading.model, reading.firmware) == ("Bitaxe", "Supra BM1368", "v2.4.0")
    assert reading.mac == "E8:06:90:7F:33:A1"


def test_bitaxe_ultra_v2_0_fan_speed_is_rpm(load_json: LoadJson) -> None:
    reading = parse_system_info(load_json("bitaxe_ultra_v2.0.3_system_info.json"))
    assert reading.hashrate_ths == pytest.approx(0.4812291)
    assert reading.fan_rpm == [5520]  # v2.0-2.1: fanSpeed is RPM
    assert reading.vr_temp_c is None  # no vrTemp before v2.2
    assert reading.temp_c == 61.5
    assert reading.best_diff == pytest.approx(512e6)  # "512M"
    assert reading.power_w == pytest.approx(11.9375)
    assert reading.uptime_s == 7420
    assert reading.mac is None  # macAddr only from v2.3
    assert (reading.make, reading.model, reading.firmware) == ("Bitaxe", "Ultra BM1366", "v2.0.3")
    assert reading.pool_url == "stratum+tcp://public-pool.io:21496"


def test_nerdqaxe_legacy_api(load_json: LoadJson) -> None:
    reading = parse_system_info(load_json("nerdqaxe_plusplus_v1.0.27_system_info.json"))
    assert reading.hashrate_ths == pytest.approx(4.81516)
    assert reading.power_w == pytest.approx(79.21)
    assert reading.temp_c == 63.5  # temp is already the hottest chip; asicTemps agree
    assert reading.vr_temp_c == 58.0
    assert reading.fan_rpm == [3950, 4020]  # fanrpm, fanrpm2
    assert reading.best_diff == 21474836480.0  # an integer on NerdQAxe
    assert (reading.shares_accepted, reading.shares_rejected) == (40218, 52)
    assert reading.uptime_s == 1209600
    # isUsingFallbackStratum: the fallback pool, whose host field holds a whole URL
    assert reading.pool_url == "stratum+tcp://solo.ckpool.org:3333"
    assert (reading.make, reading.model) == ("NerdQAxe", "NerdQAxe++ BM1370")
    assert reading.firmware == "v1.0.27"
    assert reading.mac == "7C:DF:A1:0E:55:F3"
    assert reading.is_mining is True


def test_paused_or_zero_hashrate_is_not_mining(load_json: LoadJson) -> None:
    info = load_json("bitaxe_gamma_v2.11.0_system_info.json")
    paused = parse_system_info({**info, "miningPaused": True})
    assert paused.is_mining is False
    assert paused.hashrate_ths == pytest.approx(1.2093785)  # reported as is
    zero = parse_system_info({**info, "hashRate": 0})
    assert (zero.is_mining, zero.hashrate_ths) == (False, 0.0)
    assert zero.sample("x", "2026-11-22T10:00:00.123Z").efficiency_jth is None
    shutdown = parse_system_info({**info, "shutdown": True})  # NerdQAxe's word for it
    assert shutdown.is_mining is False


def test_power_from_voltage_and_current_when_power_missing(load_json: LoadJson) -> None:
    info = load_json("bitaxe_gamma_v2.11.0_system_info.json")
    del info["power"]
    assert parse_system_info(info).power_w == pytest.approx(5130.5 * 3468.75 / 1e6)
    del info["current"]
    assert parse_system_info(info).power_w is None


def test_impossible_values_become_none(load_json: LoadJson) -> None:
    info = load_json("bitaxe_gamma_v2.11.0_system_info.json")
    info.update(
        temp=-273, temp2=math.nan, vrTemp=math.inf, power=-1, voltage=0,
        sharesAccepted=-5, sharesRejected="many", bestDiff="lots", uptimeSeconds=None,
        expectedHashrate=math.nan, fanrpm=-1, macAddr="00:00:00:00:00:00", version="",
    )
    reading = parse_system_info(info)
    assert reading.temp_c is None
    assert reading.vr_temp_c is None
    assert reading.power_w is None
    assert reading.shares_accepted is None and reading.shares_rejected is None
    assert reading.best_diff is None
    assert reading.uptime_s is None
    assert reading.expected_hashrate_ths is None
    assert reading.fan_rpm == []
    assert reading.mac is None and reading.firmware is None
    negative = parse_system_info({**info, "hashRate": -12.5})
    assert (negative.hashrate_ths, negative.is_mining) == (0.0, False)


@pytest.mark.parametrize("reply", [[1, 2], "text", None, 42])
def test_not_an_object_is_a_poll_error(reply: object) -> None:
    with pytest.raises(PollError, match=r"^bad reply: not a JSON object$"):
        parse_system_info(reply)


def test_missing_hashrate_is_a_poll_error() -> None:
    with pytest.raises(PollError, match="no hashRate"):
        parse_system_info({"temp": 50})


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("public-pool.io", 21496, "stratum+tcp://public-pool.io:21496"),
        ("stratum+tcp://solo.ckpool.org:3333", 3333, "stratum+tcp://solo.ckpool.org:3333"),
        ("stratum+tcp://solo.ckpool.org", 4444, "stratum+tcp://solo.ckpool.org:4444"),
        ("stratum+ssl://pool.example:443", 443, "stratum+ssl://pool.example:443"),
        ("pool.example:3334", 3333, "stratum+tcp://pool.example:3334"),
        ("pool.example", None, "stratum+tcp://pool.example"),
        ("", 3333, None),
        (None, 3333, None),
    ],
)
def test_stratum_url(host: object, port: object, expected: str | None) -> None:
    assert stratum_url(host, port) == expected
