"""The store: ingest rate from the broker into SQLite and PostgreSQL, and history queries.

Ingest: ``SAMPLES`` schema-1 samples (1,000 miners, 10-second samples) are queued at a
private mosquitto for a persistent session while its consumer is stopped; then the
consumer starts and drains the queue, and the rate is counted from its first stored (or
received) message to the last. Three consumers in the same run, one after the other,
each a process of its own:

- bare subscribers that store nothing and acknowledge on receipt (QoS 1, the store's
  garbage collector settings): aiomqtt over MQTT v5 and over MQTT 3.1.1, and the store's
  own MQTT client (``minerwatch.shared.mqtt.client``): what the broker and each client
  library cost before any database work;
- ``minerwatch-store`` (the real process, default settings) into SQLite: acknowledges each
  message only after its row and rollups are committed;
- the same into PostgreSQL (a throwaway schema of the test database).

After each store run every sample must be in the database exactly once and counted once
in each rollup table. Each figure is the median of ``RUNS`` runs.

Queries, through the api's own history functions on a database holding 1,000 miners plus
one miner with 30 days of 10-second samples (259,200 raw rows, their rollups): the
30-day chart (``step=auto``, which picks 1-hour buckets: 721 points), the same 30 days
from the 1-minute rollups (the ``limit`` cap of 10,000 points), the latest sample of
every miner (``GET /api/miners``). Medians of ``QUERY_RUNS`` timings each.

Run: ``.venv/bin/python bench/store.py`` (the ``store`` section of docs/benchmarks.md).
Needs mosquitto and the PostgreSQL at ``PG_URL``; never uses the shared broker on 1883.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any

import aiomqtt
from broker import private_broker
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from minerwatch.api.history import SampleWindow, list_miners, miner_samples
from minerwatch.shared import db
from minerwatch.shared.config import StoreConfig
from minerwatch.shared.messages import Rejected
from minerwatch.shared.mqtt import client as mqtt_client
from minerwatch.shared.schemas import Sample, encode, format_ts
from minerwatch.store.routing import Row, SampleRow, route
from minerwatch.store.writer import Writer

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
MINERS = 1000
SAMPLES = 100_000
RUNS = 3
QUERY_RUNS = 20
CHART_DAYS = 30
BASE = "benchstore"
STORE_BIN = Path(sys.executable).parent / "minerwatch-store"
# The streams start a day ago, on a whole hour: inside the store's default raw retention
# (which refuses older samples) on whatever day the benchmark runs.
T0_MS = (int(time.time()) // 3600 - 24) * 3_600_000


def ts_text(ms: int) -> str:
    return format_ts(datetime.fromtimestamp(ms / 1000, UTC))


def sample(miner_id: str, ms: int, i: int) -> Sample:
    return Sample(miner_id=miner_id, ts=ts_text(ms), hashrate_ths=1.1 + (i % 7) / 100,
                  expected_hashrate_ths=1.2, power_w=17.5 + (i % 5) / 10, efficiency_jth=15.9,
                  temp_c=60.0 + i % 4, vr_temp_c=55.0, fan_rpm=[4100, 3980],
                  shares_accepted=1000 + i, shares_rejected=3, best_diff=4.29e9,
                  uptime_s=86400 + 10 * i, pool_url="stratum+tcp://pool.example:3333",
                  is_mining=True)


def last_key(run: int) -> tuple[str, int]:
    return f"rig-{MINERS - 1:04d}", T0_MS + run * 10_000_000 + (SAMPLES // MINERS - 1) * 10_000


def stream(run: int) -> list[tuple[str, bytes]]:
    """SAMPLES samples, the miners interleaved as a fleet publishes them; new times per run."""
    start = T0_MS + run * 10_000_000
    out = []
    for i in range(SAMPLES // MINERS):
        for m in range(MINERS):
            miner = f"rig-{m:04d}"
            out.append((f"{BASE}/miners/{miner}/sample",
                        encode(sample(miner, start + i * 10_000, i))))
    return out


#: The bare subscribers: MQTT client library and protocol version.
BARE = {"aiomqtt5": "aiomqtt, MQTT v5", "aiomqtt3": "aiomqtt, MQTT 3.1.1",
        "lean": "the store's own client, MQTT v5"}


def persistent_client(port: int, client_id: str, v5: bool = True) -> aiomqtt.Client:
    """A client whose session (subscriptions, queued messages) outlives its connection."""
    if not v5:
        return aiomqtt.Client("127.0.0.1", port, identifier=client_id,
                              protocol=aiomqtt.ProtocolVersion.V311, clean_session=False)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    return aiomqtt.Client("127.0.0.1", port, identifier=client_id,
                          protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
                          properties=properties)


async def make_session(port: int, client_id: str, filters: list[str], v5: bool = True) -> None:
    """Subscribe a persistent session and leave: the broker queues for it from now on."""
    async with persistent_client(port, client_id, v5) as client:
        await client.subscribe([(f, 1) for f in filters])


async def queue_backlog(port: int, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, max_inflight_messages=1000) as client:
        for start in range(0, len(messages), 1000):
            await asyncio.gather(*(client.publish(topic, payload, qos=1)
                                   for topic, payload in messages[start:start + 1000]))


async def bare_subscriber(port: int, client_id: str, count: int, kind: str) -> None:
    """The ``--bare`` process: drain ``count`` messages, print messages per second."""
    gc.freeze()  # as minerwatch-store does
    gc.set_threshold(50_000, 20, 100)
    received = 0
    first = last = 0.0
    if kind == "lean":
        client: Any = mqtt_client.Client("127.0.0.1", port, client_id=client_id,
                                         clean_start=False, session_expiry_s=3600,
                                         receive_maximum=10_000)
    else:
        client = persistent_client(port, client_id, v5=kind == "aiomqtt5")
    async with client, asyncio.timeout(300):
        async for message in client.messages:
            if kind == "lean":
                client.ack(message)
            received += 1
            if received == 1:
                first = time.perf_counter()
            if received == count:
                last = time.perf_counter()
                break
    print((count - 1) / (last - first))


async def bare_drain(port: int, client_id: str, kind: str) -> float:
    """Messages per second a bare subscriber (a process of its own) drains at."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--bare", str(port), client_id, str(SAMPLES), kind,
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"the bare subscriber ({kind}) failed")
    return float(out)


async def stored(engine: AsyncEngine, key: tuple[str, int] | None = None) -> bool:
    """Whether the sample ``key`` (None: any sample) is stored; cheap enough to poll."""
    query = select(db.samples.c.ts_ms).limit(1)
    if key is not None:
        query = query.where(db.samples.c.miner_id == key[0], db.samples.c.ts_ms == key[1])
    async with engine.connect() as conn:
        return (await conn.execute(query)).first() is not None


async def poll(check: Callable[[], Awaitable[bool]], interval_s: float) -> None:
    """Until ``check`` says yes (the database offers no notification to wait on)."""
    while True:
        if await check():
            return
        await asyncio.sleep(interval_s)


async def count_samples(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(db.samples))).scalar_one()


async def rollup_totals(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        return [(await conn.execute(select(func.sum(r.table.c.samples)))).scalar_one() or 0
                for r in db.ROLLUPS]


async def store_drain(port: int, client_id: str, url: str, engine: AsyncEngine,
                      workdir: Path, last: tuple[str, int]) -> tuple[float, float]:
    """Samples per second ``minerwatch-store`` commits while draining the queue: from its
    first stored sample to ``last`` (the last one queued: batches commit in order); and
    the process's peak resident memory in MiB."""
    settings = workdir / f"{client_id}.toml"
    settings.write_text(f'[store]\nclient_id = "{client_id}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINERWATCH_")}
    env.update(MINERWATCH_MQTT_URL=f"mqtt://127.0.0.1:{port}", MINERWATCH_BASE_TOPIC=BASE,
               MINERWATCH_DB_URL=url, MINERWATCH_CONFIG=str(settings),
               MINERWATCH_LOG_LEVEL="WARNING")
    proc = await asyncio.create_subprocess_exec(str(STORE_BIN), cwd=workdir, env=env)
    try:
        async with asyncio.timeout(600):
            await poll(lambda: stored(engine), 0.005)
            first_at = time.perf_counter()
            first_count = await count_samples(engine)
            await poll(lambda: stored(engine, last), 0.02)
        rate = (SAMPLES - first_count) / (time.perf_counter() - first_at)
        peak_mib = peak_rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    return rate, peak_mib


def peak_rss_mib(pid: int) -> float:
    """The high-water mark of a running process's resident memory (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


@contextlib.asynccontextmanager
async def database(kind: str, workdir: Path) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """A fresh history database: a SQLite file, or a throwaway PostgreSQL schema."""
    if kind == "sqlite":
        url = f"sqlite:///{workdir / f'{uuid.uuid4().hex}.db'}"
        engine = db.create_engine(url)
        await db.create_schema(engine)
        try:
            yield url, engine
        finally:
            await engine.dispose()
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = db.create_engine(PG_URL)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    engine = db.create_engine(url)
    await db.create_schema(engine)
    try:
        yield url, engine
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


async def ingest(port: int, workdir: Path) -> dict[str, list[float]]:
    """Samples per second of each consumer per run; ``<database>_rss``: the store's peak
    resident memory (MiB) per run."""
    rates: dict[str, list[float]] = {kind: [] for kind in (*BARE, "sqlite", "postgresql",
                                                           "sqlite_rss", "postgresql_rss")}
    store_filters = [f"{BASE}/miners/+/{kind}" for kind in ("sample", "status", "info")] + [
        f"{BASE}/alerts/+/+"]
    for run in range(RUNS):
        messages = stream(run)
        for kind in BARE:
            client_id = f"bench-{kind}-{run}"
            await make_session(port, client_id, [f"{BASE}/miners/+/sample"],
                               v5=kind != "aiomqtt3")
            await queue_backlog(port, messages)
            rates[kind].append(await bare_drain(port, client_id, kind))
            print(f"run {run + 1}: bare {BARE[kind]} {rates[kind][-1]:,.0f}/s", flush=True)
        for kind in ("sqlite", "postgresql"):
            async with database(kind, workdir) as (url, engine):
                client_id = f"bench-store-{kind}-{run}"
                await make_session(port, client_id, store_filters)
                await queue_backlog(port, messages)
                rate, peak_mib = await store_drain(port, client_id, url, engine, workdir,
                                                   last_key(run))
                stored, totals = await count_samples(engine), await rollup_totals(engine)
                if stored != SAMPLES or totals != [SAMPLES] * len(db.ROLLUPS):
                    raise SystemExit(f"{kind}: {stored} samples stored, rollups count "
                                     f"{totals}; expected {SAMPLES} each")
                rates[kind].append(rate)
                rates[f"{kind}_rss"].append(peak_mib)
                print(f"run {run + 1}: store into {kind} {rate:,.0f}/s "
                      f"({stored:,} samples, each once), peak RSS {peak_mib:.0f} MiB",
                      flush=True)
    return rates


async def write_in_batches(writer: Writer, rows: Iterable[Row | None]) -> None:
    """Add every row, writing a transaction each time a batch is full, and the rest."""
    for row in rows:
        writer.add(row)
        if writer.pending >= writer.batch_size:
            await writer.flush()
    await writer.flush()


async def cost_split(workdir: Path) -> dict[str, float]:
    """Microseconds per sample of the store's own work, in this process, no broker: routing
    (decode, validate) and writing (insert, rollups, commit) into SQLite."""
    messages = stream(RUNS)
    started = time.perf_counter()
    routed_messages = [route(BASE, topic, payload) for topic, payload in messages]
    routed = time.perf_counter()
    rows = [row for row in routed_messages if not isinstance(row, Rejected)]
    if len(rows) != len(messages):
        raise SystemExit("the store refused samples of the bench stream")
    batch = StoreConfig().batch_size
    async with database("sqlite", workdir) as (_url, engine):
        writer = Writer(engine, batch_size=batch, interval_s=3600)
        written = time.perf_counter()
        await write_in_batches(writer, rows)
        done = time.perf_counter()
    return {"route": (routed - started) / len(rows) * 1e6,
            "write": (done - written) / len(rows) * 1e6}


async def fill_history(engine: AsyncEngine) -> None:
    """1,000 miners with recent samples, one of them with 30 days of 10-second samples,
    written through the store's own writer (so the rollups are the store's)."""
    end = T0_MS + CHART_DAYS * 86_400_000
    chart = (sample("chart", T0_MS + i * 10_000, i) for i in range(CHART_DAYS * 8640))
    fleet = (sample(f"rig-{m:04d}", end - i * 10_000, i)
             for m in range(MINERS) for i in range(10))
    async with Writer(engine, batch_size=5000, interval_s=60) as writer:
        await write_in_batches(writer, (SampleRow(db.sample_row(s)) for s in chain(chart, fleet)))


async def timed(engine: AsyncEngine, query: Callable[[Any], Awaitable[Any]]
                ) -> tuple[float, int]:
    """Median milliseconds of a query on a fresh connection, and how many items it gave."""
    timings, size = [], 0
    for _ in range(QUERY_RUNS):
        async with engine.connect() as conn:
            started = time.perf_counter()
            result = await query(conn)
            timings.append((time.perf_counter() - started) * 1000)
            size = len(result)
    return statistics.median(timings), size


async def queries(workdir: Path) -> dict[str, dict[str, tuple[float, int]]]:
    results: dict[str, dict[str, tuple[float, int]]] = {}
    end = T0_MS + CHART_DAYS * 86_400_000
    month = SampleWindow(end - CHART_DAYS * 86_400_000, end, 1000)
    by_minute = SampleWindow(end - CHART_DAYS * 86_400_000, end, 10000)
    for kind in ("sqlite", "postgresql"):
        async with database(kind, workdir) as (_url, engine):
            started = time.perf_counter()
            await fill_history(engine)
            print(f"{kind}: history for the queries written in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
            if kind == "postgresql":
                async with engine.begin() as conn:
                    await conn.execute(text("ANALYZE"))
            results[kind] = {
                "chart": await timed(engine, lambda c: miner_samples(c, "chart", month, "auto")),
                "chart_1m": await timed(engine, lambda c: miner_samples(c, "chart", by_minute,
                                                                        "1m")),
                "latest": await timed(engine, list_miners),
            }
            print(f"{kind}: {results[kind]}", flush=True)
    return results


def report(rates: dict[str, list[float]], split: dict[str, float],
           query: dict[str, dict[str, tuple[float, int]]]) -> str:
    def rate(kind: str) -> str:
        values = ", ".join(f"{r:,.0f}" for r in rates[kind])
        return f"{statistics.median(rates[kind]):,.0f} ({values})"

    chart_points = query["sqlite"]["chart"][1]
    median = {kind: statistics.median(values) for kind, values in rates.items()}
    lines = [
        "## Store: ingest and history queries",
        "",
        f"Ingest: {SAMPLES:,} samples of {MINERS:,} miners queued at a private mosquitto for"
        " a persistent session, then drained by the consumer; samples per second from its"
        f" first to its last stored (or received) message. Median of {RUNS} runs (each run"
        " in brackets); the consumers take turns on the same broker in each run.",
        "",
        "| consumer | samples/s |",
        "|---|---|",
        *(f"| bare subscriber, {name} (QoS 1, stores nothing) | {rate(kind)} |"
          for kind, name in BARE.items()),
        f"| minerwatch-store into SQLite (WAL, synchronous=NORMAL) | {rate('sqlite')} |",
        f"| minerwatch-store into PostgreSQL | {rate('postgresql')} |",
        "",
        f"Into SQLite the store takes {median['sqlite'] / median['aiomqtt5']:.1f} times as"
        " many samples per second as a bare aiomqtt MQTT v5 subscriber drains while storing"
        " nothing. The store runs on its own MQTT client: through aiomqtt and paho-mqtt"
        f" a message costs about {1e6 / median['aiomqtt5']:.0f} µs before any database"
        f" work, through the store's client about {1e6 / median['lean']:.0f} µs. What is"
        " left is the store's own work per sample, measured in-process on the same"
        f" stream: {split['route']:.0f} µs to decode and check it, {split['write']:.0f} µs"
        " to insert it and add it to both rollups (SQLite, batches of"
        f" {StoreConfig().batch_size:,}).",
        "",
        "Every store run ended with each sample stored once and counted once in each"
        " rollup table (checked). The store acknowledges a message only after the"
        " transaction with its row and rollups is committed (default `batch_size`"
        f" {StoreConfig().batch_size:,}: at most {2 * StoreConfig().batch_size:,}"
        " unacknowledged messages in flight; past that it stops reading, as Mosquitto"
        " 2.0 sends beyond that window once acknowledgements flow). Peak resident memory"
        f" of the store while draining the {SAMPLES:,} queued samples: SQLite"
        f" {statistics.median(rates['sqlite_rss']):.0f} MiB, PostgreSQL"
        f" {statistics.median(rates['postgresql_rss']):.0f} MiB (medians).",
        "",
        f"Queries (median of {QUERY_RUNS}, through the api's history functions, fresh"
        f" connection each): one miner with {CHART_DAYS} days of 10-second samples"
        f" ({CHART_DAYS * 8640:,} raw rows) among {MINERS:,} miners.",
        "",
        "| query | SQLite | PostgreSQL |",
        "|---|---|---|",
    ]
    names = {
        "chart": f"{CHART_DAYS}-day chart, `step=auto` ({chart_points} points, 1-hour buckets)",
        "chart_1m": f"{CHART_DAYS}-day chart, `step=1m` (capped at `limit` 10,000 points)",
        "latest": f"latest sample of each of {MINERS + 1:,} miners (`GET /api/miners`)",
    }
    for key, name in names.items():
        lines.append(f"| {name} | {query['sqlite'][key][0]:.1f} ms |"
                     f" {query['postgresql'][key][0]:.1f} ms |")
    lines += ["", "Targets: at least 10,000 samples/s into SQLite with nothing lost; a"
              " 30-day chart in under 50 ms."]
    return "\n".join(lines)


async def main() -> None:
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # aiomqtt counts pending publishes
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        workdir = Path(tmp)
        # Queue without limit for the consumer's offline persistent session.
        with private_broker(workdir, "max_queued_messages 0\nmax_queued_bytes 0\n") as port:
            rates = await ingest(port, workdir)
        split = await cost_split(workdir)
        print(f"store's own work per sample: {split}", flush=True)
        query = await queries(workdir)
    markdown = report(rates, split, query)
    print(markdown)
    sys.path.insert(0, str(Path(__file__).parent))
    from report import write_section

    write_section("store", markdown)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bare", nargs=4, metavar=("PORT", "CLIENT_ID", "COUNT", "KIND"),
                        help=f"internal: run a bare subscriber ({', '.join(BARE)})")
    args = parser.parse_args()
    if args.bare:
        port, client_id, count, kind = args.bare
        asyncio.run(bare_subscriber(int(port), client_id, int(count), kind))
    else:
        asyncio.run(main())
