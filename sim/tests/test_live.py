"""AxeOS v2.14+ live push over a real WebSocket, fleets on other loopback hosts, moving miners."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from minerwatch.sim.axeos import changed_fields, version_numbers
from minerwatch.sim.fleet import Fault, Fleet

from .conftest import ManualClock


def live_url(miner: Any) -> str:
    return f"ws://{miner.host}:{miner.port}/api/ws/live"


async def next_update(socket: ClientConnection, timeout: float = 2.0) -> dict[str, Any]:
    event = json.loads(await asyncio.wait_for(socket.recv(), timeout))
    assert event["event"] == "update"
    return event["data"]


def test_changed_fields_recurse_into_objects_and_send_lists_whole() -> None:
    old = {"a": 1, "b": {"x": 1, "y": 2}, "c": [1, 2], "d": None}
    new = {"a": 1, "b": {"x": 1, "y": 3}, "c": [1, 2, 3], "d": None, "e": 0}
    assert changed_fields(old, new) == {"b": {"y": 3}, "c": [1, 2, 3], "e": 0}
    assert changed_fields(new, new) == {}
    assert version_numbers("v2.14.0") == (2, 14, 0) and version_numbers("dev") == ()


async def test_full_object_on_connect_then_only_changes(clock: ManualClock) -> None:
    async with Fleet(axeos=1, cgminer=0, host="127.0.0.7", seed=4, clock=clock,
                     axeos_version="v2.14.0") as fleet:
        miner = fleet.miners[0]
        miner.live_interval_s = 0.05
        async with connect(live_url(miner)) as socket:
            full = await next_update(socket)
            async with httpx.AsyncClient() as client:
                info = (await client.get(f"http://127.0.0.7:{miner.port}/api/system/info")).json()
            assert full == info  # the clock stands still: the same object
            assert full["version"] == "v2.14.0" and full["macAddr"] == miner.mac

            with pytest.raises(TimeoutError):  # nothing changed: nothing pushed
                await next_update(socket, timeout=0.3)
            clock.advance(5)
            changes = await next_update(socket)
            assert changes["uptimeSeconds"] == full["uptimeSeconds"] + 5
            assert "macAddr" not in changes and "ASICModel" not in changes
            assert miner.live_updates == 1


async def test_live_faults_drop_refuse_and_hang() -> None:
    async with Fleet(axeos=1, cgminer=0, axeos_version="v2.15.1") as fleet:
        miner = fleet.miners[0]
        miner.live_interval_s = 0.05
        async with connect(live_url(miner)) as socket:
            await next_update(socket)
            await miner.set_fault(Fault.TIMEOUT)  # hung: no updates, no pongs
            await asyncio.sleep(0.1)
            pong = await socket.ping()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(pong, 0.3)
            await miner.set_fault(Fault.NO_LIVE)  # the socket drops...
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(socket.recv(), 2)
        with pytest.raises(websockets.InvalidStatus) as refused:  # ...and stays away
            async with connect(live_url(miner)):
                pass
        assert refused.value.response.status_code == 503
        async with httpx.AsyncClient() as client:  # while HTTP polling still works
            reply = await client.get(f"http://127.0.0.1:{miner.port}/api/system/info")
        assert reply.status_code == 200

        await miner.set_fault(Fault.NONE)
        async with connect(live_url(miner)) as socket:
            assert "hashRate" in await next_update(socket)
            miner.drop_live()
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(socket.recv(), 2)
        assert miner.live_requests == 3


async def test_older_firmware_has_no_live_socket() -> None:
    async with Fleet(axeos=1, cgminer=0) as fleet:
        miner = fleet.miners[0]
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(live_url(miner)):
                pass
        assert refused.value.response.status_code == 404
        assert miner.live_requests == 1 and miner.info_requests == 0


async def test_fleets_on_other_hosts_with_their_own_identities() -> None:
    async with Fleet(axeos=1, cgminer=1, host="127.0.0.2") as first, \
            Fleet(axeos=1, cgminer=1, host="127.0.0.3", first_index=10) as second:
        assert [m.name for m in second.miners] == ["axeos-10", "cgminer-10"]
        assert first.miners[0].mac != second.miners[0].mac
        async with httpx.AsyncClient() as client:
            for fleet, host in ((first, "127.0.0.2"), (second, "127.0.0.3")):
                miner = fleet.miners[0]
                assert miner.url.startswith(f"axeos://{host}:")
                info = (await client.get(f"http://{host}:{miner.port}/api/system/info")).json()
                assert info["macAddr"] == miner.mac
    with pytest.raises(ValueError, match=r"outside 127\.0\.0\.0/8"):
        Fleet(host="10.0.0.1")


async def test_a_miner_moves_to_another_address() -> None:
    async with Fleet(axeos=1, cgminer=0, host="127.0.0.4") as fleet:
        miner = fleet.miners[0]
        port = miner.port
        await fleet.move(miner.name, "127.0.0.5")
        async with httpx.AsyncClient() as client:
            info = (await client.get(f"http://127.0.0.5:{port}/api/system/info")).json()
            assert info["macAddr"] == miner.mac
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.4:{port}/api/system/info")
        with pytest.raises(ValueError, match=r"outside 127\.0\.0\.0/8"):
            await fleet.move(miner.name, "192.168.1.20")
