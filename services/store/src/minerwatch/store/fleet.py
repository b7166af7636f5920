"""The fleet rollups: per bucket, the sum over miners of each gauge's mean, kept current.

``write_samples`` marks in ``fleet_dirty`` every bucket a transaction added samples to
(late and redelivered samples included: only new samples count, and they mark their own
bucket, however old). ``FleetRollups`` recomputes the marked buckets from the per-miner
rollups, one ``INSERT ... SELECT ... GROUP BY`` upsert per resolution, and removes the
marks it recomputed: only their version it read, so a bucket marked again meanwhile (by
this store or another one on the same PostgreSQL) is recomputed once more. A bucket left
with no per-miner rows (a purged miner, retention) loses its fleet row.

The marks live in the database, in the samples' own transaction: a store that stops
between a commit and the recompute leaves them for the next pass, of any store. A
history from before the fleet rollups is marked whole once (``backfill``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, delete, exists, literal, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from minerwatch.shared import db
from minerwatch.shared.errors import one_line

log = logging.getLogger("minerwatch.store")

_BY_STEP = {fleet.step_ms: fleet for fleet in db.FLEET_ROLLUPS}
Mark = tuple[int, int, int]  # step_ms, bucket_ms, version


def _fleet_upsert(dialect: str, fleet: db.FleetResolution, buckets: Sequence[int]) -> Any:
    table = fleet.table
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    source = fleet.source.table.c.bucket_ms
    names = [column.name for column in table.columns]
    statement = insert.from_select(names, db.fleet_rows_query(fleet, source.in_(buckets)))
    return statement.on_conflict_do_update(
        index_elements=["bucket_ms"],
        set_={name: statement.excluded[name] for name in names if name != "bucket_ms"})


def _empty_buckets_delete(fleet: db.FleetResolution, buckets: Sequence[int]) -> Any:
    """Fleet rows of these buckets that no per-miner rollup row backs any more."""
    source = fleet.source.table
    return delete(fleet.table).where(
        fleet.table.c.bucket_ms.in_(buckets),
        ~exists().where(source.c.bucket_ms == fleet.table.c.bucket_ms))


@lru_cache(maxsize=1)
def _marks_query(batch: int) -> Any:
    marks = db.fleet_dirty.c
    return (select(marks.step_ms, marks.bucket_ms, marks.version)
            .order_by(marks.step_ms, marks.bucket_ms).limit(batch))


async def recompute(conn: AsyncConnection, marks: Sequence[Mark]) -> None:
    """Recompute the marked buckets and remove the marks (those versions only), in the
    caller's transaction."""
    buckets: dict[int, list[int]] = defaultdict(list)
    for step_ms, bucket_ms, _version in marks:
        buckets[step_ms].append(bucket_ms)
    for step_ms, chosen in sorted(buckets.items()):
        fleet = _BY_STEP.get(step_ms)
        if fleet is None:  # a resolution no longer kept: the mark is only dropped
            continue
        await conn.execute(_fleet_upsert(conn.dialect.name, fleet, chosen))
        await conn.execute(_empty_buckets_delete(fleet, chosen))
    dirty = db.fleet_dirty.c
    await conn.execute(
        delete(db.fleet_dirty).where(and_(
            tuple_(dirty.step_ms, dirty.bucket_ms, dirty.version).in_(list(marks)))))


class FleetRollups:
    """Recomputes marked fleet buckets: ``run_once`` until none are left, ``run`` forever
    (a pass every ``interval_s``, at most ``batch`` buckets per transaction)."""

    def __init__(self, engine: AsyncEngine, *, interval_s: float = 1.0,
                 batch: int = 500) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.batch = batch

    async def run_once(self) -> int:
        """Recompute every marked bucket; how many marks were handled."""
        handled = 0
        while True:
            async with self.engine.begin() as conn:
                marks = [tuple(row) for row in
                         (await conn.execute(_marks_query(self.batch))).all()]
                if not marks:
                    return handled
                await recompute(conn, marks)
            handled += len(marks)
            if len(marks) < self.batch:
                return handled
            await asyncio.sleep(0)  # a long backlog: let the writer in between

    async def backfill(self) -> int:
        """Mark every bucket of a resolution whose fleet table is empty while its
        per-miner rollups are not: a history from before the fleet rollups (an upgrade)
        gets them on the store's first start. How many buckets were marked."""
        marked = 0
        async with self.engine.begin() as conn:
            for fleet in db.FLEET_ROLLUPS:
                source = fleet.source.table.c.bucket_ms
                if (await conn.execute(select(fleet.table.c.bucket_ms).limit(1))).first():
                    continue
                if not (await conn.execute(select(source).limit(1))).first():
                    continue
                # the WHERE: SQLite cannot parse INSERT ... SELECT ... ON CONFLICT without
                buckets = (select(literal(fleet.step_ms), source, literal(0))
                           .where(source.is_not(None)).distinct())
                insert = (postgresql.insert if conn.dialect.name == "postgresql"
                          else sqlite.insert)(db.fleet_dirty)
                result = await conn.execute(
                    insert.from_select(["step_ms", "bucket_ms", "version"], buckets)
                    .on_conflict_do_nothing().returning(db.fleet_dirty.c.bucket_ms))
                marked += len(result.all())
        if marked:
            log.info("fleet rollups: %d buckets of an older history to compute", marked)
        return marked

    async def run(self) -> None:
        """A pass every ``interval_s`` (the first after ``backfill``); a failed pass is
        logged and tried again at the next one, on the database opened afresh (the marks
        wait in the database)."""
        backfilled = False
        while True:
            try:
                if not backfilled:
                    await self.backfill()
                    backfilled = True
                await self.run_once()
            except Exception as exc:
                log.warning("fleet rollups pass failed (%s); next try in %.0f s",
                            one_line(exc), self.interval_s)
                await db.reopen(self.engine)
            await asyncio.sleep(self.interval_s)
