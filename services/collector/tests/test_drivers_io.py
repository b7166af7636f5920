"""Drivers against real sockets: good replies, and every kind of bad one -> a clear reason."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from minerwatch.collector.drivers import PollError, create_driver
from minerwatch.collector.drivers.axeos import AxeosDriver
from minerwatch.collector.drivers.cgminer.driver import CgminerDriver
from minerwatch.collector.drivers.cgminer.transport import request

StartServer = Callable[..., Awaitable[Any]]
LoadFixture = Callable[[str], bytes]

GAMMA = "bitaxe_gamma_v2.11.0_system_info.json"


async def poll_error(driver: Any) -> str:
    try:
        with pytest.raises(PollError) as caught:
            await driver.fetch()
    finally:
        await driver.aclose()
    return caught.value.reason


# --- AxeOS over HTTP ------------------------------------------------------------------


async def test_axeos_fetch_reuses_one_connection_and_sends_no_origin(
    http_miner: StartServer, load_fixture: LoadFixture
) -> None:
    miner = await http_miner(load_fixture(GAMMA))
    driver = AxeosDriver("127.0.0.1", miner.port, timeout_s=2.0)
    try:
        first = await driver.fetch()
        second = await driver.fetch()
    finally:
        await driver.aclose()
    assert first.hashrate_ths == pytest.approx(1.2093785)
    assert second.mac == "24:DC:C3:4A:1B:2C"
    assert [r["line"] for r in miner.requests] == ["GET /api/system/info HTTP/1.1"] * 2
    assert all("origin" not in r["headers"] for r in miner.requests)
    assert miner.connections == 1  # keep-alive: the second poll reused the connection


async def test_axeos_reconnects_when_the_miner_dropped_the_kept_connection(
    http_miner: StartServer, load_fixture: LoadFixture
) -> None:
    miner = await http_miner(load_fixture(GAMMA))
    driver = AxeosDriver("127.0.0.1", miner.port, timeout_s=2.0)
    try:
        await driver.fetch()
        for task in list(miner.handlers):  # the ESP32 purges idle sockets
            task.cancel()
        reading = await driver.fetch()
    finally:
        await driver.aclose()
    assert reading.hostname == "bitaxe-gamma-01"
    assert miner.connections == 2


async def test_axeos_reads_non_utf8_bytes_with_replacement(http_miner: StartServer) -> None:
    miner = await http_miner(b'{"hashRate": 500.5, "hostname": "bit\xffaxe"}')
    driver = AxeosDriver("127.0.0.1", miner.port, timeout_s=2.0)
    try:
        reading = await driver.fetch()
    finally:
        await driver.aclose()
    assert reading.hostname == "bit\ufffdaxe"
    assert reading.hashrate_ths == pytest.approx(0.5005)


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (500, b"oops", "HTTP 500 Internal Server Error"),
        (401, b"", "HTTP 401 Unauthorized"),
        (200, b"<html>login</html>", "bad reply: not JSON at byte 0"),
        (200, b'{"hashRate": 1209.3, "temp": 5', "bad reply: truncated JSON at byte 30"),
        (200, b"", "bad reply: empty"),
        (200, b"[1, 2]", "bad reply: not a JSON object"),
        (200, b'{"temp": 50}', "bad reply: no hashRate field"),
    ],
)
async def test_axeos_bad_replies(
    http_miner: StartServer, status: int, body: bytes, reason: str
) -> None:
    miner = await http_miner(body, status=status)
    assert await poll_error(AxeosDriver("127.0.0.1", miner.port, timeout_s=2.0)) == reason


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("garbage", r"^bad reply: not HTTP \(.+\)$"),
        ("close", r"^closed without a reply$"),
    ],
)
async def test_axeos_misbehaving_servers(http_miner: StartServer, mode: str, reason: str) -> None:
    miner = await http_miner(mode=mode)
    result = await poll_error(AxeosDriver("127.0.0.1", miner.port, timeout_s=2.0))
    assert re.match(reason, result), result


async def test_axeos_timeout(http_miner: StartServer) -> None:
    miner = await http_miner(mode="silent")
    started = time.monotonic()
    reason = await poll_error(AxeosDriver("127.0.0.1", miner.port, timeout_s=0.3))
    assert reason == "timeout after 0.3 s"
    assert 0.25 < time.monotonic() - started < 1.0


async def test_axeos_connection_refused(dead_port: int) -> None:
    assert await poll_error(AxeosDriver("127.0.0.1", dead_port, timeout_s=1.0)) == (
        f"refused: nothing listens on port {dead_port}"
    )


# --- CGMiner over TCP -----------------------------------------------------------------


async def test_cgminer_fetch_s19pro_asks_version_once(
    cgminer_miner: StartServer, s19_replies: dict[str, bytes]
) -> None:
    miner = await cgminer_miner(s19_replies)  # refuses joined commands, as some S19s do
    driver = create_driver("cgminer", "127.0.0.1", miner.port, timeout_s=2.0)
    try:
        first = await driver.fetch()
        second = await driver.fetch()
    finally:
        await driver.aclose()
    assert first.hashrate_ths == pytest.approx(109.87654)
    assert first.temp_c == 77.0  # from the malformed ("}{") stats reply
    assert (second.make, second.model) == ("Antminer", "S19 Pro")
    commands = [r["command"] for r in miner.requests]
    # first poll: version alongside summary+pools (refused, then one by one), then the
    # family's own stats; second poll: one command per connection straight away
    assert sorted(commands[:5]) == sorted(["version", "summary+pools", "summary", "pools",
                                           "stats"])
    assert sorted(commands[5:]) == sorted(["summary", "stats", "pools"])
    assert miner.connections == 8


async def test_cgminer_joined_commands_when_the_firmware_takes_them(
    cgminer_miner: StartServer, s19_replies: dict[str, bytes]
) -> None:
    miner = await cgminer_miner(s19_replies, joins=True)
    driver = CgminerDriver("127.0.0.1", miner.port, timeout_s=2.0)
    first = await driver.fetch()
    second = await driver.fetch()
    assert first.temp_c == second.temp_c == 77.0  # the "}{" repaired inside a joined reply
    assert second.pool_url == "stratum+tcp://btc.f2pool.com:3333"
    assert [r["command"] for r in miner.requests][-1] == "summary+stats+pools"
    assert miner.connections == 4  # version, summary+pools, stats; then one per poll
    assert driver.quirks.joined is True


async def test_cgminer_asks_version_again_after_a_restart(
    cgminer_miner: StartServer, s19_replies: dict[str, bytes]
) -> None:
    miner = await cgminer_miner(s19_replies)
    driver = CgminerDriver("127.0.0.1", miner.port, timeout_s=2.0)
    await driver.fetch()
    miner.replies["summary"] = s19_replies["summary"].replace(b'"Elapsed":345678', b'"Elapsed":30')
    miner.replies["version"] = s19_replies["version"].replace(b'"BMMiner":"1.0.0"',
                                                              b'"BMMiner":"1.0.1"')
    restarted = await driver.fetch()  # noticed the restart; identity kept for this poll
    assert restarted.firmware is not None and restarted.firmware.startswith("BMMiner 1.0.0")
    upgraded = await driver.fetch()
    assert upgraded.firmware is not None and upgraded.firmware.startswith("BMMiner 1.0.1")
    assert [r["command"] for r in miner.requests].count("version") == 2


async def test_cgminer_optional_command_failing_leaves_its_fields_null(
    cgminer_miner: StartServer, s19_replies: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    del s19_replies["stats"]  # the fixture server answers STATUS E for unknown commands
    miner = await cgminer_miner(s19_replies)
    driver = CgminerDriver("127.0.0.1", miner.port, timeout_s=2.0)
    with caplog.at_level("WARNING"):
        reading = await driver.fetch()
        await driver.fetch()
    assert reading.temp_c is None and reading.fan_rpm == []
    assert reading.hashrate_ths == pytest.approx(109.87654)
    assert reading.pool_url == "stratum+tcp://btc.f2pool.com:3333"
    warnings = [r.getMessage() for r in caplog.records if "stats failed" in r.getMessage()]
    assert len(warnings) == 1  # said once, not on every poll
    assert "STATUS E: Invalid command" in warnings[0]


@pytest.mark.parametrize(
    ("summary", "reason"),
    [
        (b'{"STATUS":[{"STATUS":"E","When":0,"Code":14,"Msg":"Invalid command"}],"id":1}',
         "bad reply: STATUS E: Invalid command"),
        (b'{"STATUS":[{"STATUS":"S"}],"SUMMARY":[{"GHS 5s":"1',
         "bad reply: truncated JSON at byte 48"),
        (b"\xff\xfe\x00binary", "bad reply: not JSON at byte 0"),
    ],
)
async def test_cgminer_bad_summaries(
    cgminer_miner: StartServer, s19_replies: dict[str, bytes], summary: bytes, reason: str
) -> None:
    miner = await cgminer_miner({**s19_replies, "summary": summary})
    assert await poll_error(CgminerDriver("127.0.0.1", miner.port, timeout_s=2.0)) == reason


async def test_cgminer_hashrate_from_stats_when_summary_has_none(
    cgminer_miner: StartServer, s19_replies: dict[str, bytes]
) -> None:
    no_rate = b'{"STATUS":[{"STATUS":"S"}],"SUMMARY":[{"Elapsed":5,"Accepted":3}]}'
    miner = await cgminer_miner({**s19_replies, "summary": no_rate})
    driver = CgminerDriver("127.0.0.1", miner.port, timeout_s=2.0)
    reading = await driver.fetch()
    assert reading.hashrate_ths == pytest.approx(109.87654)  # stats' "GHS 5s"
    assert reading.shares_accepted == 3
    del miner.replies["stats"]
    assert await poll_error(driver) == "bad reply: no hashrate in summary"


async def test_cgminer_non_utf8_bytes_are_replaced(cgminer_miner: StartServer) -> None:
    summary = b'{"STATUS":[{"STATUS":"S","Msg":"Summ\xe4ry"}],"SUMMARY":[{"GHS 5s":"1000"}]}'
    miner = await cgminer_miner({"summary": summary})
    reply = await request("127.0.0.1", miner.port, "summary", 2.0)
    assert reply["STATUS"][0]["Msg"] == "Summ\ufffdry"


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("close", "bad reply: empty"), ("garbage", "bad reply: not JSON at byte 0")],
)
async def test_cgminer_misbehaving_servers(
    cgminer_miner: StartServer, mode: str, reason: str
) -> None:
    miner = await cgminer_miner(mode=mode)
    assert await poll_error(CgminerDriver("127.0.0.1", miner.port, timeout_s=2.0)) == reason


async def test_cgminer_timeout(cgminer_miner: StartServer) -> None:
    miner = await cgminer_miner(mode="silent")
    started = time.monotonic()
    reason = await poll_error(CgminerDriver("127.0.0.1", miner.port, timeout_s=0.3))
    assert reason == "timeout after 0.3 s"
    assert 0.25 < time.monotonic() - started < 1.0


async def test_cgminer_complete_reply_on_a_connection_left_open_is_used(
    cgminer_miner: StartServer, s19_replies: dict[str, bytes]
) -> None:
    miner = await cgminer_miner(s19_replies, mode="linger")
    reply = await request("127.0.0.1", miner.port, "summary", 0.3)
    assert reply["SUMMARY"][0]["Accepted"] == 45678


async def test_cgminer_reply_size_is_bounded(cgminer_miner: StartServer) -> None:
    miner = await cgminer_miner({"summary": b'{"x":"' + b"a" * (2 << 20) + b'"}'})
    with pytest.raises(PollError, match=r"^bad reply: larger than 1048576 bytes$"):
        await request("127.0.0.1", miner.port, "summary", 5.0)


async def test_cgminer_connection_refused(dead_port: int) -> None:
    assert await poll_error(CgminerDriver("127.0.0.1", dead_port, timeout_s=1.0)) == (
        f"refused: nothing listens on port {dead_port}"
    )


# --- pool state and blocks, end to end ------------------------------------------------


async def test_axeos_pool_state_and_blocks_over_http(
    http_miner: StartServer, load_fixture: LoadFixture
) -> None:
    miner = await http_miner(load_fixture("nerdqaxe_plusplus_v1.0.36_dualpool_system_info.json"))
    driver = AxeosDriver("127.0.0.1", miner.port, timeout_s=2.0)
    try:
        sample = (await driver.fetch()).sample("nqpp", "2026-11-22T10:00:00.123Z")
        miner.body = load_fixture("bitaxe_gamma_v2.15.0_fallback_block_system_info.json")
        gamma = (await driver.fetch()).sample("gamma", "2026-11-22T10:00:05.123Z")
    finally:
        await driver.aclose()
    # dual pool, its second pool down; two blocks in its life
    assert (sample.pool_fallback, sample.pool_connected, sample.blocks_found) == (False, False, 2)
    assert (gamma.pool_fallback, gamma.pool_connected, gamma.blocks_found) == (True, None, 1)
    assert gamma.pool_url == "stratum+tcp://solo.ckpool.org:3333"


async def test_cgminer_pool_state_and_blocks_over_tcp(
    cgminer_miner: StartServer, load_fixture: LoadFixture
) -> None:
    replies = {command: load_fixture(f"antminer_s9_bmminer_{command}.json")
               for command in ("summary", "pools", "version")}
    replies["summary"] = replies["summary"].replace(b'"Found Blocks":0', b'"Found Blocks":1')
    miner = await cgminer_miner(replies)
    driver = CgminerDriver("127.0.0.1", miner.port, timeout_s=2.0)
    try:
        reading = await driver.fetch()
        del miner.replies["pools"]  # the pools command fails: nothing said about pools
        bare = await driver.fetch()
    finally:
        await driver.aclose()
    # the S9's first pool is Dead: it works for its second, which is Alive
    assert (reading.pool_fallback, reading.pool_connected, reading.blocks_found) == (
        True, True, 1)
    assert (bare.pool_fallback, bare.pool_connected, bare.pool_url) == (None, None, None)
