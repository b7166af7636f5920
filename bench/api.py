"""The api: the fleet chart (``GET /api/fleet/samples``) and energy (``GET /api/energy``)
over 30 days of 1,000 miners, through real HTTP, on SQLite and PostgreSQL.

The history: 1-hour rollups of ``MINERS`` miners for ``DAYS`` days (720,000 rows) and
1-minute rollups for the last ``MINUTE_HOURS`` hours, written straight into the rollup
tables (writing 30 days of 10-second samples through the store would take hours; the
store's own ingest is ``bench/store.py``). One miner in ten reports no power, as stock
Antminer firmware. Every bucket is then marked and the store's fleet rollups pass
(``minerwatch.store.fleet``) builds the fleet rows from scratch: that time is reported too.

Timed, median of ``RUNS`` requests each over one keep-alive connection, against the real
app under uvicorn: the 30-day fleet chart (``step=auto``: 1-hour buckets), the last
``MINUTE_HOURS`` hours (``step=auto``: 1-minute buckets), energy for 7 and 30 days. For
comparison, the plain ``GROUP BY`` over the per-miner 1-hour rollups the fleet rows
replace (why the fleet rollups exist).

Run: ``.venv/bin/python bench/api.py`` (the ``api`` section of docs/benchmarks.md).
Needs mosquitto and the PostgreSQL at ``store.PG_URL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from broker import private_broker
from sqlalchemy import literal, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from store import database  # a fresh SQLite file or a throwaway PostgreSQL schema

from minerwatch.api.app import create_app
from minerwatch.api.tokens import add_token, create_table
from minerwatch.shared import db
from minerwatch.shared.config import Config, DatabaseConfig, MqttConfig
from minerwatch.shared.schemas import format_ts
from minerwatch.store.fleet import FleetRollups

MINERS = 1000
DAYS = 30
MINUTE_HOURS = 6
RUNS = 20
HOUR_MS, MINUTE_MS, DAY_MS = 3_600_000, 60_000, 86_400_000
NOW_MS = int(time.time() * 1000)
END_HOUR_MS = NOW_MS - NOW_MS % HOUR_MS  # the open hour's start
CHUNK = 10_000


def ts(ms: int) -> str:
    return format_ts(datetime.fromtimestamp(ms / 1000, UTC))


def rollup(table: Any, miner: int, bucket_ms: int, samples: int) -> dict[str, Any]:
    """A plausible rollup row: 1.1 TH/s and 18 W (none for every tenth miner)."""
    row: dict[str, Any] = {"miner_id": f"rig-{miner:04d}", "bucket_ms": bucket_ms,
                           "samples": samples, "last_ts_ms": bucket_ms + 1000}
    reports_power = miner % 10 != 0
    for metric, value in (("hashrate_ths", 1.1 + miner % 7 / 100), ("power_w", 18.0),
                          ("temp_c", 60.0), ("vr_temp_c", 55.0)):
        present = metric != "power_w" or reports_power
        row.update({f"{metric}_sum": value * samples if present else 0.0,
                    f"{metric}_n": samples if present else 0,
                    f"{metric}_min": value if present else None,
                    f"{metric}_max": value if present else None})
    row.update(expected_hashrate_ths=1.2, fan_rpm=[4100], shares_accepted=1000,
               shares_rejected=3, best_diff=4.29e9, uptime_s=86400,
               pool_url="stratum+tcp://pool.example:3333", is_mining=True,
               pool_fallback=False, pool_connected=True, blocks_found=0)
    return {column.name: row.get(column.name) for column in table.columns}


async def insert_all(engine: AsyncEngine, table: Any, rows: Any) -> int:
    written, chunk = 0, []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            async with engine.begin() as conn:
                await conn.execute(table.insert(), chunk)
            written, chunk = written + len(chunk), []
    if chunk:
        async with engine.begin() as conn:
            await conn.execute(table.insert(), chunk)
    return written + len(chunk)


async def fill(engine: AsyncEngine) -> float:
    """The rollups; returns the seconds the store's fleet pass took to build the fleet."""
    first_hour = END_HOUR_MS - DAYS * 24 * HOUR_MS
    hours = (rollup(db.rollups_1h, m, first_hour + h * HOUR_MS, 360)
             for m in range(MINERS) for h in range(DAYS * 24 + 1))
    first_minute = END_HOUR_MS - MINUTE_HOURS * HOUR_MS
    minutes = (rollup(db.rollups_1m, m, first_minute + k * MINUTE_MS, 6)
               for m in range(MINERS) for k in range(MINUTE_HOURS * 60))
    await insert_all(engine, db.rollups_1h, hours)
    await insert_all(engine, db.rollups_1m, minutes)
    async with engine.begin() as conn:
        for fleet in db.FLEET_ROLLUPS:
            source = fleet.source.table.c.bucket_ms
            buckets = select(literal(fleet.step_ms), source, literal(0)).distinct()
            await conn.execute(db.fleet_dirty.insert().from_select(
                ["step_ms", "bucket_ms", "version"], buckets))
        if engine.dialect.name == "postgresql":
            await conn.execute(text("ANALYZE"))
    started = time.perf_counter()
    await FleetRollups(engine, batch=1000).run_once()
    return time.perf_counter() - started


@contextlib.asynccontextmanager
async def serve(url: str, port: int) -> AsyncIterator[str]:
    """The real app under uvicorn on a free loopback port; its base URL."""
    config = Config(mqtt=MqttConfig(url=f"mqtt://127.0.0.1:{port}", base_topic="benchapi"),
                    database=DatabaseConfig(url=url))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_config=None,
                                           lifespan="on", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                raise SystemExit("the api did not start")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def timed_get(http: httpx.AsyncClient, path: str, params: dict[str, str]
                    ) -> tuple[float, Any]:
    """Median milliseconds of ``RUNS`` requests, and the last answer."""
    timings, body = [], None
    for _ in range(RUNS):
        started = time.perf_counter()
        response = await http.get(path, params=params)
        timings.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{path} {params}: {response.status_code} {response.text}")
        body = response.json()
    return statistics.median(timings), body


async def plain_group_by(engine: AsyncEngine) -> float:
    """The query the fleet rollups replace: sums over the per-miner 1-hour rollups."""
    hours = db.FLEET_ROLLUPS[1]
    source = hours.source.table.c.bucket_ms
    query = db.fleet_rows_query(hours, source >= END_HOUR_MS - DAYS * DAY_MS).order_by(source)
    timings = []
    for _ in range(5):
        async with engine.connect() as conn:
            started = time.perf_counter()
            (await conn.execute(query)).all()
            timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


async def measure(kind: str, workdir: Path, port: int) -> dict[str, Any]:
    async with database(kind, workdir) as (url, engine):
        started = time.perf_counter()
        rebuild_s = await fill(engine)
        print(f"{kind}: history written in {time.perf_counter() - started:.0f} s, fleet "
              f"rows built in {rebuild_s:.1f} s", flush=True)
        result: dict[str, Any] = {"rebuild_s": rebuild_s, "plain": await plain_group_by(engine)}
        month = {"since": ts(NOW_MS - DAYS * DAY_MS), "until": ts(NOW_MS)}
        recent = {"since": ts(NOW_MS - (MINUTE_HOURS * HOUR_MS - HOUR_MS)),
                  "until": ts(NOW_MS)}
        # As a user reads it: with a viewer token (the production default, auth = "token").
        await create_table(engine)
        async with engine.begin() as conn:
            token = await add_token(conn, "bench", "viewer", int(time.time() * 1000))
        async with serve(url, port) as base, httpx.AsyncClient(
                base_url=base, timeout=120, headers={"Authorization": f"Bearer {token}"}) as http:
            for name, path, params in (
                ("month", "/api/fleet/samples", {**month, "step": "auto"}),
                ("recent", "/api/fleet/samples", {**recent, "step": "auto"}),
                ("energy7", "/api/energy", {}),
                ("energy30", "/api/energy", {"since": month["since"][:10]}),
            ):
                result[name] = await timed_get(http, path, params)
        month_body = result["month"][1]
        if {b["step_s"] for b in month_body} != {3600} or month_body[-1]["miners"] != MINERS:
            raise SystemExit(f"{kind}: unexpected 30-day answer {month_body[-1]}")
        if month_body[-1]["power_miners"] != MINERS - MINERS // 10:
            raise SystemExit(f"{kind}: power_miners {month_body[-1]['power_miners']}")
        print(f"{kind}: " + ", ".join(f"{k} {v[0]:.1f} ms" if isinstance(v, tuple)
                                      else f"{k} {v:.1f}" for k, v in result.items()),
              flush=True)
        return result


def report(results: dict[str, dict[str, Any]]) -> str:
    sqlite, pg = results["sqlite"], results["postgresql"]

    def row(name: str, key: str) -> str:
        points = len(sqlite[key][1]) if key.startswith(("month", "recent")) else len(
            sqlite[key][1]["days"])
        unit = (f"{sqlite[key][1][0]['step_s'] // 60}-minute buckets"
                if key.startswith(("month", "recent")) else "days")
        return (f"| {name} ({points:,} {unit}) | {sqlite[key][0]:.1f} ms |"
                f" {pg[key][0]:.1f} ms |")

    return "\n".join([
        "## Api: fleet chart and energy",
        "",
        f"{MINERS:,} miners (one in ten reporting no power) with {DAYS} days of 1-hour"
        f" rollups ({MINERS * (DAYS * 24 + 1):,} rows) and the last {MINUTE_HOURS} hours of"
        f" 1-minute rollups ({MINERS * MINUTE_HOURS * 60:,} rows); requests through real"
        " HTTP to the app under uvicorn, median of"
        f" {RUNS} requests each (one keep-alive connection).",
        "",
        "| request | SQLite | PostgreSQL |",
        "|---|---|---|",
        row(f"`GET /api/fleet/samples` {DAYS} days, `step=auto` ", "month"),
        row(f"`GET /api/fleet/samples` last {MINUTE_HOURS - 1} hours, `step=auto`"
            "", "recent"),
        row("`GET /api/energy`, default 7 days, per miner and day", "energy7"),
        row(f"`GET /api/energy`, {DAYS + 1} days up to today", "energy30"),
        f"| for comparison: the plain `GROUP BY` over the per-miner 1-hour rollups ({DAYS}"
        f" days, in-process) | {sqlite['plain']:.1f} ms | {pg['plain']:.1f} ms |",
        "",
        "The fleet chart reads the fleet rollups (one row per bucket, kept by the store);"
        " the plain query over the per-miner rollups is what it would cost without them."
        " Building every fleet row of this history from scratch (the store's fleet pass"
        f" over all {MINERS * (DAYS * 24 + 1 + MINUTE_HOURS * 60):,} per-miner rows took"
        f" {sqlite['rebuild_s']:.1f} s on SQLite, {pg['rebuild_s']:.1f} s on PostgreSQL;"
        " in normal running each pass recomputes only the few buckets new samples"
        " touched.",
        "",
        f"Target: the fleet endpoint over {DAYS} days of {MINERS:,} miners in under 100 ms.",
    ])


async def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        workdir = Path(tmp)
        with private_broker(workdir) as port:
            for kind in ("sqlite", "postgresql"):
                results[kind] = await measure(kind, workdir, port)
    markdown = report(results)
    print(markdown)
    sys.path.insert(0, str(Path(__file__).parent))
    from report import write_section

    write_section("api", markdown)


if __name__ == "__main__":
    asyncio.run(main())
