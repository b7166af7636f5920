"""1-minute and 1-hour rollups: the arithmetic alone, then kept by the writer on both engines."""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from minerwatch.shared import db
from minerwatch.shared.schemas import encode
from minerwatch.store.routing import Row, SampleRow, route
from minerwatch.store.samples import bucket_rows
from minerwatch.store.writer import Writer

T0 = 1795341600000  # 2026-11-22T10:00:00.000Z, the start of an hour


def values(miner_id: str, ts_ms: int, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "miner_id": miner_id, "ts_ms": ts_ms, "hashrate_ths": 1.0,
        "expected_hashrate_ths": 1.2, "power_w": 15.0, "efficiency_jth": 15.0,
        "temp_c": 60.0, "vr_temp_c": None, "fan_rpm": [4000], "shares_accepted": 10,
        "shares_rejected": 0, "best_diff": 1e6, "uptime_s": 100, "pool_url": "p",
        "is_mining": True, "pool_fallback": None, "pool_connected": None,
        "blocks_found": None,
    }
    row.update(fields)
    return row


def test_a_bucket_sums_counts_and_keeps_extremes_and_the_newest_counters() -> None:
    later = values("rig-1", T0 + 20_000, hashrate_ths=3.0, power_w=None, temp_c=70.0,
                   shares_accepted=30, fan_rpm=[4100, 4200])
    first = values("rig-1", T0 + 1_000, hashrate_ths=1.0, power_w=10.0, temp_c=50.0,
                   vr_temp_c=40.0, shares_accepted=10)
    middle = values("rig-1", T0 + 10_000, hashrate_ths=2.0, power_w=20.0, temp_c=80.0,
                    shares_accepted=20, pool_url=None)
    next_minute = values("rig-1", T0 + 60_000, hashrate_ths=9.0)
    other = values("rig-2", T0 + 5_000, hashrate_ths=5.0)
    # arrival order is not time order
    rows = bucket_rows([later, first, other, middle, next_minute], 60_000)
    assert [(r["miner_id"], r["bucket_ms"], r["samples"]) for r in rows] == [
        ("rig-1", T0, 3), ("rig-1", T0 + 60_000, 1), ("rig-2", T0, 1)]
    bucket = rows[0]
    assert (bucket["hashrate_ths_sum"], bucket["hashrate_ths_n"]) == (6.0, 3)
    assert (bucket["hashrate_ths_min"], bucket["hashrate_ths_max"]) == (1.0, 3.0)
    # a null is no measurement: it counts neither in the average nor in the extremes
    assert (bucket["power_w_sum"], bucket["power_w_n"]) == (30.0, 2)
    assert (bucket["power_w_min"], bucket["power_w_max"]) == (10.0, 20.0)
    assert (bucket["temp_c_min"], bucket["temp_c_max"]) == (50.0, 80.0)
    assert (bucket["vr_temp_c_sum"], bucket["vr_temp_c_n"]) == (40.0, 1)
    # counters and settings are the newest sample's, nulls included
    assert bucket["last_ts_ms"] == T0 + 20_000
    assert bucket["shares_accepted"] == 30 and bucket["fan_rpm"] == [4100, 4200]
    assert bucket["pool_url"] == "p"
    hour = bucket_rows([later, first, middle, next_minute], 3_600_000)
    assert len(hour) == 1 and hour[0]["samples"] == 4 and hour[0]["hashrate_ths_max"] == 9.0


def sample_row(make: Any, miner_id: str, ts_ms: int, **fields: Any) -> Row:
    ts = db.ms_to_datetime(ts_ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"
    row = route("mw", f"mw/miners/{miner_id}/sample", encode(make.sample(miner_id, ts,
                                                                          **fields)))
    assert isinstance(row, SampleRow)
    return row


async def rollups(engine: AsyncEngine, table: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(table).order_by(table.c.miner_id, table.c.bucket_ms))
        return [dict(r) for r in result.mappings()]


def expected(rows: list[Row], step_ms: int) -> list[dict[str, Any]]:
    """What the table must hold: every distinct sample counted once, whatever arrived."""
    distinct = {(r.values["miner_id"], r.values["ts_ms"]): r.values for r in rows}
    return bucket_rows(distinct.values(), step_ms)


def close(stored: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> bool:
    """Equal, with sums compared to rounding error (the order of additions differs)."""
    assert len(stored) == len(wanted)
    for got, want in zip(stored, wanted, strict=True):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if key.endswith("_sum"):
                assert abs(got[key] - value) < 1e-9 * max(1.0, abs(value)), key
            else:
                assert got[key] == value, (key, got[key], value)
    return True


async def test_rollups_count_each_sample_once_however_often_and_late_it_comes(
    engine: AsyncEngine, make: Any
) -> None:
    rng = random.Random(7)
    rows = [
        sample_row(make, miner, T0 + i * 10_000 + miner_no, hashrate_ths=rng.uniform(0.5, 2),
                   power_w=rng.choice([None, rng.uniform(10, 20)]),
                   temp_c=rng.uniform(40, 80), shares_accepted=i)
        for miner_no, miner in enumerate(["rig-1", "rig-2", "rig-3"])
        for i in range(400)  # a bit over an hour of 10 s samples each
    ]
    deliveries = rows + rng.sample(rows, 300)  # redeliveries, in later batches
    rng.shuffle(deliveries)
    async with Writer(engine, batch_size=97, interval_s=30) as writer:
        for row in deliveries:
            writer.add(row)
            if writer.pending >= 97:
                await writer.flush()
        await writer.flush()
        for row in rng.sample(rows, 50):  # and once more, after everything was committed
            writer.add(row)
        await writer.flush()
    assert writer.new_samples == len(rows)
    for resolution in db.ROLLUPS:
        stored = await rollups(engine, resolution.table)
        assert close(stored, expected(rows, resolution.step_ms))
    hours = await rollups(engine, db.rollups_1h)
    assert [(h["miner_id"], h["samples"]) for h in hours] == [
        ("rig-1", 360), ("rig-1", 40), ("rig-2", 360), ("rig-2", 40), ("rig-3", 360),
        ("rig-3", 40)]


async def test_a_late_sample_updates_the_extremes_but_not_the_newest_values(
    engine: AsyncEngine, make: Any
) -> None:
    newest = sample_row(make, "rig-1", T0 + 50_000, hashrate_ths=2.0, shares_accepted=50,
                        pool_url="stratum+tcp://new:3333")
    late = sample_row(make, "rig-1", T0 + 10_000, hashrate_ths=0.5, shares_accepted=10,
                      pool_url="stratum+tcp://old:3333")
    async with Writer(engine, batch_size=10, interval_s=30) as writer:
        writer.add(newest)
        await writer.flush()
        writer.add(late)
        await writer.flush()
    [minute] = await rollups(engine, db.rollups_1m)
    assert minute["samples"] == 2
    assert (minute["hashrate_ths_min"], minute["hashrate_ths_max"]) == (0.5, 2.0)
    assert minute["hashrate_ths_sum"] == 2.5
    assert minute["last_ts_ms"] == T0 + 50_000
    assert minute["shares_accepted"] == 50 and minute["pool_url"] == "stratum+tcp://new:3333"
