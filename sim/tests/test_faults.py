"""Every fault through real sockets, as a collector would meet it."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from minerwatch.sim.fleet import Fault, Fleet

INFO = "/api/system/info"


def info_url(fleet: Fleet, name: str = "axeos-0") -> str:
    return fleet.by_name(name).url.replace("axeos://", "http://") + INFO


async def test_timeout_axeos_accepts_but_never_answers(fleet: Fleet) -> None:
    miner = fleet.by_name("axeos-0")
    await miner.set_fault(Fault.TIMEOUT)
    assert miner.fault is Fault.TIMEOUT
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.3, connect=1.0)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(info_url(fleet))
        await miner.set_fault(Fault.NONE)
        assert (await client.get(info_url(fleet))).status_code == 200
    # the other miners never noticed
    async with httpx.AsyncClient(timeout=1.0) as client:
        assert (await client.get(info_url(fleet, "axeos-1"))).status_code == 200


async def test_timeout_cgminer_accepts_but_never_answers(fleet: Fleet, cg_call) -> None:
    miner = fleet.by_name("cgminer-0")
    await miner.set_fault(Fault.TIMEOUT)
    reader, writer = await asyncio.open_connection("127.0.0.1", miner.port)  # connect works
    writer.write(b'{"command":"summary"}')
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(), 0.3)
    writer.close()
    await miner.set_fault(Fault.NONE)
    assert b'"SUMMARY"' in await cg_call(miner.port, b'{"command":"summary"}')


async def test_refuse_then_none_rebinds_the_same_port(fleet: Fleet, cg_call) -> None:
    for miner in (fleet.by_name("axeos-1"), fleet.by_name("cgminer-1")):
        port = miner.port
        if miner.kind == "cgminer":  # closed connections leave TIME_WAIT on this port
            for _ in range(3):
                assert await cg_call(port, b"version")
        await miner.set_fault(Fault.REFUSE)
        assert miner.fault is Fault.REFUSE
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        await miner.set_fault(Fault.NONE)
        assert miner.port == port and miner.url.endswith(f":{port}")
        if miner.kind == "axeos":
            async with httpx.AsyncClient(timeout=1.0) as client:
                assert (await client.get(info_url(fleet, miner.name))).json()["hostname"]
        else:
            assert b'"SUMMARY"' in await cg_call(port, b"summary")


async def test_refuse_drops_open_keepalive_connections(fleet: Fleet) -> None:
    miner = fleet.by_name("axeos-0")
    reader, writer = await asyncio.open_connection("127.0.0.1", miner.port)
    writer.write(b"GET /api/system/info HTTP/1.1\r\nHost: m\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(4096), 2)).startswith(b"HTTP/1.1 200")
    await miner.set_fault(Fault.REFUSE)
    assert await asyncio.wait_for(reader.read(), 2) == b""  # the device went away
    writer.close()
    await miner.set_fault(Fault.NONE)


async def test_refuse_from_another_fault_and_back(fleet: Fleet) -> None:
    miner = fleet.by_name("axeos-0")
    await miner.set_fault(Fault.GARBAGE)
    await miner.set_fault(Fault.REFUSE)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", miner.port)
    await miner.set_fault(Fault.PAUSED)  # re-binds as well
    async with httpx.AsyncClient(timeout=1.0) as client:
        assert (await client.get(info_url(fleet))).json()["miningPaused"] is True


async def test_garbage_axeos_is_200_with_broken_body(fleet: Fleet) -> None:
    miner = fleet.by_name("axeos-0")
    await miner.set_fault(Fault.GARBAGE)
    async with httpx.AsyncClient(timeout=1.0) as client:
        for _ in range(4):  # both kinds: truncated JSON and noise
            response = await client.get(info_url(fleet))
            assert response.status_code == 200
            with pytest.raises(ValueError):
                json.loads(response.content)
        await miner.set_fault("none")
        assert (await client.get(info_url(fleet))).json()["ASICModel"] == "BM1370"


async def test_garbage_cgminer_is_not_json(fleet: Fleet, cg_call) -> None:
    miner = fleet.by_name("cgminer-0")
    await miner.set_fault(Fault.GARBAGE)
    for _ in range(4):
        raw = await cg_call(miner.port, b'{"command":"summary"}')
        assert raw
        with pytest.raises(ValueError):
            json.loads(raw.rstrip(b"\x00"))
    await miner.set_fault(Fault.NONE)
    assert json.loads((await cg_call(miner.port, b"summary")).rstrip(b"\x00"))["SUMMARY"]


async def test_paused_axeos(fleet: Fleet, clock) -> None:
    miner = fleet.by_name("axeos-1")
    async with httpx.AsyncClient(timeout=1.0) as client:
        await miner.set_fault(Fault.PAUSED)
        paused = (await client.get(info_url(fleet, miner.name))).json()
        clock.advance(300)
        still = (await client.get(info_url(fleet, miner.name))).json()
        await miner.set_fault(Fault.NONE)
        clock.advance(300)
        resumed = (await client.get(info_url(fleet, miner.name))).json()
    assert paused["miningPaused"] is True and paused["hashRate"] == 0
    assert paused["expectedHashrate"] > 0
    assert still["sharesAccepted"] == paused["sharesAccepted"]  # nothing found while paused
    assert still["uptimeSeconds"] == paused["uptimeSeconds"] + 300  # but it stayed up
    assert resumed["miningPaused"] is False and resumed["hashRate"] > 1000
    assert resumed["sharesAccepted"] > still["sharesAccepted"]


async def test_paused_cgminer(fleet: Fleet, cg_call) -> None:
    miner = fleet.by_name("cgminer-1")
    await miner.set_fault(Fault.PAUSED)
    reply = json.loads((await cg_call(miner.port, b'{"command":"summary+stats"}'))[:-1])
    summary = reply["summary"][0]["SUMMARY"][0]
    stats = reply["stats"][0]["STATS"][1]
    assert summary["GHS 5s"] == "0.00" and summary["GHS av"] == "0.00"
    assert stats["GHS 5s"] == "0.00"
    assert [stats[f"chain_rate{n}"] for n in (1, 2, 3)] == ["0.00"] * 3
    snap = miner.snapshot()
    assert snap["hashrate_ths"] == 0 and snap["is_mining"] is False


async def test_temp_override_axeos_and_cgminer(fleet: Fleet, cg_call) -> None:
    axeos, cgminer = fleet.by_name("axeos-0"), fleet.by_name("cgminer-0")
    axeos.temp_override = 85.0
    cgminer.temp_override = 85.0
    async with httpx.AsyncClient(timeout=1.0) as client:
        info = (await client.get(info_url(fleet))).json()
    assert info["temp"] == 85.0 and 83 < info["temp2"] < 85
    assert info["fanspeed"] == 100
    stats = json.loads((await cg_call(cgminer.port, b'{"command":"stats"}'))[:-1])["STATS"][1]
    chips = [int(t) for n in (1, 2, 3) for t in stats[f"temp_chip{n}"].split("-")]
    assert max(chips) == 85 and max(stats[f"temp2_{n}"] for n in (1, 2, 3)) == 85
    assert axeos.snapshot()["temp_c"] == 85.0 and cgminer.snapshot()["temp_c"] == 85.0

    axeos.temp_override = None
    cgminer.temp_override = None
    assert axeos.snapshot()["temp_c"] < 75 and cgminer.snapshot()["temp_c"] < 80
