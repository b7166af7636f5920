"""Fleet rollups on both engines: marks written with the samples, recomputed from the
per-miner rollups, a mark raised meanwhile kept, emptied buckets removed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from minerwatch.shared import db
from minerwatch.store.fleet import FleetRollups, recompute
from minerwatch.store.routing import SampleRow
from minerwatch.store.writer import write_rows

T0 = "2026-11-22T10:00:"


async def write(engine: AsyncEngine, *samples: Any) -> None:
    async with engine.begin() as conn:
        await write_rows(conn, [SampleRow(db.sample_row(s)) for s in samples])


async def rows(engine: AsyncEngine, table: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(table).order_by(*table.primary_key.columns))
        return [dict(row) for row in result.mappings()]


async def test_marks_come_with_the_samples_and_the_pass_builds_fleet_rows(
    engine: AsyncEngine, make: Any
) -> None:
    await write(engine, make.sample("rig-1", T0 + "05.000Z", hashrate_ths=1.0, power_w=10.0),
                make.sample("rig-1", T0 + "45.000Z", hashrate_ths=3.0, power_w=None),
                make.sample("rig-2", T0 + "10.000Z", hashrate_ths=2.0, power_w=None,
                            temp_c=None))
    marks = await rows(engine, db.fleet_dirty)
    bucket = db.ts_to_ms(T0 + "00.000Z")
    assert [(m["step_ms"], m["bucket_ms"]) for m in marks] == [(60_000, bucket),
                                                               (3_600_000, bucket)]
    assert await FleetRollups(engine).run_once() == 2
    assert await rows(engine, db.fleet_dirty) == []
    for table in (db.fleet_rollups_1m, db.fleet_rollups_1h):
        assert await rows(engine, table) == [{
            "bucket_ms": bucket, "miners": 2,
            "hashrate_ths_sum": 2.0 + 2.0, "hashrate_ths_miners": 2,
            "power_w_sum": 10.0, "power_w_miners": 1,  # rig-1's mean of its one reading
            "temp_c_sum": 61.5 + 0.0, "temp_c_miners": 1,
            "vr_temp_c_sum": 0.0, "vr_temp_c_miners": 0}]


async def test_a_bucket_marked_again_meanwhile_keeps_its_mark(
    engine: AsyncEngine, make: Any
) -> None:
    await write(engine, make.sample("rig-1", T0 + "05.000Z", hashrate_ths=1.0))
    async with engine.connect() as conn:
        read = [tuple(r) for r in (await conn.execute(
            select(db.fleet_dirty.c.step_ms, db.fleet_dirty.c.bucket_ms,
                   db.fleet_dirty.c.version))).all()]
    # another transaction adds to the bucket after the pass read its marks
    await write(engine, make.sample("rig-2", T0 + "06.000Z", hashrate_ths=5.0))
    async with engine.begin() as conn:
        await recompute(conn, read)  # type: ignore[arg-type]
    assert [m["version"] for m in await rows(engine, db.fleet_dirty)] == [1, 1]
    await FleetRollups(engine).run_once()
    assert await rows(engine, db.fleet_dirty) == []
    assert [r["hashrate_ths_sum"] for r in await rows(engine, db.fleet_rollups_1m)] == [6.0]


async def test_a_bucket_left_without_miners_loses_its_fleet_row(
    engine: AsyncEngine, make: Any
) -> None:
    await write(engine, make.sample("rig-1", T0 + "05.000Z"),
                make.sample("rig-1", "2026-11-22T11:00:05.000Z"))
    await FleetRollups(engine).run_once()
    early = db.ts_to_ms(T0 + "00.000Z")
    async with engine.begin() as conn:  # as a purge of the miner's early hour would
        await conn.execute(delete(db.rollups_1h).where(db.rollups_1h.c.bucket_ms == early))
        await conn.execute(db.fleet_dirty.insert().values(step_ms=3_600_000, bucket_ms=early,
                                                          version=0))
    await FleetRollups(engine).run_once()
    assert [r["bucket_ms"] for r in await rows(engine, db.fleet_rollups_1h)] == [
        early + 3_600_000]
    assert len(await rows(engine, db.fleet_rollups_1m)) == 2
