"""Reading the history the store wrote: query parameters, SQL, and rows back into payloads.

Parsing is pure and raises BadParameter (one line naming the parameter, also for a time
outside the years 1 to 9999 in UTC); the SQL is built with SQLAlchemy Core so it runs the
same on SQLite and PostgreSQL.

Samples come at three resolutions (``step``): ``raw`` rows are schema-1 Samples exactly as
published; ``1m`` and ``1h`` rows are ``SampleRollup``: a Sample per bucket (``ts`` is the
bucket's start, gauges are averages, counters are the bucket's newest values) plus the
bucket's ``step_s``, ``samples`` count and ``_min``/``_max`` of every gauge the store
averages (``fields.ROLLUP_MEAN``; the model is built from that list). ``auto`` picks the
finest resolution that covers the range within ``limit`` rows.

Values no sensor produces (NaN, infinities, out of a field's range: rows written before
ingest checked them) are read back by the rule of ``fields``: null for an optional number,
the row left out when its required hashrate is one (see "rows to payloads" below).

Events are status changes, alerts and commands (the audit the store keeps of each
command that could change something), merged in time order: one miner's, or the fleet's
(``fleet_events``, optionally of one kind). A miner's autotune runs come newest first,
each with its steps (``tune_runs``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import ColumnElement, Select, Table, and_, case, exists, func, null, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from minerwatch.shared.db import (
    ROLLUPS,
    Resolution,
    alert_events,
    command_events,
    miner_ids_cte,
    miners,
    rollups_1h,
    samples,
    status_events,
    tune_runs,
    tune_steps,
)
from minerwatch.shared.fields import FIELD_NAMES, FIELDS, ROLLUP_LAST, ROLLUP_MEAN
from minerwatch.shared.schemas import (
    Action,
    AlertEvent,
    CommandStatus,
    MinerInfo,
    MinerSettings,
    MinerStatus,
    Objective,
    Sample,
    TuneState,
    TuneStep,
    efficiency,
    parse_ts,
)
from minerwatch.shared.topics import is_miner_id

#: A database row as a mapping of column names to values.
Row = Mapping[Any, Any]

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
            f"{name}: {text[:80]!r} is not an ISO 8601 timestamp (e.g. 2026-11-22T10:00:00Z)"
        ) from None
    except OverflowError:  # a valid local time whose UTC is before year 1 or after 9999
        raise BadParameter(
            f"{name}: {text[:80]!r} is out of range (years 1 to 9999, in UTC)") from None
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


STEPS: tuple[str, ...] = ("raw", *(r.name for r in ROLLUPS), "auto")
_RESOLUTIONS = {r.name: r for r in ROLLUPS}


def parse_step(text: str | None) -> str:
    if text is None or not text.strip():
        return "raw"
    step = text.strip()
    if step not in STEPS:
        raise BadParameter(f"step: must be one of {', '.join(STEPS)}, got {text!r}")
    return step


def check_miner_id(miner_id: str) -> str:
    if not is_miner_id(miner_id):
        raise BadParameter(
            f"miner_id: {miner_id!r} is not a miner id (1-64 characters of a-z, 0-9, _ and -)"
        )
    return miner_id


# --- rows to payloads ---------------------------------------------------------------------
#
# Rows written before ingest checked readings may hold values no sensor produces (NaN,
# infinities, 1.7e308; a rollup's sum of three of those is infinite). They are read back by
# the rule of ``fields`` that ingest applies today: an optional number out of its range
# becomes null, a fan speed out of range is dropped from the list, and a row whose required
# hashrate is out of range is left out, as its message would be rejected now. Left out, not
# zero: 0 TH/s is a real reading ("not hashing") and would raise false alarms. The stored
# columns are checked in the SQL (``readings``, ``possible_hashrate``: C speed, and ``limit``
# counts only rows that are returned); the averages and fan lists here.


@lru_cache(maxsize=4096)
def _day_text(days: int) -> str:
    return (_EPOCH + timedelta(days=days)).strftime("%Y-%m-%dT")


def ts_text(ms: int) -> str:
    """``format_ts`` of a time in milliseconds: the date once per day (cached), the time
    by arithmetic, since a long chart formats thousands of them per request."""
    days, rest = divmod(ms, 86_400_000)
    seconds, millis = divmod(rest, 1000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{_day_text(days)}{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


def _bounds(name: str) -> tuple[float, float]:
    field = FIELDS[name]
    return (-math.inf if field.minimum is None else field.minimum,
            math.inf if field.maximum is None else field.maximum)


_FAN_LOW, _FAN_HIGH = _bounds("fan_rpm")
_LOW_HASHRATE, _HIGH_HASHRATE = _bounds("hashrate_ths")
#: The bounds of the values computed here: each gauge's average, and the efficiency.
_COMPUTED_BOUNDS = {name: _bounds(name) for name in (*ROLLUP_MEAN, "efficiency_jth")}


def possible_fans(fans: list[int]) -> list[int]:
    if fans and (min(fans) < _FAN_LOW or max(fans) > _FAN_HIGH):
        return [fan for fan in fans if _FAN_LOW <= fan <= _FAN_HIGH]
    return fans


def possible(name: str, value: float | None) -> float | None:
    """``value`` of ``name`` (an average or the efficiency), or None out of its range (NaN
    included: every comparison with it is false)."""
    if value is None:
        return None
    low, high = _COMPUTED_BOUNDS[name]
    return value if low <= value <= high else None


def sample_from_row(row: Row) -> Sample:
    """The Sample of a row read with ``SAMPLE_COLUMNS`` (its readings checked)."""
    fields = {name: row[name] for name in FIELD_NAMES}
    fields["fan_rpm"] = possible_fans(list(fields["fan_rpm"] or []))
    fields["is_mining"] = bool(fields["is_mining"])
    return Sample(miner_id=row["miner_id"], ts=ts_text(row["ts_ms"]), **fields)


def info_from_row(row: Row) -> MinerInfo | None:
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
        label=row["label"],
    )


def status_from_row(row: Row) -> MinerStatus | None:
    if row["state"] is None or row["since_ms"] is None:
        return None
    return MinerStatus(
        state=row["state"],
        reason=row["reason"],
        since=ts_text(row["since_ms"]),
        last_seen=ts_text(row["last_seen_ms"]) if row["last_seen_ms"] is not None else None,
        failures=row["failures"] or 0,
    )


#: The fields a rollup adds to a Sample: its length, how many samples it holds, and the
#: spread of every gauge the store averages (``fields.ROLLUP_MEAN``), in that order.
ROLLUP_EXTRA_FIELDS: tuple[tuple[str, Any], ...] = (
    ("step_s", int),
    ("samples", int),
    *((f"{gauge}_{end}", float | None) for gauge in ROLLUP_MEAN for end in ("min", "max")),
)

if TYPE_CHECKING:

    class SampleRollup(Sample, kw_only=True):
        step_s: int
        samples: int

else:
    # Built from the field descriptions, so a gauge added there gets its _min and _max here.
    SampleRollup = msgspec.defstruct(
        "SampleRollup", ROLLUP_EXTRA_FIELDS, bases=(Sample,), kw_only=True,
        module=__name__, namespace={"__doc__": (
            "One bucket of a miner's history: a Sample of averages (gauges) and newest "
            "values (counters, fans, pool), starting at ``ts``, with the spread of every "
            "gauge.")})


def _average(row: Row, metric: str) -> float | None:
    count = row[f"{metric}_n"]
    return row[f"{metric}_sum"] / count if count else None


def rollup_from_row(row: Row, step_ms: int) -> SampleRollup:
    """The bucket of a row read with ``readings`` and ``possible_hashrate``."""
    fields: dict[str, Any] = {name: row[name] for name in ROLLUP_LAST}
    fields["fan_rpm"] = possible_fans(list(fields["fan_rpm"] or []))
    fields["is_mining"] = bool(fields["is_mining"])
    for metric in ROLLUP_MEAN:
        fields[metric] = possible(metric, _average(row, metric))
        fields[f"{metric}_min"] = row[f"{metric}_min"]
        fields[f"{metric}_max"] = row[f"{metric}_max"]
    if fields["hashrate_ths"] is None:  # a rollup holds at least one sample: cannot happen
        fields["hashrate_ths"] = 0.0
    # energy per work over the bucket, from the averages
    fields["efficiency_jth"] = possible(
        "efficiency_jth", efficiency(fields["power_w"], fields["hashrate_ths"]))
    return SampleRollup(miner_id=row["miner_id"], ts=ts_text(row["bucket_ms"]),
                        step_s=step_ms // 1000, samples=row["samples"], **fields)


class StatusChange(msgspec.Struct, kw_only=True, tag_field="type", tag="status"):
    """The miner's status changed at ``ts``; ``status`` as published on its status topic."""

    ts: str
    status: MinerStatus


class AlertChange(msgspec.Struct, kw_only=True, tag_field="type", tag="alert"):
    """A rule fired or resolved at ``ts``; ``alert`` as published on its alert topic."""

    ts: str
    alert: AlertEvent


class CommandChange(msgspec.Struct, kw_only=True, tag_field="type", tag="command"):
    """A command ended at ``ts`` (its ``CommandResult``, the audit record): ``by`` asked
    ``action`` at ``requested``; ``changed`` the settings written, ``before`` and
    ``after`` them as read back (never pool passwords)."""

    ts: str
    miner_id: str
    action: Action
    by: str
    status: CommandStatus
    message: str
    changed: list[str]
    before: MinerSettings | None
    after: MinerSettings | None
    requested: str
    id: str


MinerEvent = StatusChange | AlertChange | CommandChange


class TuneRun(msgspec.Struct, kw_only=True):
    """An autotune run as last published (its ``TuneProgress`` without the live
    ``phase`` and ``progress``): every step measured, ``best`` (an index into ``steps``)
    and what was applied at the end (the best step, or ``original`` again on abort or
    failure)."""

    run_id: str
    miner_id: str
    objective: Objective
    state: TuneState
    by: str
    started: str
    ts: str
    original: MinerSettings | None
    steps: list[TuneStep]
    best: int | None
    applied: MinerSettings | None
    message: str | None


def _finite(value: float | None) -> bool:
    return value is not None and -math.inf < value < math.inf


def status_change_from_row(row: Row) -> StatusChange:
    status = status_from_row(row)
    assert status is not None  # both columns are part of the key
    return StatusChange(ts=status.since, status=status)


def alert_change_from_row(row: Row) -> AlertChange | None:
    """The row's alert; None when its threshold (a required number) is not finite, the
    rule by which such an alert message is rejected now. A non-finite value is null."""
    if not _finite(row["threshold"]):
        return None
    ts = ts_text(row["ts_ms"])
    value = row["value"] if _finite(row["value"]) else None
    since = row["since_ms"]
    alert = AlertEvent(miner_id=row["miner_id"], rule=row["rule"], state=row["state"],
                       severity=row["severity"], value=value,
                       threshold=row["threshold"], message=row["message"], ts=ts,
                       label=row["label"], since=ts_text(since) if since is not None else None,
                       muted=bool(row["muted"]))
    return AlertChange(ts=ts, alert=alert)


def settings_from_json(value: object) -> MinerSettings | None:
    """Settings from their JSON column; None for what is not settings (a row edited by
    hand must not fail the whole list)."""
    if value is None:
        return None
    try:
        return msgspec.convert(value, MinerSettings)
    except msgspec.ValidationError:
        return None


def _names(value: object) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def command_change_from_row(row: Row) -> CommandChange:
    return CommandChange(
        ts=ts_text(row["ts_ms"]), miner_id=row["miner_id"], action=row["action"],
        by=row["by"], status=row["status"], message=row["message"],
        changed=_names(row["changed"]), before=settings_from_json(row["before"]),
        after=settings_from_json(row["after"]), requested=ts_text(row["requested_ms"]),
        id=row["id"])


def merge_events(
    status_rows: Sequence[Row],
    alert_rows: Sequence[Row],
    window: SampleWindow,
    command_rows: Sequence[Row] = (),
) -> list[MinerEvent]:
    """Every kind in time order (of one moment: a status change, then an alert, then a
    command), cut to the window's limit from the same end the queries took them."""
    timed: list[tuple[int, int, MinerEvent]] = [
        (row["since_ms"], 0, status_change_from_row(row)) for row in status_rows]
    for row in alert_rows:
        alert = alert_change_from_row(row)
        if alert is not None:
            timed.append((row["ts_ms"], 1, alert))
    timed.extend((row["ts_ms"], 2, command_change_from_row(row)) for row in command_rows)
    timed.sort(key=lambda item: (item[0], item[1]))
    events = [event for _ms, _kind, event in timed]
    return events[: window.limit] if window.since_ms is not None else events[-window.limit:]


@dataclass(frozen=True, slots=True)
class StoredMiner:
    """What the history database knows of one miner now (each part None when unknown)."""

    miner_id: str
    info: MinerInfo | None
    status: MinerStatus | None
    sample: Sample | None
    forgotten_ms: int | None = None


def merge_miners(
    miner_rows: Sequence[Row], latest_rows: Sequence[Row]
) -> list[StoredMiner]:
    """Every miner named in either table, sorted by id."""
    by_id = {row["miner_id"]: row for row in miner_rows}
    # A newest sample whose hashrate is impossible (see "rows to payloads") is no sample.
    latest = {row["miner_id"]: sample_from_row(row) for row in latest_rows
              if _LOW_HASHRATE <= row["hashrate_ths"] <= _HIGH_HASHRATE}
    entries = []
    for miner_id in sorted(by_id.keys() | {row["miner_id"] for row in latest_rows}):
        row = by_id.get(miner_id)
        entries.append(
            StoredMiner(
                miner_id=miner_id,
                info=info_from_row(row) if row is not None else None,
                status=status_from_row(row) if row is not None else None,
                sample=latest.get(miner_id),
                forgotten_ms=row["forgotten_ms"] if row is not None else None,
            )
        )
    return entries


# --- SQL ----------------------------------------------------------------------------------


def _checked(column: ColumnElement[Any], name: str) -> ColumnElement[Any]:
    """``column`` where it holds a possible value of field ``name``, else NULL."""
    field = FIELDS[name]
    checks = [check for check in (
        column >= field.minimum if field.minimum is not None else None,
        column <= field.maximum if field.maximum is not None else None) if check is not None]
    return case((and_(*checks), column), else_=null())


def _field_of(column_name: str) -> str | None:
    """The bounded optional number a column holds: a Sample field, or a gauge's spread."""
    name = column_name.removesuffix("_min").removesuffix("_max")
    if column_name != name and name not in ROLLUP_MEAN:
        return None
    field = FIELDS.get(name)
    if field is None or not field.numeric or (field.required and column_name == name):
        return None
    return name if field.minimum is not None or field.maximum is not None else None


def readings(table: Table) -> list[ColumnElement[Any]]:
    """Every column of ``table``, those holding optional readings through the rule (NULL
    out of their range; NaN too, which compares false on both engines)."""
    columns: list[ColumnElement[Any]] = []
    for column in table.columns:
        name = _field_of(column.name)
        columns.append(column if name is None else _checked(column, name).label(column.name))
    return columns


def possible_hashrate(table: Table) -> ColumnElement[bool]:
    """The row's hashrate (a rollup's average, compared without dividing) is possible."""
    if table is samples:
        return samples.c.hashrate_ths.between(_LOW_HASHRATE, _HIGH_HASHRATE)
    total, count = table.c.hashrate_ths_sum, table.c.hashrate_ths_n
    return total.between(count * _LOW_HASHRATE, count * _HIGH_HASHRATE)


SAMPLE_COLUMNS = readings(samples)
_ROLLUP_COLUMNS = {resolution.name: readings(resolution.table) for resolution in ROLLUPS}


def latest_samples_query() -> Select[Any]:
    """The newest sample of every miner that has samples, in one statement (its hashrate
    unchecked: ``merge_miners`` does that, so the miner is listed all the same).

    A recursive CTE walks the distinct miner ids through the primary key index (a loose
    index scan: one seek per miner instead of reading all history), then each miner's
    newest row is one more index seek.
    """
    ids = miner_ids_cte(samples)
    inner = samples.alias("inner_samples")
    newest = (
        select(func.max(inner.c.ts_ms))
        .where(inner.c.miner_id == ids.c.miner_id)
        .scalar_subquery()
    )
    return (
        select(*SAMPLE_COLUMNS)
        .join(ids, samples.c.miner_id == ids.c.miner_id)
        .where(samples.c.ts_ms == newest)
    )


def _time_window(query: Select[Any], column: Any, window: SampleWindow) -> Select[Any]:
    """With ``since``: the first ``limit`` rows from there on; otherwise the latest
    ``limit`` up to ``until`` (newest first: the caller reverses them)."""
    if window.since_ms is not None:
        query = query.where(column >= window.since_ms)
    if window.until_ms is not None:
        query = query.where(column <= window.until_ms)
    order = column.asc() if window.since_ms is not None else column.desc()
    return query.order_by(order).limit(window.limit)


def window_query(miner_id: str, window: SampleWindow) -> Select[Any]:
    query = select(*SAMPLE_COLUMNS).where(samples.c.miner_id == miner_id,
                                          possible_hashrate(samples))
    return _time_window(query, samples.c.ts_ms, window)


def rollup_query(resolution: Resolution, miner_id: str, window: SampleWindow) -> Select[Any]:
    """The buckets that start in the window; ``since`` is taken back to its bucket's start,
    so the bucket holding ``since`` is included."""
    table = resolution.table
    if window.since_ms is not None:
        step = resolution.step_ms
        window = SampleWindow(window.since_ms - window.since_ms % step, window.until_ms,
                              window.limit)
    query = select(*_ROLLUP_COLUMNS[resolution.name]).where(
        table.c.miner_id == miner_id, possible_hashrate(table))
    return _time_window(query, table.c.bucket_ms, window)


def status_events_query(miner_id: str | None, window: SampleWindow) -> Select[Any]:
    """Status changes in the window: one miner's, or (None) every miner's."""
    query = select(status_events)
    if miner_id is not None:
        query = query.where(status_events.c.miner_id == miner_id)
    return _time_window(query, status_events.c.since_ms, window)


def alert_events_query(miner_id: str | None, window: SampleWindow) -> Select[Any]:
    """Alert events in the window: one miner's, or (None) every miner's."""
    query = select(alert_events)
    if miner_id is not None:
        query = query.where(alert_events.c.miner_id == miner_id)
    return _time_window(query, alert_events.c.ts_ms, window)


def command_events_query(miner_id: str | None, window: SampleWindow) -> Select[Any]:
    """Commands that ended in the window: one miner's, or (None) every miner's."""
    query = select(command_events)
    if miner_id is not None:
        query = query.where(command_events.c.miner_id == miner_id)
    return _time_window(query, command_events.c.ts_ms, window)


def known_miner_query(miner_id: str) -> Select[Any]:
    return select(
        or_(
            exists().where(miners.c.miner_id == miner_id),
            exists().where(samples.c.miner_id == miner_id),
            exists().where(rollups_1h.c.miner_id == miner_id),  # raw may have expired
        )
    )


def earliest_query(table: Table, column: str, miner_id: str) -> Select[Any]:
    return select(func.min(table.c[column])).where(table.c.miner_id == miner_id)


def capped_count_query(miner_id: str, window: SampleWindow, cap: int) -> Select[Any]:
    """How many raw samples the window holds, counting no further than ``cap``."""
    query = select(samples.c.ts_ms).where(samples.c.miner_id == miner_id)
    if window.since_ms is not None:
        query = query.where(samples.c.ts_ms >= window.since_ms)
    if window.until_ms is not None:
        query = query.where(samples.c.ts_ms <= window.until_ms)
    return select(func.count()).select_from(query.limit(cap).subquery())


async def list_miners(conn: AsyncConnection) -> list[StoredMiner]:
    miner_rows = (await conn.execute(select(miners))).mappings().all()
    latest_rows = (await conn.execute(latest_samples_query())).mappings().all()
    return merge_miners(miner_rows, latest_rows)


async def is_known(conn: AsyncConnection, miner_id: str) -> bool:
    """Whether the history holds anything of this miner (its row, samples or rollups)."""
    return bool((await conn.execute(known_miner_query(miner_id))).scalar())


async def miner_samples(
    conn: AsyncConnection, miner_id: str, window: SampleWindow, step: str = "raw",
    clock: Callable[[], float] = time.time,
) -> list[Sample] | list[SampleRollup] | None:
    """The samples (or buckets) in the window, oldest first; None when the miner is
    unknown."""
    if step == "auto":
        step = await pick_step(conn, miner_id, window, clock)
    resolution = _RESOLUTIONS.get(step)
    query = (window_query(miner_id, window) if resolution is None
             else rollup_query(resolution, miner_id, window))
    rows = (await conn.execute(query)).mappings().all()
    if not rows and not await is_known(conn, miner_id):
        return None
    if window.since_ms is None:
        rows = list(reversed(rows))
    if resolution is None:
        return [sample_from_row(row) for row in rows]
    return [rollup_from_row(row, resolution.step_ms) for row in rows]


async def pick_step(
    conn: AsyncConnection, miner_id: str, window: SampleWindow,
    clock: Callable[[], float] = time.time,
) -> str:
    """The finest resolution whose rows over the window fit in ``limit``, skipping one
    whose history starts after ``since`` while a coarser one reaches further back (raw
    samples and 1-minute rollups expire before 1-hour rollups do).

    Without ``since`` the request is for the latest rows: raw.
    """
    since = window.since_ms
    if since is None:
        return "raw"
    until = window.until_ms if window.until_ms is not None else int(clock() * 1000)
    levels: list[tuple[str, Table, str, int]] = [("raw", samples, "ts_ms", 0)] + [
        (r.name, r.table, "bucket_ms", r.step_ms) for r in ROLLUPS]
    starts = [(await conn.execute(earliest_query(table, column, miner_id))).scalar()
              for _name, table, column, _step in levels]
    candidates = usable_levels([(name, step_ms, start) for (name, _t, _c, step_ms), start
                                in zip(levels, starts, strict=True)], since)
    for name, step_ms in candidates[:-1]:
        if step_ms == 0:
            count = (await conn.execute(
                capped_count_query(miner_id, window, window.limit + 1))).scalar_one()
            fits = count <= window.limit
        else:
            fits = buckets_fit(step_ms, since, until, window.limit)
        if fits:
            return name
    return candidates[-1][0]


#: One resolution ``step=auto`` may pick: its name, bucket length (0: raw samples) and
#: where its history starts (None: it holds nothing).
Level = tuple[str, int, int | None]


def usable_levels(levels: Sequence[Level], since: int) -> list[tuple[str, int]]:
    """The levels, finest first, ``auto`` may pick for a window from ``since``: each but
    the coarsest is skipped when its history starts after ``since`` (or holds nothing)
    while a coarser one reaches further back."""
    usable = []
    for index, (name, step_ms, start) in enumerate(levels):
        coarser = levels[index + 1:]
        reaches_further = any(
            other is not None and (start is None or other < start - other_step)
            for _name, other_step, other in coarser)
        if coarser and (start is None or start > since) and reaches_further:
            continue
        usable.append((name, step_ms))
    return usable


def buckets_fit(step_ms: int, since: int, until: int, limit: int) -> bool:
    """Whether the buckets of ``step_ms`` from the one holding ``since`` to ``until`` are
    at most ``limit``."""
    return (until - (since - since % step_ms)) // step_ms + 1 <= limit


async def miner_events(
    conn: AsyncConnection, miner_id: str, window: SampleWindow
) -> list[MinerEvent] | None:
    """Status changes, alerts and commands in the window, oldest first; None for an
    unknown miner."""
    status_rows = (await conn.execute(status_events_query(miner_id, window))).mappings().all()
    alert_rows = (await conn.execute(alert_events_query(miner_id, window))).mappings().all()
    command_rows = (await conn.execute(command_events_query(miner_id, window))
                    ).mappings().all()
    if not (status_rows or alert_rows or command_rows) and not await is_known(conn, miner_id):
        return None
    return merge_events(status_rows, alert_rows, window, command_rows)


EVENT_TYPES: tuple[str, ...] = ("status", "alert", "command")


def parse_event_type(text: str | None) -> str | None:
    """``status``, ``alert`` or ``command``; None (every kind) when absent."""
    if text is None or not text.strip():
        return None
    kind = text.strip()
    if kind not in EVENT_TYPES:
        raise BadParameter(f"type: must be one of {', '.join(EVENT_TYPES)}, got {text[:40]!r}")
    return kind


async def fleet_events(
    conn: AsyncConnection, window: SampleWindow, *, miner_id: str | None = None,
    kind: str | None = None,
) -> list[MinerEvent]:
    """The fleet's status changes, alerts and commands in the window, oldest first; only
    one miner's with ``miner_id``, only one kind with ``kind`` (``EVENT_TYPES``)."""
    status_rows: Sequence[Row] = []
    alert_rows: Sequence[Row] = []
    command_rows: Sequence[Row] = []
    if kind in (None, "status"):
        status_rows = (await conn.execute(status_events_query(miner_id, window))).mappings().all()
    if kind in (None, "alert"):
        alert_rows = (await conn.execute(alert_events_query(miner_id, window))).mappings().all()
    if kind in (None, "command"):
        command_rows = (await conn.execute(command_events_query(miner_id, window))
                        ).mappings().all()
    return merge_events(status_rows, alert_rows, window, command_rows)


# --- autotune runs ------------------------------------------------------------------------

TUNE_RUNS_DEFAULT = 20
#: A run holds at most ``schemas.MAX_TUNE_STEPS`` steps: 100 runs stay a few MB.
TUNE_RUNS_MAX = 100


def tune_runs_query(miner_id: str, limit: int) -> Select[Any]:
    """The miner's newest runs first (by start, then id: a stable order)."""
    return (select(tune_runs).where(tune_runs.c.miner_id == miner_id)
            .order_by(tune_runs.c.started_ms.desc(), tune_runs.c.run_id.desc()).limit(limit))


def tune_steps_query(run_ids: Sequence[str]) -> Select[Any]:
    return (select(tune_steps).where(tune_steps.c.run_id.in_(run_ids))
            .order_by(tune_steps.c.run_id, tune_steps.c["index"]))


def tune_step_from_row(row: Row) -> TuneStep:
    return TuneStep(
        index=row["index"], frequency_mhz=row["frequency_mhz"],
        core_voltage_mv=row["core_voltage_mv"], ts=ts_text(row["ts_ms"]),
        stable=bool(row["stable"]), hashrate_ths=row["hashrate_ths"],
        expected_ths=row["expected_ths"], power_w=row["power_w"],
        efficiency_jth=row["efficiency_jth"], temp_c=row["temp_c"],
        vr_temp_c=row["vr_temp_c"], reject_ratio=row["reject_ratio"], reason=row["reason"])


def tune_run_from_row(row: Row, steps: list[TuneStep]) -> TuneRun:
    return TuneRun(
        run_id=row["run_id"], miner_id=row["miner_id"], objective=row["objective"],
        state=row["state"], by=row["by"], started=ts_text(row["started_ms"]),
        ts=ts_text(row["ts_ms"]), original=settings_from_json(row["original"]), steps=steps,
        best=row["best"], applied=settings_from_json(row["applied"]), message=row["message"])


async def miner_tune_runs(conn: AsyncConnection, miner_id: str, limit: int = TUNE_RUNS_DEFAULT
                          ) -> list[TuneRun] | None:
    """The miner's latest ``limit`` autotune runs, newest first, each with its steps in
    order; None for an unknown miner."""
    run_rows = (await conn.execute(tune_runs_query(miner_id, limit))).mappings().all()
    if not run_rows:
        return [] if await is_known(conn, miner_id) else None
    steps: dict[str, list[TuneStep]] = {row["run_id"]: [] for row in run_rows}
    step_rows = (await conn.execute(tune_steps_query(list(steps)))).mappings().all()
    for row in step_rows:
        steps[row["run_id"]].append(tune_step_from_row(row))
    return [tune_run_from_row(row, steps[row["run_id"]]) for row in run_rows]
