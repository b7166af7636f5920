"""CGMiner miners over real TCP: one request per connection, JSON reply, NUL, close."""

from __future__ import annotations

import asyncio
import json
import time

from minerwatch.sim.fleet import Fleet


def decode(raw: bytes) -> dict:
    assert raw.endswith(b"\x00"), raw[-20:]
    return json.loads(raw[:-1])


def ok_status(reply: dict, code: int, msg: str) -> None:
    status = reply["STATUS"][0]
    assert status["STATUS"] == "S" and status["Code"] == code and status["Msg"] == msg
    assert status["Description"] == "bmminer 1.0.0"
    assert abs(status["When"] - time.time()) < 5
    assert reply["id"] == 1


async def test_summary(fleet: Fleet, cg_call) -> None:
    miner = fleet.by_name("cgminer-0")
    assert miner.kind == "cgminer" and miner.mac is None
    assert miner.url == f"cgminer://127.0.0.1:{miner.port}"
    reply = decode(await cg_call(miner.port, b'{"command":"summary"}'))
    ok_status(reply, 11, "Summary")
    summary = reply["SUMMARY"][0]
    assert isinstance(summary["GHS 5s"], str) and isinstance(summary["GHS av"], str)
    assert 100_000 < float(summary["GHS 5s"]) < 120_000  # ~110 TH/s in GH/s
    assert 100_000 < float(summary["GHS av"]) < 120_000
    assert summary["GHS 5s"].count(".") == 1 and len(summary["GHS 5s"].split(".")[1]) == 2
    assert isinstance(summary["Elapsed"], int) and summary["Elapsed"] >= 0
    for key in ("Accepted", "Rejected", "Hardware Errors", "Best Share"):
        assert isinstance(summary[key], int), key
    assert "Power" not in summary  # stock Antminer: no power figure anywhere


async def test_version(fleet: Fleet, cg_call) -> None:
    reply = decode(await cg_call(fleet.by_name("cgminer-1").port, b'{"command":"version"}'))
    ok_status(reply, 22, "BMMiner versions")
    version = reply["VERSION"][0]
    assert version["Type"] == "Antminer S19 Pro"
    assert {"BMMiner", "Miner", "CompileTime"} <= version.keys()


async def test_stats(fleet: Fleet, cg_call) -> None:
    miner = fleet.by_name("cgminer-0")
    reply = decode(await cg_call(miner.port, b'{"command":"stats"}'))
    ok_status(reply, 70, "BMMiner stats")
    head, data = reply["STATS"]
    assert head["Type"] == "Antminer S19 Pro"
    assert isinstance(data["GHS 5s"], str)
    assert data["total_rateideal"] == 110_000.0 and data["rate_unit"] == "GH"
    assert data["fan_num"] == 4
    assert all(3000 < data[f"fan{n}"] < 7000 for n in range(1, 5))
    chain_sum = 0.0
    for n in (1, 2, 3):
        chips = [int(t) for t in data[f"temp_chip{n}"].split("-")]
        pcbs = [int(t) for t in data[f"temp_pcb{n}"].split("-")]
        assert len(chips) == len(pcbs) == 4
        assert data[f"temp2_{n}"] == max(chips) and data[f"temp{n}"] == max(pcbs)
        assert 40 < max(chips) < 85 and max(pcbs) < max(chips)
        assert isinstance(data[f"chain_rate{n}"], str)
        chain_sum += float(data[f"chain_rate{n}"])
        assert data[f"chain_acn{n}"] == 114
        assert data[f"chain_acs{n}"].replace(" ", "").strip("ox") == ""
        assert data[f"freq{n}"] == 675
    assert abs(chain_sum - float(data["GHS 5s"])) < 0.05
    assert not any("power" in key.lower() for key in data)


async def test_pools(fleet: Fleet, cg_call) -> None:
    reply = decode(await cg_call(fleet.by_name("cgminer-0").port, b'{"command":"pools"}'))
    ok_status(reply, 7, "3 Pool(s)")
    pools = reply["POOLS"]
    active = [pool for pool in pools if pool["Stratum Active"]]
    assert len(active) == 1 and active[0]["Priority"] == 0
    assert all(pool["Status"] == "Alive" for pool in pools)
    assert active[0]["URL"].startswith("stratum+tcp://")
    assert active[0]["User"] and isinstance(active[0]["Accepted"], int)


async def test_snapshot_matches_what_is_served(fleet: Fleet, cg_call) -> None:
    miner = fleet.by_name("cgminer-1")
    reply = decode(await cg_call(miner.port, b'{"command":"summary+stats"}'))
    summary = reply["summary"][0]["SUMMARY"][0]
    stats = reply["stats"][0]["STATS"][1]
    snap = miner.snapshot()
    assert snap["hashrate_ths"] == float(summary["GHS 5s"]) / 1000
    assert snap["temp_c"] == max(stats["temp2_1"], stats["temp2_2"], stats["temp2_3"])
    assert snap["power_w"] is None and snap["efficiency_jth"] is None
    assert snap["shares_accepted"] == summary["Accepted"]
    assert snap["uptime_s"] == summary["Elapsed"]
    assert snap["fan_rpm"] == [stats[f"fan{n}"] for n in range(1, 5)]


async def test_multi_command(fleet: Fleet, cg_call) -> None:
    reply = decode(await cg_call(fleet.miners[2].port, b'{"command":"summary+stats"}'))
    assert set(reply) == {"summary", "stats"}
    ok_status(reply["summary"][0], 11, "Summary")
    ok_status(reply["stats"][0], 70, "BMMiner stats")
    assert len(reply["summary"]) == 1 and len(reply["stats"]) == 1


async def test_plain_text_form(fleet: Fleet, cg_call) -> None:
    port = fleet.miners[2].port
    reply = decode(await cg_call(port, b"summary"))
    ok_status(reply, 11, "Summary")
    reply = decode(await cg_call(port, b"version|\n"))
    ok_status(reply, 22, "BMMiner versions")


async def test_invalid_command_and_json(fleet: Fleet, cg_call) -> None:
    port = fleet.miners[2].port
    reply = decode(await cg_call(port, b'{"command":"reboot_everything"}'))
    status = reply["STATUS"][0]
    assert status["STATUS"] == "E" and status["Code"] == 14 and status["Msg"] == "Invalid command"
    reply = decode(await cg_call(port, b'{"command": 5}'))
    assert reply["STATUS"][0]["Code"] == 24
    reply = decode(await cg_call(port, b'{"command":"summ\x00'))
    assert reply["STATUS"][0]["STATUS"] == "E" and reply["STATUS"][0]["Code"] == 23


async def test_command_split_over_packets(fleet: Fleet) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", fleet.miners[2].port)
    writer.write(b'{"command":')
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(b'"pools"}')
    raw = await asyncio.wait_for(reader.read(), 2)
    writer.close()
    assert "POOLS" in decode(raw)


async def test_values_move_with_time(fleet: Fleet, clock, cg_call) -> None:
    port = fleet.miners[2].port
    first = decode(await cg_call(port, b'{"command":"summary"}'))["SUMMARY"][0]
    clock.advance(600)
    later = decode(await cg_call(port, b'{"command":"summary"}'))["SUMMARY"][0]
    assert later["Elapsed"] == first["Elapsed"] + 600
    assert later["Accepted"] > first["Accepted"]
    assert later["GHS 5s"] != first["GHS 5s"]
    assert 100_000 < float(later["GHS 5s"]) < 120_000
