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
    String,
    Table,
    Text,
    event,
    inspect,
    select,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
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
        await conn.run_sync(metadata.create_all)
        await conn.run_sync(_add_missing_columns)


def missing_columns(sync_conn: Any) -> list[Column[Any]]:
    """The columns of our tables the database does not have yet."""
    inspector = inspect(sync_conn)
    missing: list[Column[Any]] = []
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing.extend(column for column in table.columns if column.name not in present)
    return missing


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
