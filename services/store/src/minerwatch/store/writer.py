"""Rows to the database: the engine, the batching writer, its SQL and its retries.

``Writer`` collects rows and writes them in one transaction per flush, by size and by
time, retrying (and keeping the rows) while the database is away. Each row may carry an
acknowledgement, called once the transaction holding the row is committed. After a
failed write the engine's pooled connections are dropped, so the retry opens the
database afresh: a connection opened while the file was read-only (or to a server that
has since failed over) would otherwise be reused, and fail, forever.

Every write is idempotent (insert-or-ignore on natural keys, upserts of the latest
values, rollups fed only by samples that were new), so writing a batch twice after an
uncertain commit, or a message the broker delivers twice, does no harm.

A miner's row in ``miners`` holds its last info (label included) and its newest status;
a status the collector republishes to refresh ``last_seen`` (same state and since)
moves ``last_seen_ms`` there and in its ``status_events`` row, never adding an event. A
forgotten miner (an empty info) gets ``forgotten_ms``; any info or status stored after
it sets it back to NULL: the miner is back.

A command's result is inserted once (its id is the key: a redelivery changes nothing).
An autotune run and its steps are upserted from each progress message, unless the row
holds a newer one already (a late redelivery, or the retained progress again after a
reconnect, changes nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from sqlalchemy import Table, func
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from minerwatch.shared import db
from minerwatch.shared.backoff import backoff_delays
from minerwatch.shared.config import ConfigError
from minerwatch.shared.errors import one_line
from minerwatch.store.routing import (
    AlertRow,
    CommandRow,
    ForgetRow,
    InfoRow,
    Row,
    SampleRow,
    StatusRow,
    TuneRow,
    Values,
)
from minerwatch.store.samples import write_samples

log = logging.getLogger("minerwatch.store")

# --- the database --------------------------------------------------------------------


def shown_url(url: str) -> str:
    """The URL as it may appear in logs: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url  # not a URL at all, so it holds no password either


def open_engine(url: str) -> AsyncEngine:
    """The engine for the configured URL; ConfigError (one line) when it cannot be."""
    try:
        return db.create_engine(url)
    except ConfigError:
        raise
    except OSError as exc:  # the SQLite file's folder cannot be created
        raise ConfigError(f"MINERWATCH_DB_URL {shown_url(url)!r}: cannot create folder "
                          f"{exc.filename}: {exc.strerror}") from None
    except Exception as exc:  # e.g. an unknown driver or malformed query options
        raise ConfigError(f"MINERWATCH_DB_URL {shown_url(url)!r}: {one_line(exc)}") from None


#: Errors that say the database is unreachable, locked, busy or read-only: retry later,
#: keep the rows.
_TRANSIENT = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
    OSError,
    TimeoutError,
)


def is_transient(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, _TRANSIENT)


async def prepare_schema(engine: AsyncEngine, retry_min_s: float = 0.5,
                         retry_max_s: float = 30.0) -> None:
    """Create the tables, waiting (with backoff) for a database that is not up yet."""
    next_delay = backoff_delays(retry_min_s, retry_max_s)
    while True:
        try:
            await db.create_schema(engine)
            return
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay = next_delay()
            log.warning("database unavailable (%s); retrying in %.1f s", one_line(exc), delay)
            await db.reopen(engine)  # the next try opens the database afresh
            await asyncio.sleep(delay)


# --- SQL: rows -> statements ---------------------------------------------------------


def _insert(conn: AsyncConnection, table: Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT; same code for SQLite and PostgreSQL."""
    name = conn.dialect.name
    if name == "sqlite":
        return sqlite.insert(table)
    if name == "postgresql":
        return postgresql.insert(table)
    raise ValueError(f"unsupported database dialect {name!r}")


_INFO_COLUMNS = ("driver", "host", "port", "make", "model", "firmware", "hostname", "mac",
                 "label")
_STATUS_COLUMNS = ("state", "reason", "since_ms", "last_seen_ms", "failures")


def _status_order(values: Values) -> tuple[int, int]:
    """Which of two statuses of one miner is the newer: the later since, then (a refresh
    of the same status) the later last_seen."""
    last_seen = values["last_seen_ms"]
    return values["since_ms"], -1 if last_seen is None else last_seen


@dataclass(slots=True)
class Batch:
    """Rows of one flush, grouped per statement; the upserts keep one row per key (the
    last info, the newest status, the latest refresh of a status event) since one
    statement may not touch a row twice. A forget is written after the infos and
    statuses, so it holds unless an info or status came after it in the batch."""

    samples: list[Values] = field(default_factory=list)
    infos: dict[str, Values] = field(default_factory=dict)
    statuses: dict[str, Values] = field(default_factory=dict)
    status_events: dict[tuple[str, int, str], Values] = field(default_factory=dict)
    alerts: list[Values] = field(default_factory=list)
    forgets: dict[str, Values] = field(default_factory=dict)
    commands: dict[str, Values] = field(default_factory=dict)
    tune_runs: dict[str, Values] = field(default_factory=dict)
    tune_steps: dict[tuple[str, int], Values] = field(default_factory=dict)

    @classmethod
    def of(cls, rows: Iterable[Row]) -> Batch:
        batch = cls()
        for row in rows:
            values = row.values
            match row:
                case SampleRow():
                    batch.samples.append(values)
                case InfoRow():
                    batch.infos[values["miner_id"]] = values
                    batch.forgets.pop(values["miner_id"], None)
                case StatusRow():
                    miner_id = values["miner_id"]
                    key = (miner_id, values["since_ms"], values["state"])
                    event = batch.status_events.get(key)
                    if event is None or _status_order(values) >= _status_order(event):
                        batch.status_events[key] = values
                    held = batch.statuses.get(miner_id)
                    if held is None or _status_order(values) >= _status_order(held):
                        batch.statuses[miner_id] = values
                    batch.forgets.pop(miner_id, None)
                case AlertRow():
                    batch.alerts.append(values)
                case ForgetRow():
                    batch.forgets[values["miner_id"]] = values
                case CommandRow():
                    batch.commands.setdefault(values["id"], values)
                case TuneRow():
                    _keep_newest(batch.tune_runs, values["run_id"], values)
                    for step in row.steps:
                        _keep_newest(batch.tune_steps, (step["run_id"], step["index"]), step)
        return batch


def _keep_newest(held: dict[Any, Values], key: Any, values: Values) -> None:
    """The later of two rows by ``ts_ms`` (on a tie, the one added last)."""
    other = held.get(key)
    if other is None or values["ts_ms"] >= other["ts_ms"]:
        held[key] = values


_TUNE_RUN_COLUMNS = tuple(c.name for c in db.tune_runs.columns if c.name != "run_id")
_TUNE_STEP_COLUMNS = tuple(c.name for c in db.tune_steps.columns
                           if c.name not in ("run_id", "index"))


async def _upsert_newer(conn: AsyncConnection, table: Table, keys: list[str],
                        columns: Sequence[str], rows: list[Values]) -> None:
    """Insert, or update a row whose ``ts_ms`` is not newer than the one given."""
    stmt = _insert(conn, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=keys,
        set_={name: stmt.excluded[name] for name in columns},
        where=stmt.excluded.ts_ms >= table.c.ts_ms,
    )
    await conn.execute(stmt, rows)


async def write_rows(conn: AsyncConnection, rows: Sequence[Row]) -> int:
    """Write rows on an open connection, inside the caller's transaction; the number of
    samples that were new (and went into the rollups)."""
    batch = Batch.of(rows)
    new_samples = await write_samples(conn, batch.samples)
    miners = db.miners.c
    if batch.infos:
        stmt = _insert(conn, db.miners)
        stmt = stmt.on_conflict_do_update(
            index_elements=["miner_id"],
            set_={**{name: stmt.excluded[name] for name in _INFO_COLUMNS},
                  "forgotten_ms": None},
        )
        await conn.execute(stmt, list(batch.infos.values()))
    if batch.statuses:
        stmt = _insert(conn, db.miners)
        newer_since = stmt.excluded.since_ms > miners.since_ms
        # a refresh: the same status seen later (NULL last_seen: never seen, not newer)
        refresh = (stmt.excluded.since_ms == miners.since_ms) & (
            miners.last_seen_ms.is_(None)
            | (func.coalesce(stmt.excluded.last_seen_ms, -1) >= miners.last_seen_ms))
        stmt = stmt.on_conflict_do_update(
            index_elements=["miner_id"],
            set_={**{name: stmt.excluded[name] for name in _STATUS_COLUMNS},
                  "forgotten_ms": None},
            # a late, older status (a redelivery) must not replace a newer one
            where=miners.since_ms.is_(None) | newer_since | refresh,
        )
        await conn.execute(stmt, list(batch.statuses.values()))
    if batch.status_events:
        stmt = _insert(conn, db.status_events)
        events = db.status_events.c
        stmt = stmt.on_conflict_do_update(
            index_elements=["miner_id", "since_ms", "state"],
            set_={"last_seen_ms": stmt.excluded.last_seen_ms,
                  "failures": stmt.excluded.failures},
            where=stmt.excluded.last_seen_ms.is_not(None) & (
                events.last_seen_ms.is_(None)
                | (stmt.excluded.last_seen_ms > events.last_seen_ms)),
        )
        await conn.execute(stmt, list(batch.status_events.values()))
    if batch.alerts:
        stmt = _insert(conn, db.alert_events).on_conflict_do_nothing()
        await conn.execute(stmt, batch.alerts)
    if batch.forgets:
        stmt = _insert(conn, db.miners)
        stmt = stmt.on_conflict_do_update(
            index_elements=["miner_id"],
            set_={"forgotten_ms": stmt.excluded.forgotten_ms},
        )
        await conn.execute(stmt, list(batch.forgets.values()))
    if batch.commands:
        stmt = _insert(conn, db.command_events).on_conflict_do_nothing()
        await conn.execute(stmt, list(batch.commands.values()))
    if batch.tune_runs:
        await _upsert_newer(conn, db.tune_runs, ["run_id"], _TUNE_RUN_COLUMNS,
                            list(batch.tune_runs.values()))
    if batch.tune_steps:
        await _upsert_newer(conn, db.tune_steps, ["run_id", "index"], _TUNE_STEP_COLUMNS,
                            list(batch.tune_steps.values()))
    return new_samples


def _row_key(row: Row) -> str:
    values = row.values
    keys = ("miner_id", "ts_ms", "since_ms", "rule", "id", "run_id")
    return " ".join(f"{k}={values[k]}" for k in keys if k in values)


# --- the writer: batches, flushes, retries -------------------------------------------

#: Called once what came with it is committed: acknowledges the message to the broker.
Ack = Callable[[], None]


class Writer:
    """Batches rows and writes them; use as ``async with Writer(...) as writer``.

    A flush writes up to ``batch_size`` entries in one transaction, then calls their
    acknowledgements in the order they were added. Flushes happen when ``batch_size``
    entries are pending and every ``interval_s`` otherwise. When the database is away the
    entries stay pending (unacknowledged, so the broker holds back the rest) and the
    flush is retried with backoff, on a freshly opened database. Leaving the context
    flushes what is pending (for at most ``close_timeout_s``).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_size: int = 500,
        interval_s: float = 0.5,
        retry_min_s: float = 0.5,
        retry_max_s: float = 30.0,
        close_timeout_s: float = 10.0,
    ) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.close_timeout_s = close_timeout_s
        self.written = 0  # rows committed (including ones the database already had)
        self.new_samples = 0  # samples committed that the database did not have yet
        self.dropped = 0  # rows the database refused on their own (bad data)
        self.received = 0  # entries added: one per message the session received
        self.commit_s = 0.0  # time spent in the batches committed, and how many there were
        self.commits = 0
        self._pending: list[tuple[Row | None, Ack | None]] = []
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._flushing = asyncio.Lock()  # flushes take rows from the head: one at a time
        self._task: asyncio.Task[None] | None = None
        self._schema_suspect = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, row: Row | None, ack: Ack | None = None) -> None:
        """Queue a row (None: nothing to store, only ``ack`` to call after the rows
        before it are committed)."""
        if self._task is not None and self._task.done() and not self._stop.is_set():
            self._task.result()  # the flush loop died: surface its exception here
        self._pending.append((row, ack))
        self.received += 1
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    async def flush(self) -> int:
        """Write up to ``batch_size`` pending rows in one transaction; the number written.

        Raises on a transient database error, with the rows still pending. Rows the
        database refuses for their content are isolated, logged and dropped so they
        cannot block the rows around them.
        """
        async with self._flushing:
            return await self._flush_head()

    async def _flush_head(self) -> int:
        entries = self._pending[: self.batch_size]
        if not entries:
            return 0
        rows = [row for row, _ack in entries if row is not None]
        started = time.monotonic()
        new_samples = await self._write(rows) if rows else 0
        if rows:
            self.commit_s += time.monotonic() - started
            self.commits += 1
        # new entries may have been added while writing; they are behind these
        del self._pending[: len(entries)]
        self.written += len(rows)
        self.new_samples += new_samples
        for _row, ack in entries:
            if ack is not None:
                ack()
        return len(rows)

    async def _write(self, rows: Sequence[Row]) -> int:
        try:
            return await self._write_rows(rows)
        except Exception as exc:
            if is_transient(exc):
                # the database may come back empty (a recreated file or server), and the
                # pooled connections may be stuck as they were opened (read-only, dead)
                self._schema_suspect = True
                await db.reopen(self.engine)
            raise

    async def _write_rows(self, rows: Sequence[Row]) -> int:
        if self._schema_suspect:
            await db.create_schema(self.engine)
            self._schema_suspect = False
        try:
            async with self.engine.begin() as conn:
                return await write_rows(conn, rows)
        except Exception as exc:
            if is_transient(exc) or not isinstance(exc, sa_exc.DBAPIError):
                raise
            return await self._write_one_by_one(rows, exc)

    async def _write_one_by_one(self, rows: Sequence[Row], error: Exception) -> int:
        log.warning("a batch of %d rows was refused (%s); writing them one by one",
                    len(rows), one_line(error))
        new_samples = 0
        for row in rows:
            try:
                async with self.engine.begin() as conn:
                    new_samples += await write_rows(conn, [row])
            except Exception as exc:
                if is_transient(exc) or not isinstance(exc, sa_exc.DBAPIError):
                    raise
                self.dropped += 1
                log.error("row dropped, the database refuses it: %s %s: %s",
                          type(row).__name__, _row_key(row), one_line(exc))
        return new_samples

    async def _flush_retrying(self, deadline: float | None = None) -> bool:
        """One flush, retried with backoff until it succeeds (True), or until the deadline
        or, without one, until ``stop`` (False)."""
        next_delay = backoff_delays(self.retry_min_s, self.retry_max_s)
        failures = 0
        while True:
            try:
                await self.flush()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                delay = next_delay()
                if deadline is not None:
                    delay = min(delay, deadline - time.monotonic())
                    if delay <= 0:
                        return False
                elif self._stop.is_set():
                    return False  # the caller drains with a deadline
                log.warning("database write failed (%s); %d rows kept, retrying in %.2f s",
                            one_line(exc), len(self._pending), delay)
                if deadline is None:
                    await self._sleep_unless_stopped(delay)
                else:
                    await asyncio.sleep(delay)
                continue
            if failures:
                log.info("database writes resumed after %d failed attempts", failures)
            return True

    async def run(self) -> None:
        """Flush by size and by time until ``stop``; then flush what is left."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            self._wake.clear()
            while await self._flush_retrying() and len(self._pending) >= self.batch_size:
                pass  # a backlog (after an outage) goes out in full batches right away
        await self._drain()

    async def _sleep_unless_stopped(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stop.wait()

    async def write_pending(self, timeout_s: float) -> bool:
        """Write (and acknowledge) everything pending, retrying for at most ``timeout_s``;
        False when the database did not take it all in time. A session calls this before
        it disconnects, while its acknowledgements can still reach the broker."""
        deadline = time.monotonic() + timeout_s
        while self._pending:
            if not await self._flush_retrying(deadline):
                return False
        return True

    async def _drain(self) -> None:
        if not await self.write_pending(self.close_timeout_s):
            log.error("database unavailable at shutdown: %d rows not written",
                      len(self._pending))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def failure(self) -> None:
        """Wait while the flush loop runs; raise what stopped it if it died of a bug (not
        a database outage: those are retried), so the service can stop and say so instead
        of taking messages nothing will write."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def __aenter__(self) -> Writer:
        self._task = asyncio.create_task(self.run(), name="store-writer")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._task is not None:
            await self._task
