"""Forgetting a miner: which retained topics to clear, and what happens to its rows.

Forgetting clears (empty retained payload) the miner's ``topics.MINER_TOPICS`` and its
retained alert topics, and marks it in the database (``miners.forgotten_ms``): its history
stays, and the fleet leaves it out until something newer comes (``presence.forgotten``).
Purging deletes its rows from every table instead.
"""

from __future__ import annotations

from sqlalchemy import Table, delete, update
from sqlalchemy.ext.asyncio import AsyncConnection

from minerwatch.shared.db import (
    alert_events,
    miners,
    rollups_1h,
    rollups_1m,
    samples,
    status_events,
)
from minerwatch.shared.topics import MINER_TOPICS

#: Every table holding rows of a miner, the ``miners`` row last.
MINER_TABLES: tuple[Table, ...] = (samples, rollups_1m, rollups_1h, status_events,
                                   alert_events, miners)


def miner_topics(base: str, miner_id: str) -> list[str]:
    """The retained topics of one miner, besides its alerts."""
    return [spec.topic(base, miner_id=miner_id) for spec in MINER_TOPICS]


async def mark_forgotten(conn: AsyncConnection, miner_id: str, now_ms: int) -> None:
    """Set ``forgotten_ms``; a miner known only by its samples gets a row for it."""
    result = await conn.execute(
        update(miners).where(miners.c.miner_id == miner_id).values(forgotten_ms=now_ms))
    if not result.rowcount:
        await conn.execute(miners.insert().values(miner_id=miner_id, forgotten_ms=now_ms))


async def purge(conn: AsyncConnection, miner_id: str) -> None:
    """Delete every row of the miner, history included."""
    for table in MINER_TABLES:
        await conn.execute(delete(table).where(table.c.miner_id == miner_id))
