"""Retention: deleting history older than each resolution keeps, a little at a time.

Raw samples are kept ``keep_raw_days``, 1-minute rollups ``keep_1m_days`` and 1-hour
rollups ``keep_1h_days`` (0 keeps forever), the fleet rollups as long as the per-miner
rollups of their resolution. Deletes go miner by miner through the primary
key, at most ``batch`` rows per transaction, so even a long backlog (after weeks without
a store) never holds the database for long: the writer's transactions slip in between.

Rollups are fed only by samples that were new, so a sample older than the raw retention
is refused at the door (``Horizon``): its row would already be gone, and a redelivered
copy would count twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, Table, bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from minerwatch.shared import db
from minerwatch.shared.config import StoreConfig
from minerwatch.shared.errors import one_line

log = logging.getLogger("minerwatch.store")

DAY_MS = 86_400_000

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Keep:
    """How long one table keeps its rows, by its time column; 0 days: forever."""

    table: Table
    column: str
    days: float


def policy(config: StoreConfig) -> list[Keep]:
    # Events are kept for good, as the status and alert events always were: the command
    # audit and the autotune runs too (a few small rows per miner and day; purging a
    # miner deletes them).
    keep_rollups = {"1m": config.keep_1m_days, "1h": config.keep_1h_days}
    return [
        Keep(db.samples, "ts_ms", config.keep_raw_days),
        *(Keep(r.table, "bucket_ms", keep_rollups[r.name]) for r in db.ROLLUPS),
        # the fleet rollups live as long as the per-miner rollups they are made from
        *(Keep(f.table, "bucket_ms", keep_rollups[f.name]) for f in db.FLEET_ROLLUPS),
    ]


def cutoff_ms(now_s: float, days: float) -> int | None:
    """Rows before this moment (epoch ms) are past retention; None when kept forever."""
    if days <= 0:
        return None
    return int(now_s * 1000) - int(days * DAY_MS)


class Horizon:
    """The oldest sample the store still takes: ``keep_raw_days`` back from now."""

    def __init__(self, keep_raw_days: float, clock: Clock = time.time) -> None:
        self.keep_raw_days = keep_raw_days
        self.clock = clock

    def too_old(self, ts_ms: int) -> bool:
        cutoff = cutoff_ms(self.clock(), self.keep_raw_days)
        return cutoff is not None and ts_ms < cutoff


def miner_ids_query(table: Table) -> Select[Any]:
    """Every miner id in ``table``, by a loose index scan: one primary key seek per miner
    instead of reading all of its rows."""
    ids = db.miner_ids_cte(table, "retention_ids")
    return select(ids.c.miner_id).where(ids.c.miner_id.is_not(None))


def per_miner(table: Table) -> bool:
    return "miner_id" in table.c


def delete_query(keep: Keep, batch: int) -> Any:
    """Up to ``batch`` rows of one miner older than the cutoff (both bound parameters);
    of a table without miners (the fleet's), up to ``batch`` rows older than the cutoff."""
    table, column = keep.table, keep.table.c[keep.column]
    if not per_miner(table):
        oldest = select(column).where(column < bindparam("cutoff")).limit(batch)
        return delete(table).where(column.in_(oldest))
    oldest = (
        select(column)
        .where(table.c.miner_id == bindparam("miner_id"), column < bindparam("cutoff"))
        .limit(batch)
    )
    return delete(table).where(table.c.miner_id == bindparam("miner_id"), column.in_(oldest))


class Retention:
    """Deletes what is past retention: ``run_once`` for one pass, ``run`` forever."""

    def __init__(
        self,
        engine: AsyncEngine,
        keep: list[Keep],
        *,
        batch: int = 5000,
        interval_s: float = 600.0,
        clock: Clock = time.time,
    ) -> None:
        self.engine = engine
        self.keep = keep
        self.batch = batch
        self.interval_s = interval_s
        self.clock = clock

    async def run_once(self) -> dict[str, int]:
        """One pass over every table; the number of rows deleted per table."""
        now = self.clock()
        deleted: dict[str, int] = {}
        for keep in self.keep:
            cutoff = cutoff_ms(now, keep.days)
            if cutoff is None:
                continue
            deleted[keep.table.name] = await self._expire(keep, cutoff)
        return deleted

    async def _expire(self, keep: Keep, cutoff: int) -> int:
        miner_ids: Sequence[str | None] = [None]
        if per_miner(keep.table):
            async with self.engine.connect() as conn:
                miner_ids = (await conn.execute(miner_ids_query(keep.table))).scalars().all()
        statement = delete_query(keep, self.batch)
        total = 0
        for miner_id in miner_ids:
            params: dict[str, Any] = {"cutoff": cutoff}
            if miner_id is not None:
                params["miner_id"] = miner_id
            while True:
                async with self.engine.begin() as conn:
                    result = await conn.execute(statement, params)
                total += result.rowcount
                if result.rowcount < self.batch:
                    break
                await asyncio.sleep(0)  # a long backlog: let the writer in between
        return total

    async def run(self) -> None:
        """A pass now and every ``interval_s``; a failed pass is logged and tried again at
        the next interval, on the database opened afresh (retention is never a reason to
        stop storing)."""
        while True:
            try:
                deleted = await self.run_once()
            except Exception as exc:
                log.warning("retention pass failed (%s); next try in %.0f s",
                            one_line(exc), self.interval_s)
                await db.reopen(self.engine)
            else:
                if any(deleted.values()):
                    log.info("retention deleted %s", ", ".join(
                        f"{count} {name}" for name, count in deleted.items() if count))
            await asyncio.sleep(self.interval_s)
