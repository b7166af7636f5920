"""DELETE /api/miners/{id} (forget, and purge) and PATCH /api/miners/{id} (label): what
they publish on a real broker, what they do to real SQLite, and their errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import httpx

from minerwatch.shared.homeassistant import discovery_topics
from minerwatch.shared.schemas import (
    AlertEvent,
    MinerInfo,
    MinerStatus,
    Sample,
    encode,
    format_ts,
)

StartApi = Callable[..., Any]
Publish = Callable[..., Awaitable[None]]
Seed = Callable[..., Awaitable[None]]
Retained = Callable[[str], Awaitable[dict[str, bytes]]]


def ago(seconds: float) -> str:
    return format_ts(datetime.now(UTC) - timedelta(seconds=seconds))


def info(miner_id: str) -> bytes:
    return encode(MinerInfo(miner_id=miner_id, driver="axeos", host="10.0.0.5", port=80))


async def listed(http: httpx.AsyncClient) -> list[str]:
    response = await http.get("/api/miners")
    assert response.status_code == 200, response.text
    return [entry["miner_id"] for entry in response.json()]


async def eventually_listed(http: httpx.AsyncClient, expected: list[str]) -> None:
    for _ in range(200):
        if await listed(http) == expected:
            return
        await asyncio.sleep(0.05)
    assert await listed(http) == expected


async def seed_gone(db_url: str, seed: Seed, make_sample: Callable[..., Sample]) -> None:
    """History of ``gone`` (and of ``kept``) in the store's tables."""
    await seed(
        db_url,
        sample_rows=[make_sample("gone", ago(120 - i)) for i in range(3)]
        + [make_sample("kept", ago(5))],
        infos=[MinerInfo(miner_id="gone", driver="axeos", host="10.0.0.9", port=80)],
        statuses=[("gone", MinerStatus(state="online", since=ago(600), last_seen=ago(118)))],
        events=[("gone", MinerStatus(state="online", since=ago(600)))],
    )


async def publish_gone(publish: Publish, base: str) -> list[str]:
    topics = {
        f"{base}/miners/gone/info": info("gone"),
        f"{base}/miners/gone/status": encode(MinerStatus(state="online", since=ago(600),
                                                         last_seen=ago(1))),
        f"{base}/miners/gone/sample": encode(Sample(miner_id="gone", ts=ago(1),
                                                    hashrate_ths=1.0)),
        f"{base}/alerts/gone/temp_high": encode(AlertEvent(
            miner_id="gone", rule="temp_high", state="firing", severity="warning",
            value=70.0, threshold=65.0, message="hot", ts=ago(30))),
    }
    for topic, payload in topics.items():
        await publish(topic, payload, retain=True)
    return sorted(topics)


async def test_forget_clears_retained_topics_and_hides_the_miner_keeping_its_history(
    start_api: StartApi, publish: Publish, base_topic: str, db_url: str, seed: Seed,
    make_sample: Callable[..., Sample], broker_retained: Retained,
) -> None:
    base = base_topic
    await seed_gone(db_url, seed, make_sample)
    published = await publish_gone(publish, base)
    configs = discovery_topics("homeassistant", base, "gone")  # Home Assistant's, by default
    await publish(configs[0], b'{"name": "Hashrate"}', retain=True)
    async with start_api() as api, httpx.AsyncClient(base_url=api.url, headers=api.headers) as http:
        await eventually_listed(http, ["gone", "kept"])
        while f"{base}/alerts/gone/temp_high" not in api.relay.retained:
            await asyncio.sleep(0.02)
        response = await http.delete("/api/miners/gone")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["miner_id"] == "gone" and body["purged"] is False
        assert sorted(body["cleared"]) == sorted(
            [*published, f"{base}/miners/gone/label", f"{base}/miners/gone/tune", *configs])
        assert await broker_retained(f"homeassistant/+/{base}/#") == {}
        # Gone from the fleet at once, and from the broker; its history stays.
        assert await listed(http) == ["kept"]
        assert await broker_retained(f"{base}/miners/gone/#") == {}
        assert await broker_retained(f"{base}/alerts/gone/#") == {}
        assert not any("/gone/" in topic for topic in api.relay.retained)
        samples = await http.get("/api/miners/gone/samples")
        assert samples.status_code == 200 and len(samples.json()) == 3
        events = await http.get("/api/miners/gone/events")
        assert events.status_code == 200 and len(events.json()) == 1
        # Still known (its history): forgetting again is fine, and keeps it hidden.
        assert (await http.delete("/api/miners/gone")).status_code == 200
        assert await listed(http) == ["kept"]

        # A miner that answers again comes back.
        await publish(f"{base}/miners/gone/info", info("gone"), retain=True)
        await eventually_listed(http, ["gone", "kept"])


async def test_forget_with_purge_deletes_the_history(
    start_api: StartApi, publish: Publish, base_topic: str, db_url: str, seed: Seed,
    make_sample: Callable[..., Sample],
) -> None:
    await seed_gone(db_url, seed, make_sample)
    async with start_api() as api, httpx.AsyncClient(base_url=api.url, headers=api.headers) as http:
        assert await listed(http) == ["gone", "kept"]
        response = await http.delete("/api/miners/gone", params={"purge": "true"})
        assert response.status_code == 200, response.text
        assert response.json()["purged"] is True
        assert await listed(http) == ["kept"]
        for path in ("samples", "events"):
            assert (await http.get(f"/api/miners/gone/{path}")).status_code == 404
        assert (await http.delete("/api/miners/gone")).status_code == 404
        assert len((await http.get("/api/miners/kept/samples")).json()) == 1


async def test_a_miner_known_only_by_its_samples_can_be_forgotten(
    start_api: StartApi, db_url: str, seed: Seed, make_sample: Callable[..., Sample],
) -> None:
    await seed(db_url, sample_rows=[make_sample("samples-only", ago(60))])
    async with start_api() as api, httpx.AsyncClient(base_url=api.url, headers=api.headers) as http:
        assert await listed(http) == ["samples-only"]
        assert (await http.delete("/api/miners/samples-only")).status_code == 200
        assert await listed(http) == []


async def test_forget_errors(start_api: StartApi, own_broker: Any, base_topic: str,
                             db_url: str, seed: Seed, make_sample: Callable[..., Sample]) -> None:
    await seed(db_url, sample_rows=[make_sample("bitaxe-1", ago(60))])
    async with start_api(broker_url=own_broker.url) as api, \
            httpx.AsyncClient(base_url=api.url, headers=api.headers) as http:
        unknown = await http.delete("/api/miners/ghost")
        bad_id = await http.delete("/api/miners/Not%20A%20Miner")
        bad_purge = await http.delete("/api/miners/bitaxe-1", params={"purge": "maybe"})
        own_broker.local.stop()
        while api.relay.connected:
            await asyncio.sleep(0.02)
        no_broker = await http.delete("/api/miners/bitaxe-1")
        still_listed = await listed(http)
    assert unknown.status_code == 404 and "ghost" in unknown.json()["detail"]
    assert bad_id.status_code == 400 and bad_id.json()["detail"].startswith("miner_id")
    assert bad_purge.status_code == 400 and bad_purge.json()["detail"].startswith("purge")
    assert no_broker.status_code == 503
    assert "broker" in no_broker.json()["detail"] and "\n" not in no_broker.json()["detail"]
    assert still_listed == ["bitaxe-1"]  # nothing was half done


async def test_patch_label_publishes_it_retained(
    start_api: StartApi, publish: Publish, broker: Any, base_topic: str,
) -> None:
    label_topic = f"{base_topic}/miners/bitaxe-1/label"
    await publish(f"{base_topic}/miners/bitaxe-1/info", info("bitaxe-1"), retain=True)
    async with start_api() as api, \
            httpx.AsyncClient(base_url=api.url, headers=api.headers) as http, \
            aiomqtt.Client(broker.host, broker.port) as listener:
        await listener.subscribe(label_topic, qos=1)
        while f"{base_topic}/miners/bitaxe-1/info" not in api.relay.retained:
            await asyncio.sleep(0.02)
        response = await http.patch("/api/miners/bitaxe-1", json={"label": "  Garage Bitaxe "})
        assert response.status_code == 200, response.text
        assert response.json() == {"miner_id": "bitaxe-1", "label": "Garage Bitaxe"}
        async with asyncio.timeout(5):
            message = await anext(aiter(listener.messages))
        payload = json.loads(bytes(message.payload))  # type: ignore[arg-type]
        assert payload["label"] == "Garage Bitaxe" and payload["ts"].endswith("Z")

        removed = await http.patch("/api/miners/bitaxe-1", json={"label": None})
        assert removed.json() == {"miner_id": "bitaxe-1", "label": None}
        async with asyncio.timeout(5):
            message = await anext(aiter(listener.messages))
        assert json.loads(bytes(message.payload))["label"] is None  # type: ignore[arg-type]

    # Retained: a subscriber arriving later gets it too.
    async with aiomqtt.Client(broker.host, broker.port) as late:
        await late.subscribe(label_topic, qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(late.messages))
    assert message.retain and json.loads(bytes(message.payload))["label"] is None  # type: ignore[arg-type]


async def test_patch_label_errors(start_api: StartApi, publish: Publish, own_broker: Any,
                                  base_topic: str, db_url: str, seed: Seed,
                                  make_sample: Callable[..., Sample]) -> None:
    await seed(db_url, sample_rows=[make_sample("bitaxe-1", ago(60))])
    cases: list[tuple[Any, str]] = [
        ({"label": ""}, "label"),
        ({"label": "   "}, "label"),
        ({"label": "x" * 101}, "label"),
        ({"label": "bell\x07"}, "label"),
        ({"label": 5}, "label"),
        ({}, "body"),
        ({"label": "ok", "colour": "red"}, "body"),
        (["label"], "body"),
    ]
    async with start_api(broker_url=own_broker.url) as api, \
            httpx.AsyncClient(base_url=api.url, headers=api.headers) as http:
        for body, parameter in cases:
            response = await http.patch("/api/miners/bitaxe-1", json=body)
            assert response.status_code == 400, (body, response.text)
            detail = response.json()["detail"]
            assert detail.startswith(parameter), (body, detail)
            assert "\n" not in detail
        not_json = await http.patch("/api/miners/bitaxe-1", content=b"{nope",
                                    headers={"content-type": "application/json"})
        assert not_json.status_code == 400
        accented = await http.patch("/api/miners/bitaxe-1", json={"label": "Dachboden · Süd"})
        assert accented.json() == {"miner_id": "bitaxe-1", "label": "Dachboden · Süd"}
        assert (await http.patch("/api/miners/ghost", json={"label": "x"})).status_code == 404
        bad_id = await http.patch("/api/miners/No%20Slug", json={"label": "x"})
        assert bad_id.status_code == 400 and bad_id.json()["detail"].startswith("miner_id")
        own_broker.local.stop()
        while api.relay.connected:
            await asyncio.sleep(0.02)
        no_broker = await http.patch("/api/miners/bitaxe-1", json={"label": "x"})
    assert no_broker.status_code == 503 and "broker" in no_broker.json()["detail"]
