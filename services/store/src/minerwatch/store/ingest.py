"""From MQTT messages to database rows, and the batching writer that stores them.

``route`` turns one (topic, payload) into one typed row or raises ``BadMessage`` with a
one-line reason; it does no I/O. ``Rejects`` counts bad messages and logs them without
flooding. ``Writer`` collects rows and writes them in one transaction per flush, by size
and by time, retrying (and keeping the rows) while the database is away. Each row may
carry an acknowledgement, called once the transaction holding the row is committed.

Every write is idempotent (insert-or-ignore on natural keys, upserts of the latest
values, rollups fed only by samples that were new), so writing a batch twice after an
uncertain commit, or a message the broker delivers twice, does no harm.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import TracebackType
from typing import Any

import msgspec
from sqlalchemy import BigInteger, Integer, Table
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from minerwatch.shared import db
from minerwatch.shared.backoff import backoff_delays
from minerwatch.shared.schemas import (
    SCHEMA_VERSION,
    AlertEvent,
    MinerInfo,
    MinerStatus,
    Sample,
    decode,
)
from minerwatch.shared.topics import ParsedTopic, parse_topic
from minerwatch.store.samples import write_samples

log = logging.getLogger("minerwatch.store")

Values = dict[str, Any]


# --- routing: topic + payload -> row -------------------------------------------------


@dataclass(frozen=True, slots=True)
class SampleRow:
    values: Values


@dataclass(frozen=True, slots=True)
class InfoRow:
    values: Values


@dataclass(frozen=True, slots=True)
class StatusRow:
    values: Values


@dataclass(frozen=True, slots=True)
class AlertRow:
    values: Values


Row = SampleRow | InfoRow | StatusRow | AlertRow


class BadMessage(ValueError):
    """A message the store cannot take; ``kind`` is the topic kind it arrived on."""

    def __init__(self, kind: str, topic: str, reason: str) -> None:
        self.kind = kind
        self.topic = topic
        self.reason = " ".join(reason.split())  # always one line
        super().__init__(f"{topic}: {self.reason}")


def subscriptions(base: str) -> list[str]:
    """Every topic filter the store reads (service status topics are not history)."""
    return [
        f"{base}/miners/+/sample",
        f"{base}/miners/+/status",
        f"{base}/miners/+/info",
        f"{base}/alerts/+/+",
    ]


def topic_kind(base: str, topic: str) -> str:
    """A kind name for counting and log rate limits, even for topics that do not parse."""
    parts = topic.removeprefix(base + "/").split("/")
    if parts[0] == "miners" and len(parts) == 3 and parts[2] in ("sample", "status", "info"):
        return parts[2]
    if parts[0] == "alerts":
        return "alert"
    return "topic"


_INT_RANGES = {Integer: (-(2**31), 2**31 - 1), BigInteger: (-(2**63), 2**63 - 1)}


@lru_cache(maxsize=16)
def _limits(table: Table) -> tuple[tuple[str, int | None, tuple[int, int] | None], ...]:
    """Per column: its name, its length limit and its integer range (None: no limit)."""
    return tuple((column.name, getattr(column.type, "length", None),
                  _INT_RANGES.get(type(column.type))) for column in table.columns)


def _misfit(table: Table, values: Values) -> str | None:
    """Why a row cannot be stored in ``table`` on both engines, or None when it fits.

    Checked here so that one bad value is rejected alone instead of failing the
    transaction it would share with good rows.
    """
    for name, length, bounds in _limits(table):
        value = values.get(name)
        if isinstance(value, str):
            if length is not None and len(value) > length:
                return f"{name} is longer than {length} characters"
            if "\x00" in value:
                return f"{name} contains a NUL character"
        elif bounds is not None and isinstance(value, int) and not isinstance(value, bool):
            low, high = bounds
            if not low <= value <= high:
                return f"{name} {value} is out of range"
    return None


def _decode_row(parsed: ParsedTopic, payload: bytes | str) -> tuple[Row, Table]:
    miner_id = parsed.miner_id
    assert miner_id is not None  # every kind routed here has one
    if parsed.kind == "sample":
        sample = decode(payload, Sample)
        if sample.schema != SCHEMA_VERSION:
            raise ValueError(f"schema {sample.schema} is not supported (expected 1)")
        _same("miner_id", sample.miner_id, miner_id)
        return SampleRow(db.sample_row(sample)), db.samples
    if parsed.kind == "info":
        info = decode(payload, MinerInfo)
        _same("miner_id", info.miner_id, miner_id)
        return InfoRow(db.info_row(info)), db.miners
    if parsed.kind == "status":
        return StatusRow(db.status_row(miner_id, decode(payload, MinerStatus))), db.miners
    alert = decode(payload, AlertEvent)
    _same("miner_id", alert.miner_id, miner_id)
    _same("rule", alert.rule, parsed.name or "")
    return AlertRow(db.alert_row(alert)), db.alert_events


def _same(name: str, in_payload: str, in_topic: str) -> None:
    if in_payload != in_topic:
        raise ValueError(f"payload {name} {in_payload!r} does not match the topic's {in_topic!r}")


def route(base: str, topic: str, payload: bytes | bytearray | str) -> Row | None:
    """The row one message stands for; None for messages with nothing to store.

    Raises BadMessage (one line, naming the topic) for a topic or payload that is not
    schema 1: not JSON, wrong types, bad miner id, ids that disagree with the topic.
    """
    parsed = parse_topic(base, topic)
    kind = topic_kind(base, topic)
    if parsed is None:
        raise BadMessage(kind, topic, "not a schema 1 topic (bad miner id or level)")
    if parsed.kind == "service":
        return None
    if not payload:
        return None  # an empty retained message clears the topic; nothing to record
    if isinstance(payload, bytearray):
        payload = bytes(payload)
    try:
        row, table = _decode_row(parsed, payload)
    except (msgspec.DecodeError, ValueError) as exc:  # ValidationError is a DecodeError
        raise BadMessage(kind, topic, str(exc)) from None
    problem = _misfit(table, row.values)
    if problem is not None:
        raise BadMessage(kind, topic, problem)
    return row


class Rejects:
    """Counts bad messages; logs at most one line per kind per ``window_s``, saying how
    many were suppressed since the last line."""

    def __init__(
        self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_s = window_s
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self._last_logged: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def note(self, error: BadMessage) -> None:
        kind = error.kind
        self.counts[kind] += 1
        now = self.clock()
        last = self._last_logged.get(kind)
        if last is not None and now - last < self.window_s:
            self._suppressed[kind] += 1
            return
        self._last_logged[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        more = f" ({suppressed} more bad {kind} messages suppressed)" if suppressed else ""
        log.warning("bad %s message ignored: %s%s", kind, error, more)


# --- writing: rows -> one transaction per flush --------------------------------------


def _insert(engine_or_conn: AsyncEngine | AsyncConnection, table: Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT; same code for SQLite and PostgreSQL."""
    name = engine_or_conn.dialect.name
    if name == "sqlite":
        return sqlite.insert(table)
    if name == "postgresql":
        return postgresql.insert(table)
    raise ValueError(f"unsupported database dialect {name!r}")


_INFO_COLUMNS = ("driver", "host", "port", "make", "model", "firmware", "hostname", "mac")
_STATUS_COLUMNS = ("state", "reason", "since_ms", "last_seen_ms", "failures")


@dataclass(slots=True)
class Batch:
    """Rows of one flush, grouped per statement; the miners upserts keep one row per
    miner (the last info, the newest status) since one statement may not touch a row twice."""

    samples: list[Values] = field(default_factory=list)
    infos: dict[str, Values] = field(default_factory=dict)
    statuses: dict[str, Values] = field(default_factory=dict)
    status_events: list[Values] = field(default_factory=list)
    alerts: list[Values] = field(default_factory=list)

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
                case StatusRow():
                    batch.status_events.append(values)
                    held = batch.statuses.get(values["miner_id"])
                    if held is None or values["since_ms"] >= held["since_ms"]:
                        batch.statuses[values["miner_id"]] = values
                case AlertRow():
                    batch.alerts.append(values)
        return batch


async def write_rows(conn: AsyncConnection, rows: Sequence[Row]) -> int:
    """Write rows on an open connection, inside the caller's transaction; the number of
    samples that were new (and went into the rollups)."""
    batch = Batch.of(rows)
    new_samples = await write_samples(conn, batch.samples)
    if batch.infos:
        stmt = _insert(conn, db.miners)
        stmt = stmt.on_conflict_do_update(
            index_elements=["miner_id"],
            set_={name: stmt.excluded[name] for name in _INFO_COLUMNS},
        )
        await conn.execute(stmt, list(batch.infos.values()))
    if batch.statuses:
        stmt = _insert(conn, db.miners)
        since = db.miners.c.since_ms
        stmt = stmt.on_conflict_do_update(
            index_elements=["miner_id"],
            set_={name: stmt.excluded[name] for name in _STATUS_COLUMNS},
            # a late, older status (a redelivery) must not replace a newer one
            where=since.is_(None) | (stmt.excluded.since_ms >= since),
        )
        await conn.execute(stmt, list(batch.statuses.values()))
    if batch.status_events:
        stmt = _insert(conn, db.status_events).on_conflict_do_nothing()
        await conn.execute(stmt, batch.status_events)
    if batch.alerts:
        stmt = _insert(conn, db.alert_events).on_conflict_do_nothing()
        await conn.execute(stmt, batch.alerts)
    return new_samples


#: Errors that say the database is unreachable, locked or busy: retry later, keep the rows.
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


def _one_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error) or type(error).__name__
    return " ".join(text.split())[:300]


#: Called once what came with it is committed: acknowledges the message to the broker.
Ack = Callable[[], None]


class Writer:
    """Batches rows and writes them; use as ``async with Writer(...) as writer``.

    A flush writes up to ``batch_size`` entries in one transaction, then calls their
    acknowledgements in the order they were added. Flushes happen when ``batch_size``
    entries are pending and every ``interval_s`` otherwise. When the database is away the
    entries stay pending (unacknowledged, so the broker holds back the rest) and the
    flush is retried with backoff. Leaving the context flushes what is pending (for at
    most ``close_timeout_s``).
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
        new_samples = await self._write(rows) if rows else 0
        # new entries may have been added while writing; they are behind these
        del self._pending[: len(entries)]
        self.written += len(rows)
        self.new_samples += new_samples
        for _row, ack in entries:
            if ack is not None:
                ack()
        return len(rows)

    async def _write(self, rows: Sequence[Row]) -> int:
        if self._schema_suspect:
            # the database may have come back empty (recreated file or server)
            await db.create_schema(self.engine)
            self._schema_suspect = False
        try:
            async with self.engine.begin() as conn:
                return await write_rows(conn, rows)
        except Exception as exc:
            if is_transient(exc):
                self._schema_suspect = True
                raise
            if not isinstance(exc, sa_exc.DBAPIError):
                raise
            return await self._write_one_by_one(rows, exc)

    async def _write_one_by_one(self, rows: Sequence[Row], error: Exception) -> int:
        log.warning("a batch of %d rows was refused (%s); writing them one by one",
                    len(rows), _one_line(error))
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
                          type(row).__name__, _row_key(row), _one_line(exc))
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
                            _one_line(exc), len(self._pending), delay)
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
            try:
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            while await self._flush_retrying() and len(self._pending) >= self.batch_size:
                pass  # a backlog (after an outage) goes out in full batches right away
        await self._drain()

    async def _sleep_unless_stopped(self, delay: float) -> None:
        try:
            async with asyncio.timeout(delay):
                await self._stop.wait()
        except TimeoutError:
            pass

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


def _row_key(row: Row) -> str:
    values = row.values
    keys = ("miner_id", "ts_ms", "since_ms", "rule")
    return " ".join(f"{k}={values[k]}" for k in keys if k in values)
