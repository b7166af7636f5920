"""Writing samples and keeping their 1-minute and 1-hour rollups, in one transaction.

The same transaction marks the buckets it touched in ``fleet_dirty``, for the fleet
rollups (``fleet``) to recompute.

Samples go in with ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` the keys that were new;
only those are added to the rollups. A sample the broker delivers twice (after a crash,
or to two stores) is therefore counted once, by whichever transaction stored it first.
A rollup upsert adds sums and counts, keeps the extremes and takes the counters of the
newest sample, so the result does not depend on the order samples arrive in.

On PostgreSQL many rows go in as one ``INSERT ... SELECT unnest(...)`` over one array per
column: the statement text never changes and the driver sends compact arrays, several
times cheaper than a VALUES list per row. SQLite takes one multi-row VALUES statement for
the samples and an executemany for each rollup.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from typing import Any

from sqlalchemy import JSON, ColumnElement, Table, Text, bindparam, case, cast, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from minerwatch.shared import db

Values = dict[str, Any]

_SUM = tuple(f"{m}_sum" for m in db.ROLLUP_METRICS)
_N = tuple(f"{m}_n" for m in db.ROLLUP_METRICS)
_MIN = tuple(f"{m}_min" for m in db.ROLLUP_METRICS)
_MAX = tuple(f"{m}_max" for m in db.ROLLUP_METRICS)
_METRIC_COLUMNS = tuple(zip(db.ROLLUP_METRICS, _SUM, _N, _MIN, _MAX, strict=True))
_sample_key = itemgetter("miner_id", "ts_ms")


# --- rollup arithmetic (pure) --------------------------------------------------------


def _first_bucket(sample: Values, bucket_ms: int) -> Values:
    """The bucket of one sample: most buckets of a batch hold a single sample (each
    miner sends one every few seconds), so it is built from it directly."""
    row: Values = {"miner_id": sample["miner_id"], "bucket_ms": bucket_ms, "samples": 1,
                   "last_ts_ms": sample["ts_ms"]}
    for metric, total, count, low, high in _METRIC_COLUMNS:
        value = sample[metric]
        if value is None:
            row[total] = 0.0
            row[count] = 0
            row[low] = None
            row[high] = None
        else:
            row[total] = 0.0 + value
            row[count] = 1
            row[low] = value
            row[high] = value
    for name in db.ROLLUP_LAST:
        row[name] = sample[name]
    return row


def _add_to_bucket(row: Values, sample: Values) -> None:
    row["samples"] += 1
    for metric, total, count, low, high in _METRIC_COLUMNS:
        value = sample[metric]
        if value is None:
            continue
        row[total] += value
        row[count] += 1
        if row[low] is None or value < row[low]:
            row[low] = value
        if row[high] is None or value > row[high]:
            row[high] = value
    ts = sample["ts_ms"]
    if ts > row["last_ts_ms"]:
        row["last_ts_ms"] = ts
        for name in db.ROLLUP_LAST:
            row[name] = sample[name]


def bucket_rows(new_samples: Iterable[Values], step_ms: int) -> list[Values]:
    """The rollup rows (one per miner and bucket, in key order) that ``new_samples`` add."""
    buckets: dict[tuple[str, int], Values] = {}
    for sample in new_samples:
        ts = sample["ts_ms"]
        key = (sample["miner_id"], ts - ts % step_ms)
        row = buckets.get(key)
        if row is None:
            buckets[key] = _first_bucket(sample, key[1])
        else:
            _add_to_bucket(row, sample)
    return [buckets[key] for key in sorted(buckets)]


# --- statements ----------------------------------------------------------------------
#
# Per row, SQLAlchemy's parameter processing cost more than the database's own work, so
# the statements are compiled once and run with plain values: on PostgreSQL one array
# per column for the whole batch, on SQLite tuples in the compiled statement's order.


def _unnest_source(table: Table) -> Any:
    """``SELECT unnest(:col1), unnest(:col2), ...``: one array parameter per column."""
    columns = []
    for column in table.columns:
        value: ColumnElement[Any]
        if isinstance(column.type, JSON):  # sent as text, parsed by the server
            value = cast(func.unnest(bindparam(column.name, type_=postgresql.ARRAY(Text))),
                         column.type)
        else:
            value = func.unnest(bindparam(column.name, type_=postgresql.ARRAY(column.type)))
        columns.append(value.label(column.name))
    return select(*columns)


def _bulk_insert(dialect: str, table: Table) -> Any:
    if dialect == "postgresql":
        names = [column.name for column in table.columns]
        return postgresql.insert(table).from_select(names, _unnest_source(table))
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"unsupported database dialect {dialect!r}")


def _json_columns(table: Table) -> frozenset[str]:
    return frozenset(c.name for c in table.columns if isinstance(c.type, JSON))


def _json_text(value: Any) -> str | None:
    return None if value is None else db.json_text(value)


def _column_arrays(table: Table, rows: Sequence[Values]) -> Values:
    """PostgreSQL: the rows as one list per column, JSON as text."""
    json_columns = _json_columns(table)
    params: Values = {}
    for column in table.columns:
        values = [row[column.name] for row in rows]
        if column.name in json_columns:
            values = [_json_text(v) for v in values]
        params[column.name] = values
    return params


def _row_tuples(names: Sequence[str], json_columns: frozenset[str],
                rows: Sequence[Values]) -> list[tuple[Any, ...]]:
    """SQLite: the rows as tuples in ``names`` order, JSON as text."""
    pick = itemgetter(*names)
    tuples = [pick(row) for row in rows]
    for index in (i for i, name in enumerate(names) if name in json_columns):
        tuples = [(*t[:index], _json_text(t[index]), *t[index + 1:]) for t in tuples]
    return tuples


#: SQLite takes at most 32,766 parameters per statement.
_SQLITE_ROWS_PER_INSERT = 2000


@lru_cache(maxsize=64)
def _sqlite_sample_insert(rows: int) -> str:
    """``INSERT ... VALUES (...), (...) ON CONFLICT DO NOTHING RETURNING`` for ``rows``."""
    columns = [c.name for c in db.samples.columns]
    group = "(" + ", ".join("?" * len(columns)) + ")"
    return (f"INSERT INTO samples ({', '.join(columns)}) VALUES "
            f"{', '.join([group] * rows)} "
            "ON CONFLICT (miner_id, ts_ms) DO NOTHING RETURNING miner_id, ts_ms")


@lru_cache(maxsize=8)
def _pg_sample_insert() -> Any:
    return (
        _bulk_insert("postgresql", db.samples)
        .on_conflict_do_nothing(index_elements=["miner_id", "ts_ms"])
        .returning(db.samples.c.miner_id, db.samples.c.ts_ms)
    )


async def _insert_samples(conn: AsyncConnection, rows: Sequence[Values]) -> list[Any]:
    """Insert, skipping keys already stored; the keys that were new."""
    if conn.dialect.name == "postgresql":
        result = await conn.execute(_pg_sample_insert(), _column_arrays(db.samples, rows))
        return list(result.all())
    if conn.dialect.name != "sqlite":
        raise ValueError(f"unsupported database dialect {conn.dialect.name!r}")
    names = [c.name for c in db.samples.columns]
    json_columns = _json_columns(db.samples)
    inserted: list[Any] = []
    for start in range(0, len(rows), _SQLITE_ROWS_PER_INSERT):
        chunk = rows[start:start + _SQLITE_ROWS_PER_INSERT]
        flat = tuple(chain.from_iterable(_row_tuples(names, json_columns, chunk)))
        result = await conn.exec_driver_sql(_sqlite_sample_insert(len(chunk)), flat)
        inserted.extend(result.all())
    return inserted


@lru_cache(maxsize=8)
def _rollup_upsert(dialect: str, table: Table) -> Any:
    insert = _bulk_insert(dialect, table)
    old, new = table.c, insert.excluded
    newer = new.last_ts_ms > old.last_ts_ms
    changes: Values = {
        "samples": old.samples + new.samples,
        "last_ts_ms": case((newer, new.last_ts_ms), else_=old.last_ts_ms),
    }
    for _metric, total, count, low, high in _METRIC_COLUMNS:
        changes[total] = old[total] + new[total]
        changes[count] = old[count] + new[count]
        # CASE rather than min()/least(): the engines disagree about NULL arguments
        changes[low] = case((old[low].is_(None) | (new[low] < old[low]), new[low]),
                            else_=old[low])
        changes[high] = case((old[high].is_(None) | (new[high] > old[high]), new[high]),
                             else_=old[high])
    for name in db.ROLLUP_LAST:
        changes[name] = case((newer, new[name]), else_=old[name])
    return insert.on_conflict_do_update(index_elements=["miner_id", "bucket_ms"], set_=changes)


@lru_cache(maxsize=8)
def _sqlite_rollup_upsert(table: Table) -> tuple[str, tuple[str, ...]]:
    """The upsert as SQLite text, and the column names in its parameter order."""
    compiled = _rollup_upsert("sqlite", table).compile(dialect=sqlite.dialect())
    return str(compiled), tuple(compiled.positiontup or ())


async def _upsert_rollups(conn: AsyncConnection, table: Table, rows: Sequence[Values]) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(_rollup_upsert("postgresql", table), _column_arrays(table, rows))
        return
    sql, names = _sqlite_rollup_upsert(table)
    await conn.exec_driver_sql(sql, _row_tuples(names, _json_columns(table), rows))


async def write_samples(conn: AsyncConnection, rows: Sequence[Values]) -> int:
    """Store sample rows and add the new ones to every rollup; the number that were new.

    Rows are written in key order, so concurrent stores on PostgreSQL take row locks in
    the same order and do not deadlock each other.
    """
    if not rows:
        return 0
    ordered = sorted(rows, key=_sample_key)  # stable: of two equal keys the first wins
    inserted = await _insert_samples(conn, ordered)
    if not inserted:
        return 0
    first: dict[tuple[str, int], Values] = {}
    for row in ordered:
        first.setdefault(_sample_key(row), row)
    new_samples = [first[(miner_id, ts_ms)] for miner_id, ts_ms in inserted]
    marks: list[Values] = []
    for resolution in db.ROLLUPS:
        rows_of_level = bucket_rows(new_samples, resolution.step_ms)
        await _upsert_rollups(conn, resolution.table, rows_of_level)
        marks.extend(dirty_marks(rows_of_level, resolution.step_ms))
    await mark_dirty(conn, marks)
    return len(new_samples)


# --- fleet buckets to recompute ------------------------------------------------------


def dirty_marks(rollup_rows: Iterable[Values], step_ms: int) -> list[Values]:
    """One mark per bucket the rollup rows touch, in key order."""
    buckets = sorted({row["bucket_ms"] for row in rollup_rows})
    return [{"step_ms": step_ms, "bucket_ms": bucket, "version": 0} for bucket in buckets]


@lru_cache(maxsize=4)
def _mark_upsert(dialect: str) -> Any:
    insert = postgresql.insert(db.fleet_dirty) if dialect == "postgresql" else sqlite.insert(
        db.fleet_dirty)
    # a bucket marked again: a new version, so a recompute that read it before this
    # transaction committed does not remove the mark (``fleet.FleetRollups``)
    return insert.on_conflict_do_update(
        index_elements=["step_ms", "bucket_ms"],
        set_={"version": db.fleet_dirty.c.version + 1})


async def mark_dirty(conn: AsyncConnection, marks: Sequence[Values]) -> None:
    """Mark fleet buckets to recompute, in the caller's transaction (in key order: stores
    on one PostgreSQL lock the marks in the same order)."""
    if marks:
        await conn.execute(_mark_upsert(conn.dialect.name), list(marks))
