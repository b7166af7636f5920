"""GET /healthz: broker, database and every service's liveness, reported rather than
crashed on. The HTTP status is the api's own (503: its broker link or database is down);
the body says ``degraded`` also while the collector, store or alerts is not online."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

StartApi = Callable[..., Any]
Publish = Callable[..., Awaitable[None]]

WATCHED = ("collector", "store", "alerts")


async def health(url: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/healthz")
    return response.status_code, response.json()


def summary(code: int, body: dict[str, Any]) -> tuple[int, str, str, str, dict[str, str]]:
    return (code, body["status"], body["broker"], body["database"],
            {name: service["state"] for name, service in body["services"].items()})


async def eventually(url: str, expected: tuple[Any, ...], timeout: float = 10.0
                     ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (got := summary(*(answer := await health(url)))) != expected:
        assert time.monotonic() < deadline, f"/healthz stayed {got}, expected {expected}"
        await asyncio.sleep(0.05)
    return answer[1]


async def say(publish: Publish, base: str, state: str, *services: str) -> None:
    for service in services:
        await publish(f"{base}/services/{service}/status", state, retain=True)


ALL_ONLINE = {"collector": "online", "store": "online", "alerts": "online", "api": "online"}


async def test_everything_up_is_ok_and_lists_every_service(
    start_api: StartApi, publish: Publish, base_topic: str
) -> None:
    await say(publish, base_topic, "online", *WATCHED)
    async with start_api() as api:
        body = await eventually(api.url, (200, "ok", "up", "up", ALL_ONLINE))
    assert list(body["services"]) == ["collector", "store", "alerts", "api"]
    for service in body["services"].values():
        assert service["since"].endswith("Z")


async def test_services_never_seen_are_unknown_and_degrade_but_keep_200(
    start_api: StartApi
) -> None:
    async with start_api() as api:
        body = await eventually(api.url, (200, "degraded", "up", "up", {
            "collector": "unknown", "store": "unknown", "alerts": "unknown",
            "api": "online"}))
    assert body["services"]["collector"] == {"state": "unknown", "since": None}


async def test_a_service_going_offline_degrades_with_since_then_recovers(
    start_api: StartApi, publish: Publish, base_topic: str
) -> None:
    await say(publish, base_topic, "online", *WATCHED)
    async with start_api() as api:
        await eventually(api.url, (200, "ok", "up", "up", ALL_ONLINE))
        for service in WATCHED:
            before = time.time()
            await say(publish, base_topic, "offline", service)
            body = await eventually(api.url, (200, "degraded", "up", "up",
                                              {**ALL_ONLINE, service: "offline"}))
            since = body["services"][service]["since"]
            assert since >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(before)))
            await say(publish, base_topic, "online", service)
            await eventually(api.url, (200, "ok", "up", "up", ALL_ONLINE))


async def test_broker_going_away_is_503_and_coming_back_200(
    start_api: StartApi, own_broker: Any, base_topic: str
) -> None:
    async with start_api(broker_url=own_broker.url) as api:
        await eventually(api.url, (200, "degraded", "up", "up", {
            "collector": "unknown", "store": "unknown", "alerts": "unknown",
            "api": "online"}))
        own_broker.local.stop()
        body = await eventually(api.url, (503, "degraded", "down", "up", {
            "collector": "unknown", "store": "unknown", "alerts": "unknown",
            "api": "offline"}))
        assert body["services"]["api"]["since"] is not None
        own_broker.local.start()
        await eventually(api.url, (200, "degraded", "up", "up", {
            "collector": "unknown", "store": "unknown", "alerts": "unknown",
            "api": "online"}))


async def test_unusable_database_path_is_503(start_api: StartApi, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the database directory should be")
    async with start_api(db_url=f"sqlite:///{blocker}/sub/history.db") as api:
        code, body = await health(api.url)
        assert (code, body["status"], body["broker"], body["database"]) == (
            503, "degraded", "up", "down")
        async with httpx.AsyncClient(base_url=api.url) as http:
            miners = await http.get("/api/miners")
            samples = await http.get("/api/miners/bitaxe-1/samples")
    for response in (miners, samples):
        assert response.status_code == 503
        assert "database" in response.json()["detail"]


async def test_deleted_database_file_is_reported(start_api: StartApi, db_url: str) -> None:
    path = Path(db_url.removeprefix("sqlite:///"))
    async with start_api() as api:
        assert (await health(api.url))[1]["database"] == "up"
        for leftover in path.parent.iterdir():  # the file and its -wal / -shm companions
            leftover.unlink()
        code, body = await health(api.url)
        assert (code, body["database"]) == (503, "down")


async def test_database_created_later_is_picked_up(start_api: StartApi, tmp_path: Path) -> None:
    """The api retries: once the path becomes usable, the database is reported up."""
    parent = tmp_path / "later"
    parent.write_text("blocks the directory for now")
    async with start_api(db_url=f"sqlite:///{parent}/history.db") as api:
        assert (await health(api.url))[1]["database"] == "down"
        parent.unlink()
        code, body = await health(api.url)
        assert (code, body["database"], body["broker"]) == (200, "up", "up")
        async with httpx.AsyncClient(base_url=api.url) as http:
            assert (await http.get("/api/miners")).json() == []
