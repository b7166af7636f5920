"""A history made by the previous release (the tables as they were at commit c150182)
upgraded in place by ``db.create_schema``: the new nullable columns are added, the old
rows read back unchanged, and the store writes the new values. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiomqtt
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from minerwatch.shared import db
from minerwatch.shared.config import Config, DatabaseConfig, MqttConfig, StoreConfig
from minerwatch.shared.messages import Rejected
from minerwatch.shared.schemas import CommandResult, TuneProgress, TuneStep, encode
from minerwatch.store.__main__ import serve
from minerwatch.store.fleet import FleetRollups
from minerwatch.store.routing import route
from minerwatch.store.writer import Writer

T0_MS = 1795341600000  # 2026-11-22T10:00:00.000Z

# --- the previous release's tables, copied from its shared/db.py and fields.py ----------

OLD = MetaData()

OLD_SAMPLE_COLUMNS = (
    ("hashrate_ths", Float, False), ("expected_hashrate_ths", Float, True),
    ("power_w", Float, True), ("efficiency_jth", Float, True), ("temp_c", Float, True),
    ("vr_temp_c", Float, True), ("fan_rpm", JSON, False), ("shares_accepted", BigInteger, True),
    ("shares_rejected", BigInteger, True), ("best_diff", Float, True),
    ("uptime_s", BigInteger, True), ("pool_url", Text, True), ("is_mining", Boolean, False),
)
OLD_ROLLUP_METRICS = ("hashrate_ths", "power_w", "temp_c", "vr_temp_c")
OLD_ROLLUP_LAST = ("expected_hashrate_ths", "fan_rpm", "shares_accepted", "shares_rejected",
                   "best_diff", "uptime_s", "pool_url", "is_mining")
_OLD_TYPES = {name: (kind, nullable) for name, kind, nullable in OLD_SAMPLE_COLUMNS}

old_samples = Table(
    "samples", OLD,
    Column("miner_id", String(64), primary_key=True),
    Column("ts_ms", BigInteger, primary_key=True),
    *(Column(name, kind, nullable=nullable) for name, kind, nullable in OLD_SAMPLE_COLUMNS),
    sqlite_with_rowid=False,
)
old_miners = Table(
    "miners", OLD,
    Column("miner_id", String(64), primary_key=True),
    Column("driver", String(32)), Column("host", Text), Column("port", Integer),
    Column("make", Text), Column("model", Text), Column("firmware", Text),
    Column("hostname", Text), Column("mac", String(32)), Column("state", String(16)),
    Column("reason", Text), Column("since_ms", BigInteger), Column("last_seen_ms", BigInteger),
    Column("failures", Integer),
)
old_status_events = Table(
    "status_events", OLD,
    Column("miner_id", String(64), primary_key=True),
    Column("since_ms", BigInteger, primary_key=True),
    Column("state", String(16), primary_key=True),
    Column("reason", Text), Column("last_seen_ms", BigInteger),
    Column("failures", Integer, nullable=False),
)
old_alert_events = Table(
    "alert_events", OLD,
    Column("miner_id", String(64), primary_key=True),
    Column("rule", String(128), primary_key=True),
    Column("ts_ms", BigInteger, primary_key=True),
    Column("state", String(16), primary_key=True),
    Column("severity", String(16), nullable=False), Column("value", Float),
    Column("threshold", Float, nullable=False), Column("message", Text, nullable=False),
)
Index("ix_alert_events_ts", old_alert_events.c.ts_ms)
Index("ix_alert_events_miner_ts", old_alert_events.c.miner_id, old_alert_events.c.ts_ms)


def _old_rollup(name: str) -> Table:
    return Table(
        name, OLD,
        Column("miner_id", String(64), primary_key=True),
        Column("bucket_ms", BigInteger, primary_key=True),
        Column("samples", Integer, nullable=False),
        Column("last_ts_ms", BigInteger, nullable=False),
        *(column for metric in OLD_ROLLUP_METRICS for column in (
            Column(f"{metric}_sum", Float, nullable=False),
            Column(f"{metric}_n", Integer, nullable=False),
            Column(f"{metric}_min", Float), Column(f"{metric}_max", Float))),
        *(Column(field, _OLD_TYPES[field][0], nullable=_OLD_TYPES[field][1])
          for field in OLD_ROLLUP_LAST),
        sqlite_with_rowid=False,
    )


old_rollups_1m = _old_rollup("rollups_1m")
old_rollups_1h = _old_rollup("rollups_1h")

#: What this release added; all nullable, so ``create_schema`` adds them in place.
#: Tables the previous release did not have (``create_all`` makes them).
NEW_TABLES = {"fleet_rollups_1m", "fleet_rollups_1h", "fleet_dirty", "command_events",
              "tune_runs", "tune_steps"}

ADDED = {
    "samples": {"pool_fallback", "pool_connected", "blocks_found"},
    "rollups_1m": {"pool_fallback", "pool_connected", "blocks_found"},
    "rollups_1h": {"pool_fallback", "pool_connected", "blocks_found"},
    "miners": {"label", "forgotten_ms"},
    "status_events": set(),
    "alert_events": {"label", "since_ms", "muted"},
}

OLD_SAMPLE = {
    "miner_id": "rig-1", "ts_ms": T0_MS, "hashrate_ths": 1.25, "expected_hashrate_ths": 1.3,
    "power_w": 17.5, "efficiency_jth": 14.0, "temp_c": 61.5, "vr_temp_c": None,
    "fan_rpm": [4100, 3980], "shares_accepted": 12345, "shares_rejected": 7,
    "best_diff": 4.29e9, "uptime_s": 86400, "pool_url": "stratum+tcp://pool:3333",
    "is_mining": True,
}
OLD_ROLLUP = {
    "miner_id": "rig-1", "bucket_ms": T0_MS, "samples": 1, "last_ts_ms": T0_MS,
    **{f"{m}_{part}": value for m in OLD_ROLLUP_METRICS for part, value in (
        ("sum", 1.0), ("n", 1), ("min", 1.0), ("max", 1.0))},
    **{field: OLD_SAMPLE[field] for field in OLD_ROLLUP_LAST},
}
OLD_MINER = {
    "miner_id": "rig-1", "driver": "axeos", "host": "10.0.0.5", "port": 80,
    "make": "Bitaxe", "model": "Gamma", "firmware": "v2.4.0", "hostname": "bitaxe",
    "mac": "aa:bb:cc:dd:ee:ff", "state": "online", "reason": None,
    "since_ms": T0_MS - 3_600_000, "last_seen_ms": T0_MS, "failures": 0,
}
OLD_STATUS_EVENT = {"miner_id": "rig-1", "since_ms": T0_MS - 3_600_000, "state": "online",
                    "reason": None, "last_seen_ms": T0_MS, "failures": 0}
OLD_ALERT = {"miner_id": "rig-1", "rule": "overheat", "ts_ms": T0_MS + 5_000,
             "state": "firing", "severity": "warning", "value": 77.5, "threshold": 75.0,
             "message": "temp_c 77.5 > 75 for 60 s"}
OLD_ROWS: tuple[tuple[Table, dict[str, Any]], ...] = (
    (old_samples, OLD_SAMPLE), (old_rollups_1m, OLD_ROLLUP), (old_rollups_1h, OLD_ROLLUP),
    (old_miners, OLD_MINER), (old_status_events, OLD_STATUS_EVENT),
    (old_alert_events, OLD_ALERT),
)


async def make_old_history(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(OLD.create_all)
        for table, row in OLD_ROWS:
            await conn.execute(table.insert(), [row])


async def columns(engine: AsyncEngine) -> dict[str, set[str]]:
    def read(sync_conn: Any) -> dict[str, set[str]]:
        inspector = inspect(sync_conn)
        return {table: {c["name"] for c in inspector.get_columns(table)} for table in ADDED}

    async with engine.connect() as conn:
        return await conn.run_sync(read)


async def missing(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        found = await conn.run_sync(db.missing_columns)
    return sorted(f"{c.table.name}.{c.name}" for c in found)


async def rows(engine: AsyncEngine, table: Table) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(table).order_by(*table.primary_key.columns))
        return [dict(r) for r in result.mappings()]


def test_the_copy_of_the_old_tables_is_the_new_ones_less_what_was_added() -> None:
    """So the copy is a faithful previous release: same names, types and order, apart
    from the added columns, which come last and are nullable."""
    for table in db.metadata.sorted_tables:
        if table.name in NEW_TABLES:
            continue
        old = OLD.tables[table.name]
        new_names = [c.name for c in table.columns]
        kept = [n for n in new_names if n not in ADDED[table.name]]
        assert [c.name for c in old.columns] == kept, table.name
        for name in kept:
            assert repr(old.c[name].type) == repr(table.c[name].type), (table.name, name)
            assert old.c[name].nullable == table.c[name].nullable, (table.name, name)
        assert all(table.c[name].nullable for name in ADDED[table.name])


async def test_create_schema_adds_the_new_columns_and_the_old_rows_read_back(
        empty_engine: AsyncEngine, make: Any) -> None:
    engine = empty_engine
    await make_old_history(engine)
    before = await columns(engine)
    assert await missing(engine) == sorted(f"{t}.{c}" for t, cs in ADDED.items() for c in cs)

    await db.create_schema(engine)

    after = await columns(engine)
    for table, added in ADDED.items():
        assert after[table] == before[table] | added, table
    assert await missing(engine) == []
    await db.create_schema(engine)  # again: nothing left to add, nothing fails

    # the old rows, through the new tables: unchanged, the new columns empty
    assert await rows(engine, db.samples) == [
        {**OLD_SAMPLE, "pool_fallback": None, "pool_connected": None, "blocks_found": None}]
    for rollup in (db.rollups_1m, db.rollups_1h):
        assert await rows(engine, rollup) == [
            {**OLD_ROLLUP, "pool_fallback": None, "pool_connected": None,
             "blocks_found": None}]
    assert await rows(engine, db.miners) == [{**OLD_MINER, "label": None, "forgotten_ms": None}]
    assert await rows(engine, db.status_events) == [OLD_STATUS_EVENT]
    assert await rows(engine, db.alert_events) == [
        {**OLD_ALERT, "label": None, "since_ms": None, "muted": None}]
    # the old rollups get their fleet rows: marked once on the store's first start
    fleet = FleetRollups(engine)
    assert await fleet.backfill() == 2
    assert await fleet.backfill() == 0  # marked already
    await fleet.run_once()
    for table in (db.fleet_rollups_1m, db.fleet_rollups_1h):
        [fleet_row] = await rows(engine, table)
        assert (fleet_row["bucket_ms"], fleet_row["miners"]) == (OLD_ROLLUP["bucket_ms"], 1)
    await fleet.run_once()
    assert await fleet.backfill() == 0  # the fleet tables hold rows now

    # and the store writes the new values into the upgraded tables
    new_rows = [
        route("mw", "mw/miners/rig-1/sample", encode(make.sample(
            ts="2026-11-22T10:00:10.000Z", pool_fallback=True, pool_connected=False,
            blocks_found=2))),
        route("mw", "mw/miners/rig-1/info", encode(make.info(label="Garage"))),
        route("mw", "mw/alerts/rig-1/offline", encode(make.alert(
            rule="offline", label="Garage", since="2026-11-22T09:59:00.000Z", muted=True))),
        route("mw", "mw/miners/rig-2/info", b"", clock=lambda: T0_MS),
        route("mw", "mw/miners/rig-1/command/result", encode(CommandResult(
            id="c1", miner_id="rig-1", action="restart", by="alerts", status="ok",
            message="restarted", requested="2026-11-22T10:00:00.000Z",
            ts="2026-11-22T10:01:00.000Z"))),
        route("mw", "mw/miners/rig-1/tune", encode(TuneProgress(
            run_id="r1", miner_id="rig-1", objective="efficiency", state="running",
            phase="settling", by="cli", started="2026-11-22T10:00:00.000Z",
            ts="2026-11-22T10:01:00.000Z", steps=[TuneStep(
                index=0, frequency_mhz=525, core_voltage_mv=1150, stable=True,
                ts="2026-11-22T10:01:00.000Z")]))),
    ]
    async with Writer(engine, batch_size=100, interval_s=30) as writer:
        for row in new_rows:
            assert row is not None and not isinstance(row, Rejected), row
            writer.add(row)
    samples = await rows(engine, db.samples)
    assert (samples[1]["pool_fallback"], samples[1]["blocks_found"]) == (True, 2)
    # the new sample joins the old one's bucket, and its new fields are the bucket's newest
    [bucket] = await rows(engine, db.rollups_1m)
    assert (bucket["samples"], bucket["pool_fallback"], bucket["blocks_found"]) == (2, True, 2)
    miners = {r["miner_id"]: r for r in await rows(engine, db.miners)}
    assert miners["rig-1"]["label"] == "Garage" and miners["rig-2"]["forgotten_ms"] == T0_MS
    alerts = {r["rule"]: r for r in await rows(engine, db.alert_events)}
    assert (alerts["offline"]["muted"], alerts["offline"]["since_ms"]) == (True, T0_MS - 60_000)
    # the tables the old history did not have: made, and written to
    assert [r["id"] for r in await rows(engine, db.command_events)] == ["c1"]
    assert [r["run_id"] for r in await rows(engine, db.tune_runs)] == ["r1"]
    assert [r["index"] for r in await rows(engine, db.tune_steps)] == [0]


async def test_a_column_another_process_added_meanwhile_is_no_error(
        empty_engine: AsyncEngine, monkeypatch: Any) -> None:
    """The store and the api upgrade at start, at once: one may add a column between the
    other's look at the tables and its ALTER."""
    engine = empty_engine
    await make_old_history(engine)
    async with engine.connect() as conn:
        stale = await conn.run_sync(db.missing_columns)  # the other one's look
    await db.create_schema(engine)  # this one adds them all
    monkeypatch.setattr(db, "missing_columns", lambda _conn: stale)
    # the other's ALTERs, on columns that now exist, in one transaction: it must commit
    # (on PostgreSQL a failed statement would spoil the rest of it)
    await db.create_schema(engine)
    monkeypatch.undo()
    assert await missing(engine) == []
    async with engine.begin() as conn:
        await conn.execute(db.miners.insert(), [{"miner_id": "rig-9", "label": "x"}])
    assert [r["label"] for r in await rows(engine, db.miners)] == [None, "x"]


async def test_two_processes_upgrading_at_once_both_succeed(
        empty_engine: AsyncEngine) -> None:
    await make_old_history(empty_engine)
    other = db.create_engine(empty_engine.url.render_as_string(hide_password=False)
                             .replace("+aiosqlite", "").replace("+psycopg", ""))
    try:
        await asyncio.gather(db.create_schema(empty_engine), db.create_schema(other))
    finally:
        await other.dispose()
    assert await missing(empty_engine) == []


async def test_the_store_upgrades_an_old_history_when_it_starts(
        broker: Any, base_topic: str, tmp_path: Path, make: Any) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    old = db.create_engine(url)
    await make_old_history(old)
    await old.dispose()
    config = Config(
        mqtt=MqttConfig(url=broker.url, base_topic=base_topic, reconnect_min_s=0.1,
                        reconnect_max_s=0.5),
        database=DatabaseConfig(url=url),
        store=StoreConfig(batch_size=50, batch_interval_s=0.02, client_id=base_topic,
                          keep_raw_days=0, keep_1m_days=0),
    )
    reader = db.create_engine(url)

    async def labelled() -> bool:
        try:
            return any(r["label"] == "Garage" for r in await rows(reader, db.miners))
        except Exception:
            return False  # not upgraded yet

    store = asyncio.create_task(serve(config))
    try:
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.publish(f"{base_topic}/miners/rig-1/info",
                                 encode(make.info(label="Garage")), qos=1, retain=True)
            async with asyncio.timeout(10):
                while not await labelled():
                    assert not store.done(), store
                    await asyncio.sleep(0.05)
        assert await missing(reader) == []
        [event] = await rows(reader, db.alert_events)
        assert event == {**OLD_ALERT, "label": None, "since_ms": None, "muted": None}
    finally:
        store.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await store
        await reader.dispose()
