"""``GET /api/events``: the fleet's status changes, alerts and commands, oldest first."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.openapi.spec import OpenAPIType
from litestar.params import Parameter, QueryParameter

from minerwatch.api.database import Database
from minerwatch.api.history import (
    EVENT_TYPES,
    BadParameter,
    MinerEvent,
    SampleWindow,
    fleet_events,
    parse_event_type,
)
from minerwatch.api.routes.params import (
    BAD_PARAMETER,
    ID_HELP,
    ID_SCHEMA,
    NO_DATABASE,
    WINDOW,
    checked,
    optional,
)


@get(
    "/api/events",
    summary="The fleet's status changes, alerts and commands, oldest first",
    description=(
        "The items of `/api/miners/{miner_id}/events`, of every miner (or of `miner_id`), "
        "of every kind (or of `type`: `status`, `alert` or `command`). `since`, `until` "
        "and `limit` work as for a miner's samples."),
    responses={400: BAD_PARAMETER, 503: NO_DATABASE},
    dependencies=WINDOW,
)
async def events_index(
    db: NamedDependency[Database],
    window: NamedDependency[SampleWindow],
    miner_id: str | None = Parameter(default=None, description=f"only this miner: {ID_HELP}",
                                     schema_extra=optional(OpenAPIType.STRING, **ID_SCHEMA)),
    event_type: Annotated[str | None, QueryParameter(
        name="type", description="only `status`, only `alert` or only `command` events",
        schema_extra=optional(OpenAPIType.STRING, enum=list(EVENT_TYPES)))] = None,
) -> list[MinerEvent]:
    if miner_id is not None:
        checked(miner_id)
    try:
        kind = parse_event_type(event_type)
    except BadParameter as exc:
        raise ValidationException(str(exc)) from None
    async with db.connect() as conn:
        return await fleet_events(conn, window, miner_id=miner_id, kind=kind)
