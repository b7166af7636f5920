"""The batching writer on real databases: SQLite files, and the same code on PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from minerwatch.shared import db
from minerwatch.shared.messages import Rejected
from minerwatch.shared.schemas import encode
from minerwatch.store.routing import Row, SampleRow, route
from minerwatch.store.writer import Writer

BASE = "mw"


def rows_of(make: Any, count: int, miner_id: str = "rig-1") -> list[Row]:
    rows: list[Row] = []
    for i in range(count):
        ts = f"2026-11-22T10:{i // 60:02d}:{i % 60:02d}.000Z"
        row = route(BASE, f"mw/miners/{miner_id}/sample", encode(make.sample(miner_id, ts)))
        assert isinstance(row, SampleRow)
        rows.append(row)
    return rows


def one(make: Any, topic: str, message: Any) -> Row:
    row = route(BASE, topic, encode(message))
    assert row is not None and not isinstance(row, Rejected)
    return row


async def select_all(engine: AsyncEngine, table: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(table).order_by(*table.primary_key.columns))
        return [dict(r) for r in result.mappings()]


async def count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


async def wait_until(check: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def count_commits(engine: AsyncEngine) -> list[int]:
    commits: list[int] = []
    event.listen(engine.sync_engine, "commit", lambda _conn: commits.append(1))
    return commits


async def test_samples_are_stored_exactly_and_duplicates_kept_once(
    engine: AsyncEngine, make: Any
) -> None:
    first = one(make, "mw/miners/rig-1/sample", make.sample())
    again = one(make, "mw/miners/rig-1/sample", make.sample())
    later = one(make, "mw/miners/rig-1/sample", make.sample(ts="2026-11-22T10:00:10.000Z",
                                                            fan_rpm=[], power_w=None))
    async with Writer(engine, batch_size=100, interval_s=30) as writer:
        writer.add(first)
        writer.add(again)  # same (miner_id, ts) in the same batch
        assert await writer.flush() == 2
        writer.add(again)  # and in a later batch
        writer.add(later)
        await writer.flush()
    stored = await select_all(engine, db.samples)
    assert stored == [first.values, later.values]


async def test_info_and_status_share_one_miners_row_without_wiping_each_other(
    engine: AsyncEngine, make: Any
) -> None:
    info = one(make, "mw/miners/rig-1/info", make.info())
    online = one(make, "mw/miners/rig-1/status", make.status("online"))
    offline = one(make, "mw/miners/rig-1/status", make.status(
        "offline", since="2026-11-22T11:00:00.000Z", reason="timeout", failures=3))
    new_info = one(make, "mw/miners/rig-1/info", make.info(firmware="v2.5.0", port=8081))
    async with Writer(engine, batch_size=100, interval_s=30) as writer:
        writer.add(info)
        await writer.flush()
        writer.add(online)
        await writer.flush()
        writer.add(offline)
        writer.add(new_info)
        writer.add(online)  # a late redelivery of the older status in the same batch
        await writer.flush()
        writer.add(online)  # and in a batch of its own
        await writer.flush()
    [miner] = await select_all(engine, db.miners)
    assert miner == {**new_info.values, **offline.values, "forgotten_ms": None}
    assert miner["state"] == "offline" and miner["firmware"] == "v2.5.0"
    events = await select_all(engine, db.status_events)
    assert [(e["state"], e["failures"]) for e in events] == [("online", 0), ("offline", 3)]


async def test_status_first_then_info(engine: AsyncEngine, make: Any) -> None:
    status = one(make, "mw/miners/rig-2/status", make.status("idle", reason="paused"))
    info = one(make, "mw/miners/rig-2/info", make.info("rig-2"))
    async with Writer(engine, batch_size=100, interval_s=30) as writer:
        writer.add(status)
        writer.add(info)  # same transaction, two upserts of one row
    [miner] = await select_all(engine, db.miners)
    assert miner == {**info.values, **status.values, "forgotten_ms": None}


async def test_alert_events_stored_once(engine: AsyncEngine, make: Any) -> None:
    firing = one(make, "mw/alerts/rig-1/overheat", make.alert())
    resolved = one(make, "mw/alerts/rig-1/overheat", make.alert(
        state="resolved", value=70.0, ts="2026-11-22T10:05:00.000Z", message="back to 70"))
    async with Writer(engine, batch_size=100, interval_s=30) as writer:
        for row in (firing, firing, resolved, firing):
            writer.add(row)
    assert await select_all(engine, db.alert_events) == [firing.values, resolved.values]


async def test_rows_the_database_refuses_do_not_block_the_rest_of_the_batch(
    engine: AsyncEngine, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    good = rows_of(make, 3)
    # cannot come out of route; stands for any row a database refuses for its content
    refused = SampleRow({**good[0].values, "ts_ms": 1, "hashrate_ths": None})
    async with Writer(engine, batch_size=100, interval_s=30) as writer:
        for row in (good[0], refused, good[1], good[2]):
            writer.add(row)
        assert await writer.flush() == 4
        assert writer.pending == 0
        assert writer.dropped == 1
    assert await select_all(engine, db.samples) == [r.values for r in good]
    assert any("row dropped" in r.getMessage() and "ts_ms=1" in r.getMessage()
               for r in caplog.records)


async def test_flush_by_size_writes_one_transaction_per_batch(
    sqlite_engine: AsyncEngine, make: Any
) -> None:
    commits = count_commits(sqlite_engine)
    rows = rows_of(make, 7)
    async with Writer(sqlite_engine, batch_size=3, interval_s=30) as writer:
        for row in rows:
            writer.add(row)
        await wait_until(lambda: writer.pending == 1)
        assert len(commits) == 2  # two full batches of 3
        assert await count(sqlite_engine, db.samples) == 6
        await asyncio.sleep(0.2)
        assert writer.pending == 1  # a partial batch waits for the interval
    # leaving flushes what is pending
    assert await count(sqlite_engine, db.samples) == 7
    assert len(commits) == 3


async def test_flush_by_time_without_further_messages(
    sqlite_engine: AsyncEngine, make: Any
) -> None:
    async with Writer(sqlite_engine, batch_size=1000, interval_s=0.1) as writer:
        for row in rows_of(make, 5):
            writer.add(row)
        await wait_until(lambda: writer.pending == 0, timeout=2)
        assert await count(sqlite_engine, db.samples) == 5
        for row in rows_of(make, 2, "rig-2"):
            writer.add(row)
        await wait_until(lambda: writer.pending == 0, timeout=2)
        assert await count(sqlite_engine, db.samples) == 7


async def test_locked_database_keeps_rows_and_retries(
    sqlite_url: str, sqlite_engine: AsyncEngine, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # the shared engine waits 5 s for a lock; a short wait keeps this test fast
    event.listen(sqlite_engine.sync_engine, "connect",
                 lambda dbapi, _rec: dbapi.execute("PRAGMA busy_timeout=50"))
    await sqlite_engine.dispose()
    caplog.set_level(logging.INFO, logger="minerwatch.store")
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        async with Writer(sqlite_engine, batch_size=1000, interval_s=0.05,
                          retry_min_s=0.05, retry_max_s=0.1) as writer:
            for row in rows_of(make, 4):
                writer.add(row)
            await wait_until(lambda: any("database write failed" in r.getMessage()
                                         for r in caplog.records))
            assert writer.pending == 4
            holder.execute("ROLLBACK")
            await wait_until(lambda: writer.pending == 0)
    finally:
        holder.close()
    assert await count(sqlite_engine, db.samples) == 4
    assert any("is locked" in r.getMessage() for r in caplog.records)
    assert any("resumed" in r.getMessage() for r in caplog.records)


async def test_database_gone_then_back_empty(
    tmp_path: Path, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "gone"
    engine = db.create_engine(f"sqlite:///{folder / 'history.db'}")
    await db.create_schema(engine)
    await engine.dispose()
    shutil.rmtree(folder)  # the database and its folder disappear
    try:
        async with Writer(engine, batch_size=2, interval_s=0.05,
                          retry_min_s=0.05, retry_max_s=0.1) as writer:
            rows = rows_of(make, 3)
            for row in rows:
                writer.add(row)
            await wait_until(lambda: sum("database write failed" in r.getMessage()
                                         for r in caplog.records) >= 2)
            assert writer.pending == 3
            folder.mkdir()  # back, but empty: the writer recreates the tables
            await wait_until(lambda: writer.pending == 0)
        assert await select_all(engine, db.samples) == [r.values for r in rows]
    finally:
        await engine.dispose()


async def test_shutdown_with_the_database_away_gives_up_in_time(
    tmp_path: Path, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'gone' / 'history.db'}")
    shutil.rmtree(tmp_path / "gone")
    try:
        writer = Writer(engine, batch_size=100, interval_s=30, retry_min_s=5,
                        retry_max_s=10, close_timeout_s=0.3)
        async with writer:
            for row in rows_of(make, 2):
                writer.add(row)
            started = time.monotonic()
        assert time.monotonic() - started < 2
        assert writer.pending == 2
        assert any("2 rows not written" in r.getMessage() for r in caplog.records)
    finally:
        await engine.dispose()


async def test_stop_interrupts_a_long_retry_wait(
    tmp_path: Path, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'gone' / 'history.db'}")
    shutil.rmtree(tmp_path / "gone")
    try:
        writer = Writer(engine, batch_size=1, interval_s=0.05, retry_min_s=20,
                        retry_max_s=20, close_timeout_s=0.3)
        async with writer:
            writer.add(rows_of(make, 1)[0])
            await wait_until(lambda: any("retrying in" in r.getMessage()
                                         for r in caplog.records))
            started = time.monotonic()
        assert time.monotonic() - started < 2
    finally:
        await engine.dispose()


async def test_a_database_read_only_when_opened_is_written_once_it_is_writable(
    sqlite_url: str, sqlite_engine: AsyncEngine, read_only: Any, make: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection opened while the file was read-only stays read-only: the writer opens
    the database again after a failed write instead of retrying on it forever."""
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    await sqlite_engine.dispose()  # the next connection is opened on the read-only file
    read_only.lock(path)
    rows = rows_of(make, 5)
    async with Writer(sqlite_engine, batch_size=100, interval_s=0.02,
                      retry_min_s=0.02, retry_max_s=0.05) as writer:
        for row in rows:
            writer.add(row)
        await wait_until(lambda: sum("readonly database" in r.getMessage()
                                     for r in caplog.records) >= 3)
        assert writer.pending == 5
        read_only.unlock(path)
        await wait_until(lambda: writer.pending == 0)
    assert await select_all(sqlite_engine, db.samples) == [r.values for r in rows]
    assert await count(sqlite_engine, db.rollups_1m) == 1
