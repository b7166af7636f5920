"""Autotune against the real simulator: a Bitaxe Gamma whose hidden stability limit the
test pins (``SimMiner.set_limit``), spoken to over HTTP by the real control and read
drivers. Timings are cut to a fraction of a second (``[control.tune]``); the simulator's
hashrate answers a change at once, which is all a step measures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from minerwatch.collector.control import ControlDriver, create_control
from minerwatch.collector.drivers import Driver, create_driver
from minerwatch.collector.tune import Tuner, TuneRun
from minerwatch.collector.tune.engine import best_step
from minerwatch.shared.config import Config, ControlConfig, TuneConfig
from minerwatch.shared.control import limits_for
from minerwatch.shared.schemas import (
    Command,
    MinerSettings,
    Objective,
    TuneProgress,
    TuneRequest,
    TuneStep,
    now_ts,
)
from minerwatch.sim.axeos import AxeOSMiner
from minerwatch.sim.fleet import Fleet

from waiting import eventually

#: A seed whose first Gamma hashes at least 99 % of what it should: the simulator's
#: noise (a few percent) then never takes a stable step under the 94 % rule.
SEED = 1
FAST = TuneConfig(settle_s=0.1, window_s=0.25, poll_s=0.05, chip_temp_max_c=80)
#: The simulated Gamma's safe range: 400-625 MHz, 1000-1250 mV.
RANGE = limits_for("BM1370", "Gamma")


def config(tune: TuneConfig = FAST) -> Config:
    return Config(control=ControlConfig(enabled=True, timeout_s=2.0, restart_timeout_s=3.0,
                                        tune=tune))


@dataclass
class Rig:
    miner: AxeOSMiner
    control: ControlDriver
    reader: Driver

    def settings(self) -> tuple[int, int]:
        """The simulator's own frequency and voltage (not what the drivers say)."""
        state = self.miner.control_state()["settings"]
        return int(state["frequency_mhz"]), int(state["core_voltage_mv"])

    async def set(self, frequency_mhz: int, core_voltage_mv: int) -> None:
        await self.control.write(MinerSettings(frequency_mhz=frequency_mhz,
                                               core_voltage_mv=core_voltage_mv))
        assert self.settings() == (frequency_mhz, core_voltage_mv)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with Fleet(axeos=1, cgminer=0, seed=SEED) as fleet:
        miner = fleet.miners[0]
        assert isinstance(miner, AxeOSMiner)
        assert miner.model.nominal_ghs >= 0.99 * miner.model.expected_ghs, "pick another SEED"
        settings = config()
        control = create_control("axeos", miner.host, miner.port, control=settings.control,
                                 timeout_s=2.0)
        reader = create_driver("axeos", miner.host, miner.port, 2.0)
        try:
            yield Rig(miner, control, reader)
        finally:
            await control.aclose()
            await reader.aclose()


def command(objective: Objective = "efficiency", chip_temp_max_c: float | None = None,
            run_id: str = "run-1") -> Command:
    return Command(id=run_id, miner_id="axeos-0", action="tune", by="test", ts=now_ts(),
                   tune=TuneRequest(objective=objective, chip_temp_max_c=chip_temp_max_c))


class Published:
    def __init__(self) -> None:
        self.seen: list[TuneProgress] = []

    async def __call__(self, progress: TuneProgress) -> None:
        self.seen.append(progress)


async def tune(rig: Rig, objective: Objective = "efficiency", settings: Config | None = None,
               published: Published | None = None) -> TuneProgress:
    run = TuneRun(command(objective), rig.control, rig.reader.fetch, settings or config(),
                  published or Published())
    return await run.run()


def tried(final: TuneProgress) -> list[tuple[int, int, bool]]:
    return [(s.frequency_mhz, s.core_voltage_mv, s.stable) for s in final.steps]


def best(final: TuneProgress) -> TuneStep:
    assert final.best is not None, final.message
    return final.steps[final.best]


async def test_a_run_finds_the_hidden_limit_and_applies_the_best_step(rig: Rig) -> None:
    await rig.set(550, 1150)
    rig.miner.set_limit(590, 1.0)  # 590 MHz at 1150 mV, 610 at 1170, 630 at 1190
    published = Published()
    final = await tune(rig, "efficiency", published=published)
    assert final.state == "done", final.message
    assert tried(final) == [(550, 1150, True), (575, 1150, True), (600, 1150, False),
                            (600, 1170, True), (625, 1170, False), (625, 1190, True)]
    # at each voltage, the best stable frequency is within one step under the limit and
    # the step above it was found unstable
    for step in final.steps:
        limit = rig.miner.model.limit_mhz(step.core_voltage_mv)
        assert step.stable == (step.frequency_mhz <= limit)
    assert "hashrate" in (final.steps[2].reason or "")
    # efficiency: J/TH grows with the voltage squared, so a 1150 mV step wins
    chosen = best(final)
    assert chosen.core_voltage_mv == 1150 and chosen.frequency_mhz in (550, 575)
    assert rig.settings() == (chosen.frequency_mhz, chosen.core_voltage_mv)
    assert final.applied == MinerSettings(frequency_mhz=chosen.frequency_mhz,
                                          core_voltage_mv=1150)
    assert final.original == MinerSettings(frequency_mhz=550, core_voltage_mv=1150)
    assert "top of the safe range (625 MHz)" in (final.message or "")
    # progress after every change, ending with the final one
    assert published.seen[-1].state == "done" and published.seen[-1].progress == 1.0
    assert any(p.phase.startswith("settling") for p in published.seen)
    assert any(p.phase.startswith("sampling") for p in published.seen)
    assert len({len(p.steps) for p in published.seen}) == len(final.steps) + 1


async def test_the_hashrate_objective_keeps_the_fastest_stable_step(rig: Rig) -> None:
    rig.miner.set_limit(610, 0.5)  # from 600 MHz 1150 mV: 625 MHz needs 1190 mV
    final = await tune(rig, "hashrate")
    assert final.state == "done", final.message
    assert tried(final) == [(600, 1150, True), (625, 1150, False), (625, 1170, False),
                            (625, 1190, True)]
    assert (best(final).frequency_mhz, best(final).core_voltage_mv) == (625, 1190)
    assert rig.settings() == (625, 1190)
    # the same steps, judged for efficiency: the 1150 mV one (about 7 % less J/TH)
    efficient = final.steps[best_step(final.steps, "efficiency") or 0]
    assert (efficient.frequency_mhz, efficient.core_voltage_mv) == (600, 1150)
    fastest = best(final).efficiency_jth
    assert efficient.efficiency_jth is not None and fastest is not None
    assert efficient.efficiency_jth < fastest


async def test_the_run_never_leaves_the_safe_range(rig: Rig) -> None:
    await rig.set(575, 1150)
    rig.miner.set_limit(900, 0.5)  # far above the range: every step is stable
    final = await tune(rig, "hashrate")
    assert tried(final) == [(575, 1150, True), (600, 1150, True), (625, 1150, True)]
    assert "frequency at the top of the safe range (625 MHz)" in (final.message or "")
    assert rig.settings() == (625, 1150)
    assert RANGE.frequency_mhz is not None and RANGE.core_voltage_mv is not None
    assert all(RANGE.frequency_mhz.min <= s.frequency_mhz <= RANGE.frequency_mhz.max
               and RANGE.core_voltage_mv.min <= s.core_voltage_mv <= RANGE.core_voltage_mv.max
               for s in final.steps)


async def test_unstable_at_the_top_voltage_stops_and_restores(rig: Rig) -> None:
    await rig.set(625, 1230)
    rig.miner.set_limit(500, 0.5)  # 540 MHz at 1230 mV: nothing here is stable
    final = await tune(rig)
    assert tried(final) == [(625, 1230, False), (625, 1250, False)]
    assert final.state == "done" and final.best is None
    assert "top voltage of the safe range (1250 mV)" in (final.message or "")
    assert rig.settings() == (625, 1230)


async def test_a_temperature_limit_ends_the_run(rig: Rig) -> None:
    await rig.set(550, 1150)
    rig.miner.set_limit(900, 0.5)
    published = Published()
    run = TuneRun(command(chip_temp_max_c=66), rig.control, rig.reader.fetch, config(),
                  published)
    task = asyncio.create_task(run.run())
    # the chip overheats while the second step settles
    await eventually(lambda: len(run.progress.steps) == 1
                     and run.progress.phase.startswith("settling"), timeout=5, interval=0.01)
    rig.miner.temp_override = 71.0
    final = await asyncio.wait_for(task, 10)
    rig.miner.temp_override = None
    assert final.state == "done"
    assert tried(final) == [(550, 1150, True), (575, 1150, False)]
    assert final.steps[1].reason == "chip 71.0 °C reached the limit of 66 °C"
    assert "stopped: chip 71.0 °C" in (final.message or "")
    assert rig.settings() == (550, 1150)


async def test_abort_in_the_middle_restores_the_original_settings(rig: Rig) -> None:
    # 380 MHz is under the safe range: the first step lifts it to 400 MHz at once
    await rig.set(380, 1150)
    rig.miner.set_limit(900, 0.5)
    published = Published()
    tuner = Tuner(config(TuneConfig(settle_s=5, window_s=5, poll_s=0.05)), published)
    tuner.start(command(), rig.control, rig.reader.fetch)
    await eventually(lambda: rig.settings() == (400, 1150), timeout=5, interval=0.01)
    assert tuner.busy("axeos-0")
    assert await tuner.abort("axeos-0")
    assert rig.settings() == (380, 1150)
    final = published.seen[-1]
    assert final.state == "aborted"
    assert final.message == "aborted; original settings 380 MHz 1150 mV restored"
    assert final.applied == MinerSettings(frequency_mhz=380, core_voltage_mv=1150)
    assert not tuner.busy("axeos-0")


async def test_a_miner_that_goes_away_fails_the_run_and_is_restored_when_back(rig: Rig
                                                                              ) -> None:
    await rig.set(550, 1150)
    rig.miner.set_limit(900, 0.5)
    run = TuneRun(command(), rig.control, rig.reader.fetch, config(), Published())
    task = asyncio.create_task(run.run())
    await eventually(lambda: run.progress.phase.startswith("settling")
                     and "575 MHz" in run.progress.phase, timeout=5, interval=0.01)
    await rig.miner.set_fault("refuse")
    await eventually(lambda: "restoring" in run.progress.phase, timeout=5, interval=0.01)
    await rig.miner.set_fault("none")
    final = await asyncio.wait_for(task, 10)
    assert final.state == "failed"
    assert (final.message or "").startswith("the miner stopped answering: refused")
    assert (final.message or "").endswith("original settings 550 MHz 1150 mV restored")
    assert rig.settings() == (550, 1150)


async def test_a_miner_gone_for_good_is_reported_not_restored(rig: Rig) -> None:
    await rig.set(550, 1150)
    rig.miner.set_limit(900, 0.5)
    settings = Config(control=ControlConfig(enabled=True, timeout_s=1.0,
                                            restart_timeout_s=0.5, tune=FAST))
    run = TuneRun(command(), rig.control, rig.reader.fetch, settings, Published())
    task = asyncio.create_task(run.run())
    await eventually(lambda: run.progress.phase.startswith("settling")
                     and "575 MHz" in run.progress.phase, timeout=5, interval=0.01)
    await rig.miner.set_fault("refuse")
    final = await asyncio.wait_for(task, 10)
    await rig.miner.set_fault("none")
    assert final.state == "failed" and final.applied is None
    assert "could not restore the original settings 550 MHz 1150 mV" in (final.message or "")
    assert rig.settings() == (575, 1150)
