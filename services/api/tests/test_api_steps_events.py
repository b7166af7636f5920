"""Rolled-up history (``step``) and a miner's events, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from minerwatch.shared.db import rollups_1h, rollups_1m
from minerwatch.shared.schemas import AlertEvent, MinerStatus, Sample, format_ts

StartApi = Callable[..., Any]
Seed = Callable[..., Awaitable[None]]

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)  # the start of an hour
T0_MS = int(T0.timestamp() * 1000)
MINUTE_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000


@pytest.fixture
def db_url(any_db_url: str) -> str:
    return any_db_url


def ts(ms: int) -> str:
    return format_ts(T0 + timedelta(milliseconds=ms - T0_MS))


def stats(name: str, values: list[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    return {f"{name}_sum": float(sum(present)), f"{name}_n": len(present),
            f"{name}_min": min(present, default=None), f"{name}_max": max(present, default=None)}


def rollup(miner_id: str, bucket_ms: int, hashrate: list[float],
           power: list[float | None] | None = None, temp: list[float | None] | None = None,
           **last: Any) -> dict[str, Any]:
    """A rollup row as the store keeps it, from the samples it stands for."""
    count = len(hashrate)
    row = {"miner_id": miner_id, "bucket_ms": bucket_ms, "samples": count,
           "last_ts_ms": bucket_ms + 1000 * (count - 1),
           **stats("hashrate_ths", list(hashrate)),
           **stats("power_w", power or [None] * count),
           **stats("temp_c", temp or [None] * count),
           **stats("vr_temp_c", [None] * count),
           "expected_hashrate_ths": 1.2, "fan_rpm": [4100], "shares_accepted": 10,
           "shares_rejected": 1, "best_diff": 5e6, "uptime_s": 600,
           "pool_url": "stratum+tcp://pool:3333", "is_mining": True}
    row.update(last)
    return row


async def test_minute_and_hour_steps_return_buckets_with_averages_and_spread(
    start_api: StartApi, db_url: str, seed: Seed, make_sample: Callable[..., Sample]
) -> None:
    minutes = [
        rollup("bitaxe-1", T0_MS, [1.0, 2.0, 3.0], power=[10.0, None, 14.0],
               temp=[50.0, 60.0, 55.0], shares_accepted=30, fan_rpm=[4000, 4100]),
        rollup("bitaxe-1", T0_MS + MINUTE_MS, [2.0, 2.0], power=[20.0, 20.0], is_mining=False),
        rollup("bitaxe-1", T0_MS + 2 * MINUTE_MS, [4.0], power=[None], pool_url=None),
        rollup("other", T0_MS, [9.0]),
    ]
    hour = rollup("bitaxe-1", T0_MS, [1.0, 2.0, 3.0, 2.0, 2.0, 4.0])
    raw = make_sample("bitaxe-1", ts(T0_MS + 5000))
    await seed(db_url, sample_rows=[raw],
               rollups=[(rollups_1m, row) for row in minutes] + [(rollups_1h, hour)])
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:

        async def get(**params: object) -> list[dict[str, Any]]:
            response = await http.get("/api/miners/bitaxe-1/samples", params=params)
            assert response.status_code == 200, response.text
            return response.json()

        # `since` inside the first minute still takes that minute's bucket
        by_minute = await get(step="1m", since=ts(T0_MS + 30_000))
        latest_two = await get(step="1m", limit=2)
        up_to = await get(step="1m", until=ts(T0_MS + MINUTE_MS))
        by_hour = await get(step="1h")
        raw_items = await get(step="raw")
        default_items = await get()

    assert [b["ts"] for b in by_minute] == [ts(T0_MS + k * MINUTE_MS) for k in range(3)]
    assert by_minute[0] == {
        "schema": 1, "miner_id": "bitaxe-1", "ts": "2026-11-22T10:00:00.000Z", "step_s": 60,
        "samples": 3,
        "hashrate_ths": 2.0, "hashrate_ths_min": 1.0, "hashrate_ths_max": 3.0,
        "power_w": 12.0, "power_w_min": 10.0, "power_w_max": 14.0,  # the null is no reading
        "temp_c": 55.0, "temp_c_min": 50.0, "temp_c_max": 60.0,
        "vr_temp_c": None, "vr_temp_c_min": None, "vr_temp_c_max": None,
        "efficiency_jth": 6.0,  # average power over average hashrate
        "expected_hashrate_ths": 1.2, "fan_rpm": [4000, 4100], "shares_accepted": 30,
        "shares_rejected": 1, "best_diff": 5e6, "uptime_s": 600,
        "pool_url": "stratum+tcp://pool:3333", "is_mining": True,
        "pool_fallback": None, "pool_connected": None, "blocks_found": None,
    }
    assert by_minute[1]["is_mining"] is False and by_minute[1]["efficiency_jth"] == 10.0
    assert by_minute[2]["power_w"] is None and by_minute[2]["efficiency_jth"] is None
    assert by_minute[2]["pool_url"] is None
    assert [b["ts"] for b in latest_two] == [ts(T0_MS + MINUTE_MS), ts(T0_MS + 2 * MINUTE_MS)]
    assert [b["ts"] for b in up_to] == [ts(T0_MS), ts(T0_MS + MINUTE_MS)]
    assert [(b["ts"], b["step_s"], b["samples"], b["hashrate_ths_max"]) for b in by_hour] == [
        (ts(T0_MS), 3600, 6, 4.0)]
    # raw, asked for or by default, stays exactly schema-1 Samples
    assert raw_items == default_items
    assert [set(item) for item in raw_items] == [set(Sample.__struct_fields__)]


async def test_auto_takes_the_finest_resolution_that_covers_the_range_within_limit(
    start_api: StartApi, db_url: str, seed: Seed, make_sample: Callable[..., Sample]
) -> None:
    now = T0_MS + 60 * DAY_MS
    # raw kept for the last 2 hours, 1-minute rollups for 2 days, 1-hour rollups for 60
    raw = [make_sample("bitaxe-1", ts(now - 7200_000 + k * 10_000)) for k in range(721)]
    minutes = [rollup("bitaxe-1", now - 2 * DAY_MS + k * MINUTE_MS, [1.0])
               for k in range(2 * 1440 + 1)]
    hours = [rollup("bitaxe-1", T0_MS + k * HOUR_MS, [1.0]) for k in range(60 * 24 + 1)]
    await seed(db_url, sample_rows=raw,
               rollups=[(rollups_1m, r) for r in minutes] + [(rollups_1h, r) for r in hours])
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:

        async def pick(back_ms: int, **params: object) -> tuple[int | None, int]:
            """(step_s of what came back, None for raw; how many items)."""
            response = await http.get("/api/miners/bitaxe-1/samples", params={
                "step": "auto", "since": ts(now - back_ms), "until": ts(now), **params})
            assert response.status_code == 200, response.text
            items = response.json()
            return items[0].get("step_s"), len(items)

        one_hour = await pick(HOUR_MS)
        two_hours_limited = await pick(2 * HOUR_MS, limit=500)
        half_day = await pick(12 * HOUR_MS)
        half_day_limited = await pick(12 * HOUR_MS, limit=100)
        month = await pick(30 * DAY_MS)
        latest = (await http.get("/api/miners/bitaxe-1/samples",
                                 params={"step": "auto", "limit": 3})).json()

    assert one_hour == (None, 361)  # raw fits: 361 samples
    assert two_hours_limited == (60, 121)  # 721 raw samples exceed 500: minutes
    assert half_day == (60, 721)  # raw starts after `since`; the minutes go back further
    assert half_day_limited == (3600, 13)
    assert month == (3600, 721)  # hundreds of points, not hundreds of thousands
    assert [item["ts"] for item in latest] == [r.ts for r in raw[-3:]]
    assert "step_s" not in latest[0]


async def test_bad_step_is_a_400_naming_it(start_api: StartApi, db_url: str, seed: Seed,
                                           make_sample: Callable[..., Sample]) -> None:
    await seed(db_url, sample_rows=[make_sample("bitaxe-1", ts(T0_MS))])
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        response = await http.get("/api/miners/bitaxe-1/samples", params={"step": "5m"})
    assert response.status_code == 400
    assert response.json()["detail"] == "step: must be one of raw, 1m, 1h, auto, got '5m'"


def status(state: str, since_ms: int, **fields: Any) -> MinerStatus:
    return MinerStatus(state=state, since=ts(since_ms), **fields)  # type: ignore[arg-type]


def alert(state: str, at_ms: int, value: float) -> AlertEvent:
    return AlertEvent(miner_id="bitaxe-1", rule="overheat", state=state,  # type: ignore[arg-type]
                      severity="warning", value=value, threshold=75.0,
                      message=f"temp_c {value}", ts=ts(at_ms))


async def test_events_merge_status_changes_and_alerts_in_time_order(
    start_api: StartApi, db_url: str, seed: Seed
) -> None:
    online = status("online", T0_MS, last_seen=ts(T0_MS))
    firing = alert("firing", T0_MS + 5 * MINUTE_MS, 77.5)
    offline = status("offline", T0_MS + 10 * MINUTE_MS, reason="timeout", failures=3,
                     last_seen=ts(T0_MS + 9 * MINUTE_MS))
    resolved = alert("resolved", T0_MS + 20 * MINUTE_MS, 70.0)
    back = status("online", T0_MS + 20 * MINUTE_MS)  # same moment as `resolved`
    elsewhere = ("s19", status("offline", T0_MS + MINUTE_MS))
    await seed(db_url, statuses=[("bitaxe-1", back)],
               events=[("bitaxe-1", online), firing, ("bitaxe-1", offline), resolved,
                       ("bitaxe-1", back), elsewhere])
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:

        async def events(**params: object) -> list[dict[str, Any]]:
            response = await http.get("/api/miners/bitaxe-1/events", params=params)
            assert response.status_code == 200, response.text
            return response.json()

        everything = await events()
        from_offline = await events(since=ts(T0_MS + 10 * MINUTE_MS), limit=2)
        latest = await events(limit=2)
        until_firing = await events(until=ts(T0_MS + 5 * MINUTE_MS))
        unknown = await http.get("/api/miners/ghost/events")
        bad_since = await http.get("/api/miners/bitaxe-1/events", params={"since": "soon"})
        bad_id = await http.get("/api/miners/Not%20Me/events")

    def kind(item: dict[str, Any]) -> tuple[str, str]:
        return item["type"], (item.get("status") or item["alert"])["state"]

    assert [kind(e) for e in everything] == [
        ("status", "online"), ("alert", "firing"), ("status", "offline"),
        ("status", "online"), ("alert", "resolved")]
    assert everything[2] == {
        "type": "status", "ts": "2026-11-22T10:10:00.000Z",
        "status": {"state": "offline", "reason": "timeout", "since": "2026-11-22T10:10:00.000Z",
                   "last_seen": "2026-11-22T10:09:00.000Z", "failures": 3}}
    assert everything[1] == {
        "type": "alert", "ts": "2026-11-22T10:05:00.000Z",
        "alert": {"miner_id": "bitaxe-1", "rule": "overheat", "state": "firing",
                  "severity": "warning", "value": 77.5, "threshold": 75.0,
                  "message": "temp_c 77.5", "ts": "2026-11-22T10:05:00.000Z",
                  "label": None, "since": None, "muted": False}}
    assert [kind(e) for e in from_offline] == [("status", "offline"), ("status", "online")]
    assert [kind(e) for e in latest] == [("status", "online"), ("alert", "resolved")]
    assert [kind(e) for e in until_firing] == [("status", "online"), ("alert", "firing")]
    assert unknown.status_code == 404
    assert bad_since.status_code == 400 and bad_since.json()["detail"].startswith("since")
    assert bad_id.status_code == 400 and bad_id.json()["detail"].startswith("miner_id")


async def test_openapi_documents_steps_rollups_and_events(start_api: StartApi) -> None:
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        spec = (await http.get("/schema/openapi.json")).json()
    samples = spec["paths"]["/api/miners/{miner_id}/samples"]["get"]
    assert "step" in {p["name"] for p in samples["parameters"]}
    assert "SampleRollup" in samples["description"]
    assert "/api/miners/{miner_id}/events" in spec["paths"]
    schemas = spec["components"]["schemas"]
    rollup = schemas["SampleRollup"]["properties"]
    assert {"step_s", "samples", "hashrate_ths", "hashrate_ths_min", "temp_c_max"} <= set(rollup)
    assert {"StatusChange", "AlertChange"} <= set(schemas)
