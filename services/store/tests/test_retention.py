"""Retention per resolution on both engines, with the clock under the test's control."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from minerwatch.shared import db
from minerwatch.shared.config import StoreConfig
from minerwatch.shared.schemas import encode
from minerwatch.store.fleet import FleetRollups
from minerwatch.store.retention import Horizon, Retention, cutoff_ms, policy
from minerwatch.store.routing import SampleRow, route
from minerwatch.store.writer import Writer

DAY_S = 86400
NOW_S = 1795341600.0  # 2026-11-22T10:00:00Z
NOW_MS = int(NOW_S * 1000)


def ts_text(ms: int) -> str:
    return db.ms_to_datetime(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


async def keys(engine: AsyncEngine, table: Any, column: str) -> list[tuple[str, int]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(table.c.miner_id, table.c[column]).order_by(table.c.miner_id,
                                                               table.c[column]))
        return [tuple(r) for r in result]


async def fleet_keys(engine: AsyncEngine, table: Any) -> list[tuple[int, int]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(table.c.bucket_ms, table.c.miners)
                                    .order_by(table.c.bucket_ms))
        return [tuple(r) for r in result]


def ago(days: float, minutes: int = 0) -> int:
    """Epoch ms of a sample ``days`` before NOW, on a whole hour, plus ``minutes``."""
    ms = NOW_MS - int(days * DAY_S * 1000)
    return ms - ms % 3_600_000 + minutes * 60_000


async def test_each_resolution_keeps_its_days_deleting_in_small_batches(
    engine: AsyncEngine, make: Any
) -> None:
    ages = [100, 95, 10, 8, 6, 1]  # days
    async with Writer(engine, batch_size=1000, interval_s=30) as writer:
        for miner in ("rig-1", "rig-2"):
            for days in ages:
                for minute in range(3):  # three 1-minute buckets in one hour
                    sample = make.sample(miner, ts_text(ago(days, minute)))
                    row = route("mw", f"mw/miners/{miner}/sample", encode(sample))
                    assert isinstance(row, SampleRow)
                    writer.add(row)
    await FleetRollups(engine).run_once()
    deletes: list[int] = []

    def note_delete(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append(cursor.rowcount)

    event.listen(engine.sync_engine, "after_cursor_execute", note_delete)
    clock = {"now": NOW_S}
    retention = Retention(engine, policy(StoreConfig()), batch=2, clock=lambda: clock["now"])

    deleted = await retention.run_once()

    # raw 7 days, 1-minute 90 days, 1-hour forever (the defaults); the fleet rollups (one
    # row per bucket for both miners) as long as the per-miner rollups
    assert deleted == {"samples": 2 * 4 * 3, "rollups_1m": 2 * 2 * 3, "fleet_rollups_1m": 2 * 3}
    assert max(deletes) == 2  # never more than a batch per transaction
    for miner in ("rig-1", "rig-2"):
        assert [k for k in await keys(engine, db.samples, "ts_ms") if k[0] == miner] == [
            (miner, ago(days, m)) for days in (6, 1) for m in range(3)]
        assert [k for k in await keys(engine, db.rollups_1m, "bucket_ms") if k[0] == miner] == [
            (miner, ago(days, m)) for days in (10, 8, 6, 1) for m in range(3)]
        assert [k for k in await keys(engine, db.rollups_1h, "bucket_ms") if k[0] == miner] == [
            (miner, ago(days)) for days in ages]

    assert {k[0] for k in await fleet_keys(engine, db.fleet_rollups_1m)} == {
        ago(days, m) for days in (10, 8, 6, 1) for m in range(3)}
    assert await retention.run_once() == {"samples": 0, "rollups_1m": 0, "fleet_rollups_1m": 0}
    clock["now"] = NOW_S + 1.5 * DAY_S  # the 6-day-old samples pass 7 days
    assert await retention.run_once() == {"samples": 2 * 3, "rollups_1m": 0,
                                          "fleet_rollups_1m": 0}
    assert {k[1] for k in await keys(engine, db.samples, "ts_ms")} == {
        ago(1, m) for m in range(3)}

    # hour rollups go too once they have a limit of their own
    limited = Retention(engine, policy(StoreConfig(keep_1h_days=30)), batch=100,
                        clock=lambda: clock["now"])
    deleted = await limited.run_once()
    assert (deleted["rollups_1h"], deleted["fleet_rollups_1h"]) == (2 * 2, 2)
    assert {k[0] for k in await fleet_keys(engine, db.fleet_rollups_1h)} == {
        ago(days) for days in (10, 8, 6, 1)}
    assert {k[1] for k in await keys(engine, db.rollups_1h, "bucket_ms")} == {
        ago(days) for days in (10, 8, 6, 1)}


def test_cutoffs_and_the_horizon_follow_the_clock() -> None:
    assert cutoff_ms(NOW_S, 0) is None  # kept forever
    assert cutoff_ms(NOW_S, 7) == NOW_MS - 7 * DAY_S * 1000
    assert cutoff_ms(NOW_S, 0.5) == NOW_MS - DAY_S * 500
    clock = {"now": NOW_S}
    horizon = Horizon(7, clock=lambda: clock["now"])
    boundary = NOW_MS - 7 * DAY_S * 1000
    assert horizon.too_old(boundary - 1) and not horizon.too_old(boundary)
    clock["now"] += 1
    assert horizon.too_old(boundary)
    assert not Horizon(0, clock=lambda: NOW_S).too_old(0)
