"""Pure tests of the alert engine: every built-in rule, its hold, cooldown, overrides and
restart, on a clock the tests set (the samples' ts, and ``now`` for status and ticks)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from minerwatch.alerts.engine import Evaluator
from minerwatch.alerts.limits import ANTMINER_S9, ANTMINER_S19, BITAXE, UNKNOWN, limits_for
from minerwatch.shared.config import (
    BUILTIN_RULES,
    AlertsConfig,
    ConfigError,
    OverrideConfig,
    RuleConfig,
)
from minerwatch.shared.schemas import AlertEvent, MinerInfo, MinerStatus, Sample, format_ts

T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC


def ts_at(offset: float) -> str:
    return format_ts(datetime.fromtimestamp(T0 + offset, UTC))


def config(*enabled: str, overrides: list[dict[str, Any]] | None = None,
           rules: list[RuleConfig] | None = None, **tables: dict[str, Any]) -> AlertsConfig:
    """Only the ``enabled`` built-in rules on (all when none named), ``tables`` on top."""
    raw: dict[str, Any] = {name: {"enabled": not enabled or name in enabled}
                           for name in BUILTIN_RULES}
    for name, values in tables.items():
        raw[name].update(values)
    raw["overrides"] = overrides or []
    alerts = msgspec.convert(raw, AlertsConfig)
    alerts.rules = rules or []
    return alerts


def info(miner_id: str = "m1", make: str | None = "Bitaxe", model: str | None = "Gamma BM1370",
         label: str | None = "Garage Bitaxe") -> MinerInfo:
    return MinerInfo(miner_id=miner_id, driver="axeos", host="10.0.0.5", port=80, make=make,
                     model=model, label=label)


def sample(offset: float, miner_id: str = "m1", hashrate_ths: float = 1.0,
           **values: Any) -> Sample:
    return Sample(miner_id=miner_id, ts=ts_at(offset), hashrate_ths=hashrate_ths, **values)


def status(state: str, since: float, reason: str | None = None) -> MinerStatus:
    return MinerStatus(state=state, since=ts_at(since), reason=reason)  # type: ignore[arg-type]


def feed(evaluator: Evaluator, samples: list[Sample]) -> list[AlertEvent]:
    return [event for s in samples for event in evaluator.on_sample(s)]


def states(events: list[AlertEvent]) -> list[tuple[str, str, str]]:
    return [(e.rule, e.state, e.ts) for e in events]


# --- temperatures, per-model limits and overrides --------------------------------------


def test_temp_high_uses_the_bitaxe_limit_holds_for_s_and_resolves_past_the_band() -> None:
    engine = Evaluator(config("temp_high"))
    engine.on_info(info())
    events = feed(engine, [sample(t, temp_c=72.4) for t in (0, 30, 59)])
    assert events == []
    [firing] = engine.on_sample(sample(65, temp_c=72.4))
    assert firing == AlertEvent(
        miner_id="m1", rule="temp_high", state="firing", severity="warning", value=72.4,
        threshold=70.0, message="Garage Bitaxe: chip 72.4 °C > 70 °C for 65 s",
        ts=ts_at(65), label="Garage Bitaxe", since=ts_at(0))
    assert feed(engine, [sample(t, temp_c=74) for t in range(70, 400, 10)]) == []  # once
    assert engine.on_sample(sample(400, temp_c=68)) == []  # inside the 3 °C band
    [resolved] = engine.on_sample(sample(410, temp_c=66.5))
    assert (resolved.state, resolved.value, resolved.since) == ("resolved", 66.5, ts_at(0))
    assert resolved.message == "Garage Bitaxe: chip 66.5 °C <= 67 °C again after 6 min"


def test_a_miner_without_a_known_model_is_judged_by_the_default_threshold() -> None:
    engine = Evaluator(config("temp_high", temp_high={"for_s": 0}))
    assert engine.on_sample(sample(0, temp_c=72.4)) == []
    [event] = engine.on_sample(sample(1, temp_c=75.5))
    assert (event.threshold, event.label, event.message) == (
        75.0, None, "m1: chip 75.5 °C > 75 °C for 0 s")


def test_vr_temp_high_uses_the_vr_limit() -> None:
    engine = Evaluator(config("vr_temp_high", vr_temp_high={"for_s": 0}))
    engine.on_info(info())
    assert engine.on_sample(sample(0, vr_temp_c=84.0)) == []
    [event] = engine.on_sample(sample(1, vr_temp_c=86.0))
    assert (event.rule, event.severity, event.threshold) == ("vr_temp_high", "critical", 85.0)
    assert event.message == "Garage Bitaxe: VR 86 °C > 85 °C for 0 s"


@pytest.mark.parametrize(("make", "model", "expected"), [
    ("Bitaxe", "Gamma BM1370", BITAXE),
    ("Antminer", "S19j Pro", ANTMINER_S19),
    ("Antminer", "S21", ANTMINER_S19),
    (None, "Antminer S9", ANTMINER_S9),
    ("Antminer", "L7", UNKNOWN),
    (None, None, UNKNOWN),
])
def test_limits_by_make_and_model(make: str | None, model: str | None, expected: Any) -> None:
    assert limits_for(make, model) == expected


def test_overrides_model_beats_make_miner_id_beats_model_later_wins_among_equals() -> None:
    overrides = [
        {"match": {"miner_id": "s19-b"}, "temp_high": {"threshold": 95}},
        {"match": {"make": "antminer"}, "temp_high": {"threshold": 60}},
        {"match": {"model": "S19 Pro"}, "temp_high": {"threshold": 70}},
        {"match": {"model": "s19 pro"}, "temp_high": {"threshold": 80, "for_s": 0}},
    ]
    engine = Evaluator(config("temp_high", temp_high={"for_s": 0}, overrides=overrides))
    for miner_id, model in (("s19-a", "S19 Pro"), ("s19-b", "S19 Pro"), ("s19j", "S19j Pro")):
        engine.on_info(info(miner_id, make="Antminer", model=model, label=None))
    fired = {e.miner_id: e.threshold
             for t in (0, 1) for m in ("s19-a", "s19-b", "s19j")
             for e in engine.on_sample(sample(t, m, temp_c=96.0))}
    # s19-a: the later model override (80); s19-b: its own (95); s19j: the make one (60).
    assert fired == {"s19-a": 80.0, "s19-b": 95.0, "s19j": 60.0}


def test_without_overrides_an_antminer_is_judged_by_its_family_limit() -> None:
    engine = Evaluator(config("temp_high", temp_high={"for_s": 0}))
    engine.on_info(info("s19", make="Antminer", model="S19 Pro", label=None))
    assert engine.on_sample(sample(0, "s19", temp_c=80.0)) == []  # fine for an S19
    assert [e.threshold for e in engine.on_sample(sample(1, "s19", temp_c=86.0))] == [85.0]


def test_the_users_threshold_wins_over_the_model_limit() -> None:
    engine = Evaluator(config("temp_high", temp_high={"for_s": 0, "threshold": 60}))
    engine.on_info(info())
    assert [e.threshold for e in engine.on_sample(sample(0, temp_c=61))] == [60.0]


def test_an_override_can_switch_a_rule_off_for_one_miner() -> None:
    overrides = [{"match": {"miner_id": "quiet"}, "temp_high": {"enabled": False}}]
    engine = Evaluator(config("temp_high", temp_high={"for_s": 0}, overrides=overrides))
    events = [e.miner_id for m in ("quiet", "loud") for e in engine.on_sample(
        sample(0, m, temp_c=99.0))]
    assert events == ["loud"]


def test_bad_overrides_are_one_line_errors_at_load() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"temp_high.threshold"):
        msgspec.convert({"match": {"model": "S19"}, "temp_high": {"threshold": "hot"}},
                        OverrideConfig)
    with pytest.raises(msgspec.ValidationError, match=r"not a built-in rule|nope"):
        msgspec.convert({"match": {"model": "S19"}, "nope": {"for_s": 1}}, OverrideConfig)


# --- cooldown ---------------------------------------------------------------------------


def test_cooldown_holds_a_refire_back_and_resolves_are_never_held() -> None:
    engine = Evaluator(config("temp_high", temp_high={"for_s": 0, "cooldown_s": 100,
                                                      "hysteresis": 0}))
    engine.on_info(info())
    steps = [(0, 71), (10, 69), (20, 71), (30, 69), (99, 71), (100, 71), (110, 69)]
    events = feed(engine, [sample(t, temp_c=v) for t, v in steps])
    assert states(events) == [("temp_high", "firing", ts_at(0)),
                              ("temp_high", "resolved", ts_at(10)),
                              ("temp_high", "firing", ts_at(100)),
                              ("temp_high", "resolved", ts_at(110))]


def test_disabled_rules_say_nothing() -> None:
    engine = Evaluator(config("offline"))
    engine.on_info(info())
    assert feed(engine, [sample(t, temp_c=99, fan_rpm=[0], pool_connected=False,
                                best_diff=float(t + 1)) for t in range(0, 2000, 60)]) == []


# --- offline, not hashing, service down --------------------------------------------------


def test_offline_counts_from_the_status_since_carries_the_reason_and_resolves() -> None:
    engine = Evaluator(config("offline"))
    engine.on_info(info())
    assert engine.on_status("m1", status("offline", 0, "timeout after 5 s"), T0 + 30) == []
    assert engine.tick(T0 + 59) == []
    [firing] = engine.tick(T0 + 60)
    assert (firing.rule, firing.state, firing.severity, firing.since, firing.ts) == (
        "offline", "firing", "critical", ts_at(0), ts_at(60))
    assert firing.message == "Garage Bitaxe: offline for 60 s: timeout after 5 s"
    assert engine.tick(T0 + 61) == []
    assert engine.on_status("m1", status("offline", 0, "refused"), T0 + 70) == []
    [resolved] = engine.on_status("m1", status("online", 80), T0 + 80)
    assert (resolved.state, resolved.message) == (
        "resolved", "Garage Bitaxe: online again after 80 s offline")
    # Offline again at once: the hold counts, the cooldown (600 s from 60) holds it back.
    engine.on_status("m1", status("offline", 100, "refused"), T0 + 100)
    assert engine.tick(T0 + 659) == []
    assert [e.state for e in engine.tick(T0 + 660)] == ["firing"]


def test_a_status_offline_long_ago_fires_on_arrival() -> None:
    engine = Evaluator(config("offline"))
    [event] = engine.on_status("m1", status("offline", -3600, "HTTP 503"), T0)
    assert event.message == "m1: offline for 60 min: HTTP 503"


def test_not_hashing_fires_for_an_idle_miner_and_resolves_when_it_hashes() -> None:
    engine = Evaluator(config("not_hashing"))
    assert engine.on_status("m1", status("idle", 0), T0) == []
    assert engine.tick(T0 + 119) == []
    [firing] = engine.tick(T0 + 120)
    assert firing.message == "m1: not hashing (idle) for 2 min"
    assert engine.on_status("m1", status("offline", 130), T0 + 130) == []  # still not hashing
    [resolved] = engine.on_status("m1", status("online", 200), T0 + 200)
    assert resolved.state == "resolved"


def test_service_down_fires_under_the_service_miner_id_and_resolves() -> None:
    engine = Evaluator(config("service_down"))
    assert engine.on_service("collector", "offline", T0) == []
    assert engine.on_service("alerts", "offline", T0) == []  # never about itself
    assert engine.tick(T0 + 59) == []
    [firing] = engine.tick(T0 + 60)
    assert (firing.miner_id, firing.rule, firing.state, firing.since) == (
        "minerwatch-collector", "service_down", "firing", ts_at(0))
    assert firing.message == "minerwatch: the collector service is offline for 60 s"
    assert engine.tick(T0 + 120) == []
    [resolved] = engine.on_service("collector", "online", T0 + 130)
    assert resolved.state == "resolved"


# --- hashrate ----------------------------------------------------------------------------


def test_hashrate_low_against_the_expected_hashrate() -> None:
    engine = Evaluator(config("hashrate_low"))
    engine.on_info(info())
    good = [sample(t, hashrate_ths=1.1, expected_hashrate_ths=1.2) for t in range(0, 600, 60)]
    assert feed(engine, good) == []
    low = [sample(t, hashrate_ths=0.9, expected_hashrate_ths=1.2)
           for t in range(600, 1300, 60)]
    [firing] = feed(engine, low)
    assert (firing.ts, firing.since, firing.value) == (ts_at(1200), ts_at(600), 0.9)
    assert firing.threshold == pytest.approx(0.96)
    assert firing.message == ("Garage Bitaxe: hashrate 0.9 TH/s < 0.96 TH/s (80% of 1.2 TH/s, "
                              "expected) for 10 min")
    [resolved] = engine.on_sample(sample(1300, hashrate_ths=1.0, expected_hashrate_ths=1.2))
    assert resolved.state == "resolved"


def test_hashrate_low_against_the_miners_own_median_of_hourly_means() -> None:
    engine = Evaluator(config("hashrate_low"))
    # Three hours at 100 TH/s (no expected hashrate reported), then a drop to 70.
    steady = [sample(t, hashrate_ths=100.0) for t in range(0, 3 * 3600, 60)]
    assert feed(engine, steady) == []
    drop = [sample(t, hashrate_ths=70.0) for t in range(3 * 3600, 3 * 3600 + 700, 60)]
    [firing] = feed(engine, drop)
    assert firing.threshold == pytest.approx(80.0)
    assert "(80% of 100 TH/s, its 24 h median)" in firing.message


def test_the_baseline_is_seeded_from_hourly_rollups() -> None:
    engine = Evaluator(config("hashrate_low", hashrate_low={"for_s": 0}))
    hour = int(T0 // 3600) * 3600
    for back in range(1, 25):
        engine.seed_hourly("m1", hour - back * 3600, total=50.0 * 360, count=360)
    [firing] = engine.on_sample(sample(hour - T0 + 60, hashrate_ths=30.0))
    assert firing.threshold == pytest.approx(40.0)


def test_not_mining_is_not_hashrate_low() -> None:
    engine = Evaluator(config("hashrate_low", hashrate_low={"for_s": 0}))
    events = feed(engine, [sample(t, hashrate_ths=0.0, expected_hashrate_ths=1.2,
                                  is_mining=False) for t in range(0, 100, 10)])
    assert events == []


# --- stalled -----------------------------------------------------------------------------


def test_stalled_when_accepted_shares_stop_rising() -> None:
    engine = Evaluator(config("stalled"))
    rising = [sample(t, hashrate_ths=1.0 + t / 1e4, shares_accepted=t) for t in range(0, 100, 10)]
    assert feed(engine, rising) == []
    stuck = [sample(t, hashrate_ths=1.0 + t / 1e4, shares_accepted=90)
             for t in range(100, 1100, 10)]
    [firing] = feed(engine, stuck)
    assert (firing.ts, firing.since, firing.value, firing.threshold) == (
        ts_at(990), ts_at(90), 90.0, 900.0)
    assert firing.message == "m1: accepted shares stuck at 90 for 15 min"
    [resolved] = engine.on_sample(sample(1100, shares_accepted=91))
    assert resolved.message == "m1: accepted shares rising again after 110 s"


def test_stalled_by_a_flatlined_hashrate() -> None:
    engine = Evaluator(config("stalled", stalled={"polls": 5}))
    events = feed(engine, [sample(t, hashrate_ths=1.234) for t in range(0, 100, 10)])
    assert [(e.ts, e.value, e.threshold) for e in events] == [(ts_at(40), 1.234, 5.0)]
    assert events[0].message == "m1: hashrate stuck at 1.234 TH/s for 5 polls (40 s)"
    [resolved] = engine.on_sample(sample(100, hashrate_ths=1.2))
    assert resolved.message == "m1: hashrate moving again after 60 s"


def test_stalled_by_time_when_an_online_miner_sends_no_more_samples() -> None:
    engine = Evaluator(config("stalled"))
    engine.on_status("m1", status("online", 0), T0)
    feed(engine, [sample(t, hashrate_ths=1 + t / 1e4, shares_accepted=t) for t in (0, 10)])
    assert engine.tick(T0 + 909) == []
    # A dead collector is service_down's to say, not a stall of every miner.
    engine.on_service("collector", "offline", T0 + 900)
    assert engine.tick(T0 + 910) == []
    engine.on_service("collector", "online", T0 + 911)
    [firing] = engine.tick(T0 + 912)
    assert (firing.rule, firing.since) == ("stalled", ts_at(10))


def test_a_first_sample_after_a_restart_does_not_resolve_a_stall() -> None:
    engine = Evaluator(config("stalled"))
    assert engine.restore(AlertEvent(
        miner_id="m1", rule="stalled", state="firing", severity="warning", value=90,
        threshold=900, message="m1: accepted shares stuck at 90 for 15 min", ts=ts_at(0),
        since=ts_at(-900)))
    assert engine.on_sample(sample(10, shares_accepted=90)) == []
    assert [e.state for e in engine.on_sample(sample(20, shares_accepted=95))] == ["resolved"]


# --- fans, rejects, pools ------------------------------------------------------------------


def test_fan_failure_names_the_slowest_fan_while_mining() -> None:
    engine = Evaluator(config("fan_failure"))
    engine.on_info(info())
    events = feed(engine, [sample(t, fan_rpm=[4200, 0]) for t in range(0, 70, 10)])
    assert [(e.state, e.ts, e.severity) for e in events] == [("firing", ts_at(60), "critical")]
    assert events[0].message == "Garage Bitaxe: fan 2 at 0 rpm < 500 rpm for 60 s"
    # Not mining: no judgement either way.
    assert engine.on_sample(sample(70, fan_rpm=[4200, 4100], is_mining=False)) == []
    assert [e.state for e in engine.on_sample(sample(80, fan_rpm=[4200, 4100]))] == [
        "resolved"]


def test_rejects_high_over_the_window_survives_counter_resets() -> None:
    engine = Evaluator(config("rejects_high"))
    # 1 rejected per 49 accepted: 2%, not above 2%.
    calm = [sample(t, shares_accepted=t * 49, shares_rejected=t) for t in range(0, 30)]
    assert feed(engine, calm) == []
    # A reboot resets the counters; then 3 of every 10 shares are rejected.
    burst = [sample(30 + t, shares_accepted=7 * t, shares_rejected=3 * t) for t in range(0, 5)]
    [firing] = feed(engine, burst)
    assert firing.rule == "rejects_high" and firing.value is not None
    assert firing.value > 2.0
    assert "shares rejected in the last 30 min > 2%" in firing.message
    # Once the window holds only clean shares again, it resolves.
    later = [sample(2000 + t, shares_accepted=1000 + 100 * t, shares_rejected=12)
             for t in range(0, 3)]
    assert [e.state for e in feed(engine, later)] == ["resolved"]


def test_rejects_high_waits_for_min_shares() -> None:
    engine = Evaluator(config("rejects_high"))
    few = [sample(t, shares_accepted=t, shares_rejected=t) for t in range(0, 10)]
    assert feed(engine, few) == []  # 50% rejected, but only 18 shares


def test_pool_fallback_and_pool_down() -> None:
    engine = Evaluator(config("pool_fallback"))
    url = "stratum+tcp://backup.example:3333"
    events = feed(engine, [sample(t, pool_fallback=True, pool_connected=True, pool_url=url)
                           for t in range(0, 70, 10)])
    assert [e.message for e in events] == [
        f"m1: working for a fallback pool ({url}) for 60 s"]
    assert [e.state for e in engine.on_sample(sample(70, pool_fallback=False))] == ["resolved"]
    events = feed(engine, [sample(t, pool_connected=False) for t in range(800, 870, 10)])
    assert [e.message for e in events] == ["m1: pool connection down for 60 s"]
    assert engine.on_sample(sample(900)) == []  # neither field reported: no judgement


# --- one-off events -----------------------------------------------------------------------


def test_best_difficulty_is_an_event_not_on_the_first_sample() -> None:
    engine = Evaluator(config("best_difficulty"))
    engine.on_info(info())
    assert engine.on_sample(sample(0, best_diff=4.1e9)) == []
    [event] = engine.on_sample(sample(10, best_diff=5.2e9))
    assert (event.state, event.value, event.threshold, event.severity) == (
        "event", 5.2e9, 4.1e9, "info")
    assert event.message == "Garage Bitaxe: new best difficulty 5.2G (previous best 4.1G)"
    assert engine.on_sample(sample(20, best_diff=5.2e9)) == []
    assert engine.on_sample(sample(30, best_diff=1e3)) == []  # a reset: the best stays
    assert engine.on_sample(sample(40, best_diff=5.0e9)) == []
    assert [e.value for e in engine.on_sample(sample(50, best_diff=6e9))] == [6e9]


def test_a_restored_best_difficulty_is_the_known_best() -> None:
    engine = Evaluator(config("best_difficulty"))
    assert engine.restore(AlertEvent(
        miner_id="m1", rule="best_difficulty", state="event", severity="info", value=5e9,
        threshold=4e9, message="m1: new best", ts=ts_at(0)))
    assert engine.on_sample(sample(10, best_diff=5e9)) == []  # known: no second event
    assert [e.threshold for e in engine.on_sample(sample(20, best_diff=7e9))] == [5e9]


def test_block_found() -> None:
    engine = Evaluator(config("block_found"))
    assert engine.on_sample(sample(0, blocks_found=0)) == []
    [event] = engine.on_sample(sample(10, blocks_found=1))
    assert (event.state, event.value, event.threshold, event.message) == (
        "event", 1.0, 0.0, "m1: found a block (1 in all)")
    assert engine.on_sample(sample(20, blocks_found=1)) == []
    restarted = Evaluator(config("block_found"))
    assert restarted.restore(event)
    assert restarted.on_sample(sample(30, blocks_found=1)) == []
    assert [e.message for e in restarted.on_sample(sample(40, blocks_found=3))] == [
        "m1: found 2 blocks (3 in all)"]


# --- restart, forget, free rules, bounds ----------------------------------------------------


def test_a_restored_firing_alert_is_not_fired_again_and_resolves() -> None:
    engine = Evaluator(config("temp_high", temp_high={"for_s": 0}))
    engine.on_info(info())
    [firing] = engine.on_sample(sample(0, temp_c=80))
    restarted = Evaluator(config("temp_high", temp_high={"for_s": 0}))
    restarted.on_info(info())
    assert restarted.restore(firing)
    assert restarted.on_sample(sample(10, temp_c=81)) == []
    [resolved] = restarted.on_sample(sample(20, temp_c=60))
    assert (resolved.state, resolved.since) == ("resolved", ts_at(0))
    assert not restarted.restore(firing)  # state from samples wins now


def test_a_restored_offline_alert_resolves_on_the_status_and_never_refires() -> None:
    engine = Evaluator(config("offline"))
    [firing] = engine.on_status("m1", status("offline", -120, "refused"), T0)
    restarted = Evaluator(config("offline"))
    assert restarted.restore(firing)
    assert restarted.on_status("m1", status("offline", -120, "refused"), T0 + 5) == []
    assert restarted.tick(T0 + 6) == []
    assert [e.state for e in restarted.on_status("m1", status("online", 10), T0 + 10)] == [
        "resolved"]


def test_a_restored_service_down_does_not_fire_again() -> None:
    engine = Evaluator(config("service_down"))
    engine.on_service("store", "offline", T0)
    [firing] = engine.tick(T0 + 60)
    restarted = Evaluator(config("service_down"))
    assert restarted.restore(firing)
    assert restarted.on_service("store", "offline", T0 + 70) == []
    assert restarted.tick(T0 + 200) == []
    assert [e.state for e in restarted.on_service("store", "online", T0 + 300)] == [
        "resolved"]


def test_forget_drops_a_miners_state() -> None:
    engine = Evaluator(config("best_difficulty"))
    engine.on_sample(sample(0, best_diff=10.0))
    engine.forget("m1")
    assert "m1" not in engine.miners
    assert engine.on_sample(sample(10, best_diff=20.0)) == []  # a first sample again


def test_free_rules_keep_working_with_the_label_in_the_message() -> None:
    free = RuleConfig(name="hot", field="temp_c", threshold=50.0, for_s=0)
    engine = Evaluator(config("offline", rules=[free]))
    engine.on_info(info())
    [event] = engine.on_sample(sample(0, temp_c=55.0))
    assert (event.rule, event.label, event.message, event.since) == (
        "hot", "Garage Bitaxe", "Garage Bitaxe: temp_c 55 > 50 for 0 s", ts_at(0))


def test_a_free_rule_cannot_take_a_built_in_name() -> None:
    clash = RuleConfig(name="offline", field="temp_c", threshold=50.0)
    with pytest.raises(ConfigError, match=r"alerts.rules\[0\].name: 'offline' is a built-in"):
        Evaluator(config(rules=[clash]))


def test_samples_out_of_order_are_ignored() -> None:
    engine = Evaluator(config("best_difficulty"))
    engine.on_sample(sample(10, best_diff=10.0))
    assert engine.on_sample(sample(5, best_diff=99.0)) == []
    assert engine.on_sample(sample(10, best_diff=99.0)) == []


def test_state_is_kept_for_at_most_max_miners() -> None:
    engine = Evaluator(config("temp_high", temp_high={"for_s": 0}), max_miners=2)
    assert len(engine.on_sample(sample(0, "a", temp_c=99))) == 1
    assert engine.on_status("b", status("online", 0), T0) == []
    assert not engine.admits("c")
    assert engine.on_sample(sample(0, "c", temp_c=99)) == []
    assert engine.on_status("c", status("offline", -999), T0) == []
    engine.forget("b")
    assert engine.admits("c")


def test_the_default_config_judges_a_healthy_sample_quietly() -> None:
    engine = Evaluator(AlertsConfig())
    engine.on_info(info())
    healthy = [sample(t, hashrate_ths=1.2 + (t % 3) / 100, expected_hashrate_ths=1.2,
                      temp_c=60, vr_temp_c=60, fan_rpm=[4000], shares_accepted=t,
                      shares_rejected=0, best_diff=100.0, pool_fallback=False,
                      pool_connected=True, blocks_found=0) for t in range(0, 3600, 10)]
    assert feed(engine, healthy) == []
