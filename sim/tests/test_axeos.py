"""AxeOS miners over real HTTP: the v2.11 Bitaxe Gamma shape, units and connection rules."""

from __future__ import annotations

import asyncio

import h11
import httpx

from minerwatch.sim.fleet import Fleet

INFO = "/api/system/info"


async def get_info(client: httpx.AsyncClient, url: str) -> dict:
    response = await client.get(url + INFO)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return response.json()


def http_base(miner_url: str) -> str:
    return miner_url.replace("axeos://", "http://")


async def test_reply_shape_and_units(fleet: Fleet) -> None:
    miner = fleet.by_name("axeos-0")
    assert miner.kind == "axeos" and miner.mac == "02:4D:57:00:00:00"
    assert miner.url == f"axeos://127.0.0.1:{miner.port}" and miner.port > 0
    async with httpx.AsyncClient() as client:
        info = await get_info(client, http_base(miner.url))
    assert info["ASICModel"] == "BM1370" and info["boardVersion"] == "601"
    assert info["version"] == "v2.11.0" and info["axeOSVersion"] == "v2.11.0"
    assert info["hostname"] == "bitaxe-0" and info["macAddr"] == "02:4D:57:00:00:00"
    assert 1000 < info["hashRate"] < 1400  # GH/s
    assert info["expectedHashrate"] == 1224.0
    assert 15 < info["power"] < 22  # W
    assert 4900 < info["voltage"] < 5300  # mV, 5 V input
    # mV * mA / 1e6 is the power the firmware reports
    assert abs(info["voltage"] * info["current"] / 1e6 - info["power"]) < 0.05
    assert 1100 < info["coreVoltageActual"] <= info["coreVoltage"] == 1150
    assert info["frequency"] == 600
    for key in ("temp", "temp2", "vrTemp"):
        assert 25 < info[key] < 80, key
    assert info["temp"] > info["temp2"]
    assert 0 <= info["fanspeed"] <= 100  # percent
    assert 1000 < info["fanrpm"] < 6000 and info["fan2rpm"] == 0
    assert isinstance(info["uptimeSeconds"], int) and info["uptimeSeconds"] >= 0
    assert isinstance(info["sharesAccepted"], int) and isinstance(info["sharesRejected"], int)
    # v2.11: numbers, not "4.29G" strings
    assert isinstance(info["bestDiff"], int) and isinstance(info["bestSessionDiff"], int)
    assert info["bestDiff"] >= info["bestSessionDiff"] > 0
    assert info["stratumURL"] and isinstance(info["stratumPort"], int)
    assert info["stratumUser"].endswith(".bitaxe-0")
    assert info["isUsingFallbackStratum"] == 0
    assert info["fallbackStratumURL"] and isinstance(info["fallbackStratumPort"], int)
    assert info["miningPaused"] is False


async def test_identity_follows_index(fleet: Fleet) -> None:
    second = fleet.by_name("axeos-1")
    async with httpx.AsyncClient() as client:
        info = await get_info(client, http_base(second.url))
    assert info["hostname"] == "bitaxe-1" and info["macAddr"] == "02:4D:57:00:00:01"
    assert second.mac == info["macAddr"]


async def test_snapshot_matches_what_is_served(fleet: Fleet) -> None:
    miner = fleet.miners[0]
    async with httpx.AsyncClient() as client:
        info = await get_info(client, http_base(miner.url))
    snap = miner.snapshot()  # same frozen clock: same instant
    assert snap["hashrate_ths"] == info["hashRate"] / 1000
    assert snap["power_w"] == info["power"]
    assert snap["temp_c"] == max(info["temp"], info["temp2"])
    assert snap["shares_accepted"] == info["sharesAccepted"]
    assert snap["best_diff"] == info["bestDiff"]
    assert snap["uptime_s"] == info["uptimeSeconds"]
    assert snap["fan_rpm"] == [info["fanrpm"]]
    assert snap["pool_url"] == f"stratum+tcp://{info['stratumURL']}:{info['stratumPort']}"
    assert snap["is_mining"] is True
    assert abs(snap["efficiency_jth"] - snap["power_w"] / snap["hashrate_ths"]) < 1e-9


async def test_values_move_with_time_but_stay_plausible(fleet: Fleet, clock) -> None:
    miner = fleet.miners[0]
    url = http_base(miner.url)
    async with httpx.AsyncClient() as client:
        first = await get_info(client, url)
        readings = []
        for _ in range(30):
            clock.advance(60)
            readings.append(await get_info(client, url))
    last = readings[-1]
    assert last["uptimeSeconds"] == first["uptimeSeconds"] + 1800
    assert last["sharesAccepted"] > first["sharesAccepted"]
    assert len({r["hashRate"] for r in readings}) == len(readings)
    assert len({r["temp"] for r in readings}) > 20
    for reading in readings:
        assert 1050 < reading["hashRate"] < 1350
        assert 30 < reading["temp"] < 70
        assert 15 < reading["power"] < 22


async def test_values_move_on_the_real_clock(live_fleet: Fleet) -> None:
    url = http_base(live_fleet.miners[0].url)
    async with httpx.AsyncClient() as client:
        first = await get_info(client, url)
        await asyncio.sleep(0.3)
        second = await get_info(client, url)
    assert first["hashRate"] != second["hashRate"]
    assert abs(first["hashRate"] - second["hashRate"]) < 100


async def test_other_paths_404(fleet: Fleet) -> None:
    url = http_base(fleet.miners[0].url)
    async with httpx.AsyncClient() as client:
        assert (await client.get(url + "/api/system/statistics")).status_code == 404
        assert (await client.get(url + "/")).status_code == 404
        assert (await client.post(url + INFO)).status_code == 405


async def test_public_origin_is_refused_like_the_firmware(fleet: Fleet) -> None:
    url = http_base(fleet.miners[0].url) + INFO
    async with httpx.AsyncClient() as client:
        refused = await client.get(url, headers={"Origin": "https://evil.example"})
        public_ip = await client.get(url, headers={"Origin": "http://8.8.8.8"})
        local = await client.get(url, headers={"Origin": "http://192.168.1.20"})
    assert refused.status_code == 401 and public_ip.status_code == 401
    assert local.status_code == 200


async def _exchange(
    reader: asyncio.StreamReader, conn: h11.Connection
) -> tuple[h11.Response, bytes]:
    """Read one whole response off the stream with an h11 client state machine."""
    response: h11.Response | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await asyncio.wait_for(reader.read(65536), 2))
            continue
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None
            return response, body


async def test_http11_keeps_the_connection_open(fleet: Fleet) -> None:
    miner = fleet.miners[0]
    reader, writer = await asyncio.open_connection("127.0.0.1", miner.port)
    conn = h11.Connection(h11.CLIENT)
    try:
        for _ in range(3):
            writer.write(
                conn.send(h11.Request(method="GET", target=INFO, headers=[("Host", "miner")]))
            )
            writer.write(conn.send(h11.EndOfMessage()))
            response, body = await _exchange(reader, conn)
            assert response.status_code == 200 and b'"ASICModel":"BM1370"' in body
            assert (b"connection", b"keep-alive") in response.headers
            conn.start_next_cycle()  # raises unless both sides keep the connection
    finally:
        writer.close()


async def test_pipelined_requests_are_answered_in_order(fleet: Fleet) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", fleet.miners[0].port)
    writer.write(
        b"GET /nope HTTP/1.1\r\nHost: m\r\n\r\n"
        + f"GET {INFO} HTTP/1.1\r\nHost: m\r\n\r\n".encode()
    )
    conn = h11.Connection(h11.CLIENT)
    # h11 wants to have sent the requests it reads answers to
    conn.send(h11.Request(method="GET", target="/nope", headers=[("Host", "m")]))
    conn.send(h11.EndOfMessage())
    first, _ = await _exchange(reader, conn)
    conn.start_next_cycle()
    conn.send(h11.Request(method="GET", target=INFO, headers=[("Host", "m")]))
    conn.send(h11.EndOfMessage())
    second, body = await _exchange(reader, conn)
    writer.close()
    assert first.status_code == 404 and second.status_code == 200 and b"hashRate" in body


async def test_http10_and_connection_close_close(fleet: Fleet) -> None:
    port = fleet.miners[0].port
    for request in (
        b"GET /api/system/info HTTP/1.0\r\n\r\n",
        b"GET /api/system/info HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        raw = await asyncio.wait_for(reader.read(), 2)  # returns only once the miner closes
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"connection: close" in head.lower()
        assert body.startswith(b"{") and body.endswith(b"}")


async def test_malformed_request_gets_400_not_a_crash(fleet: Fleet) -> None:
    port = fleet.miners[0].port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(), 2)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 400")
    async with httpx.AsyncClient() as client:  # the miner still serves others
        await get_info(client, http_base(fleet.miners[0].url))
