"""What several routes declare alike: the miner id path parameter, the time window
(``since``, ``until``, ``limit``) as one dependency, and the documented error answers."""

from __future__ import annotations

from litestar.di import Provide
from litestar.exceptions import NotFoundException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIType
from litestar.params import Parameter

from minerwatch.api.history import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    BadParameter,
    SampleWindow,
    check_miner_id,
    parse_window,
)
from minerwatch.api.models import ErrorBody
from minerwatch.shared.topics import MINER_ID_RE

TS_HELP = (
    "ISO 8601 timestamp, inclusive; with or without an offset (naive means UTC), "
    "e.g. 2026-11-22T10:00:00Z; years 1 to 9999 in UTC"
)


def optional(kind: OpenAPIType, **schema: object) -> dict[str, object]:
    """The schema of an optional query parameter: its type alone (Litestar would write
    ``oneOf: [<type>, null]``, and a query string cannot carry a null)."""
    return {"oneOf": None, "type": kind, **schema}


#: Declared as a date-time; a time without an offset is taken as UTC too.
TS_SCHEMA = optional(OpenAPIType.STRING, format="date-time")
TS_EXAMPLES = [Example(summary="UTC", value="2026-11-22T10:00:00Z"),
               Example(summary="with an offset", value="2026-11-22T12:00:00+02:00")]
ID_HELP = "the miner id, [a-z0-9_-]{1,64}"
ID_SCHEMA = {"pattern": MINER_ID_RE.pattern, "minLength": 1, "maxLength": 64}
LIMIT_HELP = f"at most this many items, 1..{MAX_LIMIT} (default {DEFAULT_LIMIT})"
LIMIT_SCHEMA = optional(OpenAPIType.INTEGER, default=DEFAULT_LIMIT)


def answer(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description,
                        generate_examples=False)


BAD_PARAMETER = answer("A parameter is wrong; `detail` names it first (e.g. `since: ...`)")
UNKNOWN_MINER = answer("No miner with this id is known (no info, status or samples)")
NO_DATABASE = answer("The history database cannot be used right now")
NO_BROKER = answer("The broker cannot be reached right now: nothing was published")
NO_BROKER_OR_DATABASE = answer(
    "The broker (then nothing was published) or the database cannot be used right now")
HISTORY_ANSWERS = {400: BAD_PARAMETER, 404: UNKNOWN_MINER, 503: NO_DATABASE}


def not_found(miner_id: str) -> NotFoundException:
    return NotFoundException(f"no miner {miner_id!r} is known (no info, status or samples)")


def checked(miner_id: str) -> str:
    """The miner id, or a 400 naming ``miner_id``."""
    try:
        return check_miner_id(miner_id)
    except BadParameter as exc:
        raise ValidationException(str(exc)) from None


def time_window(
    since: str | None = Parameter(default=None, description=TS_HELP, schema_extra=TS_SCHEMA,
                                  examples=TS_EXAMPLES),
    until: str | None = Parameter(default=None, description=TS_HELP, schema_extra=TS_SCHEMA,
                                  examples=TS_EXAMPLES),
    limit: int | None = Parameter(default=None, description=LIMIT_HELP, ge=1, le=MAX_LIMIT,
                                  schema_extra=LIMIT_SCHEMA),
) -> SampleWindow:
    """The ``window`` dependency: ``since``, ``until`` and ``limit``, checked."""
    try:
        return parse_window(since, until, limit)
    except BadParameter as exc:
        raise ValidationException(str(exc)) from None


#: ``dependencies=WINDOW`` on a handler gives it ``window: SampleWindow``.
WINDOW = {"window": Provide(time_window, sync_to_thread=False)}
