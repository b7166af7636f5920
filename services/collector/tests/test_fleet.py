"""The registry's own decisions, without a broker: miner ids and what goes into the outbox."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from minerwatch.collector.fleet import FleetRegistry
from minerwatch.collector.outbox import Outbox
from minerwatch.shared.config import CollectorConfig, MinerConfig

StartServer = Callable[..., Awaitable[Any]]


async def test_miner_ids_before_the_first_poll() -> None:
    config = CollectorConfig(miners=[
        MinerConfig(url="axeos://127.0.0.1:8081", name="bench-1"),
        MinerConfig(url="cgminer://127.0.0.1:4028?name=Rack 2 S19"),
        MinerConfig(url="axeos://127.0.0.1"),
    ])
    registry = FleetRegistry(config, Outbox())
    try:
        assert [slot.miner_id for slot in registry.slots] == [
            "bench-1", "rack-2-s19", "127-0-0-1-80"]
        assert [slot.id_decided for slot in registry.slots] == [True, True, False]
    finally:
        await registry.aclose()


async def test_outbox_contents_through_failures_and_recovery(
    http_miner: StartServer, load_fixture: Callable[[str], bytes]
) -> None:
    miner = await http_miner(load_fixture("bitaxe_gamma_v2.11.0_system_info.json"))
    outbox = Outbox()
    config = CollectorConfig(timeout_s=0.5, miners=[
        MinerConfig(url=f"axeos://127.0.0.1:{miner.port}", name="gamma")])
    registry = FleetRegistry(config, outbox)
    slot = registry.slots[0]
    try:
        await registry.poll(slot)
        first = [(item.kind, item.miner_id) for item in outbox._items]
        assert first == [("info", "gamma"), ("status", "gamma"), ("sample", "gamma")]
        await registry.poll(slot)
        assert [item.kind for item in outbox._items][3:] == ["sample"]  # no repeats

        miner.status = 500
        for _ in range(3):
            await registry.poll(slot)
        kinds = [item.kind for item in outbox._items]
        assert kinds[4:] == ["status"]  # no samples while failing; offline once, at the 3rd
        offline = outbox._items[-1].message
        assert (offline.state, offline.reason, offline.failures) == (
            "offline", "HTTP 500 Internal Server Error", 3)

        miner.status = 200
        await registry.poll(slot)
        assert [item.kind for item in outbox._items][5:] == ["status", "sample"]
        assert outbox._items[5].message.state == "online"  # type: ignore[union-attr]
    finally:
        await registry.aclose()
