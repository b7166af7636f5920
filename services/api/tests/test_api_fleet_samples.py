"""``GET /api/fleet/samples`` over real HTTP, on SQLite and PostgreSQL, with the history
written by the store's own writer and fleet rollups (``minerwatch.store``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from minerwatch.shared.db import create_engine, create_schema, fleet_dirty, fleet_rollups_1m
from minerwatch.shared.db import sample_row as to_row
from minerwatch.shared.schemas import Sample, format_ts
from minerwatch.store.fleet import FleetRollups
from minerwatch.store.routing import SampleRow
from minerwatch.store.writer import write_rows

StartApi = Callable[..., Any]

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)  # the start of an hour
MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)


@pytest.fixture
def db_url(any_db_url: str) -> str:
    return any_db_url


def at(offset: timedelta) -> str:
    return format_ts(T0 + offset)


def sample(miner_id: str, offset: timedelta, hashrate: float, power: float | None) -> Sample:
    return Sample(miner_id=miner_id, ts=at(offset), hashrate_ths=hashrate, power_w=power,
                  temp_c=60.0)


async def store(db_url: str, samples: Iterable[Sample], *, recompute: bool = True) -> None:
    """Write samples as the store does (one transaction), then (``recompute``) run the
    store's fleet rollups pass."""
    engine = create_engine(db_url)
    try:
        await create_schema(engine)
        async with engine.begin() as conn:
            await write_rows(conn, [SampleRow(to_row(s)) for s in samples])
        if recompute:
            await FleetRollups(engine).run_once()
    finally:
        await engine.dispose()


async def count(db_url: str, table: Any) -> int:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(table))).scalar_one()
    finally:
        await engine.dispose()


async def fleet(http: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    response = await http.get("/api/fleet/samples", params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def mixed_fleet() -> list[Sample]:
    """Two Bitaxes reporting power and two S19s that do not, over minutes 0 and 1; one
    Bitaxe sends twice in minute 0 (its mean counts, not its sum)."""
    return [
        sample("bitaxe-1", timedelta(seconds=5), 1.0, 15.0),
        sample("bitaxe-1", timedelta(seconds=35), 3.0, 17.0),
        sample("bitaxe-2", timedelta(seconds=10), 1.5, 20.0),
        sample("s19-1", timedelta(seconds=10), 100.0, None),
        sample("s19-2", timedelta(seconds=20), 110.0, None),
        sample("bitaxe-1", MINUTE + timedelta(seconds=5), 2.0, 16.0),
        sample("s19-1", MINUTE + timedelta(seconds=10), 104.0, None),
    ]


async def test_sums_of_miners_means_with_power_from_those_that_report_it(
    start_api: StartApi, db_url: str
) -> None:
    await store(db_url, mixed_fleet())
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        minutes = await fleet(http, since=at(timedelta(0)), until=at(10 * MINUTE), step="1m")
        hours = await fleet(http, since=at(timedelta(0)), until=at(HOUR), step="1h")
    assert minutes == [
        {"ts": "2026-11-22T10:00:00.000Z", "step_s": 60, "hashrate_ths": 2.0 + 1.5 + 210.0,
         "hashrate_miners": 4, "power_w": 16.0 + 20.0, "power_miners": 2, "miners": 4},
        {"ts": "2026-11-22T10:01:00.000Z", "step_s": 60, "hashrate_ths": 106.0,
         "hashrate_miners": 2, "power_w": 16.0, "power_miners": 1, "miners": 2},
    ]
    # the hour: bitaxe-1's mean over its 3 samples is 2.0 TH/s and 16 W
    assert hours == [
        {"ts": "2026-11-22T10:00:00.000Z", "step_s": 3600,
         "hashrate_ths": pytest.approx(2.0 + 1.5 + 102.0 + 110.0), "hashrate_miners": 4,
         "power_w": pytest.approx(16.0 + 20.0), "power_miners": 2, "miners": 4},
    ]


async def test_no_power_anywhere_is_null_power_and_gaps_stay_gaps(
    start_api: StartApi, db_url: str
) -> None:
    await store(db_url, [sample("s19-1", timedelta(seconds=1), 100.0, None),
                         sample("s19-1", 3 * MINUTE, 101.0, None),
                         sample("s19-2", 3 * MINUTE + timedelta(seconds=2), 99.0, None)])
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        minutes = await fleet(http, since=at(timedelta(0)), until=at(HOUR), step="1m")
    assert [(m["ts"], m["miners"], m["power_w"], m["power_miners"]) for m in minutes] == [
        ("2026-11-22T10:00:00.000Z", 1, None, 0),  # minutes 1 and 2: nobody, no bucket
        ("2026-11-22T10:03:00.000Z", 2, None, 0),
    ]
    assert minutes[1]["hashrate_ths"] == 200.0


async def test_auto_picks_the_finest_resolution_that_fits_the_limit(
    start_api: StartApi, db_url: str
) -> None:
    await store(db_url, [sample("bitaxe-1", k * 10 * MINUTE, 1.0, 15.0) for k in range(13)])
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        two_hours = await fleet(http, since=at(timedelta(0)), until=at(2 * HOUR))
        month = await fleet(http, since=at(timedelta(0)), until=at(timedelta(days=30)),
                            step="auto")
        tight = await fleet(http, since=at(timedelta(0)), until=at(2 * HOUR), limit="100")
        latest = await fleet(http, limit="3")  # no since: the latest, finest buckets
    assert {b["step_s"] for b in two_hours} == {60} and len(two_hours) == 13
    assert {b["step_s"] for b in month} == {3600} and len(month) == 3
    assert {b["step_s"] for b in tight} == {3600}  # 121 minutes would not fit in 100
    assert [b["ts"] for b in latest] == [at(100 * MINUTE), at(110 * MINUTE), at(120 * MINUTE)]


async def test_a_late_sample_changes_a_closed_bucket_and_a_redelivery_does_not(
    start_api: StartApi, db_url: str
) -> None:
    await store(db_url, [sample("bitaxe-1", timedelta(seconds=5), 1.0, 10.0),
                         sample("bitaxe-1", 5 * MINUTE, 1.0, 10.0)])
    window = {"since": at(timedelta(0)), "until": at(HOUR), "step": "1m"}
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        before = await fleet(http, **window)
        assert before[0]["hashrate_ths"] == 1.0 and before[0]["miners"] == 1
        # minute 0 closed long ago; a second miner's sample for it arrives late
        late = sample("bitaxe-2", timedelta(seconds=50), 2.0, 12.0)
        await store(db_url, [late], recompute=False)
        # marked, not yet recomputed by the store: the api computes it from the rollups
        pending = await fleet(http, **window)
        await store(db_url, [late])  # a redelivery: not new, counted once
        after = await fleet(http, **window)
    expected = {"ts": at(timedelta(0)), "step_s": 60, "hashrate_ths": 3.0,
                "hashrate_miners": 2, "power_w": 22.0, "power_miners": 2, "miners": 2}
    assert pending[0] == expected and after[0] == expected
    assert after[1] == before[1]
    assert await count(db_url, fleet_dirty) == 0  # the store recomputed every mark
    assert await count(db_url, fleet_rollups_1m) == 2


@pytest.mark.parametrize(("params", "named"), [
    ({"step": "raw"}, "step:"),
    ({"step": "5m"}, "step:"),
    ({"since": "yesterday"}, "since:"),
    ({"until": "2026-13-01T00:00:00Z"}, "until:"),
    ({"limit": "0"}, "limit:"),
    ({"limit": "many"}, "limit:"),
    ({"since": "2026-11-23T00:00:00Z", "until": "2026-11-22T00:00:00Z"}, "since"),
])
async def test_bad_parameters_are_a_one_line_400_naming_them(
    start_api: StartApi, params: dict[str, str], named: str
) -> None:
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        response = await http.get("/api/fleet/samples", params=params)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith(named) and "\n" not in detail
