"""Forgetting a miner: which retained topics to clear, and what happens to its rows.

Forgetting clears (empty retained payload) the miner's ``topics.MINER_TOPICS``, its Home
Assistant discovery configs (``homeassistant.discovery_topics``) and its retained alert
topics, and marks it in the database (``miners.forgotten_ms``): its history
stays, and the fleet leaves it out until something newer comes (``presence.forgotten``).
Purging deletes its rows from every table instead (and marks its buckets for the store
to recompute the fleet rollups without it).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, delete, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from minerwatch.shared.db import (
    FLEET_ROLLUPS,
    FleetResolution,
    alert_events,
    command_events,
    fleet_dirty,
    miners,
    rollups_1h,
    rollups_1m,
    samples,
    status_events,
    tune_runs,
    tune_steps,
)
from minerwatch.shared.homeassistant import discovery_topics
from minerwatch.shared.topics import MINER_TOPICS

#: Every table holding rows of a miner, the ``miners`` row last.
MINER_TABLES: tuple[Table, ...] = (samples, rollups_1m, rollups_1h, status_events,
                                   alert_events, command_events, tune_steps, tune_runs,
                                   miners)


def miner_topics(base: str, miner_id: str, discovery_prefix: str | None = None) -> list[str]:
    """The retained topics of one miner, besides its alerts: with a discovery prefix, its
    Home Assistant configs first (whether discovery is on now or was once)."""
    configs = [] if discovery_prefix is None else discovery_topics(
        discovery_prefix, base, miner_id)
    return [*configs, *(spec.topic(base, miner_id=miner_id) for spec in MINER_TOPICS)]


async def mark_forgotten(conn: AsyncConnection, miner_id: str, now_ms: int) -> None:
    """Set ``forgotten_ms``; a miner known only by its samples gets a row for it."""
    result = await conn.execute(
        update(miners).where(miners.c.miner_id == miner_id).values(forgotten_ms=now_ms))
    if not result.rowcount:
        await conn.execute(miners.insert().values(miner_id=miner_id, forgotten_ms=now_ms))


def _mark_buckets(dialect: str, fleet: FleetResolution, miner_id: str) -> Any:
    """Mark (as the store does for new samples) every fleet bucket the miner has rows in:
    the store recomputes them without it."""
    source = fleet.source.table.c
    buckets = select(literal(fleet.step_ms), source.bucket_ms, literal(0)).where(
        source.miner_id == miner_id)
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(fleet_dirty)
    statement = insert.from_select(["step_ms", "bucket_ms", "version"], buckets)
    return statement.on_conflict_do_update(
        index_elements=["step_ms", "bucket_ms"], set_={"version": fleet_dirty.c.version + 1})


async def purge(conn: AsyncConnection, miner_id: str) -> None:
    """Delete every row of the miner, history included; the fleet rollups of its buckets
    are marked to be recomputed."""
    for fleet in FLEET_ROLLUPS:
        await conn.execute(_mark_buckets(conn.dialect.name, fleet, miner_id))
    for table in MINER_TABLES:
        await conn.execute(delete(table).where(table.c.miner_id == miner_id))
