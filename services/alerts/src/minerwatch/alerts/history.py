"""The one thing the alerts service reads from the history database: the hourly mean
hashrates of the last day (``rollups_1h``), to seed each miner's baseline at start.

Read only, once. A database that is not there or does not open is one warning line and
the baselines simply build up from live samples; it never stops the service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from minerwatch.shared.errors import one_line

log = logging.getLogger("minerwatch.alerts")

#: What the seed hands each row to: (miner id, hour start in epoch s, sum, count).
Seed = Callable[[str, float, float, int], None]


def sqlite_missing(url: str) -> Path | None:
    """The path of a ``sqlite:///`` database file that does not exist (opening it would
    create it), else None."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


async def seed_hourly(url: str, since_s: float, seed: Seed) -> int:
    """Hand every ``rollups_1h`` row from ``since_s`` on to ``seed``; the rows read, or
    -1 when the database could not be read (logged as one warning)."""
    try:
        from sqlalchemy import select

        from minerwatch.shared import db
    except ImportError as exc:  # installed without the database extra
        log.warning("hashrate baselines start empty: no database support (%s)", one_line(exc))
        return -1
    try:
        missing = sqlite_missing(url)
        if missing is not None:
            log.info("hashrate baselines start empty: no history at %s yet", missing)
            return 0
        engine = db.create_engine(url)
    except Exception as exc:
        log.warning("hashrate baselines start empty: the database URL does not open: %s",
                    one_line(exc))
        return -1
    table = db.rollups_1h
    query = select(table.c.miner_id, table.c.bucket_ms, table.c.hashrate_ths_sum,
                   table.c.hashrate_ths_n).where(table.c.bucket_ms >= int(since_s * 1000))
    rows = 0
    try:
        async with engine.connect() as conn:
            result = await conn.stream(query)
            async for miner_id, bucket_ms, total, count in result:
                seed(str(miner_id), bucket_ms / 1000, float(total or 0.0), int(count or 0))
                rows += 1
    except Exception as exc:
        log.warning("hashrate baselines start empty: reading the history failed: %s: %s",
                    type(exc).__name__, one_line(exc))
        return -1
    finally:
        await engine.dispose()
    log.info("hashrate baselines seeded from %d hourly rollups", rows)
    return rows
