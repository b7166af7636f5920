"""The autotune rules and run against a small in-test miner (a fake at the driver's edge).

The acceptance runs against the real simulator are in ``test_tune_sim.py``; these check
the rules one by one and the run's paths (abort, failure, publish failure) in
milliseconds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from minerwatch.collector.control.driver import (
    ControlError,
    MinerAction,
    MinerFacts,
    ReadBack,
)
from minerwatch.collector.drivers.reading import PollError, Reading
from minerwatch.collector.tune import Tuner, TuneRefused, TuneRun
from minerwatch.collector.tune.engine import (
    Measurement,
    Point,
    RunLimits,
    best_step,
    judge,
    make_step,
    measure,
    next_point,
    run_limits,
    start_point,
)
from minerwatch.shared.config import Config, ControlConfig, TuneConfig
from minerwatch.shared.control import limits_for
from minerwatch.shared.schemas import (
    Command,
    MinerSettings,
    Objective,
    Range,
    TuneProgress,
    TuneRequest,
    TuneStep,
    now_ts,
)

from waiting import eventually

GAMMA = MinerFacts(asic="BM1370", device_model="Gamma", small_cores=2040, asic_count=1)
FAST = TuneConfig(settle_s=0.005, window_s=0.015, poll_s=0.005)
LIMITS = RunLimits(chip_temp_max_c=65, vr_temp_max_c=85, min_hashrate_ratio=0.94,
                   max_reject_ratio=0.01)


@dataclass
class FakeMiner:
    """A Gamma whose stable frequency rises 25 MHz per 20 mV from ``limit_mhz`` at
    1150 mV; above it the hashrate drops to 85 % of expected. Power has a static part,
    so at one voltage a higher frequency is a little more efficient."""

    frequency: int = 525
    voltage: int = 1150
    limit_mhz: int = 550
    temp_base_c: float = 50.0
    writes: list[MinerSettings] = field(default_factory=list)
    down: bool = False
    fail_writes: bool = False
    paused: bool = False
    gate: asyncio.Event | None = None  # when set up, the next write waits for it
    blocked: bool = False  # a write is waiting at the gate

    def limit(self) -> float:
        return self.limit_mhz + (self.voltage - 1150) * 25 / 20

    def reading(self) -> Reading:
        if self.down:
            raise PollError("refused: nothing listens on port 80")
        expected = self.frequency * 2040 / 1e6
        factor = 1.0 if self.frequency <= self.limit() else 0.85
        power = 3.0 + 15.0 * (self.frequency / 600) * (self.voltage / 1150) ** 2
        temp = self.temp_base_c + (self.frequency - 500) * 0.04 + (self.voltage - 1150) * 0.05
        return Reading(hashrate_ths=expected * factor, expected_hashrate_ths=1.224,
                       power_w=power, temp_c=temp, vr_temp_c=temp - 5,
                       shares_accepted=100, shares_rejected=0)


@dataclass
class FakeControl:
    miner: FakeMiner
    can_tune: bool = True
    facts: MinerFacts = GAMMA

    @property
    def name(self) -> str:
        return "axeos"

    def supports(self, action: str) -> bool:
        return self.can_tune or action != "tune"

    def settable(self) -> frozenset[str]:
        return frozenset({"frequency_mhz", "core_voltage_mv"})

    async def read(self) -> ReadBack:
        if self.miner.down:
            raise ControlError("refused: nothing listens on port 80")
        return ReadBack(MinerSettings(frequency_mhz=self.miner.frequency,
                                      core_voltage_mv=self.miner.voltage),
                        facts=self.facts, paused=self.miner.paused)

    async def write(self, change: MinerSettings) -> None:
        if self.miner.gate is not None:
            gate, self.miner.gate = self.miner.gate, None
            self.miner.blocked = True
            await gate.wait()
        if self.miner.down:
            raise ControlError("refused: nothing listens on port 80")
        if self.miner.fail_writes:
            raise ControlError("HTTP 500 Internal Server Error")
        self.miner.writes.append(change)
        if change.frequency_mhz is not None:
            self.miner.frequency = change.frequency_mhz
        if change.core_voltage_mv is not None:
            self.miner.voltage = change.core_voltage_mv

    async def act(self, action: MinerAction) -> None:
        raise ControlError(f"{action} is not faked", unsupported=True)

    async def aclose(self) -> None:
        pass


def config(tune: TuneConfig = FAST, *, enabled: bool = True,
           restart_timeout_s: float = 0.3) -> Config:
    return Config(control=ControlConfig(enabled=enabled, timeout_s=1.0, tune=tune,
                                        restart_timeout_s=restart_timeout_s))


def command(objective: Objective = "efficiency", chip_temp_max_c: float | None = None
            ) -> Command:
    return Command(id="run-1", miner_id="gamma-1", action="tune", by="test", ts=now_ts(),
                   tune=TuneRequest(objective=objective, chip_temp_max_c=chip_temp_max_c))


class Published:
    def __init__(self) -> None:
        self.seen: list[TuneProgress] = []

    async def __call__(self, progress: TuneProgress) -> None:
        self.seen.append(progress)


async def tune(miner: FakeMiner, *, objective: Objective = "efficiency",
               settings: Config | None = None, chip_temp_max_c: float | None = None
               ) -> TuneProgress:
    async def read() -> Reading:
        return miner.reading()

    run = TuneRun(command(objective, chip_temp_max_c), FakeControl(miner), read,
                  settings or config(), Published())
    return await run.run()


# --- the rules --------------------------------------------------------------------------


def test_the_start_is_the_current_setting_clamped_into_the_safe_range() -> None:
    limits = limits_for("BM1370", "Gamma")
    assert start_point(Point(550, 1150), limits) == Point(550, 1150)
    assert start_point(Point(700, 1300), limits) == Point(625, 1250)
    assert start_point(Point(100, 900), limits) == Point(400, 1000)


def test_stable_raises_the_frequency_unstable_the_voltage_and_the_tops_stop() -> None:
    frequency, voltage = Range(min=400, max=625), Range(min=1000, max=1250)
    assert next_point(Point(600, 1150), True, frequency, voltage, FAST) == (
        Point(625, 1150), "")
    assert next_point(Point(610, 1150), True, frequency, voltage, FAST)[0] == Point(625, 1150)
    assert next_point(Point(600, 1150), False, frequency, voltage, FAST) == (
        Point(600, 1170), "")
    assert next_point(Point(600, 1240), False, frequency, voltage, FAST)[0] == Point(600, 1250)
    top, why = next_point(Point(625, 1150), True, frequency, voltage, FAST)
    assert top is None and "top of the safe range (625 MHz)" in why
    top, why = next_point(Point(600, 1250), False, frequency, voltage, FAST)
    assert top is None and "top voltage" in why


def reading(hashrate: float, accepted: int = 0, rejected: int = 0, temp: float = 55.0,
            vr: float = 60.0) -> Reading:
    return Reading(hashrate_ths=hashrate, expected_hashrate_ths=1.2, power_w=18.0,
                   temp_c=temp, vr_temp_c=vr, shares_accepted=accepted,
                   shares_rejected=rejected)


def test_a_window_is_judged_on_hashrate_temperatures_and_rejects() -> None:
    steady = measure([reading(1.2, 10, 0), reading(1.18, 30, 0, temp=57.5)], 1.224)
    assert steady.hashrate_ths == pytest.approx(1.19)
    assert (steady.temp_c, steady.reject_ratio) == (57.5, 0.0)
    assert steady.efficiency_jth == pytest.approx(18.0 / 1.19)
    assert judge(steady, LIMITS) is None
    slow = measure([reading(1.1), reading(1.1)], 1.224)
    assert "hashrate 89.9% of expected" in (judge(slow, LIMITS) or "")
    # the expected hashrate comes from the readings when the frequency says nothing
    assert measure([reading(1.1), reading(1.1)], None).expected_ths == 1.2
    rejecting = measure([reading(1.2, 10, 0), reading(1.2, 100, 5)], 1.224)
    assert rejecting.reject_ratio == pytest.approx(5 / 95)
    assert "rejects 5.3%" in (judge(rejecting, LIMITS) or "")
    # one reject in a short window is noise, not a verdict
    assert judge(measure([reading(1.2, 0, 0), reading(1.2, 5, 1)], 1.224), LIMITS) is None
    # counters that went back (a restart) give no ratio
    assert measure([reading(1.2, 50, 3), reading(1.2, 2, 0)], 1.224).reject_ratio is None
    hot = measure([reading(1.2, temp=66.0)], 1.224)
    assert "chip 66.0 °C reached the limit of 65 °C" in (judge(hot, LIMITS) or "")
    vr_hot = measure([reading(1.2, vr=90.0)], 1.224)
    assert "VR 90.0 °C" in (judge(vr_hot, LIMITS) or "")


def test_the_request_overrides_the_temperature_limits() -> None:
    assert run_limits(FAST, TuneRequest(chip_temp_max_c=60)).chip_temp_max_c == 60
    assert run_limits(FAST, TuneRequest()).vr_temp_max_c == 85


def test_the_best_step_depends_on_the_objective() -> None:
    def step(index: int, mhz: int, ths: float, jth: float | None, stable: bool = True
             ) -> TuneStep:
        found = Measurement(ths, 1.2, None if jth is None else jth * ths, 55, 60, 0.0)
        return make_step(index, Point(mhz, 1150), found, None if stable else "unstable")

    steps = [step(0, 500, 1.0, 15.0), step(1, 525, 1.05, 14.5), step(2, 550, 1.1, 16.0),
             step(3, 575, 1.3, 12.0, stable=False)]
    assert best_step(steps, "efficiency") == 1
    assert best_step(steps, "hashrate") == 2
    assert best_step(steps[3:], "hashrate") is None
    no_power = [step(0, 500, 1.0, None), step(1, 525, 1.05, None)]
    assert best_step(no_power, "efficiency") == 1


# --- the run ----------------------------------------------------------------------------


async def test_a_run_climbs_to_the_limit_and_applies_the_most_efficient_step() -> None:
    miner = FakeMiner()
    final = await tune(miner)
    assert final.state == "done", final.message
    tried = [(s.frequency_mhz, s.core_voltage_mv, s.stable) for s in final.steps]
    assert tried == [(525, 1150, True), (550, 1150, True), (575, 1150, False),
                     (575, 1170, True), (600, 1170, False), (600, 1190, True),
                     (625, 1190, False), (625, 1210, True)]
    assert final.original == MinerSettings(frequency_mhz=525, core_voltage_mv=1150)
    assert final.best == 1 and (miner.frequency, miner.voltage) == (550, 1150)
    assert final.applied == MinerSettings(frequency_mhz=550, core_voltage_mv=1150)
    assert "top of the safe range" in (final.message or "")
    assert final.progress == 1.0
    # only what changes is written
    assert miner.writes[:2] == [MinerSettings(frequency_mhz=550),
                                MinerSettings(frequency_mhz=575)]


async def test_the_hashrate_objective_keeps_the_fastest_stable_step() -> None:
    miner = FakeMiner()
    final = await tune(miner, objective="hashrate")
    assert final.state == "done" and final.best == 7
    assert (miner.frequency, miner.voltage) == (625, 1210)


async def test_a_temperature_limit_ends_the_run_at_the_cooler_step() -> None:
    miner = FakeMiner(temp_base_c=60.0)  # 61 °C at 525 MHz, 62 at 550, 63 at 575...
    final = await tune(miner, chip_temp_max_c=62.5)
    assert final.state == "done"
    last = final.steps[-1]
    assert not last.stable and "reached the limit of 62.5 °C" in (last.reason or "")
    assert [s.frequency_mhz for s in final.steps] == [525, 550, 575]
    assert (miner.frequency, miner.voltage) == (550, 1150)


async def test_no_stable_step_brings_back_the_original_settings() -> None:
    miner = FakeMiner(frequency=600, voltage=1240, limit_mhz=400)
    final = await tune(miner)
    assert final.state == "done" and final.best is None
    assert [(s.core_voltage_mv, s.stable) for s in final.steps] == [(1240, False),
                                                                    (1250, False)]
    assert (miner.frequency, miner.voltage) == (600, 1240)
    assert "no stable step" in (final.message or "")


async def test_max_steps_ends_the_run() -> None:
    miner = FakeMiner(frequency=400)
    tune_config = TuneConfig(settle_s=0.01, window_s=0.02, poll_s=0.01, max_steps=3)
    final = await tune(miner, settings=config(tune_config))
    assert len(final.steps) == 3 and "3 steps done (max_steps)" in (final.message or "")


async def test_a_miner_that_stops_answering_fails_the_run_and_is_restored_when_back(
) -> None:
    miner = FakeMiner()
    published = Published()

    gone = False

    async def read() -> Reading:
        nonlocal gone
        if len(miner.writes) >= 2 and not gone:  # away for 0.1 s after the second change
            gone = miner.down = True
            asyncio.get_running_loop().call_later(0.1, setattr, miner, "down", False)
        return miner.reading()

    run = TuneRun(command(), FakeControl(miner), read, config(restart_timeout_s=2.0),
                  published)
    final = await run.run()
    assert final.state == "failed"
    assert "the miner stopped answering: refused" in (final.message or "")
    assert "original settings 525 MHz 1150 mV restored" in (final.message or "")
    assert (miner.frequency, miner.voltage) == (525, 1150)
    assert final.applied == MinerSettings(frequency_mhz=525, core_voltage_mv=1150)
    assert published.seen[-1].state == "failed"


async def test_a_miner_gone_for_good_says_its_settings_were_not_restored() -> None:
    miner = FakeMiner()

    async def read() -> Reading:
        if len(miner.writes) >= 1:
            miner.down = True
        return miner.reading()

    final = await TuneRun(command(), FakeControl(miner), read, config(), Published()).run()
    assert final.state == "failed" and final.applied is None
    assert "could not restore the original settings 525 MHz 1150 mV: refused" in (
        final.message or "")


async def test_a_paused_miner_or_one_without_a_safe_range_is_not_touched() -> None:
    paused = FakeMiner(paused=True)
    final = await tune(paused)
    assert final.state == "failed" and "paused" in (final.message or "")
    assert paused.writes == []

    miner = FakeMiner()

    async def read() -> Reading:
        return miner.reading()

    unknown = FakeControl(miner, facts=MinerFacts(asic="BM9999"))
    final = await TuneRun(command(), unknown, read, config(), Published()).run()
    assert final.state == "failed" and miner.writes == []
    assert final.message == ("cannot tune: no safe range is known for BM9999; the original "
                             "settings 525 MHz 1150 mV are in place")


async def test_a_failing_publish_never_stops_a_run(caplog: pytest.LogCaptureFixture) -> None:
    miner = FakeMiner()
    calls = 0

    async def broken(progress: TuneProgress) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("broker gone")

    async def read() -> Reading:
        return miner.reading()

    final = await TuneRun(command(), FakeControl(miner), read, config(), broken).run()
    assert final.state == "done" and calls > 1
    assert [r.message for r in caplog.records].count(
        "tune gamma-1 (run-1): progress not published: broker gone") == 1


# --- the Tuner --------------------------------------------------------------------------


async def test_the_tuner_runs_one_per_miner_and_abort_restores() -> None:
    # 380 MHz is under the safe range: the first step writes 400 MHz at once
    miner = FakeMiner(frequency=380)
    published = Published()
    tuner = Tuner(config(TuneConfig(settle_s=5, window_s=5, poll_s=0.01)), published)
    driver = FakeControl(miner)

    async def read() -> Reading:
        return miner.reading()

    assert tuner.start(command(), driver, read) == "run-1"
    assert tuner.busy("gamma-1")
    with pytest.raises(TuneRefused, match=r"an autotune run \(run-1\) holds gamma-1"):
        tuner.start(command(), driver, read)
    await eventually(lambda: any("settling" in p.phase for p in published.seen), timeout=5,
                     interval=0.01)
    assert miner.frequency == 400 and tuner.progress("gamma-1") is not None
    assert await tuner.abort("gamma-1") is True
    assert not tuner.busy("gamma-1")
    # the miner's own setting comes back, even from outside the safe range
    assert (miner.frequency, miner.voltage) == (380, 1150)
    final = published.seen[-1]
    assert final.state == "aborted" and final.run_id == "run-1"
    assert final.message == "aborted; original settings 380 MHz 1150 mV restored"
    assert final.applied == MinerSettings(frequency_mhz=380, core_voltage_mv=1150)
    assert await tuner.abort("gamma-1") is False


async def test_the_tuner_refuses_what_cannot_be_tuned() -> None:
    miner = FakeMiner()

    async def read() -> Reading:
        return miner.reading()

    tuner = Tuner(config(), Published())
    with pytest.raises(TuneRefused, match=r"this firmware \(axeos\) cannot be tuned"):
        tuner.start(command(), FakeControl(miner, can_tune=False), read)
    off = Tuner(config(enabled=False), Published())
    with pytest.raises(TuneRefused, match="control is disabled"):
        off.start(command(), FakeControl(miner), read)
    assert not tuner.busy("gamma-1")


async def test_aclose_aborts_every_run_while_a_write_hangs() -> None:
    miner = FakeMiner(gate=asyncio.Event())
    published = Published()
    tuner = Tuner(config(), published)

    async def read() -> Reading:
        return miner.reading()

    tuner.start(command(), FakeControl(miner), read)
    # the first change (550 MHz) never ends
    await eventually(lambda: miner.blocked, timeout=5, interval=0.01)
    await tuner.aclose()
    assert not tuner.busy("gamma-1")
    assert published.seen[-1].state == "aborted"
    assert (miner.frequency, miner.voltage) == (525, 1150)


async def test_an_abort_while_restoring_after_a_failure_lets_the_restore_finish() -> None:
    miner = FakeMiner(frequency=380)  # the first step writes 400 MHz at once
    published = Published()
    tuner = Tuner(config(TuneConfig(settle_s=5, window_s=5, poll_s=0.01),
                         restart_timeout_s=5.0), published)

    async def read() -> Reading:
        if miner.writes:
            miner.down = True  # gone after the first change
        return miner.reading()

    tuner.start(command(), FakeControl(miner), read)
    await eventually(lambda: any(p.phase.startswith("restoring") for p in published.seen),
                     timeout=5, interval=0.01)
    aborting = asyncio.create_task(tuner.abort("gamma-1"))
    tries = sum(p.phase.startswith("restoring") for p in published.seen)
    await eventually(lambda: sum(p.phase.startswith("restoring") for p in published.seen)
                     >= tries + 3, timeout=5, interval=0.01)
    assert not aborting.done()  # the restore goes on, tried again and again...
    miner.down = False  # ...until the miner is back
    assert await aborting is True
    final = published.seen[-1]
    assert final.state == "failed"
    assert final.message == ("the miner stopped answering: refused: nothing listens on port "
                             "80; original settings 380 MHz 1150 mV restored")
    assert (miner.frequency, miner.voltage) == (380, 1150)
