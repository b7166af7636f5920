"""What used to be a 500: timestamps past the calendar, paths the OS cannot look up,
anything unforeseen (logged, answered without details), and impossible readings stored
before ingest checked them. And the OpenAPI schema says what the history accepts."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from minerwatch.api.history import SampleRollup
from minerwatch.api.routes import miners as miners_routes
from minerwatch.shared.db import (
    alert_events,
    create_engine,
    create_schema,
    rollups_1m,
    samples,
)
from minerwatch.shared.fields import ROLLUP_MEAN
from minerwatch.shared.schemas import Sample, format_ts
from minerwatch.shared.topics import MINER_ID_RE

StartApi = Callable[..., Any]

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
MINUTE_MS = 60_000
INF = math.inf
NAN = math.nan


def ts(ms: int) -> str:
    return format_ts(T0 + timedelta(milliseconds=ms - T0_MS))


async def test_times_past_the_calendar_are_400_naming_the_parameter(
    start_api: StartApi,
) -> None:
    cases = {"since": "0001-01-01T00:00:00+14:00", "until": "9999-12-31T23:59:59-14:00"}
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        for path in ("samples", "events"):
            for name, value in cases.items():
                response = await http.get(f"/api/miners/bitaxe-1/{path}", params={name: value})
                assert response.status_code == 400, (path, name, response.text)
                detail = response.json()["detail"]
                assert detail.startswith(f"{name}: ") and "out of range" in detail, detail


async def test_paths_the_os_cannot_look_up_are_404(start_api: StartApi) -> None:
    paths = ["/%00", "/app.js%00.html", "/index.html/x", "/" + "a" * 300, "/%ED%A0%80"]
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        for path in paths:
            response = await http.get(path)
            assert response.status_code == 404, (path, response.text)
            assert response.json()["status_code"] == 404
        assert (await http.get("/app.js")).status_code == 200  # the real files still are


async def test_an_unhandled_error_is_logged_and_answered_500_without_details(
    start_api: StartApi, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(_conn: object) -> object:
        raise RuntimeError("secret detail\nof the server")

    monkeypatch.setattr(miners_routes, "list_miners", broken)
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        response = await http.get("/api/miners")
        assert (await http.get("/healthz")).status_code == 200  # and it goes on
    assert response.status_code == 500
    assert response.json() == {"status_code": 500, "detail": "Internal Server Error"}
    logged = [r for r in caplog.records
              if r.name == "minerwatch.api" and r.levelno == logging.ERROR]
    assert len(logged) == 1
    line = logged[0].getMessage()
    assert line == "GET /api/miners failed: RuntimeError: secret detail of the server"
    assert logged[0].exc_info is not None  # the traceback goes with it


@pytest.fixture
def db_url(any_db_url: str) -> str:
    return any_db_url


def rollup_row(bucket_ms: int, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "miner_id": "bitaxe-1", "bucket_ms": bucket_ms, "samples": 3,
        "last_ts_ms": bucket_ms + 2000, "expected_hashrate_ths": 1.2, "fan_rpm": [4100],
        "shares_accepted": 10, "shares_rejected": 1, "best_diff": 5e6, "uptime_s": 600,
        "pool_url": "stratum+tcp://pool:3333", "is_mining": True}
    for gauge in ROLLUP_MEAN:
        row |= {f"{gauge}_sum": 3.0, f"{gauge}_n": 3, f"{gauge}_min": 0.5,
                f"{gauge}_max": 1.5}
    row.update(values)
    return row


def sample_row(miner_id: str, ts_ms: int, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "miner_id": miner_id, "ts_ms": ts_ms, "hashrate_ths": 1.0,
        "expected_hashrate_ths": None, "power_w": 15.0, "efficiency_jth": 15.0,
        "temp_c": 55.0, "vr_temp_c": None, "fan_rpm": [4200], "shares_accepted": 100,
        "shares_rejected": 1, "best_diff": None, "uptime_s": None, "pool_url": None,
        "is_mining": True}
    row.update(values)
    return row


async def test_impossible_stored_readings_come_back_by_the_rule(
    start_api: StartApi, db_url: str
) -> None:
    """Rows from before ingest checked readings, written straight into the database:
    optional numbers out of range come back null, a row whose required hashrate is out
    of range is left out; never a null where the schema says number."""
    # SQLite stores NaN as NULL, PostgreSQL keeps it: both paths are taken.
    huge = 1.7e308
    minutes = [
        rollup_row(T0_MS, hashrate_ths_sum=INF, hashrate_ths_max=huge),  # three of 1.7e308
        rollup_row(T0_MS + MINUTE_MS, power_w_sum=INF, power_w_min=NAN, temp_c_max=1e300,
                   best_diff=-INF, fan_rpm=[4100, 10**9]),
        rollup_row(T0_MS + 2 * MINUTE_MS),
    ]
    raw = [
        sample_row("bitaxe-1", T0_MS, hashrate_ths=INF),
        sample_row("bitaxe-1", T0_MS + 10_000, power_w=-INF, temp_c=NAN, efficiency_jth=INF,
                   fan_rpm=[4200, -5]),
        sample_row("bitaxe-1", T0_MS + 20_000),
        sample_row("broken", T0_MS, hashrate_ths=huge),  # its only and latest sample
    ]
    alerts = [
        {"miner_id": "bitaxe-1", "rule": "overheat", "ts_ms": T0_MS, "state": "firing",
         "severity": "warning", "value": NAN, "threshold": 75.0, "message": "hot"},
        {"miner_id": "bitaxe-1", "rule": "overheat", "ts_ms": T0_MS + 1, "state": "resolved",
         "severity": "warning", "value": 70.0, "threshold": INF, "message": "cool"},
    ]
    engine = create_engine(db_url)
    try:
        await create_schema(engine)
        async with engine.begin() as conn:
            await conn.execute(rollups_1m.insert(), minutes)
            await conn.execute(samples.insert(), raw)
            await conn.execute(alert_events.insert(), alerts)
    finally:
        await engine.dispose()

    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:

        async def get(path: str, **params: object) -> Any:
            response = await http.get(path, params=params)
            assert response.status_code == 200, response.text
            return response.json()

        by_minute = await get("/api/miners/bitaxe-1/samples", step="1m", since=ts(T0_MS))
        raw_items = await get("/api/miners/bitaxe-1/samples", since=ts(T0_MS))
        events = await get("/api/miners/bitaxe-1/events")
        fleet = await get("/api/miners")

    # The bucket of impossible hashrates is left out; the others keep their place.
    assert [b["ts"] for b in by_minute] == [ts(T0_MS + MINUTE_MS), ts(T0_MS + 2 * MINUTE_MS)]
    spoiled, clean = by_minute
    assert spoiled["hashrate_ths"] == 1.0
    assert spoiled["power_w"] is None and spoiled["power_w_min"] is None
    assert spoiled["power_w_max"] == 1.5
    assert spoiled["temp_c"] == 1.0 and spoiled["temp_c_max"] is None
    assert spoiled["efficiency_jth"] is None and spoiled["best_diff"] is None
    assert spoiled["fan_rpm"] == [4100]
    assert clean["power_w"] == 1.0 and clean["efficiency_jth"] == 1.0
    assert [s["ts"] for s in raw_items] == [ts(T0_MS + 10_000), ts(T0_MS + 20_000)]
    assert raw_items[0]["power_w"] is None and raw_items[0]["temp_c"] is None
    assert raw_items[0]["efficiency_jth"] is None and raw_items[0]["fan_rpm"] == [4200]
    assert raw_items[1] == {**raw_items[1], "power_w": 15.0, "temp_c": 55.0}
    assert [(e["alert"]["state"], e["alert"]["value"]) for e in events] == [("firing", None)]
    broken = next(entry for entry in fleet if entry["miner_id"] == "broken")
    assert broken["sample"] is None
    for item in [*by_minute, *raw_items]:
        assert isinstance(item["hashrate_ths"], float)


async def test_openapi_declares_what_the_history_accepts(start_api: StartApi) -> None:
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        spec = (await http.get("/schema/openapi.json")).json()
    history = {path: spec["paths"][f"/api/miners/{{miner_id}}/{path}"]["get"]
               for path in ("samples", "events")}
    for path, operation in history.items():
        parameters = {p["name"]: p for p in operation["parameters"]}
        miner_id = parameters["miner_id"]["schema"]
        assert miner_id["pattern"] == MINER_ID_RE.pattern
        assert (miner_id["minLength"], miner_id["maxLength"]) == (1, 64)
        for name in ("since", "until"):
            schema = parameters[name]["schema"]
            assert (schema["type"], schema["format"]) == ("string", "date-time"), path
            assert "naive means UTC" in parameters[name]["description"]
        assert parameters["limit"]["schema"]["maximum"] == 10000
        for status in ("400", "404", "503"):
            answer = operation["responses"][status]
            assert answer["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"}, (path, status)
            assert answer["description"]
    step = {p["name"]: p for p in history["samples"]["parameters"]}["step"]["schema"]
    assert step["enum"] == ["raw", "1m", "1h", "auto"] and step["default"] == "raw"
    assert "503" in spec["paths"]["/api/miners"]["get"]["responses"]
    assert set(spec["components"]["schemas"]["ErrorBody"]["properties"]) == {
        "status_code", "detail"}


def test_sample_rollup_is_built_from_the_field_descriptions() -> None:
    spread = tuple(f"{gauge}_{end}" for gauge in ROLLUP_MEAN for end in ("min", "max"))
    assert SampleRollup.__struct_fields__ == (
        *Sample.__struct_fields__, "step_s", "samples", *spread)
    assert issubclass(SampleRollup, Sample)
    # every spread the api returns is a column the store keeps
    assert set(spread) <= set(rollups_1m.columns.keys())
