"""The pure model: deterministic per seed, plausible, and moving the way real miners do."""

from __future__ import annotations

import itertools

from minerwatch.sim.axeos import fan_percent, mac_address
from minerwatch.sim.cgminer import chip_status, parse_request
from minerwatch.sim.model import (
    ANTMINER_S19_PRO,
    BITAXE_GAMMA,
    Fault,
    MinerModel,
    Stopwatch,
    hash_unit,
    value_noise,
)

T0 = 1_800_000_000.0


def bitaxe(seed: int = 1, index: int = 0) -> MinerModel:
    return MinerModel.create(seed, "axeos", index, BITAXE_GAMMA, T0)


def test_same_seed_same_miner_other_seed_other_miner() -> None:
    assert bitaxe(5, 3) == bitaxe(5, 3)
    assert bitaxe(5, 3) != bitaxe(6, 3)
    assert bitaxe(5, 3) != bitaxe(5, 4)
    a, b = bitaxe(5, 3), bitaxe(5, 3)
    times = [T0 + k * 1.7 for k in range(50)]
    assert [a.hashrate_ghs(t) for t in times] == [b.hashrate_ghs(t) for t in times]


def test_noise_stays_in_range_and_is_continuous() -> None:
    values = [value_noise(42, k * 0.37, 5.0) for k in range(2_000)]
    assert all(-1.0 <= v <= 1.0 for v in values)
    assert max(values) > 0.5 and min(values) < -0.5  # it does wander
    steps = [abs(b - a) for a, b in itertools.pairwise(values)]
    assert max(steps) < 0.4  # smooth between lattice points, no jumps
    assert all(-1.0 <= hash_unit(7, step) < 1.0 for step in range(1_000))


def test_hashrate_near_nominal_and_moving() -> None:
    model = bitaxe()
    rates = [model.hashrate_ghs(T0 + k * 0.5) for k in range(2_000)]
    assert all(1050 < rate < 1350 for rate in rates)
    assert len(set(rates)) > 1_900
    antminer = MinerModel.create(1, "cgminer", 0, ANTMINER_S19_PRO, T0)
    assert all(95_000 < antminer.hashrate_ghs(T0 + k) < 125_000 for k in range(500))


def test_temperature_warms_toward_setpoint_and_override_wins() -> None:
    model = bitaxe()
    start = model.temp_c(model.boot_at)
    settled = [model.temp_c(model.boot_at + 3_600 + k) for k in range(0, 600, 7)]
    assert abs(start - model.temp_start_c) < 2.5
    assert all(abs(t - model.temp_setpoint_c) < 3.0 for t in settled)
    assert start < min(settled)
    model.temp_override = 85.0
    assert model.temp_c(T0 + 10) == 85.0
    assert model.natural_temp_c(T0 + 10) < 70
    model.temp_override = None
    assert model.temp_c(T0 + 10) < 70


def test_shares_rise_and_pausing_freezes_them() -> None:
    model = bitaxe()
    counts = [model.shares(T0 + k * 10) for k in range(100)]
    accepted = [a for a, _ in counts]
    rejected = [r for _, r in counts]
    assert accepted == sorted(accepted) and accepted[-1] > accepted[0] + 100
    assert rejected == sorted(rejected)
    assert model.uptime_s(T0 + 100) - model.uptime_s(T0) == 100

    model.set_paused(True, T0 + 1_000)
    frozen = model.shares(T0 + 1_000)
    assert model.shares(T0 + 1_500) == frozen
    assert model.hashrate_ghs(T0 + 1_200) == 0.0
    assert model.power(T0 + 1_200) < model.power_w / 2
    model.set_paused(False, T0 + 1_500)
    assert model.shares(T0 + 1_500) == frozen
    assert model.shares(T0 + 1_600) > frozen
    assert model.mining_s(T0 + 1_600) == model.age_s(T0 + 1_600) - 500


def test_stopwatch_adds_up_the_time_inside() -> None:
    watch = Stopwatch()
    assert watch.elapsed_s(100.0) == 0.0 and not watch.running
    watch.set(True, 100.0)
    watch.set(True, 150.0)  # already running: the start stays
    assert watch.running and watch.elapsed_s(160.0) == 60.0
    watch.set(False, 200.0)
    watch.set(False, 250.0)
    assert watch.elapsed_s(1_000.0) == 100.0
    watch.set(True, 300.0)
    assert watch.elapsed_s(310.0) == 110.0


def test_counters_never_step_back_when_the_other_one_ticks() -> None:
    model = bitaxe()
    model.apply(Fault.NONE, T0)
    counts = [model.shares(T0 + k * 0.5) for k in range(40_000)]
    assert [a for a, _ in counts] == sorted(a for a, _ in counts)
    assert counts[-1][1] > counts[0][1]  # rejects did tick meanwhile
    model.apply(Fault.REJECTS, T0 + 20_000)
    burst = [model.shares(T0 + 20_000 + k * 0.5) for k in range(4_000)]
    assert [a for a, _ in burst] == sorted(a for a, _ in burst)
    assert [r for _, r in burst] == sorted(r for _, r in burst)


def test_lasting_faults_and_one_shots_in_the_model() -> None:
    model = bitaxe()
    model.apply(Fault.STALLED, T0 + 100)
    frozen = model.hashrate_ghs(T0 + 100), model.shares(T0 + 100)
    model.apply(Fault.STALLED, T0 + 200)  # again: the stall keeps its start
    assert (model.hashrate_ghs(T0 + 900), model.shares(T0 + 900)) == frozen
    assert model.uptime_s(T0 + 900) - model.uptime_s(T0 + 100) == 800
    model.apply(Fault.BLOCK, T0 + 1_000)
    assert model.condition is Fault.NONE and model.blocks_found == 1
    assert model.hashrate_ghs(T0 + 1_010) != frozen[0]
    best = model.best_ever(T0 + 1_000)
    model.apply(Fault.BEST_DIFF, T0 + 1_000)
    assert model.condition is Fault.NONE and model.best_ever(T0 + 1_000) > best * 1.2
    assert model.session_best(T0 + 1_000) == model.best_ever(T0 + 1_000)


def test_best_difficulty_never_goes_down() -> None:
    model = bitaxe()
    bests = [model.session_best(T0 + k * 97) for k in range(1_000)]
    assert bests == sorted(bests) and bests[-1] > bests[0]
    assert all(model.best_ever(T0 + k * 97) >= b for k, b in enumerate(bests))


def test_identity_helpers() -> None:
    assert mac_address(0) == "02:4D:57:00:00:00"
    assert mac_address(0x01_02_FF) == "02:4D:57:01:02:FF"
    assert fan_percent(30.0) == 25 and fan_percent(85.0) == 100
    status = chip_status(123, 0)
    assert status.startswith(" ") and status.replace(" ", "").count("o") >= 113
    assert len(status.replace(" ", "")) == 114


def test_parse_request_forms() -> None:
    assert parse_request(b'{"command":"summary"}', False) == "summary"
    assert parse_request(b'{"command":"stats","parameter":""}\x00', True) == "stats"
    assert parse_request(b"summary", False) == "summary"
    assert parse_request(b"pools|0\n", True) == "pools"
    assert parse_request(b'{"command":"summ', False) is None  # wait for the rest
    assert parse_request(b'{"command":"summ', True) == {"code": 23, "msg": "Invalid JSON"}
    assert parse_request(b'{"cmd":"summary"}', True) == {
        "code": 24,
        "msg": "Missing JSON 'command'",
    }
