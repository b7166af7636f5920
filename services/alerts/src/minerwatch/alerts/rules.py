"""Threshold rules over Sample fields: pure state machines, no I/O, the clock passed in.

A rule is ``field op threshold`` (``op`` one of ``>``, ``>=``, ``<``, ``<=``) with ``for_s``,
``hysteresis`` and ``cooldown_s``. State is kept per miner. The clock is the sample's own
``ts`` (seconds as a float), never the wall clock, so replays of retained samples at
(re)connect are judged by when they were measured, not when they arrived.

Semantics, per (miner, rule):

* **Hold.** The condition must hold on every sample for ``for_s`` seconds, measured from the
  first sample on which it held to the current sample's ts, before the alert FIRES (one
  ``firing`` event). With ``for_s = 0`` the first matching sample fires.
* **Reset.** Any sample on which the condition does not hold (even one inside the hysteresis
  band) restarts the hold: the next matching sample starts a new hold.
* **Resolve.** A firing alert RESOLVES (one ``resolved`` event) when the value crosses back
  past the threshold by the hysteresis band: for ``>`` when ``value <= threshold - hysteresis``,
  for ``>=`` when ``value < threshold - hysteresis``, for ``<`` when
  ``value >= threshold + hysteresis``, for ``<=`` when ``value > threshold + hysteresis``.
  With a band of 0 that is exactly "the condition no longer holds". Inside the band a firing
  alert stays firing.
* **Cooldown.** After a firing, the same (miner, rule) cannot fire again until ``cooldown_s``
  seconds have passed since that firing. Resolve events are never held back by the cooldown
  (the published state stays truthful); a re-fire waits for the cooldown to end. The hold
  keeps running during the cooldown, so a condition that has held for ``for_s`` fires on the
  first sample at or after the cooldown's end. A value flapping around the threshold
  therefore yields exactly one firing per cooldown, plus a resolve after each firing.
* **Missing values.** A null (or non-finite) value is no reading: it neither fires, nor
  resolves, nor resets the hold; the rule simply waits for the next real value.
* **Order.** ``RuleSet`` evaluates a miner's samples in time order only: a sample whose ts is
  not newer than the last one evaluated for that miner (a retained replay, a late duplicate)
  is ignored.
* **Restart.** ``RuleSet.restore`` takes the retained alert events found at start: a
  ``firing`` one marks the alert firing (its ts as the firing time, so the cooldown still
  counts), so a restart does not fire it again. A ``resolved`` one leaves the rule idle with
  no cooldown, since the payload does not carry when it last fired. Samples of that miner not
  newer than a restored event were judged already and are ignored. Restoring never
  overrides state the rule already has from samples.
* **Bound.** State is kept for at most ``MAX_MINERS`` miners; samples and retained events
  of further miners are not judged (the service logs them as rejected).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from minerwatch.shared import fields
from minerwatch.shared.config import ConfigError, RuleConfig
from minerwatch.shared.schemas import AlertEvent, AlertState, Sample, format_ts, parse_ts

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}

# The comparison that resolves each op (against threshold -/+ hysteresis), its negation.
_RESOLVE_OP: dict[str, str] = {">": "<=", ">=": "<", "<": ">=", "<=": ">"}


#: Sample fields a rule may watch, in schema order (temp_c, power_w, ...): the numeric
#: ones of the field descriptions.
NUMERIC_FIELDS: tuple[str, ...] = fields.NUMERIC_FIELDS

#: Miners whose state the rules keep at most. A real fleet is far smaller; the bound keeps
#: samples under ever new miner ids (valid ones included) from growing memory without end.
MAX_MINERS = 100_000


def validate_rules(rules: Sequence[RuleConfig]) -> None:
    """Raise ConfigError naming the first rule whose field is not numeric or whose name repeats."""
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        if rule.field not in NUMERIC_FIELDS:
            raise ConfigError(
                f"alerts.rules[{index}].field: {rule.field!r} is not a numeric Sample field "
                f"({', '.join(NUMERIC_FIELDS)})"
            )
        if rule.name in seen:
            # Two rules with one name would publish on the same alert topic.
            raise ConfigError(f"alerts.rules[{index}].name: {rule.name!r} is used twice")
        seen.add(rule.name)


def format_number(value: float) -> str:
    """``75.0`` -> ``75``, ``78.25`` -> ``78.25``, at most three decimals."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def ts_seconds(ts: str) -> float:
    """A contract timestamp as POSIX seconds; ValueError when it is not one."""
    return parse_ts(ts).timestamp()


def seconds_ts(at: float) -> str:
    """POSIX seconds as a contract timestamp."""
    return format_ts(datetime.fromtimestamp(at, UTC))


def _reading(value: float | None) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return float(value)


@dataclass(slots=True)
class _MinerState:
    firing: bool = False
    #: Clock of the first sample of the current unbroken run of matching samples.
    hold_since: float | None = None
    #: Clock of the last firing: the cooldown counts from here.
    fired_at: float | None = None
    #: Clock of the first matching sample of the hold that led to the firing.
    began: float | None = None


class ThresholdRule:
    """One configured rule and its state for every miner it has seen."""

    def __init__(self, config: RuleConfig) -> None:
        self.config = config
        self._holds = _COMPARE[config.op]
        resolve_op = _RESOLVE_OP[config.op]
        self._resolve_op = resolve_op
        self._resolves = _COMPARE[resolve_op]
        band = config.hysteresis if config.op in (">", ">=") else -config.hysteresis
        self.resolve_bound = config.threshold - band
        self._states: dict[str, _MinerState] = {}

    @property
    def name(self) -> str:
        return self.config.name

    def is_firing(self, miner_id: str) -> bool:
        state = self._states.get(miner_id)
        return state is not None and state.firing

    def evaluate(
        self, miner_id: str, value: float | None, now: float, ts: str
    ) -> list[AlertEvent]:
        """Feed one reading taken at clock ``now`` (``ts`` is its contract timestamp).

        Returns the events this reading causes: none, one ``firing`` or one ``resolved``.
        """
        reading = _reading(value)
        if reading is None:
            return []  # no reading: nothing fires, resolves or resets
        state = self._states.setdefault(miner_id, _MinerState())
        rule = self.config
        holds = self._holds(reading, rule.threshold)

        if state.firing:
            if self._resolves(reading, self.resolve_bound):
                state.firing = False
                state.hold_since = None
                return [self._event(miner_id, "resolved", reading, ts, self._resolved_text(
                    reading, now, state), state.began)]
            return []  # still past the threshold, or inside the hysteresis band

        if not holds:
            state.hold_since = None
            return []
        if state.hold_since is None:
            state.hold_since = now
        held = now - state.hold_since
        if held < rule.for_s:
            return []
        if state.fired_at is not None and now - state.fired_at < rule.cooldown_s:
            return []  # a re-fire waits for the cooldown to end
        state.firing = True
        state.fired_at = now
        state.began = state.hold_since
        text = (f"{rule.field} {format_number(reading)} {rule.op} "
                f"{format_number(rule.threshold)} for {held:.0f} s")
        return [self._event(miner_id, "firing", reading, ts, text, state.began)]

    def restore(self, event: AlertEvent) -> bool:
        """Take a retained event as the starting state; False when state already exists."""
        if event.miner_id in self._states:
            return False
        state = _MinerState()
        if event.state == "firing":
            state.firing = True
            state.fired_at = ts_seconds(event.ts)
            state.began = ts_seconds(event.since) if event.since else state.fired_at
        self._states[event.miner_id] = state
        return True

    def _resolved_text(self, reading: float, now: float, state: _MinerState) -> str:
        rule = self.config
        text = (f"{rule.field} {format_number(reading)} {self._resolve_op} "
                f"{format_number(self.resolve_bound)}")
        if rule.hysteresis:
            text += (f" (threshold {format_number(rule.threshold)}, "
                     f"hysteresis {format_number(rule.hysteresis)})")
        if state.fired_at is not None:
            text += f", resolved after {max(now - state.fired_at, 0):.0f} s"
        return text

    def forget(self, miner_id: str) -> None:
        self._states.pop(miner_id, None)

    def _event(
        self, miner_id: str, state: AlertState, value: float, ts: str, message: str,
        began: float | None,
    ) -> AlertEvent:
        return AlertEvent(
            miner_id=miner_id,
            rule=self.config.name,
            state=state,
            severity=self.config.severity,
            value=value,
            threshold=self.config.threshold,
            message=message,
            ts=ts,
            since=None if began is None else seconds_ts(began),
        )


class RuleSet:
    """Every configured rule, fed whole samples in per-miner time order."""

    def __init__(self, rules: Sequence[RuleConfig], *, max_miners: int = MAX_MINERS) -> None:
        validate_rules(rules)
        self.rules = {rule.name: ThresholdRule(rule) for rule in rules}
        self.max_miners = max_miners
        # Every miner any rule keeps state for has its entry here (both come together).
        self._last_seen: dict[str, float] = {}

    def admits(self, miner_id: str) -> bool:
        """Whether the rules judge this miner: one already known, or room for a new one."""
        return miner_id in self._last_seen or len(self._last_seen) < self.max_miners

    def evaluate(self, sample: Sample) -> list[AlertEvent]:
        """Events caused by one sample; [] when it is not newer than the miner's last one,
        or when the miner is new and ``max_miners`` are known already.

        Raises ValueError when the sample's ts matches the pattern but is no real date.
        """
        if not self.admits(sample.miner_id):
            return []
        now = ts_seconds(sample.ts)
        last = self._last_seen.get(sample.miner_id)
        if last is not None and now <= last:
            return []
        self._last_seen[sample.miner_id] = now
        events: list[AlertEvent] = []
        for rule in self.rules.values():
            value = getattr(sample, rule.config.field)
            events.extend(rule.evaluate(sample.miner_id, value, now, sample.ts))
        return events

    def forget(self, miner_id: str) -> None:
        """Drop every rule's state for this miner (it was forgotten)."""
        self._last_seen.pop(miner_id, None)
        for rule in self.rules.values():
            rule.forget(miner_id)

    def restore(self, event: AlertEvent) -> bool:
        """Recover one retained alert; False for unknown rules, already-known state or a
        new miner past ``max_miners``.

        Raises ValueError when the event's ts matches the pattern but is no real date.
        """
        rule = self.rules.get(event.rule)
        if rule is None or not self.admits(event.miner_id):
            return False
        at = ts_seconds(event.ts)  # before any state changes: a bad ts leaves none behind
        if not rule.restore(event):
            return False
        # The samples up to this event were judged by whoever published it.
        self._last_seen[event.miner_id] = max(self._last_seen.get(event.miner_id, at), at)
        return True
