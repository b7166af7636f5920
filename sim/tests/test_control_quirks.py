"""The control API's control additions over real HTTP: the state a test asserts on, the
hidden limit and the quirks."""

from __future__ import annotations

import httpx
import pyotp
import pytest

from minerwatch.sim.fleet import Fleet

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DP"


async def test_state_shows_settings_and_counters(fleet: Fleet, control_client) -> None:
    miner = fleet.axeos("axeos-0")
    state = (await control_client.get("/miners/axeos-0")).json()
    assert state["settings"] == {
        "frequency_mhz": 600, "core_voltage_mv": 1150, "fan_mode": "auto",
        "fan_percent": 100, "temp_target_c": 60,
        "pools": {
            "primary": {"url": "stratum+tcp://pool.minerwatch.test:3333",
                        "user": miner.stratum_user, "password": "x"},
            "fallback": {"url": "stratum+tcp://backup.minerwatch.test:3334",
                         "user": miner.stratum_user, "password": "x"},
        },
    }
    assert state["writes"] == 0 and state["last_patch"] is None
    assert state["identified_at"] is None and state["restarts"] == 0
    assert state["otp_secret"] is None and state["ignore_writes"] is False
    assert state["privileged"] is None and state["web_port"] is None
    assert 610 <= state["hidden_limit_mhz"] <= 640 and state["stable"] is True
    assert state["snapshot"]["hashrate_ths"] > 1
    async with httpx.AsyncClient() as client:
        await client.patch(miner.url.replace("axeos://", "http://") + "/api/system",
                           json={"frequency": 575, "autofanspeed": 0})
    state = (await control_client.get("/miners/axeos-0")).json()
    assert state["writes"] == 1 and state["last_patch"] == {"frequency": 575, "autofanspeed": 0}
    assert state["settings"]["frequency_mhz"] == 575 and state["settings"]["fan_mode"] == "manual"
    cg = (await control_client.get("/miners/cgminer-0")).json()
    assert cg["privileged"] is True and cg["pool_priority"] == [0, 1, 2]
    assert cg["settings"]["frequency_mhz"] == 675
    assert cg["settings"]["pools"]["primary"]["url"] == "stratum+tcp://pool.minerwatch.test:3333"


async def test_limit_is_deterministic_for_tests(fleet: Fleet, control_client) -> None:
    response = await control_client.post("/miners/axeos-1/limit",
                                         json={"base_limit_mhz": 560, "mhz_per_mv": 0.5})
    assert response.status_code == 200
    state = response.json()
    assert state["hidden_limit_mhz"] == 560 and state["stable"] is False  # 600 MHz > 560
    assert state["limit"] == {"base_limit_mhz": 560, "mhz_per_mv": 0.5}
    miner = fleet.axeos("axeos-1")
    miner.set_limit(590)  # Python: the slope stays
    assert miner.model.limit_mhz(1250) == 640
    for body in (b'{"base_limit_mhz": 0}', b'{"mhz_per_mv": 1}', b'{"base_limit_mhz": "x"}',
                 b'{"base_limit_mhz": 560, "mhz_per_mv": -1}', b"[]"):
        assert (await control_client.post("/miners/axeos-1/limit", content=body)
                ).status_code == 400, body


async def test_quirks(fleet: Fleet, control_client) -> None:
    response = await control_client.post("/miners/axeos-0/quirks", json={
        "ignore_writes": True, "otp_secret": SECRET, "restart_s": 0.5,
        "frequency_options": [400, 500], "voltage_options": [1100, 1150],
        "device_model": "NerdQAxe++", "asic_count": 4, "version": "v2.14.0"})
    assert response.status_code == 200, response.text
    state = response.json()
    assert state["ignore_writes"] is True and state["otp_secret"] == SECRET
    assert state["restart_s"] == 0.5 and state["frequency_options"] == [400, 500]
    assert state["device_model"] == "NerdQAxe++" and state["asic_count"] == 4
    assert state["version"] == "v2.14.0"
    miner = fleet.axeos("axeos-0")
    assert miner.quirks.otp_secret == SECRET and miner.model.asic_count == 4
    async with httpx.AsyncClient() as client:
        url = miner.url.replace("axeos://", "http://")
        asic = (await client.get(url + "/api/system/asic")).json()
        denied = await client.post(url + "/api/system/identify")
        allowed = await client.post(url + "/api/system/identify",
                                    headers={"X-TOTP": pyotp.TOTP(SECRET).now()})
    assert asic["deviceModel"] == "NerdQAxe++" and asic["voltageOptions"] == [1100, 1150]
    assert denied.status_code == 401 and allowed.status_code == 200
    cleared = await control_client.post("/miners/axeos-0/quirks",
                                        json={"otp_secret": None, "frequency_options": None})
    assert cleared.json()["otp_secret"] is None
    assert cleared.json()["frequency_options"] == [400, 490, 525, 550, 600, 625]
    cg = await control_client.post("/miners/cgminer-0/quirks",
                                   json={"privileged": False, "web_password": "pw"})
    assert cg.status_code == 200 and cg.json()["privileged"] is False
    assert fleet.cgminer("cgminer-0").quirks.web_password == "pw"


async def test_quirk_errors(control_client) -> None:
    for name, body in (
        ("axeos-0", b'{"privileged": false}'),  # CGMiner only
        ("cgminer-0", b'{"otp_secret": "JBSWY3DPEHPK3PXP"}'),  # AxeOS only
        ("axeos-0", b'{"otp_secret": "not base32!"}'),
        ("axeos-0", b'{"otp_secret": ""}'),
        ("axeos-0", b'{"asic_model": "BM9999"}'),
        ("axeos-0", b'{"asic_count": 0}'),
        ("axeos-0", b'{"restart_s": -1}'),
        ("axeos-0", b'{"frequency_options": []}'),
        ("axeos-0", b'{"frequency_options": [0]}'),
        ("axeos-0", b'{"unknown": 1}'),
        ("axeos-0", b"{nope"),
    ):
        response = await control_client.post(f"/miners/{name}/quirks", content=body)
        assert response.status_code == 400, body
        assert "error" in response.json()
    state = (await control_client.get("/miners/axeos-0")).json()
    assert state["otp_secret"] is None and state["asic_count"] == 1  # nothing applied


async def test_fleet_options(clock) -> None:
    async with Fleet(axeos=2, cgminer=1, clock=clock, otp_secret=SECRET, web=True) as fleet:
        assert all(m.quirks.otp_secret == SECRET for m in fleet.axeos_miners)
        assert fleet.cgminer_miners[0].web_port
    with pytest.raises(ValueError, match="base32"):
        Fleet(axeos=1, cgminer=0, otp_secret="1")
