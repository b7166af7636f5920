"""The history database's tables and engine: written by the store, read by the api.

SQLAlchemy 2 Core with the async engine, so services stay on one event loop.
``sqlite:///path`` becomes aiosqlite in WAL mode; ``postgresql://`` becomes psycopg (v3).
Timestamps are stored as integer milliseconds since the epoch (UTC): compact, exact,
and ordered the same way on both engines. Needs the ``minerwatch-shared[db]`` extra.

History is kept at three resolutions: raw ``samples`` and the per-miner rollups
``rollups_1m`` and ``rollups_1h`` (sum, count, min and max of the gauges in ``ROLLUP_METRICS``,
and the newest value of the fields in ``ROLLUP_LAST``), which the store maintains as
samples arrive. The primary keys ``(miner_id, ts_ms)`` and ``(miner_id, bucket_ms)`` serve
both "one miner over a time range" and "latest per miner"; on SQLite these tables are
``WITHOUT ROWID``, so one miner's rows sit together in key order.

The fleet rollups ``fleet_rollups_1m`` and ``fleet_rollups_1h`` (key ``bucket_ms``) hold
per bucket the sum over miners of each gauge's mean and how many miners it covers; the
store recomputes a bucket from the per-miner rollups (``fleet_rows_query``) after samples
land in it (``fleet_dirty``), so a fleet chart reads one row per bucket.

The measured fields are not written out here: the ``samples`` columns, the rollup columns
and ``SAMPLE_FIELDS`` are derived from ``minerwatch.shared.fields`` (see ``column_type``).
"""

from __future__ import annotations

import contextlib
import types
import typing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    and_,
    case,
    event,
    func,
    inspect,
    null,
    select,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.types import TypeEngine

from minerwatch.shared import fields
from minerwatch.shared.config import ConfigError
from minerwatch.shared.schemas import AlertEvent, MinerInfo, MinerStatus, Sample, parse_ts

metadata = MetaData()

#: The column type of each field type of ``fields.ValueType``.
COLUMN_TYPES: dict[fields.ValueType, type[TypeEngine[Any]]] = {
    "float": Float,
    "int": BigInteger,
    "bool": Boolean,
    "str": Text,
    "list[int]": JSON,
}

_SAMPLE_TYPES = {field.name: field.type for field in msgspec.structs.fields(Sample)}


def column_type(field: fields.FieldDescription) -> type[TypeEngine[Any]]:
    return COLUMN_TYPES[field.type]


def nullable(field: fields.FieldDescription) -> bool:
    """Whether the column takes NULL: when the wire format can carry ``null`` for the
    field. Never for a required field, nor for one the Sample defaults instead (an empty
    ``fan_rpm``, ``is_mining`` true)."""
    return not field.required and types.NoneType in typing.get_args(_SAMPLE_TYPES[field.name])


def field_column(field: fields.FieldDescription) -> Column[Any]:
    return Column(field.name, column_type(field), nullable=nullable(field))


samples = Table(
    "samples",
    metadata,
    Column("miner_id", String(64), primary_key=True),
    Column("ts_ms", BigInteger, primary_key=True),
    *(field_column(field) for field in fields.SAMPLE_FIELDS),
    sqlite_with_rowid=False,
)

#: One row per miner: its identity and its current status, as last published.
miners = Table(
    "miners",
    metadata,
    Column("miner_id", String(64), primary_key=True),
    Column("driver", String(32)),
    Column("host", Text),
    Column("port", Integer),
    Column("make", Text),
    Column("model", Text),
    Column("firmware", Text),
    Column("hostname", Text),
    Column("mac", String(32)),
    Column("label", Text),
    Column("state", String(16)),
    Column("reason", Text),
    Column("since_ms", BigInteger),
    Column("last_seen_ms", BigInteger),
    Column("failures", Integer),
    #: When the miner was forgotten (its retained topics cleared): it is listed again only
    #: once something newer than this arrives for it.
    Column("forgotten_ms", BigInteger),
)

#: Every status change, so the history shows when a miner went offline and why.
status_events = Table(
    "status_events",
    metadata,
    Column("miner_id", String(64), primary_key=True),
    Column("since_ms", BigInteger, primary_key=True),
    Column("state", String(16), primary_key=True),
    Column("reason", Text),
    Column("last_seen_ms", BigInteger),
    Column("failures", Integer, nullable=False),
)

alert_events = Table(
    "alert_events",
    metadata,
    Column("miner_id", String(64), primary_key=True),
    Column("rule", String(128), primary_key=True),
    Column("ts_ms", BigInteger, primary_key=True),
    Column("state", String(16), primary_key=True),
    Column("severity", String(16), nullable=False),
    Column("value", Float),
    Column("threshold", Float, nullable=False),
    Column("message", Text, nullable=False),
    # Added within schema 1 (see AlertEvent); nullable so older databases gain them.
    Column("label", Text),
    Column("since_ms", BigInteger),
    Column("muted", Boolean),
)

Index("ix_alert_events_ts", alert_events.c.ts_ms)
Index("ix_alert_events_miner_ts", alert_events.c.miner_id, alert_events.c.ts_ms)

#: The audit of control: one row per command that could change something (a
#: ``CommandResult``; read-only ``settings`` commands are not kept), keyed by its id.
#: ``ts_ms`` is when it ended, ``requested_ms`` when it was asked; ``changed`` (a list of
#: field names), ``before`` and ``after`` (``MinerSettings``, never pool passwords) are JSON.
command_events = Table(
    "command_events",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("miner_id", String(64), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("requested_ms", BigInteger, nullable=False),
    Column("action", String(16), nullable=False),
    Column("by", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("changed", JSON, nullable=False),
    Column("before", JSON(none_as_null=True)),
    Column("after", JSON(none_as_null=True)),
)

Index("ix_command_events_ts", command_events.c.ts_ms)
Index("ix_command_events_miner_ts", command_events.c.miner_id, command_events.c.ts_ms)

#: Autotune runs as last published (``TuneProgress``, less its live ``phase`` and
#: ``progress``); ``best`` indexes the run's steps, ``original`` and ``applied`` are JSON
#: ``MinerSettings``.
tune_runs = Table(
    "tune_runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("miner_id", String(64), nullable=False),
    Column("objective", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("by", Text, nullable=False),
    Column("started_ms", BigInteger, nullable=False),
    Column("ts_ms", BigInteger, nullable=False),  # the latest progress stored
    Column("best", Integer),
    Column("original", JSON(none_as_null=True)),
    Column("applied", JSON(none_as_null=True)),
    Column("message", Text),
)

Index("ix_tune_runs_miner_started", tune_runs.c.miner_id, tune_runs.c.started_ms)

#: The measured steps of each run (``TuneStep``); ``miner_id`` again, so purging a miner
#: finds them without its runs.
tune_steps = Table(
    "tune_steps",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("index", Integer, primary_key=True),
    Column("miner_id", String(64), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("frequency_mhz", Integer, nullable=False),
    Column("core_voltage_mv", Integer, nullable=False),
    Column("hashrate_ths", Float),
    Column("expected_ths", Float),
    Column("power_w", Float),
    Column("efficiency_jth", Float),
    Column("temp_c", Float),
    Column("vr_temp_c", Float),
    Column("reject_ratio", Float),
    Column("stable", Boolean, nullable=False),
    Column("reason", Text),
)

#: Gauges a rollup keeps as ``{name}_sum``, ``{name}_n`` (non-null count), ``_min``, ``_max``.
ROLLUP_METRICS: tuple[str, ...] = fields.ROLLUP_MEAN
#: Fields a rollup keeps as the value of its newest sample (counters and settings).
ROLLUP_LAST: tuple[str, ...] = fields.ROLLUP_LAST

def _rollup_table(name: str) -> Table:
    metrics = [
        column
        for metric in ROLLUP_METRICS
        for column in (
            Column(f"{metric}_sum", Float, nullable=False),
            Column(f"{metric}_n", Integer, nullable=False),
            Column(f"{metric}_min", Float),
            Column(f"{metric}_max", Float),
        )
    ]
    last = [Column(field, samples.c[field].type, nullable=samples.c[field].nullable)
            for field in ROLLUP_LAST]
    return Table(
        name,
        metadata,
        Column("miner_id", String(64), primary_key=True),
        Column("bucket_ms", BigInteger, primary_key=True),  # start of the bucket
        Column("samples", Integer, nullable=False),
        Column("last_ts_ms", BigInteger, nullable=False),  # the sample ``ROLLUP_LAST`` is from
        *metrics,
        *last,
        sqlite_with_rowid=False,
    )


rollups_1m = _rollup_table("rollups_1m")
rollups_1h = _rollup_table("rollups_1h")


@dataclass(frozen=True, slots=True)
class Resolution:
    """One rollup level: its name in the API and config, its bucket length, its table."""

    name: str
    step_ms: int
    table: Table


ROLLUPS = (Resolution("1m", 60_000, rollups_1m), Resolution("1h", 3_600_000, rollups_1h))

# Finding one bucket across miners (the fleet rollups, energy per day) goes by time.
Index("ix_rollups_1m_bucket", rollups_1m.c.bucket_ms)
Index("ix_rollups_1h_bucket", rollups_1h.c.bucket_ms)

# --- fleet rollups ----------------------------------------------------------------------
#
# One row per bucket for the whole fleet, recomputed by the store from the per-miner
# rollups (``fleet_rows_query``) whenever a sample lands in the bucket: the buckets a
# transaction touched are marked in ``fleet_dirty`` in that same transaction, so a crash,
# a late or a redelivered sample never leaves a fleet row wrong. A mark carries a
# ``version`` that each new mark raises: the store deletes only the version it recomputed.


def _fleet_rollup_table(name: str) -> Table:
    """``{gauge}_sum``: the sum over miners of their mean in the bucket, ``{gauge}_miners``:
    how many miners it covers (a possible mean), for every gauge the rollups average;
    ``miners``: how many miners have any sample in the bucket."""
    metrics = [
        column
        for metric in ROLLUP_METRICS
        for column in (Column(f"{metric}_sum", Float, nullable=False),
                       Column(f"{metric}_miners", Integer, nullable=False))
    ]
    return Table(
        name,
        metadata,
        Column("bucket_ms", BigInteger, primary_key=True),  # start of the bucket
        Column("miners", Integer, nullable=False),
        *metrics,
    )


fleet_rollups_1m = _fleet_rollup_table("fleet_rollups_1m")
fleet_rollups_1h = _fleet_rollup_table("fleet_rollups_1h")

#: Fleet buckets to recompute: the resolution (its ``step_ms``) and the bucket's start.
fleet_dirty = Table(
    "fleet_dirty",
    metadata,
    Column("step_ms", BigInteger, primary_key=True),
    Column("bucket_ms", BigInteger, primary_key=True),
    Column("version", Integer, nullable=False),
)


@dataclass(frozen=True, slots=True)
class FleetResolution:
    """One fleet rollup level: the per-miner rollup it is computed from, and its table."""

    source: Resolution
    table: Table

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def step_ms(self) -> int:
        return self.source.step_ms


FLEET_ROLLUPS = (FleetResolution(ROLLUPS[0], fleet_rollups_1m),
                 FleetResolution(ROLLUPS[1], fleet_rollups_1h))


def _possible_mean(table: Table, metric: str) -> Any:
    """A miner's mean of ``metric`` in its bucket, NULL when it has none or when it is out
    of the field's range (rows written before ingest checked readings; NaN included)."""
    field = fields.FIELDS[metric]
    total, count = table.c[f"{metric}_sum"], table.c[f"{metric}_n"]
    checks = [count > 0]
    if field.minimum is not None:
        checks.append(total >= count * field.minimum)
    if field.maximum is not None:
        checks.append(total <= count * field.maximum)
    return case((and_(*checks), total / count), else_=null())


def fleet_rows_query(fleet: FleetResolution, buckets: Any) -> Select[Any]:
    """The fleet rows of the buckets ``buckets`` selects (a condition on the per-miner
    rollup's ``bucket_ms``), computed from the per-miner rollups, in column order."""
    source = fleet.source.table
    columns: list[Any] = [source.c.bucket_ms.label("bucket_ms"),
                          func.count().label("miners")]
    for metric in ROLLUP_METRICS:
        mean = _possible_mean(source, metric)
        columns.append(func.coalesce(func.sum(mean), 0.0).label(f"{metric}_sum"))
        columns.append(func.count(mean).label(f"{metric}_miners"))
    return select(*columns).where(buckets).group_by(source.c.bucket_ms)

#: The measured fields, in column order (every column of ``samples`` but its key).
SAMPLE_FIELDS: tuple[str, ...] = fields.FIELD_NAMES


def miner_ids_cte(table: Table, name: str = "miner_ids") -> Any:
    """Every miner id in ``table`` as a recursive CTE doing a loose index scan: one primary
    key seek per miner instead of reading all of its rows (SQLite and PostgreSQL alike).
    The CTE's last row is NULL (the walk's end); filter it out where it matters."""
    inner = table.alias(f"{name}_inner")
    first = select(table.c.miner_id).order_by(table.c.miner_id).limit(1)
    ids = select(first.subquery().c.miner_id).cte(name, recursive=True)
    following = (
        select(inner.c.miner_id)
        .where(inner.c.miner_id > ids.c.miner_id)
        .order_by(inner.c.miner_id)
        .limit(1)
        .scalar_subquery()
    )
    return ids.union_all(select(following).where(ids.c.miner_id.is_not(None)))


def ts_to_ms(ts: str) -> int:
    return int(parse_ts(ts).timestamp() * 1000 + 0.5)


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def sample_row(sample: Sample) -> dict[str, Any]:
    row = msgspec.structs.asdict(sample)
    del row["schema"], row["ts"]
    row["ts_ms"] = ts_to_ms(sample.ts)
    return row


def info_row(info: MinerInfo) -> dict[str, Any]:
    return msgspec.structs.asdict(info)


def status_row(miner_id: str, status: MinerStatus) -> dict[str, Any]:
    return {
        "miner_id": miner_id,
        "state": status.state,
        "reason": status.reason,
        "since_ms": ts_to_ms(status.since),
        "last_seen_ms": ts_to_ms(status.last_seen) if status.last_seen else None,
        "failures": status.failures,
    }


def alert_row(alert: AlertEvent) -> dict[str, Any]:
    row = msgspec.structs.asdict(alert)
    row["ts_ms"] = ts_to_ms(row.pop("ts"))
    since = row.pop("since")
    row["since_ms"] = ts_to_ms(since) if since else None
    return row


def async_url(url: str) -> str:
    """The async driver's URL for a user's ``sqlite:///`` or ``postgresql://`` URL."""
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError("MINERWATCH_DB_URL is not a database URL") from None
    shown = parsed.render_as_string(hide_password=True)  # never print a password
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return str(parsed.set(drivername="sqlite+aiosqlite"))
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise ConfigError(
        f"MINERWATCH_DB_URL {shown!r}: only sqlite:// and postgresql:// are supported"
    )


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the api read while the store writes; NORMAL is durable across app crashes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


_json = msgspec.json.Encoder()


def json_text(value: object) -> str:
    """A JSON column's value as the text both engines store."""
    return _json.encode(value).decode()


def create_engine(url: str) -> AsyncEngine:
    # msgspec for JSON columns: a chart decodes one fan list per row, stdlib json was a
    # fifth of a 30-day chart's time.
    engine = create_async_engine(async_url(url), json_serializer=json_text,
                                 json_deserializer=msgspec.json.decode)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


async def create_schema(engine: AsyncEngine) -> None:
    """Create what is missing: tables, and the nullable columns added since a database
    was made (``missing_columns``), so an older history keeps working after an upgrade."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # The store and the api may both upgrade at once: one after the other (two
            # CREATE TABLE IF NOT EXISTS at once can still collide on PostgreSQL).
            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
        await conn.run_sync(_create_missing_tables)
        await conn.run_sync(_add_missing_columns)
        await conn.run_sync(_add_missing_indexes)


#: The PostgreSQL advisory lock key of schema changes ("mwschema" in ASCII).
_SCHEMA_LOCK = 0x6D77736368656D61


def _create_missing_tables(sync_conn: Any) -> None:
    """CREATE TABLE IF NOT EXISTS for every table (a table added in an upgrade may be
    created by another process between a look and a create)."""
    for table in metadata.sorted_tables:
        sync_conn.execute(CreateTable(table, if_not_exists=True))


def missing_columns(sync_conn: Any) -> list[Column[Any]]:
    """The columns of our tables the database does not have yet (of the tables it has:
    ``create_all`` makes a missing table whole)."""
    inspector = inspect(sync_conn)
    missing: list[Column[Any]] = []
    for table in metadata.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing.extend(column for column in table.columns if column.name not in present)
    return missing


def _add_missing_indexes(sync_conn: Any) -> None:
    """The indexes added to tables that already existed (``create_all`` makes a table's
    indexes only with the table)."""
    for table in metadata.sorted_tables:
        for index in table.indexes:
            # IF NOT EXISTS: the store and the api may both be adding it right now
            sync_conn.execute(CreateIndex(index, if_not_exists=True))


def _add_missing_columns(sync_conn: Any) -> None:
    """ALTER TABLE ... ADD COLUMN for each missing column. The store and the api both
    run this at start: one may add a column between the other's look and its ALTER, so
    a column that turns out to exist is no error (PostgreSQL: ``IF NOT EXISTS``, which
    keeps the transaction usable; SQLite: its "duplicate column name", which does not
    end the transaction)."""
    dialect = sync_conn.dialect
    preparer = dialect.identifier_preparer
    for column in missing_columns(sync_conn):
        if not column.nullable:  # cannot be added to rows that exist: a bug in a change
            raise RuntimeError(f"column {column.table.name}.{column.name} is missing and "
                               "not nullable: the database needs a manual upgrade")
        kind = column.type.compile(dialect=dialect)
        unless = " IF NOT EXISTS" if dialect.name == "postgresql" else ""
        statement = (f"ALTER TABLE {preparer.quote(column.table.name)} "
                     f"ADD COLUMN{unless} {preparer.quote(column.name)} {kind}")
        try:
            sync_conn.exec_driver_sql(statement)
        except sa_exc.OperationalError as exc:
            if dialect.name != "sqlite" or "duplicate column name" not in str(exc.orig):
                raise


async def reopen(engine: AsyncEngine) -> None:
    """Close the engine's pooled connections, so the next use opens the database afresh.

    After an error: a pooled connection keeps the database as it was opened (a SQLite
    file opened read-only stays read-only once the file is writable again), or may be
    dead. Connections in use elsewhere are closed when they are returned. Never raises:
    closing a broken connection may fail too, and it is gone either way.
    """
    with contextlib.suppress(Exception):
        await engine.dispose()
