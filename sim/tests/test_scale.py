"""A fleet of a few thousand miners starts, answers and stops (no timing assertions)."""

from __future__ import annotations

import asyncio
import json

import httpx

from minerwatch.sim.fleet import Fleet


async def test_two_thousand_miners_start_answer_and_stop() -> None:
    fleet = Fleet(axeos=1_000, cgminer=1_000, seed=11)
    await fleet.start()
    try:
        ports = {miner.port for miner in fleet.miners}
        assert len(ports) == 2_000 and 0 not in ports
        assert fleet.by_name("axeos-999").mac == "02:4D:57:00:03:E7"
        async with httpx.AsyncClient(timeout=2.0) as client:
            for miner in fleet.miners[::250][:4]:
                info = (
                    await client.get(miner.url.replace("axeos://", "http://") + "/api/system/info")
                ).json()
                assert info["hostname"] == f"bitaxe-{miner.index}"
        for miner in fleet.miners[1_000::250]:
            reader, writer = await asyncio.open_connection("127.0.0.1", miner.port)
            writer.write(b'{"command":"summary"}')
            raw = await asyncio.wait_for(reader.read(), 2)
            writer.close()
            assert json.loads(raw[:-1])["SUMMARY"][0]["Elapsed"] >= 0
    finally:
        await fleet.stop()
    assert not any(miner.listening for miner in fleet.miners)
    refused = 0
    for miner in fleet.miners[::500]:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", miner.port)
            writer.close()
        except ConnectionRefusedError:
            refused += 1
    assert refused == 4
