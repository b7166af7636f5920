"""``GET /api/miners/{miner_id}/tune-runs``: a miner's autotune runs, newest first."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from litestar.params import Parameter

from minerwatch.api.database import Database
from minerwatch.api.history import TUNE_RUNS_DEFAULT, TUNE_RUNS_MAX, TuneRun, miner_tune_runs
from minerwatch.api.routes.params import (
    BAD_PARAMETER,
    ID_HELP,
    ID_SCHEMA,
    NO_DATABASE,
    UNKNOWN_MINER,
    checked,
    not_found,
)


@get(
    "/api/miners/{miner_id:str}/tune-runs",
    summary="A miner's autotune runs, newest first, each with its steps",
    description=(
        "Each run as last published on `{base}/miners/{miner_id}/tune` (a TuneProgress "
        "without its live `phase` and `progress`): `state` (`running`, `done`, `aborted` "
        "or `failed`), who started it (`by`), the `original` settings, every measured "
        "step in order (frequency, voltage, hashrate against what the frequency should "
        "give, power, efficiency, temperatures, reject ratio, and whether it was `stable` "
        "or why not), `best` (an index into `steps`) and what was `applied` at the end "
        "(the best step, or `original` again on abort or failure). At most `limit` runs."),
    responses={400: BAD_PARAMETER, 404: UNKNOWN_MINER, 503: NO_DATABASE},
)
async def tune_runs_handler(
    db: NamedDependency[Database],
    miner_id: str = Parameter(description=ID_HELP, schema_extra=ID_SCHEMA),
    limit: int = Parameter(
        default=TUNE_RUNS_DEFAULT, ge=1, le=TUNE_RUNS_MAX,
        description=f"at most this many runs, 1..{TUNE_RUNS_MAX} (default "
                    f"{TUNE_RUNS_DEFAULT})"),
) -> list[TuneRun]:
    checked(miner_id)
    async with db.connect() as conn:
        found = await miner_tune_runs(conn, miner_id, limit)
    if found is None:
        raise not_found(miner_id)
    return found
