"""``GET /api/miners``, a miner's label and forgetting (``PATCH`` / ``DELETE
/api/miners/{miner_id}``), and its history: ``/api/miners/{miner_id}/samples`` and
``/api/miners/{miner_id}/events`` (status changes, alerts and commands)."""

from __future__ import annotations

import time
from typing import Annotated

from litestar import Router, delete, get, patch
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.openapi.spec import OpenAPIType
from litestar.params import JSONBody, Parameter, QueryParameter

from minerwatch.api.database import Database
from minerwatch.api.fleet import build_fleet, firing_by_miner, live_miners
from minerwatch.api.forget import mark_forgotten, miner_topics, purge
from minerwatch.api.history import (
    STEPS,
    BadParameter,
    MinerEvent,
    SampleRollup,
    SampleWindow,
    is_known,
    list_miners,
    miner_events,
    miner_samples,
    parse_step,
)
from minerwatch.api.labels import check_label
from minerwatch.api.models import Forgotten, LabelChange, LabelSet, MinerEntry
from minerwatch.api.presence import stale_after_s
from minerwatch.api.relay import Relay
from minerwatch.api.routes.params import (
    BAD_PARAMETER,
    HISTORY_ANSWERS,
    ID_HELP,
    ID_SCHEMA,
    NO_BROKER_OR_DATABASE,
    NO_DATABASE,
    UNKNOWN_MINER,
    WINDOW,
    checked,
    not_found,
    optional,
)
from minerwatch.shared.config import Config
from minerwatch.shared.fields import ROLLUP_MEAN
from minerwatch.shared.schemas import MinerLabel, Sample, encode, now_ts
from minerwatch.shared.topics import label_topic

_STEP_SCHEMA = optional(OpenAPIType.STRING, enum=list(STEPS), default="raw")
_CHANGE_ANSWERS = {400: BAD_PARAMETER, 404: UNKNOWN_MINER, 503: NO_BROKER_OR_DATABASE}


@get("/api/miners", summary="Every known miner: label, state (stale included), last seen, "
     "info, status, latest sample and firing alerts", responses={503: NO_DATABASE},
     description=(
         "`state` is `online`, `idle`, `offline`, `stale` or `unknown`. `stale`: the "
         "collector is not online, or the latest sample is older than 3 poll intervals "
         "while the status says online or idle; `state_since` is then the miner's "
         "`last_seen`, the latest of its status's `last_seen` and its sample's `ts`. "
         "A forgotten miner is left out until something newer comes from it."))
async def miners_index(db: NamedDependency[Database], relay: NamedDependency[Relay],
                       config: NamedDependency[Config]) -> list[MinerEntry]:
    async with db.connect() as conn:
        stored = await list_miners(conn)
    now_ms = int(time.time() * 1000)
    return build_fleet(
        stored, live_miners(relay.miner_payloads()),
        firing_by_miner(relay.alerts(), relay.mutes(), now_ms),
        collector_online=relay.service("collector").state == "online", now_ms=now_ms,
        stale_after_ms=int(stale_after_s(config.collector.poll_interval_s) * 1000))


async def _known(db: Database, relay: Relay, miner_id: str) -> None:
    """404 unless the broker's retained state or the history knows the miner."""
    if relay.knows_miner(miner_id):
        return
    async with db.connect() as conn:
        if not await is_known(conn, miner_id):
            raise not_found(miner_id)


@patch(
    "/",
    summary="Set or remove a miner's label (its display name)",
    description=(
        "Publishes `{\"label\", \"ts\"}` retained on `{base}/miners/{miner_id}/label`; the "
        "collector folds it into the miner's info, over the label of its config. "
        "`{\"label\": null}` removes it. The id stays the stable slug."),
    responses=_CHANGE_ANSWERS,
)
async def miner_label_handler(
    data: JSONBody[LabelChange], db: NamedDependency[Database], relay: NamedDependency[Relay],
    miner_id: str = Parameter(description=ID_HELP, schema_extra=ID_SCHEMA),
) -> LabelSet:
    checked(miner_id)
    try:
        label = check_label(data.label)
    except BadParameter as exc:
        raise ValidationException(str(exc)) from None
    await _known(db, relay, miner_id)
    await relay.publish(label_topic(relay.base, miner_id),
                        encode(MinerLabel(label=label, ts=now_ts())))
    return LabelSet(miner_id=miner_id, label=label)


@delete(
    "/",
    status_code=200,
    summary="Forget a miner: clear its retained topics, keep (or purge) its history",
    description=(
        "Clears (empty retained) the miner's sample, status, info and label topics, its "
        "Home Assistant discovery configs and every retained alert of it, and marks it "
        "forgotten: it leaves `/api/miners` until it answers again. Its history stays "
        "unless `purge=true`, which deletes its rows from every table."),
    responses=_CHANGE_ANSWERS,
)
async def forget_miner_handler(
    db: NamedDependency[Database], relay: NamedDependency[Relay],
    config: NamedDependency[Config],
    miner_id: str = Parameter(description=ID_HELP, schema_extra=ID_SCHEMA),
    purge_history: Annotated[bool, QueryParameter(
        name="purge", description="also delete the miner's history")] = False,
) -> Forgotten:
    checked(miner_id)
    await _known(db, relay, miner_id)
    cleared = [*miner_topics(relay.base, miner_id, config.homeassistant.prefix),
               *relay.alert_topics(miner_id)]
    for topic in cleared:
        await relay.publish(topic, b"")
    async with db.begin() as conn:
        if purge_history:
            await purge(conn, miner_id)
        else:
            await mark_forgotten(conn, miner_id, int(time.time() * 1000))
    return Forgotten(miner_id=miner_id, cleared=cleared, purged=purge_history)


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
    dependencies=WINDOW,
)
async def miner_samples_handler(
    db: NamedDependency[Database],
    window: NamedDependency[SampleWindow],
    miner_id: str = Parameter(description=ID_HELP, schema_extra=ID_SCHEMA),
    step: str | None = Parameter(
        default=None, description=f"one of {', '.join(STEPS)} (default raw)",
        schema_extra=_STEP_SCHEMA),
) -> list[Sample] | list[SampleRollup]:
    checked(miner_id)
    try:
        resolution = parse_step(step)
    except BadParameter as exc:
        raise ValidationException(str(exc)) from None
    async with db.connect() as conn:
        found = await miner_samples(conn, miner_id, window, resolution)
    if found is None:
        raise not_found(miner_id)
    return found


@get(
    "/events",
    summary="A miner's status changes, alerts and commands, oldest first",
    description=(
        "Status changes (`{\"type\": \"status\", \"ts\", \"status\": <status payload>}`, "
        "`ts` being the status's `since`), alert events (`{\"type\": \"alert\", \"ts\", "
        "\"alert\": <alert payload>}`) and commands (`{\"type\": \"command\", \"ts\", "
        "\"miner_id\", \"action\", \"by\", \"status\", \"message\", \"changed\", "
        "\"before\", \"after\", \"requested\", \"id\"}`: the audit of every command that "
        "could change something, `ts` being when it ended, `requested` when it was asked; "
        "read-only `settings` commands are not kept), merged in time order; the status and "
        "alert payloads are exactly as published on MQTT. `since`, `until` and `limit` work "
        "as for samples."
    ),
    responses=HISTORY_ANSWERS,
    dependencies=WINDOW,
)
async def miner_events_handler(
    db: NamedDependency[Database],
    window: NamedDependency[SampleWindow],
    miner_id: str = Parameter(description=ID_HELP, schema_extra=ID_SCHEMA),
) -> list[MinerEvent]:
    checked(miner_id)
    async with db.connect() as conn:
        found = await miner_events(conn, miner_id, window)
    if found is None:
        raise not_found(miner_id)
    return found


#: One miner: its label, forgetting it, its samples and events (one router in the app).
miner_history = Router(
    path="/api/miners/{miner_id:str}",
    route_handlers=[miner_label_handler, forget_miner_handler, miner_samples_handler,
                    miner_events_handler],
)
