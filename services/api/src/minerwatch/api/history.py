"""Reading the history the store wrote: query parameters, SQL, and rows back into payloads.

Parsing is pure and raises BadParameter (one line naming the parameter); the SQL is built
with SQLAlchemy Core so it runs the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from minerwatch.api.models import MinerEntry
from minerwatch.shared.db import SAMPLE_FIELDS, miners, ms_to_datetime, samples
from minerwatch.shared.schemas import MinerInfo, MinerStatus, Sample, format_ts, parse_ts
from minerwatch.shared.topics import is_miner_id

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class BadParameter(ValueError):
    """A query or path parameter the client got wrong; ``str()`` is the one-line message."""


@dataclass(frozen=True, slots=True)
class SampleWindow:
    """Which samples to return: inclusive bounds in epoch milliseconds, at most ``limit``."""

    since_ms: int | None
    until_ms: int | None
    limit: int


def _epoch_ms(moment: datetime, *, round_up: bool) -> int:
    # Samples are stored to the millisecond; rounding the bounds inwards keeps
    # `since=...00.1235` from including a sample at .123.
    delta = moment - _EPOCH
    return -(-delta // _MS) if round_up else delta // _MS


def parse_time_param(name: str, text: str | None, *, round_up: bool) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        moment = parse_ts(text)
    except ValueError:
        raise BadParameter(
            f"{name}: {text!r} is not an ISO 8601 timestamp (e.g. 2026-11-22T10:00:00Z)"
        ) from None
    return _epoch_ms(moment, round_up=round_up)


def parse_window(since: str | None, until: str | None, limit: int | None) -> SampleWindow:
    since_ms = parse_time_param("since", since, round_up=True)
    until_ms = parse_time_param("until", until, round_up=False)
    if since_ms is not None and until_ms is not None and since_ms > until_ms:
        raise BadParameter(f"since ({since}) is after until ({until})")
    if limit is None:
        limit = DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise BadParameter(f"limit: must be between 1 and {MAX_LIMIT}, got {limit}")
    return SampleWindow(since_ms, until_ms, limit)


def check_miner_id(miner_id: str) -> str:
    if not is_miner_id(miner_id):
        raise BadParameter(
            f"miner_id: {miner_id!r} is not a miner id (1-64 characters of a-z, 0-9, _ and -)"
        )
    return miner_id


# --- rows to payloads ---------------------------------------------------------------------


def ts_text(ms: int) -> str:
    return format_ts(ms_to_datetime(ms))


def sample_from_row(row: Mapping[str, Any]) -> Sample:
    fields = {name: row[name] for name in SAMPLE_FIELDS}
    fields["fan_rpm"] = list(fields["fan_rpm"] or [])
    fields["is_mining"] = bool(fields["is_mining"])
    return Sample(miner_id=row["miner_id"], ts=ts_text(row["ts_ms"]), **fields)


def info_from_row(row: Mapping[str, Any]) -> MinerInfo | None:
    """None while the store has seen a status but no info message for this miner."""
    if row["driver"] is None or row["host"] is None or row["port"] is None:
        return None
    return MinerInfo(
        miner_id=row["miner_id"],
        driver=row["driver"],
        host=row["host"],
        port=row["port"],
        make=row["make"],
        model=row["model"],
        firmware=row["firmware"],
        hostname=row["hostname"],
        mac=row["mac"],
    )


def status_from_row(row: Mapping[str, Any]) -> MinerStatus | None:
    if row["state"] is None or row["since_ms"] is None:
        return None
    return MinerStatus(
        state=row["state"],
        reason=row["reason"],
        since=ts_text(row["since_ms"]),
        last_seen=ts_text(row["last_seen_ms"]) if row["last_seen_ms"] is not None else None,
        failures=row["failures"] or 0,
    )


def merge_miners(
    miner_rows: Sequence[Mapping[str, Any]], latest_rows: Sequence[Mapping[str, Any]]
) -> list[MinerEntry]:
    """Every miner named in either table, sorted by id."""
    by_id = {row["miner_id"]: row for row in miner_rows}
    latest = {row["miner_id"]: sample_from_row(row) for row in latest_rows}
    entries = []
    for miner_id in sorted(by_id.keys() | latest.keys()):
        row = by_id.get(miner_id)
        entries.append(
            MinerEntry(
                miner_id=miner_id,
                info=info_from_row(row) if row is not None else None,
                status=status_from_row(row) if row is not None else None,
                sample=latest.get(miner_id),
            )
        )
    return entries


# --- SQL ----------------------------------------------------------------------------------


def latest_samples_query() -> Select[Any]:
    """The newest sample of every miner that has samples, in one statement.

    A recursive CTE walks the distinct miner ids through the primary key index (a loose
    index scan: one seek per miner instead of reading all history), then each miner's
    newest row is one more index seek.
    """
    inner = samples.alias("inner_samples")
    first = select(samples.c.miner_id).order_by(samples.c.miner_id).limit(1)
    ids = select(first.subquery().c.miner_id).cte("miner_ids", recursive=True)
    following = (
        select(inner.c.miner_id)
        .where(inner.c.miner_id > ids.c.miner_id)
        .order_by(inner.c.miner_id)
        .limit(1)
        .scalar_subquery()
    )
    ids = ids.union_all(select(following).where(ids.c.miner_id.is_not(None)))
    newest = (
        select(func.max(inner.c.ts_ms))
        .where(inner.c.miner_id == ids.c.miner_id)
        .scalar_subquery()
    )
    return (
        select(samples)
        .join(ids, samples.c.miner_id == ids.c.miner_id)
        .where(samples.c.ts_ms == newest)
    )


def window_query(miner_id: str, window: SampleWindow) -> Select[Any]:
    """With ``since``: the first ``limit`` samples from there on; otherwise the latest
    ``limit`` up to ``until`` (newest first: the caller reverses them)."""
    query = select(samples).where(samples.c.miner_id == miner_id)
    if window.since_ms is not None:
        query = query.where(samples.c.ts_ms >= window.since_ms)
    if window.until_ms is not None:
        query = query.where(samples.c.ts_ms <= window.until_ms)
    order = samples.c.ts_ms.asc() if window.since_ms is not None else samples.c.ts_ms.desc()
    return query.order_by(order).limit(window.limit)


def known_miner_query(miner_id: str) -> Select[Any]:
    return select(
        or_(
            exists().where(miners.c.miner_id == miner_id),
            exists().where(samples.c.miner_id == miner_id),
        )
    )


async def list_miners(conn: AsyncConnection) -> list[MinerEntry]:
    miner_rows = (await conn.execute(select(miners))).mappings().all()
    latest_rows = (await conn.execute(latest_samples_query())).mappings().all()
    return merge_miners(miner_rows, latest_rows)


async def miner_samples(
    conn: AsyncConnection, miner_id: str, window: SampleWindow
) -> list[Sample] | None:
    """The samples in the window, oldest first; None when the miner is unknown."""
    rows = (await conn.execute(window_query(miner_id, window))).mappings().all()
    if not rows and not (await conn.execute(known_miner_query(miner_id))).scalar():
        return None
    if window.since_ms is None:
        rows = list(reversed(rows))
    return [sample_from_row(row) for row in rows]
