"""The alert engine: every built-in rule and the free threshold rules, pure, no I/O.

``Evaluator(alerts)`` is fed what the service receives and returns the events to publish:

- ``on_sample(sample)``: the sample rules, on the sample's own clock (its ``ts``), in
  per-miner time order (a sample not newer than the last one judged is ignored);
- ``on_status(miner_id, status, now)``: ``offline`` and ``not_hashing``, whose hold counts
  from the status's ``since``;
- ``on_info(info)``: the miner's label (put on its events and in their messages) and its
  make and model (for the ``[[alerts.overrides]]`` and the per-model temperature limits);
- ``on_service(service, state, now)``: ``service_down``;
- ``tick(now)``: what time alone decides: an offline or idle miner whose hold reaches
  ``for_s`` with no new status, a service down for ``for_s``, accepted shares that stopped
  rising on a miner that is online but sends no more samples (only while the collector is
  not known to be offline: a dead collector is ``service_down``, not a fleet of stalls);
- ``restore(event)``: a retained event found at start (a firing one keeps the alert
  firing, so a restart does not fire it again; an ``event`` one gives the best difficulty
  or block count already announced);
- ``forget(miner_id)``: drop what is known of a forgotten miner.

Every rule has ``enabled``, ``for_s``, ``severity`` and ``cooldown_s`` (see ``builtin.Hold``
for the semantics), each overridable per miner, model or make (``overrides``). Events carry
the miner's ``label`` and ``since`` (when the condition began), and a message that starts
with the label (or the id), then what was measured, against what, and for how long:
``Garage Bitaxe: chip 72.4 °C > 70 °C for 65 s``.

State is kept for at most ``max_miners`` miners (``rules.MAX_MINERS``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

from minerwatch.alerts import limits, overrides
from minerwatch.alerts.baseline import HourlyMeans
from minerwatch.alerts.builtin import Hold, RejectWindow, ShareWatch, Transition
from minerwatch.alerts.rules import MAX_MINERS, RuleSet, format_number, seconds_ts, ts_seconds
from minerwatch.alerts.wording import duration, si, ths
from minerwatch.shared.config import (
    BUILTIN_RULES,
    AlertsConfig,
    ConfigError,
    FanFailureRule,
    HashrateLowRule,
    RejectsHighRule,
    StalledRule,
    TemperatureRule,
)
from minerwatch.shared.schemas import (
    AlertEvent,
    AlertState,
    MinerInfo,
    MinerStatus,
    Sample,
)
from minerwatch.shared.topics import is_miner_id

#: The miner id prefix of ``service_down`` events: ``minerwatch-collector``.
SERVICE_PREFIX = "minerwatch-"
#: Services followed at most (there are four; the bound is against junk topics).
MAX_SERVICES = 64
#: The service that does not alert about itself: when it is down, nobody publishes.
OWN_SERVICE = "alerts"
EVENT_RULES = ("best_difficulty", "block_found")


def check_rule_names(alerts: AlertsConfig) -> None:
    """ConfigError when a free rule takes a built-in rule's name (one alert topic)."""
    for index, rule in enumerate(alerts.rules):
        if rule.name in BUILTIN_RULES:
            raise ConfigError(f"alerts.rules[{index}].name: {rule.name!r} is a built-in "
                              f"rule: configure it in [alerts.{rule.name}]")


@dataclass(slots=True)
class Miner:
    """What the engine knows of one miner."""

    miner_id: str
    settings: overrides.RuleSettings
    temp_limit: float
    vr_limit: float
    label: str | None = None
    make: str | None = None
    model: str | None = None
    status: MinerStatus | None = None
    #: The newest sample judged (its ts), for the per-miner order.
    last_ts: float | None = None
    holds: dict[str, Hold] = field(default_factory=dict)
    baseline: HourlyMeans = field(default_factory=HourlyMeans)
    rejects: RejectWindow = field(default_factory=RejectWindow)
    shares: ShareWatch = field(default_factory=ShareWatch)
    best: float | None = None
    blocks: int | None = None
    #: What the firing ``stalled`` alert is about: ``shares`` or ``hashrate``.
    stalled_by: str = "shares"

    @property
    def name(self) -> str:
        return self.label or self.miner_id


@dataclass(slots=True)
class Service:
    state: str
    hold: Hold = field(default_factory=Hold)


def temperature_limits(settings: overrides.RuleSettings, make: str | None,
                       model: str | None) -> tuple[float, float]:
    """(chip, VR) thresholds: the configured ``threshold``, else the family's limit, else
    ``default_threshold``."""
    known = limits.limits_for(make, model)
    chip = cast(TemperatureRule, settings["temp_high"])
    vr = cast(TemperatureRule, settings["vr_temp_high"])
    return (_limit(chip, known.chip_c), _limit(vr, known.vr_c))


def _limit(rule: TemperatureRule, known: float | None) -> float:
    if rule.threshold is not None:
        return rule.threshold
    return known if known is not None else rule.default_threshold


class Evaluator:
    """Every rule's state for every miner; see the module docstring."""

    def __init__(self, alerts: AlertsConfig, *, max_miners: int = MAX_MINERS) -> None:
        check_rule_names(alerts)
        self.alerts = alerts
        self.free = RuleSet(alerts.rules, max_miners=max_miners)  # ConfigError if bad
        self._max_miners = max_miners
        self._defaults = overrides.defaults(alerts)
        self.miners: dict[str, Miner] = {}
        self.services: dict[str, Service] = {}
        #: Miners whose status is offline or idle: what ``tick`` looks at.
        self._waiting: set[str] = set()

    @property
    def max_miners(self) -> int:
        return self._max_miners

    @max_miners.setter
    def max_miners(self, value: int) -> None:
        self._max_miners = value
        self.free.max_miners = value

    # --- miners -------------------------------------------------------------------------

    def admits(self, miner_id: str) -> bool:
        """Whether this miner is judged: known already, or room for a new one."""
        return (miner_id in self.miners or len(self.miners) < self._max_miners) and (
            self.free.admits(miner_id))

    def _miner(self, miner_id: str) -> Miner:
        miner = self.miners.get(miner_id)
        if miner is None:
            settings = overrides.resolve(self.alerts, miner_id, base=self._defaults)
            chip, vr = temperature_limits(settings, None, None)
            miner = self.miners[miner_id] = Miner(miner_id, settings, chip, vr)
        return miner

    def on_info(self, info: MinerInfo) -> None:
        """A miner's identity: its label, and the settings its make and model give."""
        if not self.admits(info.miner_id):
            return
        miner = self._miner(info.miner_id)
        miner.label = info.label
        if (info.make, info.model) != (miner.make, miner.model) or self.alerts.overrides:
            miner.make, miner.model = info.make, info.model
            miner.settings = overrides.resolve(self.alerts, info.miner_id, info.make,
                                               info.model, base=self._defaults)
            miner.temp_limit, miner.vr_limit = temperature_limits(
                miner.settings, info.make, info.model)

    def seed_hourly(self, miner_id: str, hour_start: float, total: float, count: int) -> None:
        """One hour of a miner's history (``rollups_1h``) for its hashrate baseline."""
        if is_miner_id(miner_id) and self.admits(miner_id):
            self._miner(miner_id).baseline.seed(hour_start, total, count)

    def forget(self, miner_id: str) -> None:
        """Drop everything known of a miner (its info was cleared: it was forgotten)."""
        self.miners.pop(miner_id, None)
        self._waiting.discard(miner_id)
        self.free.forget(miner_id)

    def label(self, miner_id: str) -> str | None:
        miner = self.miners.get(miner_id)
        return miner.label if miner is not None else None

    # --- events -------------------------------------------------------------------------

    def _event(self, miner: Miner, rule: str, state: AlertState, value: float | None,
               threshold: float, message: str, ts: str, since: float | None) -> AlertEvent:
        return AlertEvent(
            miner_id=miner.miner_id, rule=rule, state=state,
            severity=miner.settings[rule].severity, value=value, threshold=threshold,
            message=f"{miner.name}: {message}", ts=ts, label=miner.label,
            since=None if since is None else seconds_ts(since))

    @staticmethod
    def _step(miner: Miner, rule: str, holds: bool, clears: bool, now: float,
              for_s: float, cooldown_s: float, began: float | None = None
              ) -> tuple[Transition, Hold] | None:
        """``Hold.step`` for one of the miner's rules; a Hold is made only once needed."""
        hold = miner.holds.get(rule)
        if hold is None:
            if not holds:
                return None
            hold = miner.holds[rule] = Hold()
        step = hold.step(holds, clears, now, for_s, cooldown_s, began)
        return None if step is None else (step, hold)

    # --- samples ------------------------------------------------------------------------

    def on_sample(self, sample: Sample) -> list[AlertEvent]:
        """The events one sample causes; [] for a miner past the bound.

        Raises ValueError when the ts matches the pattern but is no real date.
        """
        if not self.admits(sample.miner_id):
            return []
        now = ts_seconds(sample.ts)
        miner = self._miner(sample.miner_id)
        events = [self._free_event(miner, event) for event in self.free.evaluate(sample)]
        if miner.last_ts is not None and now <= miner.last_ts:
            return events
        miner.last_ts = now
        for judge in _SAMPLE_RULES:
            event = judge(self, miner, sample, now)
            if event is not None:
                events.append(event)
        return events

    def _free_event(self, miner: Miner, event: AlertEvent) -> AlertEvent:
        event.label = miner.label
        event.message = f"{miner.name}: {event.message}"
        return event

    def _hashrate_low(self, miner: Miner, sample: Sample, now: float) -> AlertEvent | None:
        rule = cast(HashrateLowRule, miner.settings["hashrate_low"])
        hashrate = sample.hashrate_ths
        event = None
        if rule.enabled and sample.is_mining:
            expected = sample.expected_hashrate_ths
            source = "expected"
            if not expected:
                expected = miner.baseline.median(now)
                source = "its 24 h median"
            if expected:
                threshold = expected * rule.pct / 100.0
                holds = hashrate < threshold
                step = self._step(miner, "hashrate_low", holds, not holds, now, rule.for_s,
                                  rule.cooldown_s)
                if step is not None:
                    transition, hold = step
                    if transition == "fire":
                        text = (f"hashrate {ths(hashrate)} < {ths(threshold)} "
                                f"({format_number(rule.pct)}% of {ths(expected)}, {source}) "
                                f"for {duration(now - (hold.began or now))}")
                        event = self._event(miner, "hashrate_low", "firing", hashrate,
                                            threshold, text, sample.ts, hold.began)
                    else:
                        text = (f"hashrate {ths(hashrate)} back over {ths(threshold)} "
                                f"after {duration(now - (hold.fired_at or now))}")
                        event = self._event(miner, "hashrate_low", "resolved", hashrate,
                                            threshold, text, sample.ts, hold.began)
        # After judging: a low sample does not pull down its own yardstick.
        miner.baseline.add(now, hashrate)
        return event

    def _stalled(self, miner: Miner, sample: Sample, now: float) -> AlertEvent | None:
        rule = cast(StalledRule, miner.settings["stalled"])
        shares = miner.shares
        if not sample.is_mining:
            shares.reset()
            if not rule.enabled:
                return None
            # Not hashing is not_hashing's to say: a stall it was is over.
            step = self._step(miner, "stalled", False, True, now, 0.0, rule.cooldown_s)
            return self._stalled_event(miner, step, now, sample.ts)
        shares.add(now, sample.shares_accepted, sample.hashrate_ths)
        if not rule.enabled:
            return None
        return self._judge_stall(miner, rule, now, sample.ts)

    def _judge_stall(self, miner: Miner, rule: StalledRule, now: float, ts: str
                     ) -> AlertEvent | None:
        shares = miner.shares
        stuck = shares.rose_at is not None and now - shares.rose_at >= rule.for_s
        flat = shares.same_count >= rule.polls
        began = shares.rose_at if stuck else shares.same_since
        hold = miner.holds.get("stalled")
        firing = hold is not None and hold.firing
        if (stuck or flat) and not firing:
            miner.stalled_by = "shares" if stuck else "hashrate"
        # Only a value seen to move clears a stall (not a first sample after a restart).
        moved = shares.shares_moved if miner.stalled_by == "shares" else shares.hashrate_moved
        step = self._step(miner, "stalled", stuck or flat, moved and not (stuck or flat),
                          now, 0.0, rule.cooldown_s, began)
        return self._stalled_event(miner, step, now, ts)

    def _stalled_event(self, miner: Miner, step: tuple[Transition, Hold] | None,
                       now: float, ts: str) -> AlertEvent | None:
        if step is None:
            return None
        transition, hold = step
        rule = cast(StalledRule, miner.settings["stalled"])
        shares = miner.shares
        by_shares = miner.stalled_by == "shares"
        value: float | None
        if transition == "fire":
            if by_shares:
                text = (f"accepted shares stuck at {shares.accepted} for "
                        f"{duration(now - (hold.began or now))}")
                value, threshold = float(shares.accepted or 0), rule.for_s
            else:
                text = (f"hashrate stuck at {ths(shares.hashrate or 0.0)} for "
                        f"{shares.same_count} polls ({duration(now - (hold.began or now))})")
                value, threshold = shares.hashrate, float(rule.polls)
            return self._event(miner, "stalled", "firing", value, threshold, text, ts,
                               hold.began)
        what = "accepted shares rising" if by_shares else "hashrate moving"
        text = f"{what} again after {duration(now - (hold.fired_at or now))}"
        value = float(shares.accepted) if by_shares and shares.accepted is not None else (
            shares.hashrate)
        threshold = rule.for_s if by_shares else float(rule.polls)
        return self._event(miner, "stalled", "resolved", value, threshold, text, ts,
                           hold.began)

    def _fan_failure(self, miner: Miner, sample: Sample, now: float) -> AlertEvent | None:
        rule = cast(FanFailureRule, miner.settings["fan_failure"])
        if not rule.enabled or not sample.fan_rpm or not sample.is_mining:
            return None
        slowest = min(sample.fan_rpm)
        holds = slowest < rule.min_rpm
        step = self._step(miner, "fan_failure", holds, not holds, now, rule.for_s,
                          rule.cooldown_s)
        if step is None:
            return None
        transition, hold = step
        fan = sample.fan_rpm.index(slowest) + 1
        if transition == "fire":
            text = (f"fan {fan} at {slowest} rpm < {rule.min_rpm} rpm for "
                    f"{duration(now - (hold.began or now))}")
            return self._event(miner, "fan_failure", "firing", float(slowest),
                               float(rule.min_rpm), text, sample.ts, hold.began)
        text = (f"every fan at {rule.min_rpm} rpm or more again (slowest {slowest} rpm) "
                f"after {duration(now - (hold.fired_at or now))}")
        return self._event(miner, "fan_failure", "resolved", float(slowest),
                           float(rule.min_rpm), text, sample.ts, hold.began)

    def _rejects_high(self, miner: Miner, sample: Sample, now: float) -> AlertEvent | None:
        rule = cast(RejectsHighRule, miner.settings["rejects_high"])
        window = miner.rejects
        window.add(now, sample.shares_accepted, sample.shares_rejected, rule.window_s)
        if not rule.enabled or window.total < rule.min_shares:
            return None
        pct = window.reject_pct() or 0.0
        holds = pct > rule.pct
        step = self._step(miner, "rejects_high", holds, not holds, now, rule.for_s,
                          rule.cooldown_s)
        if step is None:
            return None
        transition, hold = step
        share = (f"{pct:.1f}% of {window.total} shares rejected in the last "
                 f"{duration(rule.window_s)}")
        if transition == "fire":
            text = f"{share} > {format_number(rule.pct)}%"
            if rule.for_s:
                text += f" for {duration(now - (hold.began or now))}"
            return self._event(miner, "rejects_high", "firing", round(pct, 3), rule.pct,
                               text, sample.ts, hold.began)
        text = (f"{share}, at most {format_number(rule.pct)}% again after "
                f"{duration(now - (hold.fired_at or now))}")
        return self._event(miner, "rejects_high", "resolved", round(pct, 3), rule.pct, text,
                           sample.ts, hold.began)

    def _pool_fallback(self, miner: Miner, sample: Sample, now: float) -> AlertEvent | None:
        rule = miner.settings["pool_fallback"]
        if not rule.enabled or (sample.pool_fallback is None and sample.pool_connected is None):
            return None
        down = sample.pool_connected is False
        holds = sample.pool_fallback is True or down
        step = self._step(miner, "pool_fallback", holds, not holds, now, rule.for_s,
                          rule.cooldown_s)
        if step is None:
            return None
        transition, hold = step
        if transition == "fire":
            what = ("pool connection down" if down else
                    f"working for a fallback pool ({sample.pool_url or 'unknown'})")
            text = f"{what} for {duration(now - (hold.began or now))}"
            return self._event(miner, "pool_fallback", "firing", 1.0, 0.0, text, sample.ts,
                               hold.began)
        text = (f"back on its first pool ({sample.pool_url or 'unknown'}) after "
                f"{duration(now - (hold.fired_at or now))}")
        return self._event(miner, "pool_fallback", "resolved", 0.0, 0.0, text, sample.ts,
                           hold.began)

    def _temperature(self, miner: Miner, sample: Sample, now: float, rule_name: str,
                     value: float | None, threshold: float, what: str) -> AlertEvent | None:
        rule = cast(TemperatureRule, miner.settings[rule_name])
        if not rule.enabled or value is None:
            return None
        step = self._step(miner, rule_name, value > threshold,
                          value <= threshold - rule.hysteresis, now, rule.for_s,
                          rule.cooldown_s)
        if step is None:
            return None
        transition, hold = step
        if transition == "fire":
            text = (f"{what} {format_number(value)} °C > {format_number(threshold)} °C for "
                    f"{duration(now - (hold.began or now))}")
            return self._event(miner, rule_name, "firing", value, threshold, text, sample.ts,
                               hold.began)
        text = (f"{what} {format_number(value)} °C <= "
                f"{format_number(threshold - rule.hysteresis)} °C again after "
                f"{duration(now - (hold.fired_at or now))}")
        return self._event(miner, rule_name, "resolved", value, threshold, text, sample.ts,
                           hold.began)

    def _temp_high(self, miner: Miner, sample: Sample, now: float) -> AlertEvent | None:
        return self._temperature(miner, sample, now, "temp_high", sample.temp_c,
                                 miner.temp_limit, "chip")

    def _vr_temp_high(self, miner: Miner, sample: Sample, now: float) -> AlertEvent | None:
        return self._temperature(miner, sample, now, "vr_temp_high", sample.vr_temp_c,
                                 miner.vr_limit, "VR")

    def _best_difficulty(self, miner: Miner, sample: Sample, now: float) -> AlertEvent | None:
        best = sample.best_diff
        if best is None:
            return None
        previous = miner.best
        if previous is not None and best <= previous:
            return None  # not higher (or lower after a reset: the all-time best stays)
        miner.best = best
        if previous is None or not miner.settings["best_difficulty"].enabled:
            return None  # the first sample of a miner tells its best, not a new one
        text = f"new best difficulty {si(best)} (previous best {si(previous)})"
        return self._event(miner, "best_difficulty", "event", best, previous, text,
                           sample.ts, now)

    def _block_found(self, miner: Miner, sample: Sample, now: float) -> AlertEvent | None:
        blocks = sample.blocks_found
        if blocks is None:
            return None
        previous = miner.blocks
        miner.blocks = blocks
        if previous is None or blocks <= previous:
            return None  # first reading, the same count, or a counter reset
        if not miner.settings["block_found"].enabled:
            return None
        found = blocks - previous
        text = (f"found a block ({blocks} in all)" if found == 1 else
                f"found {found} blocks ({blocks} in all)")
        return self._event(miner, "block_found", "event", float(blocks), float(previous),
                           text, sample.ts, now)

    # --- status -------------------------------------------------------------------------

    def on_status(self, miner_id: str, status: MinerStatus, now: float) -> list[AlertEvent]:
        """``offline`` and ``not_hashing`` after a status message, judged at ``now``.

        Raises ValueError when ``since`` is no real date.
        """
        if not self.admits(miner_id):
            return []
        since = ts_seconds(status.since)
        miner = self._miner(miner_id)
        miner.status = status
        if status.state == "online":
            self._waiting.discard(miner_id)
        else:
            self._waiting.add(miner_id)
        return self._judge_status(miner, now, since)

    def _judge_status(self, miner: Miner, now: float, since: float) -> list[AlertEvent]:
        status = miner.status
        assert status is not None
        events: list[AlertEvent] = []
        state = status.state
        offline = miner.settings["offline"]
        if offline.enabled:
            step = self._step(miner, "offline", state == "offline", state != "offline", now,
                              offline.for_s, offline.cooldown_s, since)
            if step is not None:
                events.append(self._status_event(miner, "offline", step, now))
        idle = miner.settings["not_hashing"]
        if idle.enabled:
            # Offline says nothing about hashing: the hold restarts, a firing one stays.
            step = self._step(miner, "not_hashing", state == "idle", state == "online", now,
                              idle.for_s, idle.cooldown_s, since)
            if step is not None:
                events.append(self._status_event(miner, "not_hashing", step, now))
        return events

    def _status_event(self, miner: Miner, rule: str, step: tuple[Transition, Hold],
                      now: float) -> AlertEvent:
        transition, hold = step
        status = miner.status
        assert status is not None
        settings = miner.settings[rule]
        reason = f": {status.reason}" if status.reason else ""
        ts = seconds_ts(now)
        if transition == "fire":
            held = now - (hold.began or now)
            what = "offline" if rule == "offline" else "not hashing (idle)"
            return self._event(miner, rule, "firing", round(held, 3), settings.for_s,
                               f"{what} for {duration(held)}{reason}", ts, hold.began)
        lasted = now - (hold.began or now)
        text = (f"{status.state} again after {duration(lasted)} offline" if rule == "offline"
                else f"hashing again after {duration(lasted)} idle")
        return self._event(miner, rule, "resolved", round(lasted, 3), settings.for_s, text,
                           ts, hold.began)

    # --- services -----------------------------------------------------------------------

    def on_service(self, service: str, state: str, now: float) -> list[AlertEvent]:
        """A service's ``online``/``offline``; ``service_down`` fires after ``for_s``."""
        miner_id = SERVICE_PREFIX + service
        if service == OWN_SERVICE or not is_miner_id(miner_id):
            return []
        known = self.services.get(service)
        if known is None:
            if len(self.services) >= MAX_SERVICES:
                return []
            known = self.services[service] = Service(state)
        known.state = state
        return self._judge_service(service, known, now)

    def collector_offline(self) -> bool:
        known = self.services.get("collector")
        return known is not None and known.state != "online"

    def _judge_service(self, service: str, known: Service, now: float) -> list[AlertEvent]:
        rule = self.alerts.service_down
        if not rule.enabled:
            return []
        down = known.state == "offline"
        step = known.hold.step(down, not down, now, rule.for_s, rule.cooldown_s)
        if step is None:
            return []
        hold = known.hold
        began = hold.began or now
        if step == "fire":
            state: AlertState = "firing"
            text = f"the {service} service is offline for {duration(now - began)}"
        else:
            state = "resolved"
            text = f"the {service} service is online again after {duration(now - began)}"
        return [AlertEvent(miner_id=SERVICE_PREFIX + service, rule="service_down",
                           state=state, severity=rule.severity, value=round(now - began, 3),
                           threshold=rule.for_s, message=f"minerwatch: {text}",
                           ts=seconds_ts(now), since=seconds_ts(began))]

    # --- time -----------------------------------------------------------------------------

    def tick(self, now: float) -> list[AlertEvent]:
        """What the passing of time alone decides at ``now`` (wall clock seconds)."""
        events: list[AlertEvent] = []
        for miner_id in list(self._waiting):
            miner = self.miners.get(miner_id)
            if miner is None or miner.status is None:
                self._waiting.discard(miner_id)
                continue
            try:
                since = ts_seconds(miner.status.since)
            except ValueError:  # checked when it arrived; cannot happen
                continue
            events.extend(self._judge_status(miner, now, since))
        for service, known in self.services.items():
            if known.state == "offline" and not known.hold.firing:
                events.extend(self._judge_service(service, known, now))
        if not self.collector_offline():
            events.extend(self._stalls_by_time(now))
        return events

    def _stalls_by_time(self, now: float) -> Iterable[AlertEvent]:
        """Accepted shares that stopped rising on a miner online but silent."""
        for miner in self.miners.values():
            shares = miner.shares
            if shares.rose_at is None or miner.status is None or (
                    miner.status.state != "online"):
                continue
            rule = cast(StalledRule, miner.settings["stalled"])
            hold = miner.holds.get("stalled")
            if not rule.enabled or (hold is not None and hold.firing):
                continue
            if now - shares.rose_at < rule.for_s or (
                    miner.last_ts is not None and now <= miner.last_ts):
                continue
            event = self._judge_stall(miner, rule, now, seconds_ts(now))
            if event is not None:
                yield event

    # --- restart --------------------------------------------------------------------------

    def restore(self, event: AlertEvent) -> bool:
        """Take one retained event found at start; False when it is not ours to take (an
        unknown rule, state already known, a miner past the bound).

        Raises ValueError when its ts (or since) matches the pattern but is no real date.
        """
        if event.rule not in BUILTIN_RULES:
            restored = self.free.restore(event)
            if restored:
                self._miner(event.miner_id)
            return restored
        at = ts_seconds(event.ts)
        since = ts_seconds(event.since) if event.since else None
        if event.rule == "service_down":
            return self._restore_service(event, at, since)
        if not self.admits(event.miner_id):
            return False
        miner = self._miner(event.miner_id)
        if event.rule in EVENT_RULES:
            return self._restore_count(miner, event)
        if event.rule in miner.holds:
            return False  # state from live data wins
        if event.state == "firing":
            miner.holds.setdefault(event.rule, Hold()).restore(at, since)
            if event.rule == "stalled" and "hashrate stuck" in event.message:
                miner.stalled_by = "hashrate"
        return True

    def _restore_service(self, event: AlertEvent, at: float, since: float | None) -> bool:
        service = event.miner_id.removeprefix(SERVICE_PREFIX)
        if service == event.miner_id or service in self.services:
            return False
        if len(self.services) >= MAX_SERVICES:
            return False
        known = self.services[service] = Service("offline" if event.state == "firing"
                                                  else "online")
        if event.state == "firing":
            known.hold.restore(at, since)
        return True

    @staticmethod
    def _restore_count(miner: Miner, event: AlertEvent) -> bool:
        if event.value is None:
            return False
        if event.rule == "best_difficulty":
            miner.best = max(miner.best or event.value, event.value)
        else:
            miner.blocks = max(miner.blocks or 0, int(event.value))
        return True


SampleRule = Callable[[Evaluator, Miner, Sample, float], AlertEvent | None]

#: The sample rules, in the order their events are returned.
_SAMPLE_RULES: tuple[SampleRule, ...] = (
    Evaluator._hashrate_low,
    Evaluator._stalled,
    Evaluator._fan_failure,
    Evaluator._rejects_high,
    Evaluator._pool_fallback,
    Evaluator._temp_high,
    Evaluator._vr_temp_high,
    Evaluator._best_difficulty,
    Evaluator._block_found,
)
