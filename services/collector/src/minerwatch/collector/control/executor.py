"""Carrying out one command on one miner: check, write or act, verify; never raises.

``carry_out(command, driver, config)`` returns the ``CommandResult``:

- ``[control] enabled`` off: ``disabled``, nothing sent. A command stamped more than
  ``STALE_S`` ago (or more than ``FUTURE_S`` ahead): ``refused``, so a restart that sat in
  a queue since yesterday never runs;
- ``settings``: the settings read, with the ranges a change is checked against;
- ``configure``: read first; every value is checked against ``shared.control``'s ranges
  for the miner's chip and board (narrowed by the firmware's own options) and anything
  outside is ``refused`` before a byte is sent; only the fields that differ are written,
  then read back (for up to ``timeout_s``): ``ok`` when all took, else ``unverified``
  naming those that did not;
- ``restart``: the uptime is noted, the miner restarts, and it is read until its uptime
  went back (within ``restart_timeout_s``; errors meanwhile are expected);
- ``pause`` / ``resume``: verified where the firmware says whether it is paused;
  ``identify``: ``ok`` once acknowledged.

What the firmware cannot do is ``unsupported``; a miner that fails or refuses is
``failed`` with its reason. ``tune`` and ``tune_abort`` belong to the tuner (``commands``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from minerwatch.collector.control.driver import ControlDriver, ControlError, ReadBack
from minerwatch.collector.control.settings import differences, not_taken, without_passwords
from minerwatch.shared.config import ControlConfig
from minerwatch.shared.control import check_change, is_empty, limits_for
from minerwatch.shared.errors import one_line
from minerwatch.shared.schemas import (
    Command,
    CommandResult,
    CommandStatus,
    MinerSettings,
    SettingsLimits,
    now_ts,
    parse_ts,
)

log = logging.getLogger(__name__)

#: A command older than this is refused: whoever sent it may not want it any more.
STALE_S = 120.0
#: A command stamped further ahead than this comes from a clock that is wrong.
FUTURE_S = 60.0
#: How often a miner is read while waiting for a change or a restart to show.
READ_BACK_S = 0.25
RESTART_READ_S = 1.0
#: An uptime that grew this much less than the time that passed means a restart.
UPTIME_SLACK_S = 2.0
MINER_ACTIONS = ("restart", "pause", "resume", "identify")


def result(command: Command, status: CommandStatus, message: str, *,
           changed: list[str] | None = None, before: MinerSettings | None = None,
           after: MinerSettings | None = None, settings: MinerSettings | None = None,
           limits: SettingsLimits | None = None) -> CommandResult:
    """The result of ``command``, stamped now."""
    return CommandResult(id=command.id, miner_id=command.miner_id, action=command.action,
                         by=command.by, status=status, message=one_line(message),
                         requested=command.ts, ts=now_ts(), changed=changed or [],
                         before=before, after=after, settings=settings, limits=limits)


def precheck(command: Command, config: ControlConfig, now: datetime | None = None
             ) -> CommandResult | None:
    """The result of a command that must not run at all (control off, stale), else None."""
    if not config.enabled:
        return result(command, "disabled", "control is disabled: set [control] enabled = "
                                           "true in the collector's config")
    now = now or datetime.now(UTC)
    age = (now - parse_ts(command.ts)).total_seconds()
    if age > STALE_S:
        return result(command, "refused", f"stale command: sent {age:.0f} s ago, more than "
                                          f"{STALE_S:.0f} s")
    if age < -FUTURE_S:
        return result(command, "refused", f"command stamped {-age:.0f} s in the future: "
                                          "check the requester's clock")
    return None


def limits_of(back: ReadBack, driver: ControlDriver, config: ControlConfig) -> SettingsLimits:
    settable = driver.settable()
    facts = back.facts
    return limits_for(facts.asic, facts.device_model,
                      frequency_options=facts.frequency_options,
                      voltage_options=facts.voltage_options,
                      allow_overclock=config.allow_overclock,
                      tunable={"frequency_mhz", "core_voltage_mv"} <= settable,
                      fan="fan_percent" in settable)


async def carry_out(command: Command, driver: ControlDriver, config: ControlConfig, *,
                    clock: Callable[[], float] = time.monotonic) -> CommandResult:
    """Carry out ``command`` with ``driver``; never raises (but on cancel)."""
    early = precheck(command, config)
    if early is not None:
        return early
    action = command.action
    try:
        if action == "settings":
            back = await driver.read()
            return result(command, "ok", "read", settings=without_passwords(back.settings),
                          limits=limits_of(back, driver, config))
        if action == "configure":
            return await _configure(command, driver, config, clock)
        if action in MINER_ACTIONS:
            if not driver.supports(action):
                return result(command, "unsupported", f"{driver.name} firmware cannot "
                                                      f"{action}")
            if action == "restart":
                return await _restart(command, driver, config, clock)
            if action in ("pause", "resume"):
                return await _pause(command, driver, config, clock)
            await driver.act("identify")
            return result(command, "ok", "identify acknowledged: the miner shows itself")
        return result(command, "unsupported", f"{action} is not carried out here")
    except ControlError as exc:
        status: CommandStatus = "unsupported" if exc.unsupported else "failed"
        return result(command, status, exc.reason)
    except Exception as exc:  # a driver bug costs this command, never the collector
        log.exception("%s: %s failed unexpectedly", command.miner_id, action)
        return result(command, "failed", f"internal error: {type(exc).__name__}: "
                                         f"{one_line(exc)}")


async def _configure(command: Command, driver: ControlDriver, config: ControlConfig,
                     clock: Callable[[], float]) -> CommandResult:
    change = command.settings or MinerSettings()
    if is_empty(change):
        return result(command, "refused", "configure names no setting to change")
    if not driver.supports("configure"):
        return result(command, "unsupported", f"{driver.name} firmware changes no settings")
    given = [name for name in change.__struct_fields__ if getattr(change, name) is not None]
    cannot = [name for name in given if name not in driver.settable()]
    if cannot:
        return result(command, "unsupported", f"{', '.join(cannot)} cannot be set on "
                                              f"{driver.name} firmware")
    back = await driver.read()
    before = without_passwords(back.settings)
    limits = limits_of(back, driver, config)
    problems = check_change(change, limits)
    if problems:
        return result(command, "refused", "; ".join(problems), before=before, limits=limits)
    wanted, changed = differences(change, back.settings)
    if not changed:
        return result(command, "ok", "nothing to change", before=before, after=before,
                      limits=limits)
    try:
        await driver.write(wanted)
    except ControlError as exc:
        status: CommandStatus = "unsupported" if exc.unsupported else "failed"
        return result(command, status, exc.reason, before=before, limits=limits)
    after, missed = await _read_back(driver, wanted, clock() + config.timeout_s, clock)
    if missed is None:
        status, message = "unverified", "written, but the miner did not answer when read back"
    elif missed:
        status, message = "unverified", f"written, but these did not take: {'; '.join(missed)}"
    else:
        status, message = "ok", f"changed {', '.join(changed)}"
    return result(command, status, message, before=before, after=without_passwords(after),
                  changed=changed, limits=limits)


async def _read_back(driver: ControlDriver, wanted: MinerSettings, deadline: float,
                     clock: Callable[[], float]
                     ) -> tuple[MinerSettings | None, list[str] | None]:
    """Read until every written field shows or ``deadline``: (the last settings read,
    the fields that did not take); None for those when no read worked at all."""
    settings: MinerSettings | None = None
    missed: list[str] | None = None
    while True:
        try:
            settings = (await driver.read()).settings
        except ControlError as exc:
            log.debug("reading back failed: %s", exc.reason)
        else:
            missed = not_taken(wanted, settings)
            if not missed:
                return settings, missed
        if clock() >= deadline:
            return settings, missed
        await asyncio.sleep(min(READ_BACK_S, max(0.0, deadline - clock())))


async def _restart(command: Command, driver: ControlDriver, config: ControlConfig,
                   clock: Callable[[], float]) -> CommandResult:
    try:
        uptime = (await driver.read()).uptime_s
    except ControlError as exc:  # restarting a miner that hangs is what restarts are for
        log.info("%s: no uptime before the restart (%s)", command.miner_id, exc.reason)
        uptime = None
    started = clock()
    await driver.act("restart")
    if uptime is None:
        return result(command, "unverified", "restart acknowledged; the miner said no "
                                             "uptime before it to confirm it by")
    deadline = started + config.restart_timeout_s
    answered = False
    last_error = "no answer"
    while clock() < deadline:
        await asyncio.sleep(min(RESTART_READ_S, max(0.0, deadline - clock())))
        try:
            now_up = (await driver.read()).uptime_s
        except ControlError as exc:
            last_error = exc.reason  # down while it restarts: expected
            continue
        answered = True
        if now_up is not None and now_up + UPTIME_SLACK_S < uptime + (clock() - started):
            return result(command, "ok", f"restarted: up again after {clock() - started:.0f}"
                                         f" s (uptime {now_up} s, was {uptime} s)")
    if answered:
        return result(command, "unverified", f"restart acknowledged, but the uptime did not "
                                             f"go back within {config.restart_timeout_s:g} s")
    return result(command, "failed", f"restart acknowledged, but the miner did not answer "
                                     f"within {config.restart_timeout_s:g} s ({last_error})")


async def _pause(command: Command, driver: ControlDriver, config: ControlConfig,
                 clock: Callable[[], float]) -> CommandResult:
    action = command.action
    wanted = action == "pause"
    await driver.act("pause" if wanted else "resume")
    deadline = clock() + config.timeout_s
    while True:
        try:
            paused = (await driver.read()).paused
        except ControlError as exc:
            paused, problem = None, exc.reason
        else:
            if paused is None:
                return result(command, "ok", f"{action} acknowledged (this firmware does not "
                                             "say whether it is paused)")
            if paused == wanted:
                return result(command, "ok", "paused" if wanted else "resumed")
            problem = "still paused" if paused else "still mining"
        if clock() >= deadline:
            return result(command, "unverified", f"{action} acknowledged, but not confirmed "
                                                 f"within {config.timeout_s:g} s ({problem})")
        await asyncio.sleep(min(READ_BACK_S, max(0.0, deadline - clock())))
