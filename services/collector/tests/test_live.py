"""AxeOS live push: the WebSocket in place of polling, against simulated v2.14+ miners on
real sockets; polling takes over when the socket drops, and health stays truthful."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from minerwatch.collector.drivers.live import (
    LiveAxeosDriver,
    LiveError,
    merge_update,
    supports_live,
    update_data,
)
from minerwatch.collector.fleet import FleetRegistry, MinerSlot
from minerwatch.collector.outbox import Outbox
from minerwatch.shared.config import CollectorConfig, MinerConfig
from minerwatch.shared.schemas import MinerStatus, Sample
from minerwatch.sim.fleet import Fault, Fleet

# --- pure parts -----------------------------------------------------------------------


def test_updates_merge_into_the_full_object() -> None:
    state: dict[str, Any] = {"hashRate": 1.0, "pools": {"a": 1, "b": {"x": 1}}, "fans": [1, 2]}
    merge_update(state, {"hashRate": 2.0, "pools": {"b": {"y": 2}}, "fans": [3]})
    assert state == {"hashRate": 2.0, "pools": {"a": 1, "b": {"x": 1, "y": 2}}, "fans": [3]}
    merge_update(state, {"pools": 5})
    assert state["pools"] == 5


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('{"event":"update","data":{"temp":61.5}}', {"temp": 61.5}),
        (b'{"event":"update","data":{}}', {}),
        ('{"event":"log","data":"hello"}', None),
    ],
)
def test_update_data(message: str | bytes, expected: dict[str, Any] | None) -> None:
    assert update_data(message) == expected


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("\ufffd not an update", "bad reply: not JSON at byte 0"),
        ('{"event":"update","data":[1]}', "bad update: no data object"),
        ("[1, 2]", "bad update: not a JSON object"),
        ('{"event":"update","data":{"temp"', "bad reply: truncated JSON"),
    ],
)
def test_bad_updates_are_refused(message: str, reason: str) -> None:
    with pytest.raises(LiveError, match=reason.split(" at ")[0]):
        update_data(message)


@pytest.mark.parametrize(
    ("firmware", "live"),
    [("v2.14.0", True), ("v2.15.1", True), ("2.14.0-rc1", True), ("v3.0", True),
     ("v2.13.2", False), ("v2.11.0", False), ("v1.0.27", False), (None, False),
     ("custom", False)],
)
def test_which_firmware_has_live_push(firmware: str | None, live: bool) -> None:
    assert supports_live(firmware) is live


# --- through the fleet registry, on real sockets ---------------------------------------


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def polled(version: str, host: str = "127.0.0.1", **config: Any
                 ) -> AsyncIterator[tuple[Any, FleetRegistry, MinerSlot, Outbox]]:
    async with Fleet(axeos=1, cgminer=0, host=host, axeos_version=version, seed=5) as fleet:
        miner = fleet.miners[0]
        miner.live_interval_s = 0.05
        outbox = Outbox()
        settings = {"poll_interval_s": 0.2, "timeout_s": 0.3} | config
        registry = FleetRegistry(CollectorConfig(miners=[MinerConfig(url=miner.url)], **settings),
                        outbox)
        try:
            yield miner, registry, registry.slots[0], outbox
        finally:
            await registry.aclose()


def sent(outbox: Outbox, kind: type) -> list[Any]:
    return [item.message for item in outbox._items if isinstance(item.message, kind)]


async def poll(registry: FleetRegistry, slot: MinerSlot, times: int, gap_s: float = 0.12) -> None:
    for _ in range(times):
        await registry.poll(slot)
        await asyncio.sleep(gap_s)


async def test_live_updates_replace_polling() -> None:
    async with polled("v2.14.0") as (miner, registry, slot, outbox):
        driver = slot.driver
        assert isinstance(driver, LiveAxeosDriver)
        await registry.poll(slot)  # HTTP: learns the firmware, opens the socket
        await until(lambda: driver.live)
        await poll(registry, slot, 6)
        assert miner.info_requests == 1  # everything after the first poll came pushed
        assert driver.live_fetches == 6 and driver.http_fetches == 1

        samples = sent(outbox, Sample)
        assert len(samples) == 7  # one per poll, not one per push
        assert miner.live_updates > len(samples)
        assert len({s.uptime_s for s in samples}) > 1 or len({s.hashrate_ths for s in samples}) > 1
        latest = miner.snapshot()
        assert samples[-1].hashrate_ths == pytest.approx(latest["hashrate_ths"], rel=0.05)
        assert samples[-1].miner_id == "024d57000000"
        assert [s.state for s in sent(outbox, MinerStatus)] == ["online"]


async def test_a_dropped_socket_falls_back_to_polling_then_comes_back() -> None:
    async with polled("v2.14.0") as (miner, registry, slot, outbox):
        driver = slot.driver
        await registry.poll(slot)
        await until(lambda: driver.live)

        await miner.set_fault(Fault.NO_LIVE)  # socket dropped, new ones refused
        await until(lambda: not driver.live)
        before = miner.info_requests
        await poll(registry, slot, 4)
        assert miner.info_requests == before + 4  # polling took over at once
        assert len(sent(outbox, Sample)) == 5  # and no poll was lost
        assert [s.state for s in sent(outbox, MinerStatus)] == ["online"]

        await miner.set_fault(Fault.NONE)
        for _ in range(40):  # the socket is tried again after retry_s (0.5 s here)
            await registry.poll(slot)
            if driver.live:
                break
            await asyncio.sleep(0.05)
        assert driver.live
        await asyncio.sleep(0.12)
        settled = miner.info_requests
        await poll(registry, slot, 3)
        assert miner.info_requests == settled


async def test_garbage_on_the_socket_drops_it() -> None:
    async with polled("v2.14.0") as (miner, registry, slot, outbox):
        driver = slot.driver
        await registry.poll(slot)
        await until(lambda: driver.live)
        miner.live_interval_s = 0.02
        await miner.set_fault(Fault.GARBAGE)  # HTTP answers garbage as well
        await until(lambda: not driver.live)
        await poll(registry, slot, 3)
        [online, offline] = sent(outbox, MinerStatus)
        assert online.state == "online"
        assert offline.state == "offline" and offline.reason is not None
        assert offline.reason.startswith("bad reply")


@pytest.mark.parametrize(
    ("fault", "reason"),
    [(Fault.REFUSE, "refused: nothing listens on port "), (Fault.TIMEOUT, "timeout after 0.3 s")],
)
async def test_no_socket_and_no_answers_is_offline_after_three_polls(
    fault: Fault, reason: str
) -> None:
    async with polled("v2.15.0") as (miner, registry, slot, outbox):
        driver = slot.driver
        await registry.poll(slot)
        await until(lambda: driver.live)
        driver.fresh_s = 0.1  # pushes older than this show nothing (2 s by default)
        await poll(registry, slot, 2)
        await miner.set_fault(fault)
        await asyncio.sleep(0.12)  # the last push before the fault is stale now
        samples_at_fault = len(sent(outbox, Sample))
        for _ in range(4):
            await registry.poll(slot)
        statuses = sent(outbox, MinerStatus)
        assert [s.state for s in statuses] == ["online", "offline"]
        assert statuses[-1].failures == 3
        assert statuses[-1].reason is not None and statuses[-1].reason.startswith(reason)
        assert len(sent(outbox, Sample)) == samples_at_fault  # stale is never live
        assert not driver.live


async def test_older_firmware_is_polled_and_never_asked_for_a_socket() -> None:
    async with polled("v2.11.0") as (miner, registry, slot, outbox):
        await poll(registry, slot, 4, gap_s=0.05)
        assert miner.info_requests == 4 and miner.live_requests == 0
        assert len(sent(outbox, Sample)) == 4


async def test_a_socket_that_goes_quiet_is_given_up() -> None:
    async with polled("v2.14.0") as (miner, registry, slot, outbox):
        driver = slot.driver
        await registry.poll(slot)
        await until(lambda: driver.live)
        driver.fresh_s = 0.1
        miner.live_interval_s = 3600.0  # the next push comes after this one...
        await asyncio.sleep(0.2)  # ...and the one already scheduled is old by now
        await poll(registry, slot, 3, gap_s=0.02)
        assert not driver.live  # quiet at two fetches in a row: dropped
        assert driver.http_fetches >= 3
        assert [s.state for s in sent(outbox, MinerStatus)] == ["online"]



async def test_live_push_off_polls_even_new_firmware() -> None:
    async with polled("v2.14.0", live_push=False) as (miner, registry, slot, outbox):
        assert not isinstance(slot.driver, LiveAxeosDriver)
        await poll(registry, slot, 4, gap_s=0.05)
        assert miner.info_requests == 4 and miner.live_requests == 0
        assert len(sent(outbox, Sample)) == 4
