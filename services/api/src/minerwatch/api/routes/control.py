"""Acting on a miner through the collector: ``POST /api/miners/{miner_id}/actions/{action}``
(restart, pause, resume, identify), ``GET`` / ``PATCH /api/miners/{miner_id}/settings``
and ``POST`` / ``DELETE /api/miners/{miner_id}/tune``. Every one needs an operator.

Each publishes a Command and waits for the collector's CommandResult (``commands``); the
result's status becomes the HTTP status (``HTTP_STATUS``): 200 with the result when it
is ``ok``, else ``{"status_code", "detail", "result", "limits"}``. 504 when the collector
does not answer within ``[api] command_timeout_s``; 503, without publishing, when the
collector is not online (its retained status), and when the broker cannot be reached or
too many commands wait.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, Router, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.params import JSONBody, Parameter, PathParameter

from minerwatch.api.access import route_role, unauthorized
from minerwatch.api.auth import Principal
from minerwatch.api.commands import Commander, CommandTimeout, TooManyCommands
from minerwatch.api.models import CommandFailure
from minerwatch.api.relay import Relay
from minerwatch.api.routes.params import (
    BAD_PARAMETER,
    ID_HELP,
    ID_SCHEMA,
    answer,
    checked,
)
from minerwatch.shared.control import is_empty
from minerwatch.shared.schemas import (
    Action,
    CommandResult,
    CommandStatus,
    MinerSettings,
    TuneRequest,
)

#: A CommandResult's status as an HTTP status.
HTTP_STATUS: dict[CommandStatus, int] = {
    "ok": 200, "refused": 422, "disabled": 403, "busy": 409, "unknown": 404,
    "unsupported": 501, "failed": 502, "unverified": 502,
}
#: The actions ``POST .../actions/{action}`` takes.
SIMPLE_ACTIONS: tuple[Action, ...] = ("restart", "pause", "resume", "identify")

_OPERATOR = route_role("operator")
_ANSWERS = {
    400: BAD_PARAMETER,
    401: answer("No token or sign-in"),
    403: answer("The role is below operator, or `[control] enabled` is off (`result`)"),
    404: answer("No such miner (known to the api or to the collector)"),
    409: answer("An autotune run holds the miner"),
    422: answer("Refused by the collector: out of range (`limits` says what is allowed)"),
    501: answer("This miner's firmware cannot do it"),
    502: answer("The miner did not do it, or reading back did not show it"),
    503: answer("The collector is not online, the broker cannot be reached (nothing was "
                "published), or too many commands are waiting"),
    504: answer("The collector did not answer within `[api] command_timeout_s`"),
}
_MINER_ID = Parameter(description=ID_HELP, schema_extra=ID_SCHEMA)


def outcome(result: CommandResult) -> Response[CommandResult | CommandFailure]:
    """The HTTP answer of a command's result."""
    status = HTTP_STATUS.get(result.status, 502)
    if status == 200:
        return Response(result)
    return Response(CommandFailure(status_code=status, detail=f"{result.status}: "
                                   f"{result.message}", result=result, limits=result.limits),
                    status_code=status)


async def run(request: Request[Any, Any, Any], relay: Relay, commander: Commander,
              miner_id: str, action: Action, *, settings: MinerSettings | None = None,
              tune: TuneRequest | None = None) -> Response[CommandResult | CommandFailure]:
    """Check, send, wait, answer."""
    checked(miner_id)
    principal = request.scope.get("user")
    if not isinstance(principal, Principal):  # the access check lets nobody else here
        raise HTTPException(status_code=401, detail=unauthorized("no token").detail)
    if relay.listening:
        # Known to be unknown (the relay holds the whole retained state and nothing of
        # it): no need to bother the collector.
        if not relay.uncached and not relay.knows_miner(miner_id):
            raise NotFoundException(f"no miner {miner_id!r} is known (no info, status or "
                                    "samples)")
        # Nobody would carry it out: say so now rather than after command_timeout_s.
        collector = relay.service("collector")
        if collector.state != "online":
            since = f" since {collector.since}" if collector.since else ""
            raise HTTPException(status_code=503, detail=(
                f"the collector is {collector.state}{since}: nobody can carry out the "
                f"{action} command now"))
    try:
        result = await commander.send(miner_id, action, principal.requester,
                                      settings=settings, tune=tune)
    except TooManyCommands as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from None
    except CommandTimeout as exc:
        raise HTTPException(status_code=504, detail=str(exc)) from None
    return outcome(result)


@post("/actions/{action:str}", opt=_OPERATOR, status_code=200, responses=_ANSWERS,
      summary="Restart, pause, resume or identify a miner (through the collector)")
async def action_handler(
    request: Request[Any, Any, Any], relay: NamedDependency[Relay],
    commander: NamedDependency[Commander],
    action: Annotated[str, PathParameter(description=" or ".join(SIMPLE_ACTIONS))],
    miner_id: str = _MINER_ID,
) -> Response[CommandResult | CommandFailure]:
    if action not in SIMPLE_ACTIONS:
        raise ValidationException(f"action: {action[:40]!r} is not one of "
                                  f"{', '.join(SIMPLE_ACTIONS)}")
    return await run(request, relay, commander, miner_id, action)


@get("/settings", opt=_OPERATOR, cache=False, responses=_ANSWERS,
     summary="A miner's current settings and what may be written",
     description="The result's `settings` (as read from the miner) and `limits`.")
async def settings_read(
    request: Request[Any, Any, Any], relay: NamedDependency[Relay],
    commander: NamedDependency[Commander], miner_id: str = _MINER_ID,
) -> Response[CommandResult | CommandFailure]:
    return await run(request, relay, commander, miner_id, "settings")


@patch("/settings", opt=_OPERATOR, responses=_ANSWERS,
       summary="Change a miner's settings (frequency, voltage, fan, temperature target, "
       "pools)",
       description=("Give any of `frequency_mhz`, `core_voltage_mv`, `fan_mode`, "
                    "`fan_percent`, `temp_target_c`, `pools` (`primary`, `fallback`); "
                    "the rest stays. Out of the safe range: 422 with `limits`. The result "
                    "carries `before`, `after` and `changed`; pool passwords are never "
                    "read back."))
async def settings_change(
    request: Request[Any, Any, Any], data: JSONBody[MinerSettings], relay: NamedDependency[Relay],
    commander: NamedDependency[Commander], miner_id: str = _MINER_ID,
) -> Response[CommandResult | CommandFailure]:
    if is_empty(data):
        raise ValidationException("body: give at least one setting to change")
    return await run(request, relay, commander, miner_id, "configure", settings=data)


@post("/tune", opt=_OPERATOR, status_code=200, responses=_ANSWERS,
      summary="Start an autotune run",
      description=("Body (optional): `objective` (`efficiency` or `hashrate`) and this "
                   "run's `chip_temp_max_c` / `vr_temp_max_c`. Progress is published "
                   "retained on `{base}/miners/{miner_id}/tune` (subscribe over `/ws`)."))
async def tune_start(
    request: Request[Any, Any, Any], relay: NamedDependency[Relay],
    commander: NamedDependency[Commander], miner_id: str = _MINER_ID,
    data: JSONBody[TuneRequest | None] = None,
) -> Response[CommandResult | CommandFailure]:
    return await run(request, relay, commander, miner_id, "tune",
                     tune=data if data is not None else TuneRequest())


@delete("/tune", opt=_OPERATOR, status_code=200, responses=_ANSWERS,
        summary="Stop the autotune run (the miner gets its settings from before it back)")
async def tune_abort(
    request: Request[Any, Any, Any], relay: NamedDependency[Relay],
    commander: NamedDependency[Commander], miner_id: str = _MINER_ID,
) -> Response[CommandResult | CommandFailure]:
    return await run(request, relay, commander, miner_id, "tune_abort")


#: The control routes of one miner (one router in the app).
miner_control = Router(
    path="/api/miners/{miner_id:str}",
    route_handlers=[action_handler, settings_read, settings_change, tune_start, tune_abort],
)
