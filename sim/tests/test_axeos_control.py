"""AxeOS control over real HTTP: PATCH /api/system, restart, identify, pause/resume, the
ASIC options, NerdQAxe OTP, and the ignore_writes quirk."""

from __future__ import annotations

import asyncio
import json

import httpx
import pyotp
import pytest
import websockets

from minerwatch.sim.axeos import AxeOSMiner
from minerwatch.sim.fleet import Fleet

INFO = "/api/system/info"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DP"


def base(miner: AxeOSMiner) -> str:
    return miner.url.replace("axeos://", "http://")


async def info(client: httpx.AsyncClient, miner: AxeOSMiner) -> dict:
    response = await client.get(base(miner) + INFO)
    assert response.status_code == 200
    return response.json()


async def test_info_carries_the_live_settings(fleet: Fleet) -> None:
    miner = fleet.axeos("axeos-0")
    async with httpx.AsyncClient() as client:
        data = await info(client, miner)
    assert data["frequency"] == 600 and data["coreVoltage"] == 1150
    assert data["autofanspeed"] == 1 and data["manualFanSpeed"] == 100  # v2.11
    assert data["temptarget"] == 60 and 25 <= data["fanspeed"] <= 100
    assert data["stratumURL"] == "pool.minerwatch.test" and data["stratumPort"] == 3333
    assert data["fallbackStratumURL"] == "backup.minerwatch.test"
    assert "stratumPassword" not in data and "fallbackStratumPassword" not in data
    assert data["ASICModel"] == "BM1370" and "deviceModel" not in data  # as ESP-Miner
    assert data["smallCoreCount"] == 2040 and data["asicCount"] == 1
    assert data["expectedHashrate"] == 1224


async def test_patch_applies_and_shows_in_info(fleet: Fleet, clock) -> None:
    miner = fleet.axeos("axeos-0")
    body = {"frequency": 550, "coreVoltage": 1100, "autofanspeed": 0, "manualFanSpeed": 80,
            "temptarget": 55, "stratumURL": "solo.example", "stratumPort": 4444,
            "stratumUser": "me.rig", "stratumPassword": "secret"}
    async with httpx.AsyncClient() as client:
        response = await client.patch(base(miner) + "/api/system", json=body)
        assert response.status_code == 200 and response.content == b""
        clock.advance(5)
        data = await info(client, miner)
    assert data["frequency"] == 550 and data["coreVoltage"] == 1100
    assert data["expectedHashrate"] == 550 * 2040 / 1000  # follows the frequency
    assert data["autofanspeed"] == 0 and data["manualFanSpeed"] == 80
    assert data["fanspeed"] == 80 and data["temptarget"] == 55
    assert (data["stratumURL"], data["stratumPort"], data["stratumUser"]) == (
        "solo.example", 4444, "me.rig")
    assert "secret" not in json.dumps(data)
    assert miner.model.settings.pools[0].password == "secret"
    assert miner.writes == 1 and miner.last_patch == body
    assert miner.model.changed_at == clock.now - 5


async def test_only_the_keys_sent_change(fleet: Fleet) -> None:
    miner = fleet.axeos("axeos-1")
    async with httpx.AsyncClient() as client:
        before = await info(client, miner)
        response = await client.patch(base(miner) + "/api/system", json={"temptarget": 50})
        after = await info(client, miner)
        # keys the simulator does not store are ignored, as the firmware ignores unknown keys
        ignored = await client.patch(base(miner) + "/api/system", json={"hostname": "x"})
    assert response.status_code == ignored.status_code == 200
    assert after["temptarget"] == 50
    assert {k for k in before if before[k] != after[k]} <= {
        "temptarget", "hashRate", "power", "current", "voltage", "temp", "temp2", "vrTemp",
        "fanspeed", "fanrpm", "freeHeap", "wifiRSSI", "responseTime", "coreVoltageActual"}
    assert miner.writes == 1 and miner.patch_requests == 2
    assert miner.last_patch == {"temptarget": 50}


@pytest.mark.parametrize(
    "body",
    [
        {"frequency": "600"},  # wrong type
        {"frequency": 0},  # out of the firmware's 1-65535
        {"coreVoltage": 70_000},
        {"temptarget": 30},  # 35-66
        {"manualFanSpeed": 101},
        {"autofanspeed": 2},
        {"stratumPort": -1},
        {"stratumURL": 5},
        {"frequency": True},
        {"frequency": 500, "temptarget": 99},  # all or nothing: the frequency is not saved
    ],
)
async def test_bad_input_is_400_and_saves_nothing(fleet: Fleet, body: dict) -> None:
    miner = fleet.axeos("axeos-0")
    settings = miner.model.settings
    async with httpx.AsyncClient() as client:
        response = await client.patch(base(miner) + "/api/system", json=body)
    assert response.status_code == 400 and response.text == "Wrong API input"
    assert miner.model.settings == settings and miner.writes == 0 and miner.last_patch is None


async def test_not_json_and_wrong_methods(fleet: Fleet) -> None:
    miner = fleet.axeos("axeos-0")
    async with httpx.AsyncClient() as client:
        bad = await client.patch(base(miner) + "/api/system", content=b"{nope")
        get = await client.get(base(miner) + "/api/system")
        restart = await client.get(base(miner) + "/api/system/restart")
        asic = await client.post(base(miner) + "/api/system/asic")
    assert bad.status_code == 400 and bad.text == "Invalid JSON"
    assert get.status_code == restart.status_code == asic.status_code == 405
    assert miner.writes == 0 and miner.restarts == 0


async def test_the_firmware_range_is_wide_open(fleet: Fleet) -> None:
    """AxeOS checks frequency and voltage only as 1-65535: minerwatch must hold its own."""
    miner = fleet.axeos("axeos-0")
    async with httpx.AsyncClient() as client:
        response = await client.patch(base(miner) + "/api/system",
                                      json={"frequency": 2000.5, "coreVoltage": 1900})
        data = await info(client, miner)
    assert response.status_code == 200
    assert data["frequency"] == 2000.5 and data["coreVoltage"] == 1900


async def test_asic_options_and_their_version_gate(fleet: Fleet) -> None:
    miner = fleet.axeos("axeos-0")
    async with httpx.AsyncClient() as client:
        options = (await client.get(base(miner) + "/api/system/asic")).json()
        miner.quirks.frequency_options = (400, 490, 525)
        narrowed = (await client.get(base(miner) + "/api/system/asic")).json()
        miner.version = "v2.8.1"
        old = await client.get(base(miner) + "/api/system/asic")
    assert options == {
        "ASICModel": "BM1370", "deviceModel": "Gamma", "asicCount": 1,
        "defaultFrequency": 525, "frequencyOptions": [400, 490, 525, 550, 600, 625],
        "defaultVoltage": 1150, "voltageOptions": [1000, 1060, 1100, 1150, 1200, 1250],
    }
    assert narrowed["frequencyOptions"] == [400, 490, 525]
    assert old.status_code == 404


async def test_manual_fan_key_before_v2_11(fleet: Fleet) -> None:
    miner = fleet.axeos("axeos-0")
    miner.version = "v2.10.1"
    async with httpx.AsyncClient() as client:
        ignored = await client.patch(base(miner) + "/api/system", json={"manualFanSpeed": 40})
        response = await client.patch(base(miner) + "/api/system",
                                      json={"autofanspeed": 0, "fanspeed": 40})
        data = await info(client, miner)
    assert ignored.status_code == response.status_code == 200
    assert "manualFanSpeed" not in data and data["fanspeed"] == 40
    assert miner.writes == 1


async def test_restart_goes_away_and_comes_back(fleet: Fleet, clock,
                                                eventually) -> None:
    miner = fleet.axeos("axeos-0")
    assert (miner.quirks.restart_s, miner.quirks.restart_delay_s) == (2.0, 1.0)  # defaults
    miner.quirks.restart_s, miner.quirks.restart_delay_s = 0.3, 0.1
    async with httpx.AsyncClient() as client:
        await client.patch(base(miner) + "/api/system", json={"frequency": 575})
        before = await info(client, miner)
        clock.advance(30)
        response = await client.post(base(miner) + "/api/system/restart")
        assert response.status_code == 200
        assert response.json() == {"message": "System will restart shortly."}
        assert miner.restarts == 1 and miner.restarting
        await eventually(lambda: not miner.listening)
        with pytest.raises(httpx.ConnectError):
            await client.get(base(miner) + INFO)
        await eventually(lambda: miner.listening)
        after = await info(client, miner)
    assert after["uptimeSeconds"] == 0 < before["uptimeSeconds"]
    assert after["frequency"] == 575 and after["hashRate"] > 0  # settings kept, mining
    assert not miner.restarting


async def test_pause_and_resume_on_v2_14(clock) -> None:
    async with Fleet(axeos=1, cgminer=0, clock=clock, axeos_version="v2.14.0") as fleet:
        miner = fleet.axeos("axeos-0")
        async with httpx.AsyncClient() as client:
            paused = await client.post(base(miner) + "/api/system/pause")
            clock.advance(60)
            during = await info(client, miner)
            resumed = await client.post(base(miner) + "/api/system/resume")
            clock.advance(60)
            after = await info(client, miner)
    assert paused.status_code == resumed.status_code == 200
    assert during["miningPaused"] is True and during["hashRate"] == 0
    assert after["miningPaused"] is False and after["hashRate"] > 0
    assert after["sharesAccepted"] > during["sharesAccepted"]


async def test_pause_is_404_before_v2_14(fleet: Fleet) -> None:
    miner = fleet.axeos("axeos-0")
    async with httpx.AsyncClient() as client:
        pause = await client.post(base(miner) + "/api/system/pause")
        resume = await client.post(base(miner) + "/api/system/resume")
        data = await info(client, miner)
    assert pause.status_code == resume.status_code == 404
    assert data["miningPaused"] is False


async def test_identify_records_the_time(fleet: Fleet, clock) -> None:
    miner = fleet.axeos("axeos-1")
    async with httpx.AsyncClient() as client:
        response = await client.post(base(miner) + "/api/system/identify")
        assert response.status_code == 200 and "Hi!" in response.json()["message"]
        assert miner.identified_at == clock.now
        clock.advance(5)
        again = await client.post(base(miner) + "/api/system/identify")  # toggles off
    assert "no longer" in again.json()["message"]
    assert miner.identified_at == clock.now - 5


async def test_otp_guards_every_write(fleet: Fleet) -> None:
    miner = fleet.axeos("axeos-0")
    miner.quirks.otp_secret = SECRET
    miner.set_device("NerdQAxe++", "BM1370", 4)
    miner.quirks.restart_delay_s = 30  # never actually goes within this test
    totp = pyotp.TOTP(SECRET)
    wrong = f"{(int(totp.now()) + 1) % 1_000_000:06d}"
    url = base(miner)
    async with httpx.AsyncClient() as client:
        for method, path in (("PATCH", "/api/system"), ("POST", "/api/system/restart"),
                             ("POST", "/api/system/identify")):
            for headers in ({}, {"X-TOTP": wrong}, {"X-TOTP": "abc"}):
                response = await client.request(method, url + path, json={"frequency": 500},
                                                headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.text == "OTP/Session required"
        assert miner.writes == 0 and miner.restarts == 0 and miner.identified_at is None
        data = await info(client, miner)  # reading needs no OTP
        assert data["deviceModel"] == "NerdQAxe++" and data["asicCount"] == 4
        assert data["expectedHashrate"] == 600 * 2040 * 4 / 1000
        ok = await client.patch(url + "/api/system", json={"frequency": 500},
                                headers={"X-TOTP": totp.now()})
        assert ok.status_code == 200
        assert (await info(client, miner))["frequency"] == 500


async def test_ignore_writes_answers_200_and_changes_nothing(fleet: Fleet) -> None:
    miner = fleet.axeos("axeos-0")
    miner.quirks.ignore_writes = True
    async with httpx.AsyncClient() as client:
        response = await client.patch(base(miner) + "/api/system", json={"frequency": 490})
        data = await info(client, miner)
    assert response.status_code == 200
    assert data["frequency"] == 600 and miner.writes == 1
    assert miner.last_patch == {"frequency": 490}


async def test_a_restart_drops_the_live_websocket(clock, eventually) -> None:
    async with Fleet(axeos=1, cgminer=0, clock=clock, axeos_version="v2.14.0") as fleet:
        miner = fleet.axeos("axeos-0")
        miner.quirks.restart_s, miner.quirks.restart_delay_s = 0.2, 0.05
        url = base(miner).replace("http://", "ws://") + "/api/ws/live"
        async with websockets.connect(url) as ws:
            await ws.recv()
            miner.request_restart()
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 3)
                await asyncio.wait_for(ws.recv(), 3)
        await eventually(lambda: miner.listening and not miner.restarting)
