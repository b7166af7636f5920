"""Identity: one miner per MAC whatever the number of addresses, polled once, published
under one id, ``info.host`` following the address that answers. Real sockets throughout."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from minerwatch.collector.fleet import FleetRegistry
from minerwatch.collector.outbox import Outbox
from minerwatch.collector.scheduler import Scheduler
from minerwatch.shared.config import CollectorConfig, MinerConfig
from minerwatch.shared.schemas import MinerInfo, MinerStatus, Sample
from minerwatch.sim.fleet import Fleet

StartServer = Callable[..., Awaitable[Any]]
GAMMA = "bitaxe_gamma_v2.11.0_system_info.json"
GAMMA_ID = "24dcc34a1b2c"


def sent(outbox: Outbox, kind: type) -> list[Any]:
    return [item.message for item in outbox._items if isinstance(item.message, kind)]


def cleared(outbox: Outbox) -> list[tuple[str, str]]:
    return [(item.miner_id, item.kind) for item in outbox._items if item.message is None]


async def test_two_addresses_with_one_mac_are_one_miner_polled_once(
    http_miner: StartServer, load_fixture: Callable[[str], bytes]
) -> None:
    first = await http_miner(load_fixture(GAMMA))
    second = await http_miner(load_fixture(GAMMA))  # the same unit, another address
    outbox = Outbox()
    config = CollectorConfig(poll_interval_s=0.1, timeout_s=0.5, miners=[
        MinerConfig(url=f"axeos://127.0.0.1:{first.port}"),
        MinerConfig(url=f"axeos://127.0.0.1:{second.port}")])
    registry = FleetRegistry(config, outbox)
    running = asyncio.create_task(Scheduler(registry.config, registry).run())
    try:
        await asyncio.sleep(0.35)
        assert len(registry.slots) == 1  # merged at the second address's first answer
        first_seen, second_seen = len(first.requests), len(second.requests)
        await asyncio.sleep(0.5)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await registry.aclose()
    assert len(first.requests) - first_seen >= 4  # polled at one address...
    assert len(second.requests) == second_seen  # ...and not at the other
    assert {s.miner_id for s in sent(outbox, Sample)} == {GAMMA_ID}
    [info] = sent(outbox, MinerInfo)
    assert (info.miner_id, info.port) == (GAMMA_ID, first.port)
    assert [s.state for s in sent(outbox, MinerStatus)] == ["online"]
    # one sample per interval, not two: ~8 polls in 0.85 s at 0.1 s
    assert len(sent(outbox, Sample)) <= 11


async def test_the_address_that_answers_wins_and_info_follows_it(
    http_miner: StartServer, load_fixture: Callable[[str], bytes], dead_port: int
) -> None:
    old = await http_miner(load_fixture(GAMMA))
    new = await http_miner(load_fixture(GAMMA))
    outbox = Outbox()
    config = CollectorConfig(timeout_s=0.5, miners=[
        MinerConfig(url=f"axeos://127.0.0.1:{old.port}", name="garage"),
        MinerConfig(url=f"axeos://127.0.0.1:{new.port}")])
    registry = FleetRegistry(config, outbox)
    garage, other = registry.slots
    try:
        await registry.poll(garage)
        old.status = 500  # the old address stops answering well
        await registry.poll(garage)
        await registry.poll(other)  # the same MAC answers elsewhere: merged into garage
        assert registry.slots == [garage] and other.retired
        assert garage.driver.port == new.port
        await registry.poll(garage)
    finally:
        await registry.aclose()
    infos = sent(outbox, MinerInfo)
    assert [(i.miner_id, i.port) for i in infos] == [("garage", old.port), ("garage", new.port)]
    samples = sent(outbox, Sample)
    assert [s.miner_id for s in samples] == ["garage"] * 3  # named: the name, always
    assert [s.state for s in sent(outbox, MinerStatus)] == ["online"]  # one blip only


async def test_a_miner_that_fails_everywhere_goes_offline_trying_each_address(
    http_miner: StartServer, load_fixture: Callable[[str], bytes]
) -> None:
    a = await http_miner(load_fixture(GAMMA))
    b = await http_miner(load_fixture(GAMMA))
    outbox = Outbox()
    registry = FleetRegistry(CollectorConfig(timeout_s=0.5, miners=[
        MinerConfig(url=f"axeos://127.0.0.1:{a.port}"),
        MinerConfig(url=f"axeos://127.0.0.1:{b.port}")]), outbox)
    slot, alias = registry.slots
    try:
        await registry.poll(slot)
        await registry.poll(alias)
        assert registry.slots == [slot]
        a.status = b.status = 503
        before = len(a.requests), len(b.requests)
        for _ in range(3):
            await registry.poll(slot)
        assert len(a.requests) - before[0] == 2 and len(b.requests) - before[1] == 1
        a.status = 200
        await registry.poll(slot)  # b's turn: still failing
        await registry.poll(slot)  # a again: answers
    finally:
        await registry.aclose()
    states = [(s.state, s.reason, s.failures) for s in sent(outbox, MinerStatus)]
    assert states == [("online", None, 0), ("offline", "HTTP 503 Service Unavailable", 3),
                      ("online", None, 0)]
    assert {s.miner_id for s in sent(outbox, Sample)} == {GAMMA_ID}


async def test_a_miner_that_moves_keeps_its_id_and_history() -> None:
    async with Fleet(axeos=1, cgminer=0, host="127.0.0.21", seed=2) as fleet:
        miner = fleet.miners[0]
        outbox = Outbox()
        registry = FleetRegistry(
            CollectorConfig(timeout_s=0.5, miners=[MinerConfig(url=miner.url)]), outbox)
        [slot] = registry.slots
        try:
            await registry.poll(slot)
            await fleet.move(miner.name, "127.0.0.22")  # a new DHCP lease
            for _ in range(3):
                await registry.poll(slot)
            # discovery (or anything else) finds the same MAC at the new address
            assert registry.add("axeos", "127.0.0.22", miner.port, mac=miner.mac) is None
            assert slot.driver.host == "127.0.0.22"
            await registry.poll(slot)
            # asking again for an address it polls already changes nothing
            assert registry.add("axeos", "127.0.0.22", miner.port) is None
            assert registry.add("axeos", "127.0.0.21", miner.port) is None  # an alternate
            assert len(registry.slots) == 1
        finally:
            await registry.aclose()
    mac_id = miner.mac.replace(":", "").lower()
    assert {s.miner_id for s in sent(outbox, Sample)} == {mac_id}
    assert [(s.state, s.reason) for s in sent(outbox, MinerStatus)] == [
        ("online", None), ("offline", f"refused: nothing listens on port {miner.port}"),
        ("online", None)]
    assert [i.host for i in sent(outbox, MinerInfo)] == ["127.0.0.21", "127.0.0.22"]
    assert {i.miner_id for i in sent(outbox, MinerInfo)} == {mac_id}


async def test_a_duplicate_reached_late_leaves_no_phantom_status(
    http_miner: StartServer, load_json: Callable[[str], Any]
) -> None:
    body = json.dumps(load_json(GAMMA)).encode()
    first = await http_miner(body)
    late = await http_miner(body, mode="close")  # the same miner, unreachable at first
    outbox = Outbox()
    registry = FleetRegistry(CollectorConfig(timeout_s=0.5, miners=[
        MinerConfig(url=f"axeos://127.0.0.1:{first.port}"),
        MinerConfig(url=f"axeos://127.0.0.1:{late.port}")]), outbox)
    slot, alias = registry.slots
    slug = f"127-0-0-1-{late.port}"
    try:
        await registry.poll(slot)
        for _ in range(3):
            await registry.poll(alias)
        assert sent(outbox, MinerStatus)[-1].state == "offline"  # under the slug
        late.mode = "normal"
        await registry.poll(alias)
    finally:
        await registry.aclose()
    assert registry.slots == [slot]
    assert (slug, "status") in cleared(outbox)
    assert {s.miner_id for s in sent(outbox, Sample)} == {GAMMA_ID}


async def test_miners_found_at_runtime_join_the_polling() -> None:
    async with Fleet(axeos=1, cgminer=1, host="127.0.0.23", seed=3) as fleet:
        axeos, cgminer = fleet.miners
        outbox = Outbox()
        registry = FleetRegistry(CollectorConfig(poll_interval_s=0.1, timeout_s=0.5), outbox)
        running = asyncio.create_task(Scheduler(registry.config, registry).run())
        try:
            await asyncio.sleep(0.05)
            assert registry.add("axeos", axeos.host, axeos.port) is not None
            assert registry.add("cgminer", cgminer.host, cgminer.port) is not None
            assert registry.add("axeos", axeos.host, axeos.port) is None
            for _ in range(200):
                ids = {s.miner_id for s in sent(outbox, Sample)}
                if len(ids) == 2:
                    break
                await asyncio.sleep(0.02)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await registry.aclose()
    assert ids == {axeos.mac.replace(":", "").lower(), f"127-0-0-23-{cgminer.port}"}


async def test_addresses_known_follow_removals(
    http_miner: StartServer, load_fixture: Callable[[str], bytes]
) -> None:
    server = await http_miner(load_fixture(GAMMA))
    registry = FleetRegistry(CollectorConfig(timeout_s=0.5, miners=[
        MinerConfig(url=f"axeos://127.0.0.1:{server.port}")]), Outbox())
    try:
        [slot] = registry.slots
        assert registry.add("axeos", "127.0.0.1", server.port) is None
        await registry.remove(slot)
        again = registry.add("axeos", "127.0.0.1", server.port)  # forgotten, so found anew
        assert again is not None and registry.slots == [again]
        assert registry.add("axeos", "127.0.0.1", server.port) is None
    finally:
        await registry.aclose()
