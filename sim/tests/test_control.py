"""The control API over real HTTP, driving a running fleet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from minerwatch.sim.control import ControlApi
from minerwatch.sim.fleet import Fault, Fleet


@pytest.fixture
async def control(fleet: Fleet) -> AsyncIterator[str]:
    api = ControlApi(fleet, port=0)
    await api.start()
    try:
        yield f"http://127.0.0.1:{api.port}"
    finally:
        await api.stop()


async def test_list_miners(fleet: Fleet, control: str) -> None:
    async with httpx.AsyncClient(base_url=control) as client:
        miners = (await client.get("/miners")).json()
    assert [m["name"] for m in miners] == ["axeos-0", "axeos-1", "cgminer-0", "cgminer-1"]
    assert miners[0] == {
        "name": "axeos-0",
        "kind": "axeos",
        "url": fleet.miners[0].url,
        "fault": "none",
        "temp_override": None,
    }
    assert miners[3]["kind"] == "cgminer" and miners[3]["url"] == fleet.miners[3].url


async def test_set_fault_and_temp(fleet: Fleet, control: str) -> None:
    async with httpx.AsyncClient(base_url=control) as client:
        response = await client.post("/miners/cgminer-1/fault", json={"fault": "refuse"})
        assert response.status_code == 200 and response.json()["fault"] == "refuse"
        assert fleet.by_name("cgminer-1").fault is Fault.REFUSE
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", fleet.by_name("cgminer-1").port)
        await client.post("/miners/cgminer-1/fault", json={"fault": "none"})
        assert fleet.by_name("cgminer-1").fault is Fault.NONE

        response = await client.post("/miners/axeos-1/temp", json={"temp_c": 85})
        assert response.status_code == 200 and response.json()["temp_override"] == 85.0
        assert fleet.by_name("axeos-1").snapshot()["temp_c"] == 85.0
        detail = (await client.get("/miners/axeos-1")).json()
        assert detail["snapshot"]["temp_c"] == 85.0
        await client.post("/miners/axeos-1/temp", json={"temp_c": None})
        assert fleet.by_name("axeos-1").temp_override is None
        listed = {m["name"]: m for m in (await client.get("/miners")).json()}
        assert listed["axeos-1"]["temp_override"] is None


async def test_errors(control: str) -> None:
    async with httpx.AsyncClient(base_url=control) as client:
        response = await client.post("/miners/nope-9/fault", json={"fault": "none"})
        assert response.status_code == 404
        assert (await client.get("/miners/nope-9")).status_code == 404
        assert (await client.get("/elsewhere")).status_code == 404
        for body in (
            b"{not json",
            b'{"fault":"on fire"}',
            b'{"fault":null}',
            b"[]",
            b'{"fault":"none","extra":1}',
        ):
            response = await client.post("/miners/axeos-0/fault", content=body)
            assert response.status_code == 400, body
            assert "error" in response.json()
        for body in (b'{"temp_c":"hot"}', b'{"temp_c":999}', b"{}", b'{"temp_c":true}'):
            response = await client.post("/miners/axeos-0/temp", content=body)
            assert response.status_code == 400, body
        assert (await client.delete("/miners/axeos-0/fault")).status_code == 405
        assert (await client.get("/miners")).status_code == 200  # still serving
