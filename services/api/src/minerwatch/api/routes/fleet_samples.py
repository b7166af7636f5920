"""``GET /api/fleet/samples``: the fleet's totals per bucket, and ``GET /api/energy``: its
energy (and cost) per UTC day and miner."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.openapi.spec import OpenAPIType
from litestar.params import Parameter

from minerwatch.api.database import Database
from minerwatch.api.fleet_samples import (
    DEFAULT_DAYS,
    FLEET_STEPS,
    MAX_DAYS,
    Energy,
    FleetBucket,
    energy,
    fleet_samples,
    parse_days,
    parse_fleet_step,
)
from minerwatch.api.history import BadParameter, SampleWindow
from minerwatch.api.routes.params import BAD_PARAMETER, NO_DATABASE, WINDOW, optional
from minerwatch.shared.config import Config

_STEP_SCHEMA = optional(OpenAPIType.STRING, enum=list(FLEET_STEPS), default="auto")
_DAY_HELP = ("a date (2026-11-22) or an ISO 8601 timestamp: its UTC day, inclusive")
_DAY_SCHEMA = optional(OpenAPIType.STRING)


@get(
    "/api/fleet/samples",
    summary="The fleet's hashrate and power per bucket, with how many miners each covers",
    description=(
        "One item per 1-minute or 1-hour bucket in which any miner had samples, oldest "
        "first (no item where no miner had any: a gap): `hashrate_ths` is the sum over "
        "miners of their mean hashrate in the bucket, `hashrate_miners` how many miners "
        "that sum covers; `power_w` the sum of the mean power of the miners that report "
        "power (`power_miners` of them; null when none does); `miners` how many miners "
        "had any sample. `since`, `until` and `limit` work as for a miner's samples; "
        "`step=auto` (the default) picks the finer resolution whose buckets over "
        "[`since`, `until` or now] fit in `limit`, as a miner's `step=auto` does "
        "(without `since`: 1m)."),
    responses={400: BAD_PARAMETER, 503: NO_DATABASE},
    dependencies=WINDOW,
)
async def fleet_samples_handler(
    db: NamedDependency[Database],
    window: NamedDependency[SampleWindow],
    step: str | None = Parameter(
        default=None, description=f"one of {', '.join(FLEET_STEPS)} (default auto)",
        schema_extra=_STEP_SCHEMA),
) -> list[FleetBucket]:
    try:
        resolution = parse_fleet_step(step)
    except BadParameter as exc:
        raise ValidationException(str(exc)) from None
    async with db.connect() as conn:
        return await fleet_samples(conn, window, resolution)


@get(
    "/api/energy",
    summary="Energy per UTC day, per miner and for the fleet, and its cost",
    description=(
        "For each UTC day from `since` (default: the "
        f"{DEFAULT_DAYS} days up to `until`) to `until` (default: today), at most "
        f"{MAX_DAYS} days: `kwh` of the "
        "fleet, each reporting miner's in `miners`, and `miners_reporting` (miners that "
        "report power that day). A miner's energy is the sum, over the hours with data in "
        "the 1-hour rollups, of its mean power in that hour times one hour. `cost` is "
        "`kwh` times `[api] energy_price_per_kwh` (`price_per_kwh`, in `currency`), null "
        "when no price is set."),
    responses={400: BAD_PARAMETER, 503: NO_DATABASE},
)
async def energy_handler(
    db: NamedDependency[Database],
    config: NamedDependency[Config],
    since: str | None = Parameter(default=None, description=_DAY_HELP,
                                  schema_extra=_DAY_SCHEMA),
    until: str | None = Parameter(default=None, description=_DAY_HELP,
                                  schema_extra=_DAY_SCHEMA),
) -> Energy:
    try:
        first, last = parse_days(since, until)
    except BadParameter as exc:
        raise ValidationException(str(exc)) from None
    async with db.connect() as conn:
        return await energy(conn, first, last, config.api.energy_price_per_kwh,
                            config.api.currency)
