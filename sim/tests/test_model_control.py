"""The model under control: settings move hashrate, power, temperature and stability, as
pure functions of the settings and of time (no waiting: ``now`` is passed in)."""

from __future__ import annotations

import dataclasses

import pytest

from minerwatch.sim.model import (
    ANTMINER_S19_PRO,
    BITAXE_GAMMA,
    SETTINGS_TAU_S,
    Fault,
    MinerModel,
    Settings,
)

T0 = 1_800_000_000.0


def bitaxe(seed: int = 1, index: int = 0) -> MinerModel:
    return MinerModel.create(seed, "axeos", index, BITAXE_GAMMA, T0)


def change(model: MinerModel, now: float, **fields: object) -> None:
    model.apply_settings(dataclasses.replace(model.settings, **fields), now)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def average_hashrate(model: MinerModel, start: float, seconds: int = 600) -> float:
    return mean([model.hashrate_ghs(start + k) for k in range(seconds)])


def test_boots_stable_at_its_reference_settings() -> None:
    for index in range(50):
        model = bitaxe(3, index)
        assert model.settings == Settings(600.0, 1150)
        assert 610 <= model.limit_mhz() <= 640 and 0.4 <= model.limit_slope <= 0.6
        assert model.stable and model.expected_now_ghs() == 1224.0
    antminer = MinerModel.create(1, "cgminer", 0, ANTMINER_S19_PRO, T0)
    assert antminer.stable and antminer.expected_now_ghs() == 110_000.0


def test_hashrate_follows_frequency() -> None:
    model = bitaxe()
    model.set_limit(700, 0.5, T0)  # keep every frequency below stable
    at_600 = average_hashrate(model, T0 + 100)
    change(model, T0 + 1_000, frequency_mhz=450.0)
    at_450 = average_hashrate(model, T0 + 1_100)
    assert model.expected_now_ghs() == pytest.approx(450 * 2040 / 1000)
    assert at_450 / at_600 == pytest.approx(450 / 600, rel=0.02)
    assert 0.95 < at_450 / model.expected_now_ghs() < 1.01  # the unit's own factor


def test_power_grows_with_frequency_and_voltage_squared() -> None:
    model = bitaxe()
    model.set_limit(900, 0.5, T0)
    base = mean([model.power(T0 + k) for k in range(200)])
    assert base == pytest.approx(model.power_w, rel=0.02)
    change(model, T0 + 500, frequency_mhz=450.0, core_voltage_mv=1250)
    later = mean([model.power(T0 + 500 + k) for k in range(200)])
    assert later / base == pytest.approx((450 / 600) * (1250 / 1150) ** 2, rel=0.03)
    assert model.power_load() == pytest.approx((450 / 600) * (1250 / 1150) ** 2)


def test_temperature_follows_power_with_a_lag() -> None:
    model = bitaxe()
    model.set_limit(900, 0.5, T0)
    settle = T0 + 4 * 3_600  # boot warm-up long over
    before = mean([model.natural_temp_c(settle - 60 + k) for k in range(60)])
    assert abs(before - model.temp_setpoint_c) < 2.5  # default settings: today's setpoint
    change(model, settle, frequency_mhz=625.0, core_voltage_mv=1250)
    just_after = model.natural_temp_c(settle + 1)
    assert abs(just_after - before) < 2.5  # no jump: it heats up from where it was
    hot = mean([model.natural_temp_c(settle + 10 * SETTINGS_TAU_S + k) for k in range(60)])
    load = (625 / 600) * (1250 / 1150) ** 2
    assert hot > before + 5
    assert hot - 25.0 == pytest.approx((before - 25.0) * load, rel=0.06)
    # the VR sensor (axeos vrTemp) follows the same curve; cooling works the same way
    change(model, settle + 1_000, frequency_mhz=400.0, core_voltage_mv=1000)
    cool = model.natural_temp_c(settle + 1_000 + 10 * SETTINGS_TAU_S)
    assert cool < before - 5


def test_unstable_above_the_hidden_limit_stable_below() -> None:
    model = bitaxe()
    model.set_limit(560, 0.5, T0)
    assert model.limit_mhz() == 560 and model.limit_mhz(1250) == 610
    change(model, T0, frequency_mhz=550.0)  # below: stable
    start_a, start_r = model.shares(T0)
    stable = average_hashrate(model, T0 + 10) / model.expected_now_ghs()
    a, r = model.shares(T0 + 20_000)
    assert stable > 0.95 and (r - start_r) / (a - start_a + r - start_r) < 0.01
    change(model, T0 + 20_000, frequency_mhz=600.0)  # 40 MHz above
    assert not model.stable
    unstable = average_hashrate(model, T0 + 20_010) / model.expected_now_ghs()
    a2, r2 = model.shares(T0 + 40_000)
    assert unstable < 0.94
    assert (r2 - r) / (a2 - a + r2 - r) > 0.01
    # more voltage lifts the limit: stable again at the same frequency
    change(model, T0 + 40_000, core_voltage_mv=1250)
    assert model.stable and model.limit_mhz() == 610
    assert average_hashrate(model, T0 + 40_010) / model.expected_now_ghs() > 0.95
    # further above loses more
    change(model, T0 + 50_000, core_voltage_mv=1150, frequency_mhz=625.0)
    assert average_hashrate(model, T0 + 50_010) / model.expected_now_ghs() < unstable


def test_counters_monotonic_across_changes() -> None:
    model = bitaxe()
    model.set_limit(560, 0.5, T0)
    plan = {1_000: 450.0, 2_000: 625.0, 3_000: 500.0, 4_000: 620.0, 5_000: 600.0}
    counts = []
    for k in range(6_000):
        now = T0 + k
        if k in plan:
            change(model, now, frequency_mhz=plan[k])
        if k == 2_500:
            model.apply(Fault.REJECTS, now)
        if k == 3_500:
            model.set_paused(True, now)
        if k == 3_700:
            model.set_paused(False, now)
            model.apply(Fault.NONE, now)
        counts.append(model.shares(now))
    accepted = [a for a, _ in counts]
    rejected = [r for _, r in counts]
    assert accepted == sorted(accepted) and rejected == sorted(rejected)
    assert accepted[-1] > accepted[0] + 500
    # a change never moves the counters at its own instant
    before = model.shares(T0 + 7_000)
    change(model, T0 + 7_000, frequency_mhz=410.0)
    assert model.shares(T0 + 7_000) == before


def test_a_reboot_starts_over_but_keeps_the_settings() -> None:
    model = bitaxe()
    change(model, T0, frequency_mhz=500.0, auto_fan=False, fan_percent=70)
    model.set_paused(True, T0 + 100)
    model.apply(Fault.STALLED, T0 + 150)
    best = model.best_ever(T0 + 500)
    model.reboot(T0 + 500)
    assert model.uptime_s(T0 + 500) == 0 and model.uptime_s(T0 + 510) == 10
    assert model.settings.frequency_mhz == 500.0 and model.settings.fan_percent == 70
    assert not model.paused and not model.user_paused
    assert model.condition is Fault.NONE  # a restart cures a stall
    assert model.hashrate_ghs(T0 + 510) > 0
    assert model.shares(T0 + 500)[0] <= 1 and model.best_ever(T0 + 500) >= best
    assert abs(model.natural_temp_c(T0 + 500) - model.temp_start_c) < 1.0  # warms up again
    model.apply(Fault.FAN_STOPPED, T0 + 600)
    model.reboot(T0 + 700)
    assert model.condition is Fault.FAN_STOPPED  # hardware faults stay


def test_more_chips_more_hashrate_and_power() -> None:
    model = bitaxe()
    watts = model.power(T0)
    model.set_chips(4, 1.0, T0)
    assert model.expected_now_ghs() == pytest.approx(4 * 1224.0)
    assert model.power(T0) == pytest.approx(4 * watts)
    assert model.heat_load(model.settings) == 1.0  # per chip: same temperature
