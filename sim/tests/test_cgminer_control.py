"""CGMiner control over real TCP (restart, switchpool, privileged, Avalon-style ascset) and
the stock Antminer web CGI (reboot.cgi behind HTTP Digest auth)."""

from __future__ import annotations

import json

import httpx
import pytest

from minerwatch.sim.fleet import Fleet


def decode(raw: bytes) -> dict:
    assert raw.endswith(b"\x00"), raw[-20:]
    return json.loads(raw[:-1])


def status(reply: dict) -> tuple[str, int, str]:
    first = reply["STATUS"][0]
    return first["STATUS"], first["Code"], first["Msg"]


async def call(cg_call, port: int, command: str, parameter: str | None = None) -> dict:
    request = {"command": command} | ({} if parameter is None else {"parameter": parameter})
    return decode(await cg_call(port, json.dumps(request).encode()))


async def test_privileged_and_restart(fleet: Fleet, clock, cg_call, eventually) -> None:
    miner = fleet.cgminer("cgminer-0")
    miner.quirks.restart_s, miner.quirks.restart_delay_s = 0.3, 0.05
    clock.advance(100)
    before = (await call(cg_call, miner.port, "summary"))["SUMMARY"][0]["Elapsed"]
    assert status(await call(cg_call, miner.port, "privileged")) == (
        "S", 46, "Privileged access OK")
    assert status(await call(cg_call, miner.port, "restart"))[0] == "S"
    assert miner.restarts == 1
    await eventually(lambda: not miner.listening)
    with pytest.raises(ConnectionRefusedError):
        await cg_call(miner.port, b'{"command":"summary"}')
    await eventually(lambda: miner.listening)
    after = (await call(cg_call, miner.port, "summary"))["SUMMARY"][0]
    assert after["Elapsed"] == 0 < before
    assert float(after["GHS 5s"]) > 0


async def test_switchpool(fleet: Fleet, cg_call) -> None:
    miner = fleet.cgminer("cgminer-1")
    reply = decode(await cg_call(miner.port, b"switchpool|2"))  # the plain-text form
    assert status(reply) == (
        "S", 27, "Switching to pool 2:'stratum+tcp://backup2.minerwatch.test:443'")
    pools = (await call(cg_call, miner.port, "pools"))["POOLS"]
    by_number = {pool["POOL"]: pool for pool in pools}
    assert [by_number[n]["Priority"] for n in range(3)] == [1, 2, 0]
    assert [pool["POOL"] for pool in pools if pool["Stratum Active"]] == [2]
    assert miner.snapshot()["pool_url"] == "stratum+tcp://backup2.minerwatch.test:443"
    assert miner.snapshot()["pool_fallback"] is False  # the first priority now
    assert status(await call(cg_call, miner.port, "switchpool", "0"))[1] == 27
    assert miner.model.settings.pool_priority == (0, 2, 1)
    for parameter, code in (("3", 26), ("-1", 26), ("x", 26), (None, 25)):
        reply = await call(cg_call, miner.port, "switchpool", parameter)
        assert status(reply)[:2] == ("E", code), parameter
    assert miner.model.settings.pool_priority == (0, 2, 1)


async def test_access_denied_when_not_privileged(fleet: Fleet, cg_call) -> None:
    miner = fleet.cgminer("cgminer-0")
    miner.quirks.privileged = False
    for command in ("restart", "switchpool", "privileged", "ascset"):
        reply = await call(cg_call, miner.port, command, "1" if command == "switchpool" else None)
        assert status(reply) == ("E", 45, f"Access denied to '{command}' command")
    assert miner.restarts == 0 and miner.model.settings.pool_priority == (0, 1, 2)
    assert status(await call(cg_call, miner.port, "summary"))[0] == "S"  # reading still works
    joined = decode(await cg_call(miner.port, b'{"command":"summary+restart"}'))
    assert status(joined["restart"][0])[1] == 45 and miner.restarts == 0


async def test_avalon_style_ascset(fleet: Fleet, cg_call, clock) -> None:
    miner = fleet.cgminer("cgminer-1")
    miner.quirks.restart_delay_s = 30  # accepted, never carried out in this test
    reply = await call(cg_call, miner.port, "ascset", f"0,softoff,1:{int(clock.now)}")
    assert status(reply) == ("S", 119, "ASC 0 set OK")
    assert float((await call(cg_call, miner.port, "summary"))["SUMMARY"][0]["GHS 5s"]) == 0
    assert status(await call(cg_call, miner.port, "ascset", "0,softon,1:0"))[0] == "S"
    assert float((await call(cg_call, miner.port, "summary"))["SUMMARY"][0]["GHS 5s"]) > 0
    assert status(await call(cg_call, miner.port, "ascset", "0,reboot,0"))[0] == "S"
    assert miner.restarts == 1
    for parameter, code in (("1,softoff,0", 107), ("0", 116), ("0,fly,1", 120)):
        assert status(await call(cg_call, miner.port, "ascset", parameter))[:2] == ("E", code)


async def test_antminer_web_reboot_needs_digest_auth(clock, eventually) -> None:
    async with Fleet(axeos=0, cgminer=1, clock=clock, web=True) as fleet:
        miner = fleet.cgminer("cgminer-0")
        miner.quirks.restart_s, miner.quirks.restart_delay_s = 0.3, 0.05
        assert miner.web_port and miner.web_port != miner.port
        url = f"http://127.0.0.1:{miner.web_port}/cgi-bin/reboot.cgi"
        async with httpx.AsyncClient() as client:
            bare = await client.get(url)
            wrong = await client.get(url, auth=httpx.DigestAuth("root", "nope"))
            other = await client.get(url.replace("reboot", "get_system_info"),
                                     auth=httpx.DigestAuth("root", "root"))
            assert miner.restarts == 0
            ok = await client.get(url, auth=httpx.DigestAuth("root", "root"))
        assert bare.status_code == wrong.status_code == 401
        challenge = bare.headers["www-authenticate"]
        assert challenge.startswith('Digest realm="antMiner Configuration"')
        assert 'qop="auth"' in challenge and "nonce=" in challenge
        assert other.status_code == 404
        assert ok.status_code == 200 and miner.restarts == 1
        web_port = miner.web_port
        await eventually(lambda: not miner.listening)
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(url)
        await eventually(lambda: miner.listening)
        assert miner.web_port == web_port and miner.model.uptime_s(clock.now) == 0
        miner.quirks.web_password = "s3cret"
        async with httpx.AsyncClient() as client:
            assert (await client.get(url, auth=httpx.DigestAuth("root", "root"))
                    ).status_code == 401
            assert (await client.get(url, auth=httpx.DigestAuth("root", "s3cret"))
                    ).status_code == 200


async def test_no_web_port_unless_asked(fleet: Fleet) -> None:
    miner = fleet.cgminer("cgminer-0")
    assert miner.web_port is None and miner.web_url is None
    assert miner.control_state()["web_port"] is None
