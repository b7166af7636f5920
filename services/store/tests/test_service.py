"""The store as a service: a real broker, real SQLite files, in-process and as a process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from minerwatch.shared import db
from minerwatch.shared.config import Config, DatabaseConfig, MqttConfig, StoreConfig
from minerwatch.shared.rejects import RejectLog
from minerwatch.shared.schemas import encode
from minerwatch.store.__main__ import serve
from minerwatch.store.consumer import mqtt_session, store_link
from minerwatch.store.writer import Writer

STORE_BIN = Path(sys.executable).parent / "minerwatch-store"
STORE_LOG = logging.getLogger("minerwatch.store")


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


async def rows(engine: AsyncEngine, table: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(table).order_by(*table.primary_key.columns))
        return [dict(r) for r in result.mappings()]


def published_sample(message: Any) -> dict[str, Any]:
    """What a sample row must hold besides its key, from the message itself."""
    values = msgspec.structs.asdict(message)
    del values["schema"], values["ts"], values["miner_id"]
    return values


@contextlib.asynccontextmanager
async def publisher(broker: Any) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        yield client


@pytest.fixture
def config(broker: Any, base_topic: str, sqlite_url: str) -> Config:
    return Config(
        mqtt=MqttConfig(url=broker.url, base_topic=base_topic, reconnect_min_s=0.1,
                        reconnect_max_s=0.5),
        database=DatabaseConfig(url=sqlite_url),
        # a session of this test's own: the broker keeps sessions across tests; the test
        # samples are from a fixed day, which retention must not take for old
        store=StoreConfig(batch_size=100, batch_interval_s=0.05, client_id=base_topic,
                          keep_raw_days=0, keep_1m_days=0),
    )


@pytest.fixture
async def reader(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(sqlite_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def store(config: Config, reader: AsyncEngine, broker: Any, make: Any
                ) -> AsyncIterator[asyncio.Task[None]]:
    """``serve`` running as a task, subscribed (a retained probe sample has been stored)."""
    task = asyncio.create_task(serve(config))
    base = config.mqtt.base_topic
    async with publisher(broker) as client:
        await client.publish(f"{base}/miners/probe/sample", encode(make.sample("probe")),
                             qos=1, retain=True)

    async def probe_stored() -> bool:
        assert not task.done(), task
        try:
            return any(r["miner_id"] == "probe" for r in await rows(reader, db.samples))
        except Exception:
            return False  # the tables may not exist yet

    await wait_until(probe_stored)
    yield task
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_published_messages_are_stored_exactly(
    store: asyncio.Task[None], reader: AsyncEngine, broker: Any, base_topic: str, make: Any,
    sqlite_url: str,
) -> None:
    first = make.sample("rig-1", "2026-11-22T10:00:00.123Z")
    second = make.sample("rig-1", "2026-11-22T10:00:10.456Z", hashrate_ths=0.0,
                         efficiency_jth=None, fan_rpm=[], is_mining=False, pool_url=None)
    other = make.sample("rig-2", "2026-11-22T10:00:00.123Z", temp_c=-3.25, best_diff=1e-3)
    info = make.info("rig-1")
    status = make.status("offline", reason="timeout", failures=3)
    alert = make.alert("rig-1")
    async with publisher(broker) as client:
        for message in (first, first, second, other):  # ``first`` twice: one row
            topic = f"{base_topic}/miners/{message.miner_id}/sample"
            await client.publish(topic, encode(message), qos=1)
        await client.publish(f"{base_topic}/miners/rig-1/info", encode(info), qos=1)
        await client.publish(f"{base_topic}/miners/rig-1/status", encode(status), qos=1)
        await client.publish(f"{base_topic}/alerts/rig-1/overheat", encode(alert), qos=1)

    async def everything_stored() -> bool:
        return len(await rows(reader, db.alert_events)) == 1 and \
            len(await rows(reader, db.samples)) == 4

    await wait_until(everything_stored)
    stored = {(r.pop("miner_id"), r.pop("ts_ms")): r for r in await rows(reader, db.samples)}
    base_ms = 1795341600000  # 2026-11-22T10:00:00.000Z
    assert stored == {
        ("probe", base_ms + 123): published_sample(make.sample("probe")),
        ("rig-1", base_ms + 123): published_sample(first),
        ("rig-1", base_ms + 10456): published_sample(second),
        ("rig-2", base_ms + 123): published_sample(other),
    }
    [miner] = await rows(reader, db.miners)
    assert miner == {
        "miner_id": "rig-1", "driver": "axeos", "host": "127.0.0.1", "port": 8080,
        "make": "Bitaxe", "model": "Gamma", "firmware": "v2.4.0", "hostname": "bitaxe",
        "mac": "aa:bb:cc:dd:ee:ff", "label": None, "state": "offline", "reason": "timeout",
        "since_ms": base_ms - 3600_000, "last_seen_ms": base_ms, "failures": 3,
        "forgotten_ms": None,
    }
    assert await rows(reader, db.status_events) == [{
        "miner_id": "rig-1", "since_ms": base_ms - 3600_000, "state": "offline",
        "reason": "timeout", "last_seen_ms": base_ms, "failures": 3,
    }]
    assert await rows(reader, db.alert_events) == [{
        "miner_id": "rig-1", "rule": "overheat", "ts_ms": base_ms + 5000, "state": "firing",
        "severity": "warning", "value": 77.5, "threshold": 75.0,
        "message": "temp_c 77.5 > 75 for 60 s", "label": None, "since_ms": None,
        "muted": False,
    }]
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert not store.done()


async def test_garbage_on_every_topic_kind_does_not_stop_the_good_messages(
    store: asyncio.Task[None], reader: AsyncEngine, broker: Any, base_topic: str, make: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    b = base_topic
    good_status = make.status("online")
    wrong_type = json.dumps(
        msgspec.to_builtins(make.sample("rig-1")) | {"hashrate_ths": "fast"}).encode()
    garbage: list[tuple[str, bytes]] = [
        (f"{b}/miners/rig-1/sample", b"not json at all"),
        (f"{b}/miners/rig-1/sample", json.dumps({"schema": 2, "miner_id": "rig-1"}).encode()),
        (f"{b}/miners/rig-1/sample", wrong_type),
        (f"{b}/miners/Rig.1/sample", encode(make.sample("rig-1"))),
        (f"{b}/miners/rig-1/sample", encode(make.sample("rig-9"))),
        (f"{b}/miners/rig-1/status", b'{"state": "exploded"}'),
        (f"{b}/miners/rig-1/status", b"\xff\xfe"),
        (f"{b}/miners/rig-1/info", b'{"miner_id": "rig-1", "port": "eighty"}'),
        (f"{b}/alerts/rig-1/overheat", encode(make.alert("rig-2"))),
        (f"{b}/alerts/rig-1/overheat", b"[]"),
        (f"{b}/services/collector/status", b"online"),  # not subscribed, not stored
    ]
    good_samples = [make.sample("rig-1", f"2026-11-22T10:00:{i:02d}.000Z") for i in range(12)]
    async with publisher(broker) as client:
        for i, sample in enumerate(good_samples):
            await client.publish(f"{b}/miners/rig-1/sample", encode(sample), qos=1)
            topic, payload = garbage[i % len(garbage)]
            await client.publish(topic, payload, qos=1)
        await client.publish(f"{b}/miners/rig-1/status", encode(good_status), qos=1)
        await client.publish(f"{b}/miners/rig-1/info", encode(make.info()), qos=1)
        await client.publish(f"{b}/alerts/rig-1/overheat", encode(make.alert()), qos=1)

    async def all_good_stored() -> bool:
        samples = [r for r in await rows(reader, db.samples) if r["miner_id"] == "rig-1"]
        miners = await rows(reader, db.miners)
        return (len(samples) == 12 and len(await rows(reader, db.alert_events)) == 1
                and any(m["state"] == "online" and m["model"] == "Gamma" for m in miners))

    await wait_until(all_good_stored)
    assert not store.done()
    bad_lines = [r.getMessage() for r in caplog.records
                 if r.name == "minerwatch.store" and "bad" in r.getMessage()]
    # one line per kind within the rate-limit window, although samples sent five bad ones
    assert sorted(line.split()[1] for line in bad_lines) == ["alert", "info", "sample",
                                                            "status"]
    assert all("\n" not in line for line in bad_lines)
    assert {r["miner_id"] for r in await rows(reader, db.samples)} == {"probe", "rig-1"}


async def test_pending_rows_are_flushed_when_the_session_is_cancelled(
    config: Config, reader: AsyncEngine, broker: Any, base_topic: str, make: Any,
) -> None:
    engine = db.create_engine(config.database.url)
    await db.create_schema(engine)
    # neither size nor time would flush during this test: only leaving does
    writer = Writer(engine, batch_size=1000, interval_s=60)
    try:
        async with writer:
            session = mqtt_session(base_topic, writer, RejectLog(STORE_LOG))
            link = asyncio.create_task(store_link(config).run(session))
            async with publisher(broker) as client:
                await client.publish(f"{base_topic}/miners/rig-1/info", encode(make.info()),
                                     qos=1, retain=True)
                await wait_until(lambda: writer.pending == 1)  # subscribed
                for i in range(5):
                    sample = make.sample("rig-1", f"2026-11-22T10:00:0{i}.000Z")
                    await client.publish(f"{base_topic}/miners/rig-1/sample", encode(sample),
                                         qos=1)
            await wait_until(lambda: writer.pending == 6)
            assert await rows(reader, db.samples) == []
            link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link
        assert len(await rows(reader, db.samples)) == 5
        assert len(await rows(reader, db.miners)) == 1
    finally:
        await engine.dispose()


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINERWATCH_")}
    env.update(values)
    return env


async def test_process_stores_retained_messages_and_flushes_on_sigterm(
    broker: Any, base_topic: str, tmp_path: Path, make: Any,
) -> None:
    db_path = tmp_path / "proc" / "history.db"
    settings = tmp_path / "minerwatch.toml"
    # only the SIGTERM flush can write during this test
    settings.write_text("[store]\nbatch_size = 1000\nbatch_interval_s = 60\n"
                        f'client_id = "{base_topic}"\nkeep_raw_days = 0\n')
    env = _env(MINERWATCH_MQTT_URL=broker.url, MINERWATCH_BASE_TOPIC=base_topic,
               MINERWATCH_DB_URL=f"sqlite:///{db_path}", MINERWATCH_CONFIG=str(settings))
    async with publisher(broker) as client:
        await client.subscribe(f"{base_topic}/services/store/status", qos=1)
        proc = await asyncio.create_subprocess_exec(
            str(STORE_BIN), cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE)
        try:
            async with asyncio.timeout(10):
                async for message in client.messages:
                    if message.payload == b"online":
                        break
            miners = [f"rig-{i}" for i in range(3)]
            for miner in miners:  # retained: delivered even if the subscription is late
                await client.publish(f"{base_topic}/miners/{miner}/sample",
                                     encode(make.sample(miner)), qos=1, retain=True)
            await client.publish(f"{base_topic}/miners/rig-0/info", encode(make.info("rig-0")),
                                 qos=1, retain=True)
            await asyncio.sleep(1.0)  # delivery on loopback takes milliseconds
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                _, stderr = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    log = stderr.decode()
    assert proc.returncode == 0, log
    assert "Traceback" not in log
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        samples = conn.execute("SELECT miner_id, hashrate_ths FROM samples ORDER BY 1").fetchall()
        assert samples == [(m, 1.2345678901234567) for m in miners]
        assert conn.execute("SELECT miner_id, model FROM miners").fetchall() == [
            ("rig-0", "Gamma")]


@pytest.mark.parametrize(
    ("url", "phrase"),
    [
        ("mysql://127.0.0.1/history", "only sqlite:// and postgresql:// are supported"),
        ("not a url", "is not a database URL"),
        ("sqlite:///{tmp}/a-file/history.db", "cannot create folder"),
    ],
)
async def test_bad_database_url_exits_2_with_one_line(
    url: str, phrase: str, tmp_path: Path, broker: Any,
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    env = _env(MINERWATCH_MQTT_URL=broker.url, MINERWATCH_DB_URL=url.format(tmp=tmp_path))
    proc = await asyncio.create_subprocess_exec(
        str(STORE_BIN), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(15):
        stdout, stderr = await proc.communicate()
    assert proc.returncode == 2
    lines = stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("minerwatch-store: config: MINERWATCH_DB_URL")
    assert phrase in lines[0]
    assert stdout == b""


async def test_waits_for_a_database_that_is_not_up_yet(
    tmp_path: Path, config: Config, caplog: pytest.LogCaptureFixture,
) -> None:
    """An unreachable database at start is retried (logged), not a crash."""
    caplog.set_level(logging.WARNING, logger="minerwatch.store")
    # a PostgreSQL URL on a port where nothing listens
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = msgspec.structs.replace(
        config, database=DatabaseConfig(url=f"postgresql://postgres@127.0.0.1:{port}/x"))
    task = asyncio.create_task(serve(unreachable))
    try:
        await wait_until(lambda: sum("database unavailable" in r.getMessage()
                                     for r in caplog.records) >= 2)
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_store_started_on_a_read_only_database_stores_everything_once_writable(
    config: Config, reader: AsyncEngine, broker: Any, base_topic: str, make: Any,
    sqlite_url: str, read_only: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    engine = db.create_engine(sqlite_url)
    await db.create_schema(engine)  # an existing database, as a store left it
    await engine.dispose()
    read_only.lock(path)
    task = asyncio.create_task(serve(config))
    retained = [make.sample(f"rig-{m}") for m in range(5)]
    live = [make.sample("rig-0", f"2026-11-22T10:01:{s:02d}.000Z") for s in range(20)]

    def write_failures() -> int:
        return sum("readonly database" in r.getMessage() for r in caplog.records)

    try:
        async with publisher(broker) as client:
            for sample in retained:  # delivered whenever the store subscribes
                await client.publish(f"{base_topic}/miners/{sample.miner_id}/sample",
                                     encode(sample), qos=1, retain=True)
            await wait_until(lambda: write_failures() >= 1)  # subscribed, and refused
            for sample in live:
                await client.publish(f"{base_topic}/miners/rig-0/sample", encode(sample),
                                     qos=1)
            await asyncio.sleep(0.3)
            assert await rows(reader, db.samples) == []
            assert not task.done()
            read_only.unlock(path)

            async def all_stored() -> bool:
                return len(await rows(reader, db.samples)) >= len(retained) + len(live)

            await wait_until(all_stored, timeout=20)
        await asyncio.sleep(0.2)  # a doubled write would show up here
        keys = [(r["miner_id"], r["ts_ms"]) for r in await rows(reader, db.samples)]
        base_ms = 1795341600000  # 2026-11-22T10:00:00.000Z
        assert keys == sorted([(f"rig-{m}", base_ms + 123) for m in range(5)]
                              + [("rig-0", base_ms + 60_000 + s * 1000) for s in range(20)])
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_writer_that_dies_of_a_bug_stops_the_store_and_it_shows_offline(
        config: Config, broker: Any, make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a database outage (those are retried) but a bug in writing: the store must not
    go on taking messages that nothing writes while its status says online."""
    from minerwatch.store import writer as writer_module

    async def broken(*args: object) -> int:
        raise TypeError("a bug in the SQL code")

    monkeypatch.setattr(writer_module, "write_rows", broken)
    base = config.mqtt.base_topic
    async with publisher(broker) as client:  # retained: there before the store subscribes
        await client.publish(f"{base}/miners/rig-9/sample", encode(make.sample("rig-9")),
                             qos=1, retain=True)
    task = asyncio.create_task(serve(config))
    async with asyncio.timeout(15):
        with pytest.raises(TypeError, match="a bug in the SQL code"):
            await task
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(f"{base}/services/store/status")
        async with asyncio.timeout(5):
            message = await anext(aiter(client.messages))
    assert message.payload == b"offline"
