"""The autotune run: step frequency and voltage up inside the safe range, keep the best.

One run (``TuneRun``) starts from the miner's current frequency and voltage (``original``)
clamped into the safe range (``shared.control.limits_for``), and at each step writes what
changed, waits ``settle_s`` (reading the miner every ``poll_s``, stopping at once when a
temperature limit is crossed), then samples for ``window_s``. A step is stable when its
mean hashrate is at least ``min_hashrate_ratio`` of what the frequency should give, both
temperatures stay under their limits and rejects under ``max_reject_ratio``.

Stable: the frequency goes up one ``frequency_step_mhz``. Unstable: the voltage goes up
one ``voltage_step_mv`` and the same frequency is tried again. The run stops at the first
limit: the top of the safe range, a temperature limit (a hotter step never helps), an
unstable step at the top voltage, or ``max_steps``. It then applies the best stable step
for the objective (efficiency: lowest J/TH; hashrate: highest TH/s) and reads it back;
with no stable step, the original settings come back. An abort (cancellation) or any
failure restores the original settings too, retrying while the miner is away for up to
``[control] restart_timeout_s``.

The pure parts (``start_point``, ``measure``, ``judge``, ``next_point``, ``best_step``)
hold the rules; ``TuneRun`` does the I/O around them.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from minerwatch.collector.control.driver import ControlDriver, ControlError, MinerFacts
from minerwatch.collector.drivers.reading import PollError, Reading
from minerwatch.shared.config import Config, TuneConfig
from minerwatch.shared.control import limits_for
from minerwatch.shared.errors import one_line
from minerwatch.shared.schemas import (
    Command,
    MinerSettings,
    Objective,
    Range,
    SettingsLimits,
    TuneProgress,
    TuneRequest,
    TuneState,
    TuneStep,
    now_ts,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

Publish = Callable[[TuneProgress], Awaitable[None]]
ReadMiner = Callable[[], Awaitable[Reading]]

#: Reads in a row that may fail (a miner busy applying a change) before the run fails.
MAX_READ_FAILURES = 3
#: How long one progress publish may take; a slow broker never holds a run back.
PUBLISH_TIMEOUT_S = 5.0
#: Seconds added to a read's own timeout before it is given up.
READ_GRACE_S = 2.0
#: Rejects in a window below which their ratio is not judged: one reject in a short
#: window says nothing about the step.
MIN_REJECTS = 2


class TuneFailure(Exception):
    """A run that cannot go on; ``reason`` is one line for the progress message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = one_line(reason)


# --- the rules (pure) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunLimits:
    """What a step must stay under to be stable."""

    chip_temp_max_c: float
    vr_temp_max_c: float
    min_hashrate_ratio: float
    max_reject_ratio: float


def run_limits(tune: TuneConfig, request: TuneRequest | None) -> RunLimits:
    """The request's temperature limits, else the ``[control.tune]`` defaults."""
    chip = request.chip_temp_max_c if request and request.chip_temp_max_c else None
    vr = request.vr_temp_max_c if request and request.vr_temp_max_c else None
    return RunLimits(chip_temp_max_c=chip or tune.chip_temp_max_c,
                     vr_temp_max_c=vr or tune.vr_temp_max_c,
                     min_hashrate_ratio=tune.min_hashrate_ratio,
                     max_reject_ratio=tune.max_reject_ratio)


@dataclass(frozen=True, slots=True)
class Point:
    """One frequency and core voltage."""

    frequency_mhz: int
    core_voltage_mv: int

    def __str__(self) -> str:
        return f"{self.frequency_mhz} MHz {self.core_voltage_mv} mV"

    def settings(self) -> MinerSettings:
        return MinerSettings(frequency_mhz=self.frequency_mhz,
                             core_voltage_mv=self.core_voltage_mv)

    def change_from(self, current: Point | None) -> MinerSettings:
        """Only the fields that differ from ``current`` (both when it is unknown)."""
        if current is None:
            return self.settings()
        return MinerSettings(
            frequency_mhz=None if self.frequency_mhz == current.frequency_mhz
            else self.frequency_mhz,
            core_voltage_mv=None if self.core_voltage_mv == current.core_voltage_mv
            else self.core_voltage_mv)


def point_of(settings: MinerSettings) -> Point | None:
    if settings.frequency_mhz is None or settings.core_voltage_mv is None:
        return None
    return Point(settings.frequency_mhz, settings.core_voltage_mv)


def clamp(value: int, allowed: Range) -> int:
    return max(allowed.min, min(allowed.max, value))


def safe_ranges(limits: SettingsLimits) -> tuple[Range, Range]:
    """The frequency and voltage ranges; TuneFailure when either is unknown."""
    if limits.frequency_mhz is None or limits.core_voltage_mv is None:
        raise TuneFailure(f"cannot tune: {limits.source}")
    return limits.frequency_mhz, limits.core_voltage_mv


def start_point(original: Point, limits: SettingsLimits) -> Point:
    """The current settings, clamped into the safe range."""
    frequency, voltage = safe_ranges(limits)
    return Point(clamp(original.frequency_mhz, frequency),
                 clamp(original.core_voltage_mv, voltage))


@dataclass(frozen=True, slots=True)
class Measurement:
    """What one step's sampling window saw."""

    hashrate_ths: float | None
    expected_ths: float | None
    power_w: float | None
    temp_c: float | None
    vr_temp_c: float | None
    reject_ratio: float | None
    rejected: int = 0

    @property
    def efficiency_jth(self) -> float | None:
        if self.power_w is None or not self.hashrate_ths or self.hashrate_ths <= 0:
            return None
        return self.power_w / self.hashrate_ths


def _mean(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None and math.isfinite(value)]
    return sum(present) / len(present) if present else None


def _highest(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None and math.isfinite(value)]
    return max(present) if present else None


def share_deltas(first: Reading, last: Reading) -> tuple[int, int] | None:
    """(accepted, rejected) found between two readings; None when the counters are
    missing or went back (the miner restarted)."""
    counters = (first.shares_accepted, first.shares_rejected, last.shares_accepted,
                last.shares_rejected)
    if any(value is None for value in counters):
        return None
    accepted = (last.shares_accepted or 0) - (first.shares_accepted or 0)
    rejected = (last.shares_rejected or 0) - (first.shares_rejected or 0)
    if accepted < 0 or rejected < 0:
        return None
    return accepted, rejected


def measure(readings: Sequence[Reading], expected_ths: float | None) -> Measurement:
    """The window's mean hashrate and power, hottest temperatures and reject ratio; the
    expected hashrate is ``expected_ths`` (from the frequency), else what the readings
    say."""
    if not readings:
        return Measurement(None, expected_ths, None, None, None, None)
    if expected_ths is None:
        expected_ths = _mean([reading.expected_hashrate_ths for reading in readings])
    deltas = share_deltas(readings[0], readings[-1]) if len(readings) > 1 else None
    ratio: float | None = None
    rejected = 0
    if deltas is not None and sum(deltas) > 0:
        rejected = deltas[1]
        ratio = deltas[1] / sum(deltas)
    return Measurement(
        hashrate_ths=_mean([reading.hashrate_ths for reading in readings]),
        expected_ths=expected_ths,
        power_w=_mean([reading.power_w for reading in readings]),
        temp_c=_highest([reading.temp_c for reading in readings]),
        vr_temp_c=_highest([reading.vr_temp_c for reading in readings]),
        reject_ratio=ratio,
        rejected=rejected,
    )


def hot_reason(temp_c: float | None, vr_temp_c: float | None, limits: RunLimits) -> str | None:
    """Why these temperatures end the run (a limit reached), or None."""
    if temp_c is not None and temp_c >= limits.chip_temp_max_c:
        return f"chip {temp_c:.1f} °C reached the limit of {limits.chip_temp_max_c:g} °C"
    if vr_temp_c is not None and vr_temp_c >= limits.vr_temp_max_c:
        return f"VR {vr_temp_c:.1f} °C reached the limit of {limits.vr_temp_max_c:g} °C"
    return None


def judge(found: Measurement, limits: RunLimits) -> str | None:
    """Why the step is unstable, or None when it is stable."""
    hot = hot_reason(found.temp_c, found.vr_temp_c, limits)
    if hot is not None:
        return hot
    if found.hashrate_ths is None:
        return "no hashrate reading"
    if not found.expected_ths:
        raise TuneFailure("the miner says nothing of the hashrate to expect: stability "
                          "cannot be judged")
    ratio = found.hashrate_ths / found.expected_ths
    if ratio < limits.min_hashrate_ratio:
        return (f"hashrate {ratio:.1%} of expected, under "
                f"{limits.min_hashrate_ratio:.0%}")
    if (found.reject_ratio is not None and found.rejected >= MIN_REJECTS
            and found.reject_ratio >= limits.max_reject_ratio):
        return (f"rejects {found.reject_ratio:.1%}, at or over "
                f"{limits.max_reject_ratio:.1%}")
    return None


def next_point(point: Point, stable: bool, frequency: Range, voltage: Range,
               tune: TuneConfig) -> tuple[Point | None, str]:
    """Where to go after a step, or None and why the run stops there."""
    if stable:
        if point.frequency_mhz >= frequency.max:
            return None, f"frequency at the top of the safe range ({frequency.max} MHz)"
        return Point(min(point.frequency_mhz + tune.frequency_step_mhz, frequency.max),
                     point.core_voltage_mv), ""
    if point.core_voltage_mv >= voltage.max:
        return None, f"unstable at the top voltage of the safe range ({voltage.max} mV)"
    return Point(point.frequency_mhz,
                 min(point.core_voltage_mv + tune.voltage_step_mv, voltage.max)), ""


def best_step(steps: Sequence[TuneStep], objective: Objective) -> int | None:
    """The index (into ``steps``) of the best stable step: the lowest J/TH for
    ``efficiency`` (the highest hashrate when no step has a power reading), the highest
    hashrate for ``hashrate``; None when no step was stable."""
    stable = [step for step in steps if step.stable and step.hashrate_ths is not None]
    if not stable:
        return None
    with_power = [step for step in stable if step.efficiency_jth is not None]
    if objective == "efficiency" and with_power:
        chosen = min(with_power, key=lambda step: (step.efficiency_jth or 0.0,
                                                   -(step.hashrate_ths or 0.0)))
    else:
        chosen = max(stable, key=lambda step: (step.hashrate_ths or 0.0,
                                               -(step.efficiency_jth or 0.0)))
    return steps.index(chosen)


def steps_left(point: Point, frequency: Range, tune: TuneConfig) -> int:
    """Steps still ahead if every one is stable: the estimate progress is made of."""
    return math.ceil(max(0, frequency.max - point.frequency_mhz) / tune.frequency_step_mhz)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def make_step(index: int, point: Point, found: Measurement, reason: str | None) -> TuneStep:
    return TuneStep(
        index=index, frequency_mhz=point.frequency_mhz, core_voltage_mv=point.core_voltage_mv,
        ts=now_ts(), stable=reason is None, hashrate_ths=_round(found.hashrate_ths, 4),
        expected_ths=_round(found.expected_ths, 4), power_w=_round(found.power_w, 2),
        efficiency_jth=_round(found.efficiency_jth, 3), temp_c=_round(found.temp_c, 1),
        vr_temp_c=_round(found.vr_temp_c, 1), reject_ratio=_round(found.reject_ratio, 4),
        reason=reason)


def _seconds(value: float, total: float) -> str:
    return f"{value:.0f}" if total >= 10 else f"{value:.1f}"


# --- publishing ----------------------------------------------------------------------


class ProgressFeed:
    """Hands progress to ``publish`` from a task of its own, the newest only: a slow or
    failing publish never delays a run, and a failure is logged once per run."""

    def __init__(self, publish: Publish, what: str) -> None:
        self._publish = publish
        self._what = what
        self._latest: TuneProgress | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._failed = False
        self._task = asyncio.get_running_loop().create_task(self._send_all())

    def offer(self, progress: TuneProgress) -> None:
        # a copy: the run goes on changing its own
        self._latest = msgspec.structs.replace(progress, steps=list(progress.steps))
        self._wake.set()

    async def close(self, final: TuneProgress) -> None:
        """Send ``final`` (after anything pending) and stop."""
        self.offer(final)
        self._closing = True
        self._wake.set()
        await asyncio.wait({self._task})

    async def _send_all(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            progress, self._latest = self._latest, None
            if progress is not None:
                await self._send(progress)
            if self._closing and self._latest is None:
                return

    async def _send(self, progress: TuneProgress) -> None:
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await self._publish(progress)
        except Exception as exc:  # a publish failure never stops a run
            if not self._failed:
                self._failed = True
                log.warning("%s: progress not published: %s", self._what, one_line(exc))


# --- the run ----------------------------------------------------------------------------


async def _to_the_end(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end even when cancelled meanwhile (an abort while the original
    settings are being restored must not leave them half restored); a cancellation that
    came goes on afterwards."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


class TuneRun:
    """One autotune run of one miner: ``await run()`` gives the final progress.

    Cancel the task running it to abort: the original settings are restored and the final
    progress (``aborted``) published before the cancellation goes on."""

    def __init__(self, command: Command, driver: ControlDriver, read: ReadMiner,
                 config: Config, publish: Publish) -> None:
        self.command = command
        self.driver = driver
        self.read = read
        self.config = config
        self.tune = config.control.tune
        request = command.tune or TuneRequest()
        self.objective: Objective = request.objective
        self.limits = run_limits(self.tune, request)
        self.publish = publish
        started = now_ts()
        self.progress = TuneProgress(
            run_id=command.id, miner_id=command.miner_id, objective=self.objective,
            state="running", phase="reading the settings", by=command.by, started=started,
            ts=started)
        self.original: Point | None = None
        self.current: Point | None = None  # what the miner was last set to
        self.stop_reason = ""
        self._feed: ProgressFeed | None = None
        self._read_failures = 0
        self._planned = 1

    @property
    def what(self) -> str:
        return f"tune {self.command.miner_id} ({self.command.id})"

    async def run(self) -> TuneProgress:
        self._feed = ProgressFeed(self.publish, self.what)
        self._feed.offer(self.progress)
        try:
            await self._tune()
        except asyncio.CancelledError:
            await _to_the_end(self._end_restoring("aborted", "aborted"))
            raise
        except TuneFailure as exc:
            await _to_the_end(self._end_restoring("failed", exc.reason))
        except (ControlError, PollError) as exc:
            await _to_the_end(self._end_restoring("failed", exc.reason))
        except Exception as exc:
            log.exception("%s: internal error", self.what)
            await _to_the_end(self._end_restoring("failed", f"internal error: {one_line(exc)}"))
        finally:
            await self._feed.close(self.progress)
        return self.progress

    # -- the steps ------------------------------------------------------------------------

    async def _tune(self) -> None:
        back = await self._control(self.driver.read(), "reading the settings")
        if back.paused:
            raise TuneFailure("the miner is paused: resume it before tuning")
        original = point_of(back.settings)
        if original is None:
            raise TuneFailure("the miner does not say its frequency and core voltage")
        self.original = self.current = original
        self.progress.original = original.settings()
        facts = back.facts
        settable = self.driver.settable()
        limits = limits_for(facts.asic, facts.device_model,
                            frequency_options=facts.frequency_options or None,
                            voltage_options=facts.voltage_options or None,
                            allow_overclock=self.config.control.allow_overclock,
                            tunable={"frequency_mhz", "core_voltage_mv"} <= settable)
        frequency, voltage = safe_ranges(limits)
        point: Point | None = start_point(original, limits)
        log.info("%s: from %s, safe range %d-%d MHz %d-%d mV (%s), objective %s", self.what,
                 original, frequency.min, frequency.max, voltage.min, voltage.max,
                 limits.source, self.objective)
        while point is not None:
            if len(self.progress.steps) >= self.tune.max_steps:
                self.stop_reason = f"{self.tune.max_steps} steps done (max_steps)"
                break
            self._planned = min(self.tune.max_steps, len(self.progress.steps) + 1
                                + steps_left(point, frequency, self.tune))
            step, hot = await self._step(point, facts)
            self.progress.steps.append(step)
            self.progress.best = best_step(self.progress.steps, self.objective)
            self._show(f"step {step.index + 1} at {point}: "
                       + ("stable" if step.stable else f"unstable ({step.reason})"))
            if hot:
                self.stop_reason = step.reason or "temperature limit"
                break
            point, self.stop_reason = next_point(point, step.stable, frequency, voltage,
                                                 self.tune)
        await self._apply_best()

    async def _step(self, point: Point, facts: MinerFacts) -> tuple[TuneStep, bool]:
        """Set ``point``, settle, sample; the step and whether a limit was crossed."""
        index = len(self.progress.steps)
        await self._set(point, f"setting {point}")
        settle, hot = await self._watch(point, self.tune.settle_s, "settling", 0.0)
        expected_ghs = facts.expected_ghs(point.frequency_mhz)
        expected = expected_ghs / 1000.0 if expected_ghs is not None else None
        if hot is not None:
            return make_step(index, point, measure(settle, expected), hot), True
        window, hot = await self._watch(point, self.tune.window_s, "sampling",
                                        self.tune.settle_s)
        if hot is not None:
            return make_step(index, point, measure(window, expected), hot), True
        if len(window) < 2:
            raise TuneFailure(f"too few readings at {point} to judge it")
        found = measure(window, expected)
        return make_step(index, point, found, judge(found, self.limits)), False

    async def _watch(self, point: Point, seconds: float, what: str,
                     before_s: float) -> tuple[list[Reading], str | None]:
        """Read the miner every ``poll_s`` for ``seconds``: the readings, and why the step
        ends early (a temperature limit crossed) or None."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        readings: list[Reading] = []
        step_s = self.tune.settle_s + self.tune.window_s
        while True:
            reading = await self._reading()
            if reading is not None:
                readings.append(reading)
                hot = hot_reason(reading.temp_c, reading.vr_temp_c, self.limits)
                if hot is not None:
                    return readings, hot
            elapsed = min(loop.time() - started, seconds)
            self._show(f"{what} {_seconds(elapsed, seconds)}/{_seconds(seconds, seconds)} s "
                       f"at {point}", (before_s + elapsed) / step_s)
            if elapsed >= seconds:
                return readings, None
            await asyncio.sleep(min(self.tune.poll_s, seconds - elapsed))

    async def _reading(self) -> Reading | None:
        """One reading; None when it failed, TuneFailure after too many failures."""
        try:
            async with asyncio.timeout(self.config.collector.timeout_s + READ_GRACE_S):
                reading = await self.read()
        except (PollError, TimeoutError, OSError) as exc:
            reason = exc.reason if isinstance(exc, PollError) else (
                one_line(exc) if str(exc) else "read timed out")
            self._read_failures += 1
            if self._read_failures >= MAX_READ_FAILURES:
                raise TuneFailure(f"the miner stopped answering: {reason}") from None
            return None
        self._read_failures = 0
        return reading

    async def _apply_best(self) -> None:
        assert self.original is not None
        best = self.progress.best
        if best is None:
            await self._set(self.original, f"no stable step: restoring {self.original}")
            self._finish("done", self.original,
                         f"no stable step ({self.stop_reason}); original settings "
                         f"{self.original} restored")
            return
        step = self.progress.steps[best]
        chosen = Point(step.frequency_mhz, step.core_voltage_mv)
        await self._set(chosen, f"applying the best step: {chosen}")
        what = (f"{step.efficiency_jth:g} J/TH" if self.objective == "efficiency"
                and step.efficiency_jth is not None else f"{step.hashrate_ths:g} TH/s")
        self._finish("done", chosen, f"applied step {best + 1}: {chosen} ({what}); "
                     f"stopped: {self.stop_reason}")

    # -- writing and restoring ------------------------------------------------------------

    async def _control(self, action: Awaitable[T], doing: str) -> T:
        """``action`` within ``[control] timeout_s``; TuneFailure saying what failed."""
        timeout_s = self.config.control.timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                return await action
        except ControlError as exc:
            raise TuneFailure(f"{doing}: {exc.reason}") from None
        except TimeoutError:
            raise TuneFailure(f"{doing}: no answer within {timeout_s:g} s") from None

    async def _set(self, point: Point, phase: str) -> None:
        """Write what differs from the last setting, then read it back."""
        self._show(phase)
        change = point.change_from(self.current)
        if change.frequency_mhz is not None or change.core_voltage_mv is not None:
            self.current = None  # unknown until read back
            await self._control(self.driver.write(change), f"writing {point}")
        back = await self._control(self.driver.read(), f"reading back {point}")
        found = point_of(back.settings)
        self.current = found
        if found != point:
            raise TuneFailure(f"the miner did not take {point}: it reads "
                              f"{found if found is not None else 'no frequency or voltage'}")

    async def _end_restoring(self, state: TuneState, why: str) -> None:
        """Put the original settings back (if any were changed) and end as ``state``."""
        if self.original is None:
            self._finish(state, None, f"{why}; nothing was changed")
            return
        if self.current == self.original:
            self._finish(state, self.original, f"{why}; the original settings "
                         f"{self.original} are in place")
            return
        problem = await self._restore(self.original)
        if problem is None:
            self._finish(state, self.original, f"{why}; original settings {self.original} "
                         "restored")
        else:
            self._finish("failed", None, f"{why}; could not restore the original settings "
                         f"{self.original}: {problem}")

    async def _restore(self, original: Point) -> str | None:
        """Write ``original`` until it reads back, for up to ``restart_timeout_s``: None
        once done, else the last problem."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.control.restart_timeout_s
        problem = "not tried"
        while True:
            self._show(f"restoring {original}")
            try:
                async with asyncio.timeout(self.config.control.timeout_s):
                    await self.driver.write(original.settings())
                    back = await self.driver.read()
                self.current = point_of(back.settings)
                if self.current == original:
                    return None
                problem = f"it reads {self.current}"
            except (ControlError, PollError) as exc:
                problem = exc.reason
            except TimeoutError:
                problem = f"no answer within {self.config.control.timeout_s:g} s"
            except Exception as exc:
                log.exception("%s: restoring failed", self.what)
                problem = f"internal error: {one_line(exc)}"
            if loop.time() >= deadline:
                log.error("%s: original settings %s not restored: %s", self.what, original,
                          problem)
                return problem
            await asyncio.sleep(min(self.tune.poll_s, max(0.0, deadline - loop.time())))

    # -- progress -------------------------------------------------------------------------

    def _show(self, phase: str, within_step: float = 0.0) -> None:
        progress = self.progress
        done = len(progress.steps) + max(0.0, min(1.0, within_step))
        progress.phase = phase
        # never backwards: an unstable step adds a step to the plan
        estimate = round(min(0.99, done / max(1, self._planned + 0.5)), 3)
        progress.progress = max(progress.progress, estimate)
        progress.ts = now_ts()
        if self._feed is not None:
            self._feed.offer(progress)

    def _finish(self, state: TuneState, applied: Point | None, message: str) -> None:
        progress = self.progress
        progress.state = state
        progress.applied = applied.settings() if applied is not None else None
        progress.message = one_line(message, 1000)
        progress.phase = state
        progress.progress = 1.0 if state == "done" else progress.progress
        progress.ts = now_ts()
        log.info("%s: %s: %s", self.what, state, progress.message)
