"""Pure tests of the threshold rules: the clock is the number fed with each reading."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from minerwatch.alerts.rules import (
    NUMERIC_FIELDS,
    RuleSet,
    ThresholdRule,
    format_number,
    validate_rules,
)
from minerwatch.shared import fields
from minerwatch.shared.config import ConfigError, RuleConfig
from minerwatch.shared.schemas import AlertEvent, Sample, format_ts

T0 = 1_800_000_000.0  # 2027-01-15, any fixed instant will do


def ts_at(offset: float) -> str:
    return format_ts(datetime.fromtimestamp(T0 + offset, UTC))


def rule(**overrides: Any) -> RuleConfig:
    fields: dict[str, Any] = dict(name="overheat", field="temp_c", op=">", threshold=75.0,
                                  for_s=60.0, cooldown_s=600.0, hysteresis=0.0)
    fields.update(overrides)
    return RuleConfig(**fields)


def run(config: RuleConfig, steps: list[tuple[float, float | None]]) -> list[tuple[float, str]]:
    """Feed (seconds, value) readings for one miner; the (seconds, state) of each event."""
    evaluator = ThresholdRule(config)
    seen = []
    for offset, value in steps:
        for event in evaluator.evaluate("m1", value, T0 + offset, ts_at(offset)):
            seen.append((offset, event.state))
    return seen


def flapping(period: float, until: float, high: float, low: float) -> list[tuple[float, float]]:
    """High and low readings alternating every ``period`` seconds from 0 to ``until``."""
    count = int(until / period) + 1
    return [(i * period, high if i % 2 == 0 else low) for i in range(count)]


F, R = "firing", "resolved"

Case = tuple[str, dict[str, Any], list[tuple[float, float | None]], list[tuple[float, str]]]

CASES: list[Case] = [
    ("fires only once held for for_s",
     {}, [(0, 80), (30, 80), (59.9, 80), (60, 80), (90, 80), (600, 80)], [(60, F)]),
    ("for_s 0 fires on the first reading",
     {"for_s": 0}, [(0, 74), (5, 76)], [(5, F)]),
    ("a dip below resets the hold",
     {}, [(0, 80), (30, 74), (40, 80), (90, 80), (100, 80)], [(100, F)]),
    ("a dip inside the hysteresis band also resets the hold",
     {"hysteresis": 3}, [(0, 80), (30, 74), (40, 80), (99, 80), (100, 80)], [(100, F)]),
    ("equal to the threshold does not hold for >",
     {"for_s": 0}, [(0, 75), (10, 75)], []),
    ("resolves only past the hysteresis band",
     {"for_s": 0, "hysteresis": 3}, [(0, 80), (10, 74), (20, 72.5), (30, 72), (40, 70)],
     [(0, F), (30, R)]),
    ("without hysteresis resolves as soon as the condition fails",
     {"for_s": 0}, [(0, 80), (10, 75)], [(0, F), (10, R)]),
    ("stays firing while the condition holds, however long",
     {"for_s": 0, "cooldown_s": 10}, [(0, 80), (100, 90), (5000, 80)], [(0, F)]),
    ("flapping within the cooldown fires exactly once",
     {"for_s": 0, "cooldown_s": 600}, flapping(10, 590, 76, 74), [(0, F), (10, R)]),
    ("flapping past the cooldown fires once per cooldown",
     {"for_s": 0, "cooldown_s": 600}, flapping(10, 1300, 76, 74),
     [(0, F), (10, R), (600, F), (610, R), (1200, F), (1210, R)]),
    ("flapping with a hold never fires when the hold keeps breaking",
     {"for_s": 30}, flapping(10, 300, 80, 70), []),
    ("after the cooldown it can fire again",
     {"for_s": 0, "cooldown_s": 100}, [(0, 80), (10, 70), (20, 80), (99.9, 80), (100, 80)],
     [(0, F), (10, R), (100, F)]),
    ("the cooldown counts from the firing, not the resolve",
     {"for_s": 0, "cooldown_s": 100}, [(0, 80), (95, 70), (100, 80)],
     [(0, F), (95, R), (100, F)]),
    ("the hold runs during the cooldown: fires when the cooldown ends",
     {"for_s": 30, "cooldown_s": 100},
     [(0, 80), (30, 80), (40, 70), (50, 80), (129, 80), (130, 80)],
     [(30, F), (40, R), (130, F)]),
    ("after the cooldown a fresh hold is still required",
     {"for_s": 30, "cooldown_s": 100}, [(0, 80), (30, 80), (40, 70), (200, 80), (229, 80),
                                        (230, 80)],
     [(30, F), (40, R), (230, F)]),
    (">= fires on equality and resolves below",
     {"op": ">=", "for_s": 0}, [(0, 75), (10, 75), (20, 74.9)], [(0, F), (20, R)]),
    (">= with hysteresis resolves strictly below the band",
     {"op": ">=", "for_s": 0, "hysteresis": 1}, [(0, 75), (10, 74), (20, 73.9)],
     [(0, F), (20, R)]),
    ("< fires below and resolves at threshold + hysteresis",
     {"op": "<", "field": "hashrate_ths", "threshold": 1.0, "hysteresis": 0.2, "for_s": 0},
     [(0, 1.0), (10, 0.5), (20, 1.1), (30, 1.2)], [(10, F), (30, R)]),
    ("<= fires on equality and resolves strictly above the band",
     {"op": "<=", "field": "hashrate_ths", "threshold": 1.0, "for_s": 0},
     [(0, 1.0), (10, 1.0), (20, 1.01)], [(0, F), (20, R)]),
    ("a null alone never fires",
     {"for_s": 0}, [(0, None), (10, None)], []),
    ("a null does not reset the hold",
     {}, [(0, 80), (30, None), (60, 80)], [(60, F)]),
    ("a null does not fire even when the hold has run long enough",
     {}, [(0, 80), (60, None), (61, 80)], [(61, F)]),
    ("a null does not resolve",
     {"for_s": 0}, [(0, 80), (10, None), (20, None), (30, 70)], [(0, F), (30, R)]),
    ("NaN and infinity count as null",
     {}, [(0, 80), (30, math.nan), (45, math.inf), (60, 80)], [(60, F)]),
]


@pytest.mark.parametrize(("overrides", "steps", "expected"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_rule_table(overrides: dict[str, Any], steps: list[tuple[float, float | None]],
                    expected: list[tuple[float, str]]) -> None:
    assert run(rule(**overrides), steps) == expected


def test_event_fields_and_messages() -> None:
    evaluator = ThresholdRule(rule(hysteresis=3, severity="critical"))
    assert evaluator.evaluate("m1", 78.2, T0, ts_at(0)) == []
    [firing] = evaluator.evaluate("m1", 78.2, T0 + 60, ts_at(60))
    assert firing == AlertEvent(miner_id="m1", rule="overheat", state="firing",
                                severity="critical", value=78.2, threshold=75.0,
                                message="temp_c 78.2 > 75 for 60 s", ts=ts_at(60),
                                since=ts_at(0))
    [resolved] = evaluator.evaluate("m1", 71.5, T0 + 150, ts_at(150))
    assert resolved.state == "resolved"
    assert resolved.value == 71.5
    assert resolved.ts == ts_at(150)
    assert resolved.since == ts_at(0)  # when the condition that fired began
    assert resolved.message == ("temp_c 71.5 <= 72 (threshold 75, hysteresis 3), "
                                "resolved after 90 s")


def test_miners_are_independent() -> None:
    evaluator = ThresholdRule(rule(for_s=10))
    assert evaluator.evaluate("a", 80, T0, ts_at(0)) == []
    assert evaluator.evaluate("b", 80, T0 + 5, ts_at(5)) == []
    assert [e.miner_id for e in evaluator.evaluate("a", 80, T0 + 10, ts_at(10))] == ["a"]
    assert evaluator.evaluate("b", 80, T0 + 10, ts_at(10)) == []
    assert [e.miner_id for e in evaluator.evaluate("b", 80, T0 + 15, ts_at(15))] == ["b"]
    assert evaluator.is_firing("a") and evaluator.is_firing("b")


def sample(offset: float, miner_id: str = "m1", **values: Any) -> Sample:
    return Sample(miner_id=miner_id, ts=ts_at(offset), hashrate_ths=1.0, **values)


def test_ruleset_evaluates_every_rule_on_its_field() -> None:
    rules = RuleSet([rule(for_s=0), rule(name="vr", field="vr_temp_c", threshold=90, for_s=0)])
    events = rules.evaluate(sample(0, temp_c=80, vr_temp_c=95))
    assert sorted((e.rule, e.value) for e in events) == [("overheat", 80), ("vr", 95)]
    events = rules.evaluate(sample(10, temp_c=80, vr_temp_c=None))
    assert events == []


def test_ruleset_ignores_samples_not_newer_than_the_last() -> None:
    rules = RuleSet([rule(for_s=0)])
    assert [e.state for e in rules.evaluate(sample(100, temp_c=80))] == ["firing"]
    # An old retained replay and an exact duplicate change nothing.
    assert rules.evaluate(sample(50, temp_c=60)) == []
    assert rules.evaluate(sample(100, temp_c=60)) == []
    # Other miners keep their own order.
    assert [e.miner_id for e in rules.evaluate(sample(10, "m2", temp_c=80))] == ["m2"]
    assert [e.state for e in rules.evaluate(sample(101, temp_c=60))] == ["resolved"]


def firing_event(offset: float, rule_name: str = "overheat") -> AlertEvent:
    return AlertEvent(miner_id="m1", rule=rule_name, state="firing", severity="warning",
                      value=80.0, threshold=75.0, message="temp_c 80 > 75 for 0 s",
                      ts=ts_at(offset))


def test_restore_firing_prevents_a_second_firing_and_keeps_the_cooldown() -> None:
    rules = RuleSet([rule(for_s=0, cooldown_s=100)])
    assert rules.restore(firing_event(0))
    assert rules.evaluate(sample(0, temp_c=80)) == []
    assert rules.evaluate(sample(10, temp_c=85)) == []
    [resolved] = rules.evaluate(sample(20, temp_c=70))
    assert resolved.state == "resolved"
    assert resolved.message == "temp_c 70 <= 75, resolved after 20 s"
    assert rules.evaluate(sample(50, temp_c=80)) == []  # cooldown from the restored firing
    assert [e.state for e in rules.evaluate(sample(100, temp_c=80))] == ["firing"]


def test_samples_up_to_a_restored_event_are_not_judged_again() -> None:
    rules = RuleSet([rule(for_s=0), rule(name="hot", threshold=70, for_s=0)])
    assert rules.restore(firing_event(10))
    assert rules.evaluate(sample(5, temp_c=60)) == []  # older than the firing: no resolve
    assert rules.evaluate(sample(10, temp_c=60)) == []
    assert [(e.rule, e.state) for e in rules.evaluate(sample(11, temp_c=72))] == [
        ("overheat", "resolved"), ("hot", "firing")]


def test_restore_resolved_leaves_the_rule_free_to_fire() -> None:
    rules = RuleSet([rule(for_s=0)])
    resolved = firing_event(0)
    resolved.state = "resolved"
    assert rules.restore(resolved)
    assert [e.state for e in rules.evaluate(sample(10, temp_c=80))] == ["firing"]


def test_restore_never_overrides_state_from_samples_nor_unknown_rules() -> None:
    rules = RuleSet([rule(for_s=0)])
    assert rules.evaluate(sample(0, temp_c=60)) == []
    assert not rules.restore(firing_event(0))
    assert not rules.restore(firing_event(0, rule_name="gone"))
    assert [e.state for e in rules.evaluate(sample(10, temp_c=80))] == ["firing"]


def test_rules_keep_state_for_at_most_max_miners() -> None:
    rules = RuleSet([rule(for_s=0)], max_miners=2)
    assert [e.miner_id for e in rules.evaluate(sample(0, "m1", temp_c=80))] == ["m1"]
    assert rules.evaluate(sample(0, "m2", temp_c=60)) == []
    # A third miner is not judged, nor restored; the known ones still are.
    assert not rules.admits("m3")
    assert rules.evaluate(sample(0, "m3", temp_c=90)) == []
    third = firing_event(0)
    third.miner_id = "m3"
    assert not rules.restore(third)
    assert [e.miner_id for e in rules.evaluate(sample(1, "m2", temp_c=80))] == ["m2"]
    assert [e.state for e in rules.evaluate(sample(1, "m1", temp_c=60))] == ["resolved"]


def test_a_restore_with_an_impossible_ts_leaves_no_state() -> None:
    rules = RuleSet([rule(for_s=0)])
    bad = firing_event(0)
    bad.ts = "2026-13-45T99:00:00.000Z"
    with pytest.raises(ValueError):
        rules.restore(bad)
    assert rules.admits("m1")
    assert [e.state for e in rules.evaluate(sample(0, temp_c=80))] == ["firing"]


def test_numeric_fields_are_the_numbers_of_a_sample() -> None:
    assert NUMERIC_FIELDS == fields.NUMERIC_FIELDS  # the field descriptions decide
    assert "temp_c" in NUMERIC_FIELDS
    assert "uptime_s" in NUMERIC_FIELDS
    for not_numeric in ("schema", "miner_id", "ts", "fan_rpm", "pool_url", "is_mining"):
        assert not_numeric not in NUMERIC_FIELDS


def test_validate_rules_names_the_bad_field() -> None:
    validate_rules([rule(), rule(name="vr", field="vr_temp_c", threshold=90)])
    with pytest.raises(ConfigError) as err:
        RuleSet([rule(field="tmp_c")])
    assert str(err.value).startswith(
        "alerts.rules[0].field: 'tmp_c' is not a numeric Sample field (hashrate_ths, ")
    assert "temp_c" in str(err.value)
    with pytest.raises(ConfigError, match=r"alerts.rules\[1\].field: 'pool_url'"):
        validate_rules([rule(), rule(name="x", field="pool_url")])
    with pytest.raises(ConfigError, match=r"alerts.rules\[1\].name: 'overheat' is used twice"):
        validate_rules([rule(), rule()])


@pytest.mark.parametrize(("value", "text"), [(75.0, "75"), (78.25, "78.25"), (0.1234, "0.123"),
                                             (-0.0001, "0"), (1234567.0, "1234567")])
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text
