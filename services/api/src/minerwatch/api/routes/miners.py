"""``GET /api/miners`` and ``GET /api/miners/{miner_id}/samples``: the store's history."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import Parameter

from minerwatch.api.database import Database
from minerwatch.api.history import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    BadParameter,
    check_miner_id,
    list_miners,
    miner_samples,
    parse_window,
)
from minerwatch.api.models import MinerEntry
from minerwatch.shared.schemas import Sample

_TS_HELP = (
    "ISO 8601 timestamp, inclusive; with or without an offset (naive means UTC), "
    "e.g. 2026-11-22T10:00:00Z"
)


@get("/api/miners", summary="Every known miner with its info, status and latest sample")
async def miners_index(db: NamedDependency[Database]) -> list[MinerEntry]:
    async with db.connect() as conn:
        return await list_miners(conn)


@get(
    "/api/miners/{miner_id:str}/samples",
    summary="A miner's samples, oldest first",
    description=(
        "With `since`: the first `limit` samples from `since` on (up to `until`). "
        "Without `since`: the latest `limit` samples (up to `until`). "
        "Always sorted oldest first; each item is a schema-1 Sample, as on MQTT."
    ),
    raises=[ValidationException, NotFoundException],
)
async def miner_history(
    db: NamedDependency[Database],
    miner_id: str = Parameter(description="the miner id, [a-z0-9_-]{1,64}"),
    since: str | None = Parameter(default=None, description=_TS_HELP),
    until: str | None = Parameter(default=None, description=_TS_HELP),
    limit: int | None = Parameter(
        default=None,
        description=f"at most this many samples, 1..{MAX_LIMIT} (default {DEFAULT_LIMIT})",
        ge=1,
        le=MAX_LIMIT,
    ),
) -> list[Sample]:
    try:
        check_miner_id(miner_id)
        window = parse_window(since, until, limit)
    except BadParameter as exc:
        raise ValidationException(str(exc)) from None
    async with db.connect() as conn:
        found = await miner_samples(conn, miner_id, window)
    if found is None:
        raise NotFoundException(f"no miner {miner_id!r} is known (no info, status or samples)")
    return found
