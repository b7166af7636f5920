"""``/api/alerts``: the firing alerts, and mutes (``POST /api/alerts/mute``, ``GET
/api/alerts/mutes``, ``DELETE /api/alerts/mutes/{mute_id}``).

Alerts and mutes are retained on the broker; these read the relay's cache of them and
publish through the relay, so they work while the database is down.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from litestar import delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import JSONBody, Parameter

from minerwatch.api.fleet import firing_by_miner
from minerwatch.api.history import BadParameter
from minerwatch.api.models import MuteRequest
from minerwatch.api.mutes import active, new_mute, new_mute_id
from minerwatch.api.relay import Relay
from minerwatch.api.routes.params import BAD_PARAMETER, NO_BROKER, answer
from minerwatch.shared.schemas import AlertEvent, Mute, encode
from minerwatch.shared.topics import MINER_ID_RE, mute_topic

_UNKNOWN_MUTE = answer("No mute with this id is on the broker")


def _now_ms() -> int:
    return int(time.time() * 1000)


@get("/api/alerts", summary="The firing alerts, each with muted as currently muted",
     description=(
         "Every alert whose retained state is `firing`, sorted by miner and rule, as "
         "published on `{base}/alerts/{miner_id}/{rule}`, with `muted` true when an "
         "active mute covers it now."))
async def alerts_index(relay: NamedDependency[Relay]) -> list[AlertEvent]:
    firing = firing_by_miner(relay.alerts(), relay.mutes(), _now_ms())
    return [alert for alerts in firing.values() for alert in alerts]


@post(
    "/api/alerts/mute",
    summary="Mute notifications of a miner and/or a rule until a time",
    description=(
        "Give `miner_id`, `rule` or both, and exactly one of `until` (ISO 8601, in the "
        "future, at most a year ahead) or `for_s` (seconds from now). Publishes the Mute "
        "retained on `{base}/mutes/{id}` with a new random id. Muted alerts are still "
        "published and recorded, with `muted` true; nobody is notified."),
    responses={400: BAD_PARAMETER, 503: NO_BROKER},
)
async def mute_handler(data: JSONBody[MuteRequest], relay: NamedDependency[Relay]) -> Mute:
    try:
        mute = new_mute(data, now=datetime.now(UTC), mute_id=new_mute_id())
    except BadParameter as exc:
        raise ValidationException(str(exc)) from None
    await relay.publish(mute_topic(relay.base, mute.id), encode(mute))
    return mute


@get("/api/alerts/mutes", summary="The active mutes, soonest to end first")
async def mutes_index(relay: NamedDependency[Relay]) -> list[Mute]:
    return active(relay.mutes(), _now_ms())


@delete(
    "/api/alerts/mutes/{mute_id:str}",
    status_code=200,
    summary="Lift a mute (its retained topic is cleared)",
    responses={400: BAD_PARAMETER, 404: _UNKNOWN_MUTE, 503: NO_BROKER},
)
async def unmute_handler(
    relay: NamedDependency[Relay],
    mute_id: str = Parameter(description="the mute's id",
                             schema_extra={"pattern": MINER_ID_RE.pattern}),
) -> Mute:
    if not MINER_ID_RE.match(mute_id):
        raise ValidationException(f"mute_id: {mute_id[:80]!r} is not a mute id "
                                  "(1-64 characters of a-z, 0-9, _ and -)")
    mute = next((mute for mute in relay.mutes() if mute.id == mute_id), None)
    if mute is None:
        raise NotFoundException(f"no mute {mute_id!r} is on the broker")
    await relay.publish(mute_topic(relay.base, mute_id), b"")
    return mute
