"""GET /api/events: the fleet's status changes and alerts, oldest first, filtered by
miner and type, with the window of a miner's events; on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from minerwatch.shared.schemas import AlertEvent, MinerStatus, format_ts

StartApi = Callable[..., Any]
Seed = Callable[..., Awaitable[None]]

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


@pytest.fixture
def db_url(any_db_url: str) -> str:
    return any_db_url


def ts(minutes: float) -> str:
    return format_ts(T0 + timedelta(minutes=minutes))


def status(state: str, minute: float) -> MinerStatus:
    return MinerStatus(state=state, since=ts(minute))  # type: ignore[arg-type]


def alert(miner_id: str, state: str, minute: float, **fields: Any) -> AlertEvent:
    return AlertEvent(miner_id=miner_id, rule="offline", state=state,  # type: ignore[arg-type]
                      severity="critical", value=None, threshold=60.0,
                      message=f"{miner_id} offline {state}", ts=ts(minute), **fields)


async def test_fleet_events_in_order_filtered_by_type_and_miner(
    start_api: StartApi, db_url: str, seed: Seed
) -> None:
    await seed(db_url, events=[
        ("a", status("online", 0)),
        ("b", status("online", 1)),
        ("a", status("offline", 2)),
        alert("a", "firing", 3, label="Garage Bitaxe", since=ts(2), muted=True),
        ("b", status("offline", 4)),
        alert("b", "firing", 5),
        ("a", status("online", 6)),
        alert("a", "resolved", 6, label="Garage Bitaxe", since=ts(2)),
    ])
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:

        async def events(**params: object) -> list[tuple[str, str, str]]:
            response = await http.get("/api/events", params=params)
            assert response.status_code == 200, response.text
            return [(e["type"], (e.get("status") or {}).get("state") or e["alert"]["state"],
                     e["alert"]["miner_id"] if e["type"] == "alert" else "-")
                    for e in response.json()]

        everything = await events()
        statuses = await events(type="status")
        b_alerts = await events(type="alert", miner_id="b")
        a_only = (await http.get("/api/events", params={"miner_id": "a"})).json()
        first_two = await events(since=ts(0), limit=2)
        latest_two = await events(limit=2)
        until = await events(until=ts(3), type="alert")
        nobody = await events(miner_id="ghost")
        firing_alert = (await http.get("/api/events", params={"type": "alert",
                                                              "miner_id": "a"})).json()[0]
        bad = {query: await http.get(f"/api/events?{query}") for query in (
            "type=fan", "miner_id=Not%20Me", "since=soon", "limit=0",
            "since=2026-11-22T11:00:00Z&until=2026-11-22T10:00:00Z")}

    assert everything == [
        ("status", "online", "-"), ("status", "online", "-"), ("status", "offline", "-"),
        ("alert", "firing", "a"), ("status", "offline", "-"), ("alert", "firing", "b"),
        ("status", "online", "-"), ("alert", "resolved", "a")]
    assert statuses == [item for item in everything if item[0] == "status"]
    assert b_alerts == [("alert", "firing", "b")]
    assert len(a_only) == 5
    assert first_two == everything[:2] and latest_two == everything[-2:]
    assert until == [("alert", "firing", "a")]
    assert nobody == []
    # Alert events carry the miner's label, since when, and whether a mute held them back.
    assert firing_alert["alert"]["label"] == "Garage Bitaxe"
    assert firing_alert["alert"]["since"] == ts(2)
    assert firing_alert["alert"]["muted"] is True
    for query, response in bad.items():
        assert response.status_code == 400, query
        detail = response.json()["detail"]
        assert detail.startswith(query.split("=")[0]), (query, detail)
        assert "\n" not in detail


async def test_openapi_declares_the_fleet_events_parameters(start_api: StartApi) -> None:
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        spec = (await http.get("/schema/openapi.json")).json()
    operation = spec["paths"]["/api/events"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert set(parameters) == {"since", "until", "limit", "miner_id", "type"}
    assert parameters["type"]["schema"]["enum"] == ["status", "alert", "command"]
    assert parameters["since"]["schema"]["format"] == "date-time"
    assert parameters["limit"]["schema"]["maximum"] == 10000
    # The same declarations as a miner's events: written once.
    miner = {p["name"]: p for p in
             spec["paths"]["/api/miners/{miner_id}/events"]["get"]["parameters"]}
    for name in ("since", "until", "limit"):
        assert miner[name] == parameters[name]
    for path, method in (("/api/alerts", "get"), ("/api/alerts/mute", "post"),
                         ("/api/alerts/mutes", "get"), ("/api/alerts/mutes/{mute_id}", "delete"),
                         ("/api/miners/{miner_id}", "patch"),
                         ("/api/miners/{miner_id}", "delete")):
        assert method in spec["paths"][path], (path, method)
    assert "503" in spec["paths"]["/api/miners/{miner_id}"]["patch"]["responses"]
    assert "503" in spec["paths"]["/healthz"]["get"]["responses"]
