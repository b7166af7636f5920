"""``GET /api/energy`` over real HTTP, on SQLite and PostgreSQL: kWh per UTC day and miner
from the 1-hour rollups the store writes, and its cost at the configured price (through
the real ``minerwatch-api`` process and its config file)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from minerwatch.shared.db import create_engine, create_schema, sample_row
from minerwatch.shared.schemas import Sample, format_ts
from minerwatch.store.routing import SampleRow
from minerwatch.store.writer import write_rows

StartApi = Callable[..., Any]
SCRIPT = Path(sys.executable).with_name("minerwatch-api")
DAY = datetime(2026, 11, 22, tzinfo=UTC)


@pytest.fixture
def db_url(any_db_url: str) -> str:
    return any_db_url


def every_10_minutes(miner_id: str, start: datetime, hours: int, power: float | None
                     ) -> list[Sample]:
    return [Sample(miner_id=miner_id, ts=format_ts(start + timedelta(minutes=10 * k)),
                   hashrate_ths=1.0, power_w=power) for k in range(hours * 6)]


async def store_day(db_url: str) -> None:
    """2026-11-22: a Bitaxe at a constant 100 W all day, one at 50 W for 6 hours and an
    S19 reporting no power all day."""
    rows = [*every_10_minutes("bitaxe-1", DAY, 24, 100.0),
            *every_10_minutes("bitaxe-2", DAY + timedelta(hours=6), 6, 50.0),
            *every_10_minutes("s19-1", DAY, 24, None)]
    engine = create_engine(db_url)
    try:
        await create_schema(engine)
        async with engine.begin() as conn:
            await write_rows(conn, [SampleRow(sample_row(s)) for s in rows])
    finally:
        await engine.dispose()


async def test_kwh_per_day_and_miner_from_known_constant_power_without_a_price(
    start_api: StartApi, db_url: str
) -> None:
    await store_day(db_url)
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        response = await http.get("/api/energy",
                                  params={"since": "2026-11-21", "until": "2026-11-23"})
    assert response.status_code == 200, response.text
    assert response.json() == {"price_per_kwh": None, "currency": "", "days": [
        {"day": "2026-11-21", "kwh": 0.0, "cost": None, "miners_reporting": 0, "miners": {}},
        {"day": "2026-11-22", "kwh": 2.7, "cost": None, "miners_reporting": 2,
         "miners": {"bitaxe-1": 2.4, "bitaxe-2": 0.3}},
        {"day": "2026-11-23", "kwh": 0.0, "cost": None, "miners_reporting": 0, "miners": {}},
    ]}


async def test_default_range_is_the_last_seven_days_today_included(
    start_api: StartApi, db_url: str
) -> None:
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        days = (await http.get("/api/energy")).json()["days"]
    today = datetime.now(UTC).date()
    assert [d["day"] for d in days] == [
        (today - timedelta(days=6 - k)).isoformat() for k in range(7)]


@pytest.mark.parametrize(("params", "named"), [
    ({"since": "last week"}, "since:"),
    ({"until": "2026-02-30"}, "until:"),
    ({"since": "2026-11-23", "until": "2026-11-22"}, "since"),
    ({"since": "2024-01-01", "until": "2026-01-01"}, "until:"),
])
async def test_bad_days_are_a_one_line_400_naming_them(
    start_api: StartApi, params: dict[str, str], named: str
) -> None:
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        response = await http.get("/api/energy", params=params)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith(named) and "\n" not in detail


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_cost_at_the_configured_price_in_its_currency(
    broker: Any, base_topic: str, db_url: str, tmp_path: Path
) -> None:
    await store_day(db_url)
    config = tmp_path / "minerwatch.toml"
    config.write_text('[api]\nauth = "lan"\nenergy_price_per_kwh = 0.25\ncurrency = "EUR"\n')
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINERWATCH_")}
    env.update(MINERWATCH_CONFIG=str(config), MINERWATCH_MQTT_URL=broker.url,
               MINERWATCH_BASE_TOPIC=base_topic, MINERWATCH_DB_URL=db_url,
               MINERWATCH_API_LISTEN=f"127.0.0.1:{port}")
    log = tmp_path / "api.log"
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(str(SCRIPT), env=env, cwd=tmp_path,
                                                       stderr=log_file)
    try:
        deadline = time.monotonic() + 15
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            while True:
                try:
                    response = await http.get("/api/energy", params={
                        "since": "2026-11-22T13:00:00+02:00", "until": "2026-11-22"})
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, log.read_text()
                    await asyncio.sleep(0.1)
    finally:
        process.terminate()
        await process.wait()
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["price_per_kwh"], body["currency"]) == (0.25, "EUR")
    assert body["days"] == [{"day": "2026-11-22", "kwh": 2.7, "cost": 0.675,
                             "miners_reporting": 2,
                             "miners": {"bitaxe-1": 2.4, "bitaxe-2": 0.3}}]
