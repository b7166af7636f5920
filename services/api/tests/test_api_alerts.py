"""GET /api/alerts and mutes (POST /api/alerts/mute, GET /api/alerts/mutes, DELETE
/api/alerts/mutes/{id}) through a real broker: what is published, listed and lifted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import httpx

from minerwatch.shared.schemas import AlertEvent, MinerInfo, Mute, encode, format_ts, parse_ts

StartApi = Callable[..., Any]
Publish = Callable[..., Awaitable[None]]
Retained = Callable[[str], Awaitable[dict[str, bytes]]]


def at(seconds: float) -> str:
    return format_ts(datetime.now(UTC) + timedelta(seconds=seconds))


SINCE = at(-90)


def alert(miner_id: str, rule: str, state: str = "firing") -> bytes:
    return encode(AlertEvent(miner_id=miner_id, rule=rule, state=state,  # type: ignore[arg-type]
                             severity="critical", value=None, threshold=60.0,
                             message=f"{miner_id} {rule}", ts=at(-30), label="Garage",
                             since=SINCE))


async def firing(http: httpx.AsyncClient) -> list[tuple[str, str, bool]]:
    response = await http.get("/api/alerts")
    assert response.status_code == 200, response.text
    return [(a["miner_id"], a["rule"], a["muted"]) for a in response.json()]


async def test_mute_publish_list_and_lift(
    start_api: StartApi, publish: Publish, broker: Any, base_topic: str,
    broker_retained: Retained,
) -> None:
    base = base_topic
    await publish(f"{base}/alerts/m1/temp_high", alert("m1", "temp_high"), retain=True)
    await publish(f"{base}/alerts/m2/offline", alert("m2", "offline"), retain=True)
    await publish(f"{base}/alerts/m1/fan_failure", alert("m1", "fan_failure", "resolved"),
                  retain=True)
    await publish(f"{base}/miners/m1/info", encode(MinerInfo(
        miner_id="m1", driver="axeos", host="10.0.0.5", port=80)), retain=True)
    async with start_api() as api, \
            httpx.AsyncClient(base_url=api.url, headers=api.headers) as http, \
            aiomqtt.Client(broker.host, broker.port) as listener:
        await listener.subscribe(f"{base}/mutes/+", qos=1)
        while len(api.relay.alerts()) < 3 or f"{base}/miners/m1/info" not in api.relay.retained:
            await asyncio.sleep(0.02)
        assert await firing(http) == [("m1", "temp_high", False), ("m2", "offline", False)]
        everything = (await http.get("/api/alerts")).json()[0]
        assert (everything["label"], everything["since"]) == ("Garage", SINCE)
        assert everything["state"] == "firing" and everything["value"] is None

        response = await http.post("/api/alerts/mute", json={
            "miner_id": "m1", "for_s": 3600, "reason": " maintenance "})
        assert response.status_code == 201, response.text
        mute = response.json()
        assert (mute["miner_id"], mute["rule"], mute["reason"]) == ("m1", None, "maintenance")
        lasts = parse_ts(mute["until"]) - parse_ts(mute["created"])
        assert lasts == timedelta(hours=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(listener.messages))
        assert message.topic.value == f"{base}/mutes/{mute['id']}"
        assert json.loads(bytes(message.payload)) == mute  # type: ignore[arg-type]

        # Listed at once, and what it covers is muted now (m1's every rule).
        assert (await http.get("/api/alerts/mutes")).json() == [mute]
        assert await firing(http) == [("m1", "temp_high", True), ("m2", "offline", False)]
        fleet = {e["miner_id"]: e for e in (await http.get("/api/miners")).json()}
        assert [a["muted"] for a in fleet["m1"]["alerts"]] == [True]

        until = at(7200)
        by_rule = await http.post("/api/alerts/mute", json={"rule": "offline", "until": until})
        assert by_rule.status_code == 201, by_rule.text
        assert by_rule.json()["until"] == until and by_rule.json()["id"] != mute["id"]
        assert await firing(http) == [("m1", "temp_high", True), ("m2", "offline", True)]
        assert [m["id"] for m in (await http.get("/api/alerts/mutes")).json()] == [
            mute["id"], by_rule.json()["id"]]  # soonest to end first

        lifted = await http.delete(f"/api/alerts/mutes/{mute['id']}")
        assert lifted.status_code == 200 and lifted.json() == mute
        assert await firing(http) == [("m1", "temp_high", False), ("m2", "offline", True)]
        assert [m["id"] for m in (await http.get("/api/alerts/mutes")).json()] == [
            by_rule.json()["id"]]
        assert (await http.delete(f"/api/alerts/mutes/{mute['id']}")).status_code == 404
        assert (await http.delete("/api/alerts/mutes/Bad%20Id")).status_code == 400
    on_broker = await broker_retained(f"{base}/mutes/#")
    assert list(on_broker) == [f"{base}/mutes/{by_rule.json()['id']}"]


async def test_an_expired_mute_mutes_nothing_and_is_not_listed(
    start_api: StartApi, publish: Publish, base_topic: str
) -> None:
    expired = Mute(id="old", miner_id="m1", until=at(-60), created=at(-3600))
    await publish(f"{base_topic}/mutes/old", encode(expired), retain=True)
    await publish(f"{base_topic}/alerts/m1/offline", alert("m1", "offline"), retain=True)
    async with start_api() as api, httpx.AsyncClient(base_url=api.url, headers=api.headers) as http:
        while len(api.relay.mutes()) < 1 or len(api.relay.alerts()) < 1:
            await asyncio.sleep(0.02)
        assert (await http.get("/api/alerts/mutes")).json() == []
        assert await firing(http) == [("m1", "offline", False)]
        # Still on the broker until the alerts service clears it: it can be lifted.
        assert (await http.delete("/api/alerts/mutes/old")).status_code == 200


async def test_mute_requests_are_checked(start_api: StartApi, own_broker: Any) -> None:
    cases: list[tuple[Any, str]] = [
        ({"for_s": 60}, "miner_id"),
        ({"miner_id": "Not A Miner", "for_s": 60}, "miner_id"),
        ({"rule": "a/b", "for_s": 60}, "rule"),
        ({"miner_id": "m1"}, "until"),
        ({"miner_id": "m1", "for_s": 60, "until": at(60)}, "until"),
        ({"miner_id": "m1", "until": at(-1)}, "until"),
        ({"miner_id": "m1", "until": at(400 * 86400)}, "until"),
        ({"miner_id": "m1", "until": "tomorrow"}, "until"),
        ({"miner_id": "m1", "for_s": 0}, "for_s"),
        ({"miner_id": "m1", "for_s": 366 * 86400}, "for_s"),
        ({"miner_id": "m1", "for_s": "an hour"}, "for_s"),
        ({"miner_id": "m1", "for_s": 60, "reason": "x" * 201}, "reason"),
        ({"miner_id": "m1", "for_s": 60, "reason": "two\nlines"}, "reason"),
        ({"miner_id": "m1", "for_s": 60, "colour": "red"}, "body"),
        ([], "body"),
    ]
    async with start_api(broker_url=own_broker.url) as api, \
            httpx.AsyncClient(base_url=api.url, headers=api.headers) as http:
        for body, parameter in cases:
            response = await http.post("/api/alerts/mute", json=body)
            assert response.status_code == 400, (body, response.text)
            detail = response.json()["detail"]
            assert detail.startswith(parameter), (body, detail)
            assert "\n" not in detail
        assert (await http.get("/api/alerts/mutes")).json() == []
        own_broker.local.stop()
        while api.relay.connected:
            await asyncio.sleep(0.02)
        no_broker = await http.post("/api/alerts/mute", json={"miner_id": "m1", "for_s": 60})
    assert no_broker.status_code == 503 and "broker" in no_broker.json()["detail"]
