"""The scheduler: fixed cadence and phases, overruns, the concurrency bound, miners added
and removed while it runs, the outbox bound and the lateness report.

The drivers here are stand-ins at the fleet's edge (the Driver interface), so the tests
see exactly when each poll starts; real drivers are tested against real sockets elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from minerwatch.collector import scheduler as scheduler_module
from minerwatch.collector.drivers import Reading
from minerwatch.collector.fleet import FleetRegistry
from minerwatch.collector.outbox import Outbox
from minerwatch.collector.scheduler import Scheduler
from minerwatch.shared.config import CollectorConfig, MinerConfig


class Recorder:
    """Polls at once across all the stand-in drivers."""

    def __init__(self) -> None:
        self.active = 0
        self.most = 0


class StandIn:
    """A driver that records when it is polled and takes ``delay`` to answer."""

    name = "axeos"

    def __init__(self, recorder: Recorder, port: int, delay: float = 0.0) -> None:
        self.recorder, self.host, self.port, self.delay = recorder, "127.0.0.1", port, delay
        self.timeout_s = 5.0
        self.calls: list[float] = []
        self.running = 0
        self.overlapped = False
        self.closed = False

    async def fetch(self) -> Reading:
        self.calls.append(asyncio.get_running_loop().time())
        self.running += 1
        self.overlapped |= self.running > 1
        self.recorder.active += 1
        self.recorder.most = max(self.recorder.most, self.recorder.active)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
            self.recorder.active -= 1
        return Reading(hashrate_ths=1.0)

    async def aclose(self) -> None:
        self.closed = True


def make_scheduler(count: int, delay: float = 0.0, **config: Any
                ) -> tuple[Scheduler, list[StandIn], Recorder]:
    miners = [MinerConfig(url=f"axeos://127.0.0.1:{9000 + i}") for i in range(count)]
    settings = CollectorConfig(miners=miners, **config)
    scheduler = Scheduler(settings, FleetRegistry(settings, Outbox()))
    recorder = Recorder()
    drivers = [StandIn(recorder, 9000 + i, delay) for i in range(count)]
    for slot, driver in zip(scheduler.fleet.slots, drivers, strict=True):
        slot.driver = driver
    return scheduler, drivers, recorder


@contextlib.asynccontextmanager
async def running(scheduler: Scheduler) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(scheduler.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await scheduler.fleet.aclose()


async def test_miners_are_spread_over_the_interval_and_keep_their_phase() -> None:
    scheduler, drivers, _ = make_scheduler(4, poll_interval_s=0.2)
    async with running(scheduler):
        await asyncio.sleep(0.7)
    starts = [driver.calls[0] for driver in drivers]
    offsets = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert all(0.03 < offset < 0.07 for offset in offsets), offsets  # 0.2 / 4 apart
    for driver in drivers:
        assert len(driver.calls) >= 3
        # Each poll on its own grid (start + k * interval): no drift, however long it took.
        drift = [call - driver.calls[0] - k * 0.2 for k, call in enumerate(driver.calls)]
        assert all(abs(d) < 0.03 for d in drift), drift
    p99 = scheduler.stats.percentile(0.99)
    assert p99 is not None and p99 < 0.03
    assert scheduler.stats.skipped == 0


async def test_a_poll_that_overruns_skips_the_ticks_it_missed() -> None:
    scheduler, [driver], _ = make_scheduler(1, delay=0.22, poll_interval_s=0.1)
    async with running(scheduler):
        await asyncio.sleep(0.7)
    gaps = [later - earlier for earlier, later in itertools.pairwise(driver.calls)]
    # 0.22 s polls on a 0.1 s grid: the next one starts at the first tick after, 0.3 s on.
    assert len(driver.calls) == 3 and all(0.28 < gap < 0.33 for gap in gaps), gaps
    assert not driver.overlapped  # one poll per miner at a time, never two
    assert scheduler.stats.skipped >= 4  # two ticks per overrun


async def test_at_most_concurrency_polls_at_once_the_rest_wait_their_turn() -> None:
    scheduler, drivers, recorder = make_scheduler(6, delay=0.1, poll_interval_s=0.06, concurrency=2)
    async with running(scheduler):
        await asyncio.sleep(0.45)
    assert recorder.most == 2
    first = [driver.calls[0] for driver in drivers]
    assert first == sorted(first)  # in due order
    assert first[-1] - first[0] > 0.2  # two at a time: the sixth waited for the fourth
    late = scheduler.stats.percentile(0.99)
    assert late is not None and late > 0.1  # the wait counts as lateness


async def test_miners_added_and_removed_while_running() -> None:
    scheduler, [first], recorder = make_scheduler(1, poll_interval_s=0.1)
    async with running(scheduler):
        await asyncio.sleep(0.05)
        slot = scheduler.fleet.add("axeos", "127.0.0.1", 9100)
        assert slot is not None
        added = StandIn(recorder, 9100)
        slot.driver = added  # type: ignore[assignment]
        assert scheduler.fleet.add("axeos", "127.0.0.1", 9100) is None  # polled already
        await asyncio.sleep(0.35)
        assert len(added.calls) >= 2
        await scheduler.fleet.remove(slot)
        polls_at_removal = len(added.calls)
        await asyncio.sleep(0.25)
    assert added.closed and len(added.calls) == polls_at_removal
    assert slot not in scheduler.fleet.slots
    assert len(first.calls) >= 5  # the others went on


def test_the_outbox_holds_ten_minutes_of_the_fleet_unless_told() -> None:
    scheduler, _, _ = make_scheduler(200, poll_interval_s=5.0)
    assert scheduler.fleet.outbox.maxsize == 200 * (600 // 5 + 3)
    scheduler.fleet.add("axeos", "127.0.0.1", 9999)
    assert scheduler.fleet.outbox.maxsize == 201 * (600 // 5 + 3)  # the fleet grew
    small, _, _ = make_scheduler(3, poll_interval_s=10.0)
    assert small.fleet.outbox.maxsize == 1000  # never below MIN_BUFFER
    fixed, _, _ = make_scheduler(200, poll_interval_s=5.0, buffer_messages=50)
    assert fixed.fleet.outbox.maxsize == 50


async def test_a_fleet_too_large_for_the_collector_is_reported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(scheduler_module, "REPORT_EVERY_S", 0.3)
    monkeypatch.setattr(scheduler_module, "LATE_S", 0.05)
    scheduler, _, _ = make_scheduler(4, delay=0.1, poll_interval_s=0.2, concurrency=1)
    with caplog.at_level(logging.WARNING, logger="minerwatch.collector.scheduler"):
        async with running(scheduler):
            await asyncio.sleep(0.7)
    [line, *_] = [r.getMessage() for r in caplog.records if "keeps up with" in r.getMessage()]
    assert "4 miners every 0.2 s" in line
    assert scheduler.stats.late > 0 and scheduler.stats.skipped > 0


def test_buffer_messages_comes_from_the_config_file(tmp_path: Any) -> None:
    from minerwatch.shared.config import ConfigError, load_config

    path = tmp_path / "minerwatch.toml"
    path.write_text('[collector]\nbuffer_messages = 5000\nminers = [{url = "axeos://127.0.0.1:9"}]\n')
    config = load_config(path, environ={})
    assert FleetRegistry(config.collector, Outbox()).outbox.maxsize == 5000
    path.write_text("[collector]\nbuffer_messages = 0\n")
    with pytest.raises(ConfigError, match=r"collector\.buffer_messages"):
        load_config(path, environ={})
