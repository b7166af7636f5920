"""``GET /api/miners`` and a miner's history: ``/api/miners/{miner_id}/samples`` and
``/api/miners/{miner_id}/events``."""

from __future__ import annotations

from litestar import Router, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIType
from litestar.params import Parameter

from minerwatch.api.database import Database
from minerwatch.api.history import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    STEPS,
    BadParameter,
    MinerEvent,
    SampleRollup,
    SampleWindow,
    check_miner_id,
    list_miners,
    miner_events,
    miner_samples,
    parse_step,
    parse_window,
)
from minerwatch.api.models import ErrorBody, MinerEntry
from minerwatch.shared.fields import ROLLUP_MEAN
from minerwatch.shared.schemas import Sample
from minerwatch.shared.topics import MINER_ID_RE

_TS_HELP = (
    "ISO 8601 timestamp, inclusive; with or without an offset (naive means UTC), "
    "e.g. 2026-11-22T10:00:00Z; years 1 to 9999 in UTC"
)


def _optional(kind: OpenAPIType, **schema: object) -> dict[str, object]:
    """The schema of an optional query parameter: its type alone (Litestar would write
    ``oneOf: [<type>, null]``, and a query string cannot carry a null)."""
    return {"oneOf": None, "type": kind, **schema}


#: Declared as a date-time; a time without an offset is taken as UTC too.
_TS_SCHEMA = _optional(OpenAPIType.STRING, format="date-time")
_TS_EXAMPLES = [Example(summary="UTC", value="2026-11-22T10:00:00Z"),
                Example(summary="with an offset", value="2026-11-22T12:00:00+02:00")]
_ID_HELP = "the miner id, [a-z0-9_-]{1,64}"
_ID_SCHEMA = {"pattern": MINER_ID_RE.pattern, "minLength": 1, "maxLength": 64}
_LIMIT_HELP = f"at most this many items, 1..{MAX_LIMIT} (default {DEFAULT_LIMIT})"
_STEP_SCHEMA = _optional(OpenAPIType.STRING, enum=list(STEPS), default="raw")
_LIMIT_SCHEMA = _optional(OpenAPIType.INTEGER, default=DEFAULT_LIMIT)


def _answer(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description,
                        generate_examples=False)


_BAD_PARAMETER = _answer("A parameter is wrong; `detail` names it first (e.g. `since: ...`)")
_UNKNOWN_MINER = _answer("No miner with this id is known (no info, status or samples)")
_NO_DATABASE = _answer("The history database cannot be used right now")
HISTORY_ANSWERS = {400: _BAD_PARAMETER, 404: _UNKNOWN_MINER, 503: _NO_DATABASE}


def _not_found(miner_id: str) -> NotFoundException:
    return NotFoundException(f"no miner {miner_id!r} is known (no info, status or samples)")


def _window(miner_id: str, since: str | None, until: str | None,
            limit: int | None) -> SampleWindow:
    try:
        check_miner_id(miner_id)
        return parse_window(since, until, limit)
    except BadParameter as exc:
        raise ValidationException(str(exc)) from None


@get("/api/miners", summary="Every known miner with its info, status and latest sample",
     responses={503: _NO_DATABASE})
async def miners_index(db: NamedDependency[Database]) -> list[MinerEntry]:
    async with db.connect() as conn:
        return await list_miners(conn)


@get(
    "/samples",
    summary="A miner's samples, oldest first, raw or rolled up",
    description=(
        "With `since`: the first `limit` items from `since` on (up to `until`). "
        "Without `since`: the latest `limit` items (up to `until`). Always oldest first.\n\n"
        "`step=raw` (the default): each item is a schema-1 Sample, exactly as on MQTT. "
        "`step=1m` or `step=1h`: each item is a SampleRollup, one per minute or hour: the "
        f"Sample fields with `ts` the bucket's start, gauges ({', '.join(ROLLUP_MEAN)}) "
        "averaged, efficiency_jth from the averages, the other fields (counters, fans, pool, "
        "is_mining, ...) from the bucket's newest sample; plus `step_s`, `samples` (how many "
        "samples the bucket holds) and `<gauge>_min` / `<gauge>_max`. The bucket holding "
        "`since` is included. `step=auto`: the finest of these whose items over "
        "[`since`, `until` or now] fit in `limit`, skipping a resolution whose history "
        "starts after `since` when a coarser one goes further back (raw samples and 1-minute "
        "rollups are kept for fewer days); without `since` it means raw."
    ),
    responses=HISTORY_ANSWERS,
)
async def miner_samples_handler(
    db: NamedDependency[Database],
    miner_id: str = Parameter(description=_ID_HELP, schema_extra=_ID_SCHEMA),
    since: str | None = Parameter(default=None, description=_TS_HELP, schema_extra=_TS_SCHEMA,
                                  examples=_TS_EXAMPLES),
    until: str | None = Parameter(default=None, description=_TS_HELP, schema_extra=_TS_SCHEMA,
                                  examples=_TS_EXAMPLES),
    limit: int | None = Parameter(default=None, description=_LIMIT_HELP, ge=1, le=MAX_LIMIT,
                                  schema_extra=_LIMIT_SCHEMA),
    step: str | None = Parameter(
        default=None, description=f"one of {', '.join(STEPS)} (default raw)",
        schema_extra=_STEP_SCHEMA),
) -> list[Sample] | list[SampleRollup]:
    window = _window(miner_id, since, until, limit)
    try:
        resolution = parse_step(step)
    except BadParameter as exc:
        raise ValidationException(str(exc)) from None
    async with db.connect() as conn:
        found = await miner_samples(conn, miner_id, window, resolution)
    if found is None:
        raise _not_found(miner_id)
    return found


@get(
    "/events",
    summary="A miner's status changes and alerts, oldest first",
    description=(
        "Status changes (`{\"type\": \"status\", \"ts\", \"status\": <status payload>}`, "
        "`ts` being the status's `since`) and alert events (`{\"type\": \"alert\", \"ts\", "
        "\"alert\": <alert payload>}`), merged in time order; the payloads are exactly as "
        "published on MQTT. `since`, `until` and `limit` work as for samples."
    ),
    responses=HISTORY_ANSWERS,
)
async def miner_events_handler(
    db: NamedDependency[Database],
    miner_id: str = Parameter(description=_ID_HELP, schema_extra=_ID_SCHEMA),
    since: str | None = Parameter(default=None, description=_TS_HELP, schema_extra=_TS_SCHEMA,
                                  examples=_TS_EXAMPLES),
    until: str | None = Parameter(default=None, description=_TS_HELP, schema_extra=_TS_SCHEMA,
                                  examples=_TS_EXAMPLES),
    limit: int | None = Parameter(default=None, description=_LIMIT_HELP, ge=1, le=MAX_LIMIT,
                                  schema_extra=_LIMIT_SCHEMA),
) -> list[MinerEvent]:
    window = _window(miner_id, since, until, limit)
    async with db.connect() as conn:
        found = await miner_events(conn, miner_id, window)
    if found is None:
        raise _not_found(miner_id)
    return found


#: One miner's history, samples and events (registered in the app as one router).
miner_history = Router(
    path="/api/miners/{miner_id:str}",
    route_handlers=[miner_samples_handler, miner_events_handler],
)
