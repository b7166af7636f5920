"""Store test fixtures: databases (SQLite files, a private PostgreSQL schema) and payloads."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from minerwatch.shared import db
from minerwatch.shared.schemas import AlertEvent, MinerInfo, MinerState, MinerStatus, Sample

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def sample(miner_id: str = "rig-1", ts: str = "2026-11-22T10:00:00.123Z", **fields: Any) -> Sample:
    values: dict[str, Any] = {
        "hashrate_ths": 1.2345678901234567,
        "expected_hashrate_ths": 1.3,
        "power_w": 17.25,
        "efficiency_jth": 13.97,
        "temp_c": 61.5,
        "vr_temp_c": None,
        "fan_rpm": [4100, 3980],
        "shares_accepted": 12345,
        "shares_rejected": 7,
        "best_diff": 4.29e9,
        "uptime_s": 86400,
        "pool_url": "stratum+tcp://pool.example:3333",
        "is_mining": True,
    }
    values.update(fields)
    return Sample(miner_id=miner_id, ts=ts, **values)


def info(miner_id: str = "rig-1", **fields: Any) -> MinerInfo:
    values: dict[str, Any] = {
        "driver": "axeos", "host": "127.0.0.1", "port": 8080, "make": "Bitaxe",
        "model": "Gamma", "firmware": "v2.4.0", "hostname": "bitaxe", "mac": "aa:bb:cc:dd:ee:ff",
    }
    values.update(fields)
    return MinerInfo(miner_id=miner_id, **values)


def status(state: MinerState = "online", since: str = "2026-11-22T09:00:00.000Z", **fields: Any
           ) -> MinerStatus:
    values: dict[str, Any] = {"reason": None, "last_seen": "2026-11-22T10:00:00.000Z",
                              "failures": 0}
    values.update(fields)
    return MinerStatus(state=state, since=since, **values)


def alert(miner_id: str = "rig-1", rule: str = "overheat", **fields: Any) -> AlertEvent:
    values: dict[str, Any] = {
        "state": "firing", "severity": "warning", "value": 77.5, "threshold": 75.0,
        "message": "temp_c 77.5 > 75 for 60 s", "ts": "2026-11-22T10:00:05.000Z",
    }
    values.update(fields)
    return AlertEvent(miner_id=miner_id, rule=rule, **values)


class Payloads:
    """Builders of valid schema 1 messages, tweaked per test by keyword."""

    sample = staticmethod(sample)
    info = staticmethod(info)
    status = staticmethod(status)
    alert = staticmethod(alert)


@pytest.fixture
def make() -> Payloads:
    return Payloads()


#: Payloads that each once ended a service's consume loop (issue 8), and their kin.
HOSTILE_PAYLOADS: tuple[bytes, ...] = (
    b'{"schema": 1, "miner_id": "rig-1", "x": "\xed\xa0\x80"}',  # a UTF-8 surrogate
    b"[" * 5000 + b"]" * 5000,
    b'{"schema": 1, "miner_id": "rig-1", "extra": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    b'{"hashrate_ths": 1e999, "miner_id": "rig-1", "ts": "2026-11-22T10:00:00.000Z"}',
    b"\x00" * 100,
    b"{" * 100_000,
)


@pytest.fixture
def hostile() -> tuple[bytes, ...]:
    return HOSTILE_PAYLOADS


class ReadOnly:
    """Makes files read-only in a way that holds for root too, whom file modes do not
    stop: immutable (``chattr +i``) when running as root, mode 0444 otherwise. Either way
    SQLite's read-write open fails and it falls back to opening the file read-only."""

    def __init__(self) -> None:
        self.locked: list[Path] = []

    def lock(self, path: Path) -> None:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "+i", str(path)], check=True)
        else:
            path.chmod(0o444)
        self.locked.append(path)
        # what every test using this relies on: opening for writing really fails
        with pytest.raises(PermissionError):
            os.close(os.open(path, os.O_RDWR))

    def unlock(self, path: Path) -> None:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o644)
        self.locked.remove(path)
        os.close(os.open(path, os.O_RDWR))


@pytest.fixture
def read_only() -> Iterator[ReadOnly]:
    """``lock(path)``/``unlock(path)``; what a test leaves locked is unlocked after it
    (an immutable file could not even be deleted)."""
    files = ReadOnly()
    yield files
    for path in list(files.locked):
        files.unlock(path)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'history.db'}"


async def _sqlite_engine(url: str) -> AsyncEngine:
    engine = db.create_engine(url)
    await db.create_schema(engine)
    return engine


async def _postgres_engine(tables: bool = True) -> tuple[AsyncEngine, Callable[[], Any]]:
    """An engine whose tables live in a schema of this test's own, dropped afterwards
    (``tables`` False: the schema left empty)."""
    schema = f"mwstore_{uuid.uuid4().hex[:12]}"
    admin = db.create_engine(PG_URL)
    problem = None
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        problem = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
    if problem is not None:
        await admin.dispose()
        pytest.fail(f"PostgreSQL at {PG_URL} is unreachable; the store's PostgreSQL tests "
                    f"need it: {problem}", pytrace=False)
    engine = db.create_engine(f"{PG_URL}?options=-csearch_path%3D{schema}")
    if tables:
        await db.create_schema(engine)

    async def drop() -> None:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()

    return engine, drop


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    """The history database on both engines the store supports."""
    if request.param == "sqlite":
        sqlite_engine = await _sqlite_engine(sqlite_url)
        yield sqlite_engine
        await sqlite_engine.dispose()
        return
    pg_engine, drop = await _postgres_engine()
    try:
        yield pg_engine
    finally:
        await drop()


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_engine(request: pytest.FixtureRequest, sqlite_url: str
                       ) -> AsyncIterator[AsyncEngine]:
    """Both engines, with no tables yet (to build an older release's schema in)."""
    if request.param == "sqlite":
        sqlite_engine = db.create_engine(sqlite_url)
        yield sqlite_engine
        await sqlite_engine.dispose()
        return
    pg_engine, drop = await _postgres_engine(tables=False)
    try:
        yield pg_engine
    finally:
        await drop()


@pytest.fixture
async def postgres_engine() -> AsyncIterator[AsyncEngine]:
    """PostgreSQL alone, for what only a database server can do (drop connections)."""
    pg_engine, drop = await _postgres_engine()
    try:
        yield pg_engine
    finally:
        await drop()


@pytest.fixture
async def sqlite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await _sqlite_engine(sqlite_url)
    yield engine
    await engine.dispose()


@pytest.fixture(autouse=True)
async def _sqlite_threads_finish() -> AsyncIterator[None]:
    """Let aiosqlite's worker threads finish while this test's loop still runs: after a
    failed connect aiosqlite stops its thread without awaiting it, and a thread that
    finishes after the loop closed raises in the background."""
    yield
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and any(
        "_connection_worker_thread" in t.name for t in threading.enumerate()
    ):
        await asyncio.sleep(0.01)
