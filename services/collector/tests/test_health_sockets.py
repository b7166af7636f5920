"""The truth about a miner's state, through real sockets: offline only after N failed
polls in a row with the reason, idle when reachable but not hashing, online again at the
first good poll, and no samples at all while offline."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from minerwatch.collector.fleet import FleetRegistry, MinerSlot
from minerwatch.collector.outbox import Outbox
from minerwatch.shared.config import CollectorConfig, MinerConfig
from minerwatch.shared.schemas import MinerStatus, Sample
from minerwatch.sim.fleet import Fault, Fleet

StartServer = Callable[..., Awaitable[Any]]
# Wide enough that a loaded 2-core CI machine never times out a good poll.
TIMEOUT_S = 0.5


def sent(outbox: Outbox, kind: type) -> list[Any]:
    return [item.message for item in outbox._items if isinstance(item.message, kind)]


@contextlib.asynccontextmanager
async def polled(kind: str, offline_after: int = 3
                 ) -> AsyncIterator[tuple[Any, FleetRegistry, MinerSlot, Outbox]]:
    async with Fleet(axeos=int(kind == "axeos"), cgminer=int(kind == "cgminer"),
                     seed=11) as fleet:
        outbox = Outbox()
        registry = FleetRegistry(CollectorConfig(timeout_s=TIMEOUT_S, offline_after=offline_after,
                                        miners=[MinerConfig(url=fleet.miners[0].url,
                                                            name="unit")]), outbox)
        try:
            yield fleet.miners[0], registry, registry.slots[0], outbox
        finally:
            await registry.aclose()


async def fail_until_offline(registry: FleetRegistry, slot: MinerSlot, outbox: Outbox,
                             offline_after: int) -> MinerStatus:
    """Poll ``offline_after`` times: nothing may be published before the last one, then
    exactly the offline status; two more failed polls publish nothing either."""
    published = len(outbox)
    for _ in range(offline_after - 1):
        await registry.poll(slot)
    assert len(outbox) == published  # a blip, or two, is not news
    await registry.poll(slot)
    [offline] = [item.message for item in list(outbox._items)[published:]]
    for _ in range(2):
        await registry.poll(slot)
    assert len(outbox) == published + 1  # said once; no samples while offline
    assert isinstance(offline, MinerStatus)
    return offline


@pytest.mark.parametrize(
    ("kind", "fault", "reason"),
    [
        ("axeos", Fault.REFUSE, "refused: nothing listens on port "),
        ("axeos", Fault.TIMEOUT, f"timeout after {TIMEOUT_S} s"),
        ("axeos", Fault.GARBAGE, "bad reply: "),
        ("cgminer", Fault.REFUSE, "refused: nothing listens on port "),
        ("cgminer", Fault.TIMEOUT, f"timeout after {TIMEOUT_S} s"),
        ("cgminer", Fault.GARBAGE, "bad reply: "),
    ],
)
async def test_offline_after_three_failed_polls_with_the_reason(
    kind: str, fault: Fault, reason: str
) -> None:
    async with polled(kind) as (miner, registry, slot, outbox):
        await registry.poll(slot)
        [online] = sent(outbox, MinerStatus)
        await miner.set_fault(fault)
        offline = await fail_until_offline(registry, slot, outbox, 3)
        samples = len(sent(outbox, Sample))
        await miner.set_fault(Fault.NONE)
        await registry.poll(slot)
        back = sent(outbox, MinerStatus)[-1]
    assert online.state == "online" and samples == 1
    assert offline.state == "offline" and offline.failures == 3
    assert offline.reason is not None and offline.reason.startswith(reason)
    assert offline.last_seen == online.since  # the last good poll
    # Polls take under a millisecond here: the two may share a timestamp, never go back.
    assert offline.since >= online.since  # the first failure of the streak
    assert (back.state, back.reason, back.failures) == ("online", None, 0)
    assert len(sent(outbox, Sample)) == samples + 1  # at the very first good poll


@pytest.mark.parametrize(
    ("status", "reason"),
    [(401, "HTTP 401 Unauthorized"), (500, "HTTP 500 Internal Server Error"),
     (503, "HTTP 503 Service Unavailable"), (599, "HTTP 599")],  # 599: no standard phrase
)
async def test_http_status_is_the_reason(
    http_miner: StartServer, load_fixture: Callable[[str], bytes], status: int, reason: str
) -> None:
    server = await http_miner(load_fixture("bitaxe_gamma_v2.11.0_system_info.json"),
                              status=status)
    outbox = Outbox()
    registry = FleetRegistry(CollectorConfig(timeout_s=TIMEOUT_S, miners=[
        MinerConfig(url=f"axeos://127.0.0.1:{server.port}", name="unit")]), outbox)
    try:
        offline = await fail_until_offline(registry, registry.slots[0], outbox, 3)
    finally:
        await registry.aclose()
    assert (offline.state, offline.reason, offline.failures) == ("offline", reason, 3)
    assert offline.last_seen is None  # never reached
    assert sent(outbox, Sample) == []


#: What each real failing server makes the offline reason start with (one line each).
FAILURES = [
    ("axeos", "silent", r"^timeout after 0\.5 s$"),
    ("axeos", "close", r"^closed without a reply$"),
    ("axeos", "garbage", r"^bad reply: not HTTP \(.+\)$"),
    ("axeos", "dead", r"^refused: nothing listens on port \d+$"),
    ("cgminer", "silent", r"^timeout after 0\.5 s$"),
    ("cgminer", "close", r"^bad reply: empty$"),
    ("cgminer", "garbage", r"^bad reply: not JSON at byte 0$"),
    ("cgminer", "dead", r"^refused: nothing listens on port \d+$"),
]


@pytest.mark.parametrize(("kind", "mode", "pattern"), FAILURES)
async def test_offline_reasons_start_with_what_happened(
    http_miner: StartServer, cgminer_miner: StartServer, dead_port: int,
    kind: str, mode: str, pattern: str,
) -> None:
    if mode == "dead":
        port = dead_port
    else:
        start = http_miner if kind == "axeos" else cgminer_miner
        port = (await start(mode=mode)).port
    outbox = Outbox()
    registry = FleetRegistry(CollectorConfig(timeout_s=TIMEOUT_S, miners=[
        MinerConfig(url=f"{kind}://127.0.0.1:{port}", name="unit")]), outbox)
    try:
        offline = await fail_until_offline(registry, registry.slots[0], outbox, 3)
    finally:
        await registry.aclose()
    assert offline.reason is not None and re.match(pattern, offline.reason), offline.reason
    assert "\n" not in offline.reason


async def test_offline_after_is_configurable() -> None:
    async with polled("axeos", offline_after=5) as (miner, registry, slot, outbox):
        await registry.poll(slot)
        await miner.set_fault(Fault.REFUSE)
        offline = await fail_until_offline(registry, slot, outbox, 5)
    assert (offline.state, offline.failures) == ("offline", 5)


async def test_a_blip_is_not_offline() -> None:
    async with polled("cgminer") as (miner, registry, slot, outbox):
        for _ in range(3):
            await registry.poll(slot)
            await miner.set_fault(Fault.REFUSE)
            await registry.poll(slot)
            await registry.poll(slot)
            await miner.set_fault(Fault.NONE)
        await registry.poll(slot)
    assert [s.state for s in sent(outbox, MinerStatus)] == ["online"]
    assert len(sent(outbox, Sample)) == 4


@pytest.mark.parametrize("kind", ["axeos", "cgminer"])
async def test_reachable_but_not_hashing_is_idle(kind: str) -> None:
    async with polled(kind) as (miner, registry, slot, outbox):
        await registry.poll(slot)
        await miner.set_fault(Fault.PAUSED)
        await registry.poll(slot)
        await registry.poll(slot)
        await miner.set_fault(Fault.NONE)
        await registry.poll(slot)
    states = [(s.state, s.reason) for s in sent(outbox, MinerStatus)]
    assert states == [("online", None), ("idle", "not hashing"), ("online", None)]
    samples = sent(outbox, Sample)
    assert len(samples) == 4  # idle miners still report: their samples say so
    assert [s.is_mining for s in samples] == [True, False, False, True]
    assert samples[1].hashrate_ths == 0
