"""Every AxeOS shape from v2.0 to v2.15 and the NerdQAxe legacy API -> the expected Sample.

Each fixture is one ``/api/system/info`` reply of that device and firmware; the table holds
the normalized values DESIGN.md's rules give for it (units, hottest temperature, power,
fans in firmware order, best difficulty as a number, the pool in use).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from minerwatch.collector.drivers.axeos import AxeosDriver, parse_system_info

LoadJson = Callable[[str], Any]
TS = "2026-11-22T10:00:00.123Z"

EXPECTED: dict[str, dict[str, Any]] = {
    "bitaxe_ultra_v2.0.3_system_info.json": {  # fanSpeed is RPM, no vrTemp, no MAC
        "hashrate_ths": 0.4812291, "expected_hashrate_ths": None, "power_w": 11.9375,
        "temp_c": 61.5, "vr_temp_c": None, "fan_rpm": [5520], "best_diff": 512e6,
        "shares_accepted": 2210, "uptime_s": 7420, "mac": None, "is_mining": True,
        "pool_url": "stratum+tcp://public-pool.io:21496",
        "identity": ("Bitaxe", "Ultra BM1366", "v2.0.3"),
    },
    "bitaxe_max_v2.1.8_system_info.json": {  # board "0.11" says nothing: the ASIC does
        "hashrate_ths": 0.4021984, "expected_hashrate_ths": None, "power_w": 9.859375,
        "temp_c": 52.75, "vr_temp_c": None, "fan_rpm": [4850], "best_diff": 1.21e12,
        "shares_accepted": 15377, "uptime_s": 1036800, "mac": None, "is_mining": True,
        "pool_url": "stratum+tcp://solo.ckpool.org:3333",
        "identity": ("Bitaxe", "Max BM1397", "v2.1.8"),
    },
    "bitaxe_supra_v2.4.0_system_info.json": {  # fanspeed is %, fanrpm is RPM
        "hashrate_ths": 0.6027135, "expected_hashrate_ths": None, "power_w": 13.6640625,
        "temp_c": 55.375, "vr_temp_c": 47.0, "fan_rpm": [3821], "best_diff": 4.29e9,
        "shares_accepted": 9021, "uptime_s": 86211, "mac": "E8:06:90:7F:33:A1",
        "is_mining": True, "pool_url": "stratum+tcp://solo.ckpool.org:3333",
        "identity": ("Bitaxe", "Supra BM1368", "v2.4.0"),
    },
    "bitaxe_supra_v2.9.0_system_info.json": {  # on its fallback pool
        "hashrate_ths": 0.6513478, "expected_hashrate_ths": 0.6888, "power_w": 14.0390625,
        "temp_c": 57.125, "vr_temp_c": 49.0, "fan_rpm": [4103], "best_diff": 61.2e6,
        "shares_accepted": 30211, "uptime_s": 604800, "mac": "E8:06:90:7F:40:12",
        "is_mining": True, "pool_url": "stratum+tcp://solo.ckpool.org:3333",
        "identity": ("Bitaxe", "Supra BM1368", "v2.9.0"),
    },
    "bitaxe_gamma_v2.10.2_system_info.json": {  # temp2 0: no second sensor
        "hashrate_ths": 1.1820412, "expected_hashrate_ths": 1.224, "power_w": 16.953125,
        "temp_c": 60.5, "vr_temp_c": 53.0, "fan_rpm": [4520], "best_diff": 2.15e9,
        "shares_accepted": 5120, "uptime_s": 93312, "mac": "24:DC:C3:4A:2F:08",
        "is_mining": True, "pool_url": "stratum+tcp://public-pool.io:21496",
        "identity": ("Bitaxe", "Gamma BM1370", "v2.10.2"),
    },
    "bitaxe_gamma_v2.11.0_system_info.json": {  # bestDiff a number, fan2rpm 0: not fitted
        "hashrate_ths": 1.2093785, "expected_hashrate_ths": 1.254, "power_w": 17.8125,
        "temp_c": 59.5, "vr_temp_c": 51.0, "fan_rpm": [4412], "best_diff": 4294967296.0,
        "shares_accepted": 18342, "uptime_s": 345612, "mac": "24:DC:C3:4A:1B:2C",
        "is_mining": True, "pool_url": "stratum+tcp://public-pool.io:21496",
        "identity": ("Bitaxe", "Gamma BM1370", "v2.11.0"),
    },
    "bitaxe_gammaturbo_v2.12.0_system_info.json": {  # hashRate, not hashRate_1m; 2 fans
        "hashrate_ths": 2.4561234567, "expected_hashrate_ths": 2.448, "power_w": 36.421875,
        "temp_c": 63.125, "vr_temp_c": 55.0, "fan_rpm": [5012, 4988],
        "best_diff": 8589934592.0, "shares_accepted": 72114, "uptime_s": 259200,
        "mac": "A0:B7:65:12:34:56", "is_mining": True,
        "pool_url": "stratum+tcp://public-pool.io:21496",
        "identity": ("Bitaxe", "GammaTurbo BM1370", "v2.12.0"),
    },
    "bitaxe_gamma_v2.13.1_system_info.json": {  # stratumTLS on
        "hashrate_ths": 1.2405612345, "expected_hashrate_ths": 1.2652, "power_w": 18.203125,
        "temp_c": 60.375, "vr_temp_c": 52.0, "fan_rpm": [4377], "best_diff": 17179869184.0,
        "shares_accepted": 11893, "uptime_s": 181440, "mac": "24:DC:C3:4A:3C:77",
        "is_mining": True, "pool_url": "stratum+ssl://stratum.braiins.com:3334",
        "identity": ("Bitaxe", "Gamma BM1370", "v2.13.1"),
    },
    "bitaxe_gamma_v2.14.0_system_info.json": {  # miningPaused: hashRate is stale
        "hashrate_ths": 1.2034411, "expected_hashrate_ths": 1.224, "power_w": 4.1015625,
        "temp_c": 41.875, "vr_temp_c": 38.0, "fan_rpm": [2210], "best_diff": 4294967296.0,
        "shares_accepted": 8890, "uptime_s": 50400, "mac": "24:DC:C3:4A:44:10",
        "is_mining": False, "pool_url": "stratum+tcp://public-pool.io:21496",
        "identity": ("Bitaxe", "Gamma BM1370", "v2.14.0"),
    },
    "bitaxe_gamma_v2.15.0_system_info.json": {
        "hashrate_ths": 1.2879912346, "expected_hashrate_ths": 1.3056, "power_w": 19.0390625,
        "temp_c": 62.375, "vr_temp_c": 54.0, "fan_rpm": [4688], "best_diff": 137438953472.0,
        "shares_accepted": 203344, "uptime_s": 2419200, "mac": "24:DC:C3:4A:51:9E",
        "is_mining": True, "pool_url": "stratum+tcp://public-pool.io:21496",
        "identity": ("Bitaxe", "Gamma BM1370", "v2.15.0"),
    },
    "nerdqaxe_plusplus_v1.0.27_system_info.json": {  # temp is the hottest chip; fanrpm2
        "hashrate_ths": 4.81516, "expected_hashrate_ths": None, "power_w": 79.21,
        "temp_c": 63.5, "vr_temp_c": 58.0, "fan_rpm": [3950, 4020],
        "best_diff": 21474836480.0, "shares_accepted": 40218, "uptime_s": 1209600,
        "mac": "7C:DF:A1:0E:55:F3", "is_mining": True,
        "pool_url": "stratum+tcp://solo.ckpool.org:3333",
        "identity": ("NerdQAxe", "NerdQAxe++ BM1370", "v1.0.27"),
    },
    "nerdqaxe_plus_v1.0.11_system_info.json": {  # older: suffixed bestDiff, no MAC, hostip
        "hashrate_ths": 2.48173, "expected_hashrate_ths": None, "power_w": 39.84,
        "temp_c": 66.75, "vr_temp_c": 61.0, "fan_rpm": [3880], "best_diff": 7.52e9,
        "shares_accepted": 15520, "uptime_s": 432000, "mac": None, "is_mining": True,
        "pool_url": "stratum+tcp://public-pool.io:21496",
        "identity": ("NerdQAxe", "NerdQAxe+ BM1368", "v1.0.11"),
    },
}


#: (pool_fallback, pool_connected, blocks_found) as each firmware says them; None where
#: it does not (ESP-Miner says its pool is down only before the first connection).
POOL_AND_BLOCKS: dict[str, tuple[bool | None, bool | None, int | None]] = {
    "bitaxe_ultra_v2.0.3_system_info.json": (None, None, None),
    "bitaxe_max_v2.1.8_system_info.json": (None, None, None),
    "bitaxe_supra_v2.4.0_system_info.json": (None, None, None),
    "bitaxe_supra_v2.9.0_system_info.json": (True, None, None),
    "bitaxe_gamma_v2.10.2_system_info.json": (False, None, None),
    "bitaxe_gamma_v2.11.0_system_info.json": (False, None, None),
    "bitaxe_gammaturbo_v2.12.0_system_info.json": (False, None, None),
    "bitaxe_gamma_v2.13.1_system_info.json": (False, None, None),
    "bitaxe_gamma_v2.14.0_system_info.json": (False, None, 0),
    "bitaxe_gamma_v2.15.0_system_info.json": (False, None, 0),  # "IPv4 (TCP)": proves nothing
    "bitaxe_gamma_v2.15.0_fallback_block_system_info.json": (True, None, 1),
    "bitaxe_gamma_v2.15.0_not_connected_system_info.json": (False, False, 0),
    "nerdqaxe_plus_v1.0.11_system_info.json": (False, None, None),
    "nerdqaxe_plusplus_v1.0.27_system_info.json": (True, None, None),
    # v1.0.35+: the pool manager's stratum object; totalFoundBlocks survives restarts.
    "nerdqaxe_plusplus_v1.0.36_fallback_system_info.json": (True, True, 1),
    "nerdqaxe_plusplus_v1.0.36_dualpool_system_info.json": (False, False, 2),
}


@pytest.mark.parametrize("fixture", sorted(POOL_AND_BLOCKS))
def test_pool_state_and_blocks_as_the_firmware_says(fixture: str, load_json: LoadJson) -> None:
    sample = parse_system_info(load_json(fixture)).sample("m", TS)
    assert (sample.pool_fallback, sample.pool_connected, sample.blocks_found) == (
        POOL_AND_BLOCKS[fixture])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"poolConnectionInfo": "SV2: Pool unreachable"}, (False, False, 0)),
        ({"poolConnectionInfo": "SV2: Connection lost"}, (False, False, 0)),
        ({"isUsingFallbackStratum": True, "blockFound": 3}, (True, None, 3)),
        ({"isUsingFallbackStratum": "yes", "blockFound": -1}, (None, None, None)),  # junk
    ],
)
def test_pool_and_block_variants(change: dict[str, Any], expected: tuple[Any, ...],
                                 load_json: LoadJson) -> None:
    info = {**load_json("bitaxe_gamma_v2.15.0_system_info.json"), **change}
    reading = parse_system_info(info)
    assert (reading.pool_fallback, reading.pool_connected, reading.blocks_found) == expected


def test_nerdqaxe_pool_manager_fields(load_json: LoadJson) -> None:
    info = load_json("nerdqaxe_plusplus_v1.0.36_fallback_system_info.json")
    reading = parse_system_info(info)
    assert reading.pool_url == "stratum+tcp://solo.ckpool.org:3333"  # usingFallback
    info["stratum"]["pools"][0]["connected"] = False
    info["stratum"]["usingFallback"] = False
    info["totalFoundBlocks"] = "n/a"  # unreadable: null, not the session's foundBlocks
    reading = parse_system_info(info)
    assert reading.pool_url == "stratum+tcp://public-pool.io:21496"
    assert (reading.pool_fallback, reading.pool_connected, reading.blocks_found) == (
        False, False, None)
    del info["totalFoundBlocks"]
    assert parse_system_info(info).blocks_found == 0  # foundBlocks, since boot
    info["stratum"] = {"pools": [{"connected": "maybe"}]}
    assert parse_system_info(info).pool_connected is None


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_every_firmware_shape_normalizes(fixture: str, load_json: LoadJson) -> None:
    expected = EXPECTED[fixture]
    reading = parse_system_info(load_json(fixture))
    sample = reading.sample("m", TS)
    for name, value in expected.items():
        if name == "identity":
            assert (reading.make, reading.model, reading.firmware) == value
        elif name == "mac":
            assert reading.mac == value
        elif isinstance(value, float):
            assert getattr(sample, name) == pytest.approx(value), name
        else:
            assert getattr(sample, name) == value, name
    if sample.power_w is not None and sample.hashrate_ths:
        assert sample.efficiency_jth == pytest.approx(sample.power_w / sample.hashrate_ths)


@pytest.mark.parametrize(
    ("change", "is_mining"),
    [
        ({}, True),
        ({"overheat_mode": 1}, False),  # ASIC powered down until the user clears it
        ({"power_fault": "VIN undervoltage"}, False),  # only present while active
        ({"miningPaused": True}, False),
        ({"hashRate": 0}, False),
    ],
)
def test_faults_mean_not_mining(
    change: dict[str, Any], is_mining: bool, load_json: LoadJson
) -> None:
    info = {**load_json("bitaxe_gamma_v2.15.0_system_info.json"), **change}
    assert parse_system_info(info).is_mining is is_mining


def test_missing_sensors_read_zero_or_minus_one(load_json: LoadJson) -> None:
    info = {**load_json("bitaxe_gamma_v2.15.0_system_info.json"),
            "temp": -1, "temp2": 0, "vrTemp": 0}
    reading = parse_system_info(info)
    assert (reading.temp_c, reading.vr_temp_c) == (None, None)


def test_fallback_pool_with_tls(load_json: LoadJson) -> None:
    info = {**load_json("bitaxe_gamma_v2.13.1_system_info.json"), "isUsingFallbackStratum": 1,
            "fallbackStratumTLS": 2}
    assert parse_system_info(info).pool_url == "stratum+ssl://solo.ckpool.org:3333"


@pytest.mark.parametrize("fixture", ["bitaxe_max_v2.1.8_system_info.json",
                                     "bitaxe_gamma_v2.15.0_system_info.json"])
async def test_driver_serves_each_shape_end_to_end(
    fixture: str, http_miner: Callable[..., Any], load_fixture: Callable[[str], bytes]
) -> None:
    miner = await http_miner(load_fixture(fixture))
    driver = AxeosDriver("127.0.0.1", miner.port, timeout_s=2.0)
    try:
        reading = await driver.fetch()
    finally:
        await driver.aclose()
    assert reading.hashrate_ths == pytest.approx(EXPECTED[fixture]["hashrate_ths"])
    assert reading.fan_rpm == EXPECTED[fixture]["fan_rpm"]


@pytest.mark.parametrize(("device_model", "board", "identity"), [
    # ESP-Miner names the family in deviceModel (today in /api/system/asic only): a Bitaxe.
    ("Gamma", "601", ("Bitaxe", "Gamma BM1370")),
    ("GammaTurbo", "801", ("Bitaxe", "GammaTurbo BM1370")),
    (None, "601", ("Bitaxe", "Gamma BM1370")),  # no name: the family by boardVersion
    (None, None, ("Bitaxe", "Gamma BM1370")),  # nor a board: by the ASIC
    # The NerdQAxe fork names its board, "Nerd...", whatever else it says.
    ("NerdQAxe++", "601", ("NerdQAxe", "NerdQAxe++ BM1370")),
    ("NerdOCTAXE-gamma", None, ("NerdOCTAXE", "NerdOCTAXE-gamma BM1370")),
    ("nerdaxe", None, ("nerdaxe", "nerdaxe BM1370")),
])
def test_only_a_nerd_device_model_is_the_nerdqaxe_fork(
        device_model: str | None, board: str | None, identity: tuple[str, str],
        load_json: LoadJson) -> None:
    info = load_json("bitaxe_gamma_v2.15.0_system_info.json")
    info.pop("deviceModel", None)
    info.pop("boardVersion", None)
    if device_model is not None:
        info["deviceModel"] = device_model
    if board is not None:
        info["boardVersion"] = board
    reading = parse_system_info(info)
    assert (reading.make, reading.model) == identity
