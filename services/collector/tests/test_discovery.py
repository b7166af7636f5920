"""Discovery on loopback only: CIDR scans of 127.77.x.0/28 ranges where simulated miners
listen on several 127.77.x.y addresses, and mDNS on the loopback interface. Nothing here
ever touches another network."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
import pytest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from minerwatch.collector.discovery import (
    AXEOS_SERVICE,
    Found,
    MdnsBrowser,
    discover,
    scan,
    scan_hosts,
)
from minerwatch.collector.drivers import fitting
from minerwatch.collector.fleet import FleetRegistry
from minerwatch.collector.outbox import Outbox
from minerwatch.collector.scheduler import Scheduler
from minerwatch.collector.service import serve
from minerwatch.shared import schemas
from minerwatch.shared.config import CollectorConfig, Config, DiscoveryConfig, MqttConfig
from minerwatch.shared.schemas import MinerInfo, Sample
from minerwatch.sim.fleet import Fault, Fleet

LOOPBACK_ONLY = ["127.0.0.1"]  # the only interface zeroconf may use in these tests


def mac_id(mac: str | None) -> str:
    assert mac is not None
    return mac.replace(":", "").lower()


@pytest.fixture
def ports(port_picker: Callable[[], int]) -> tuple[int, int]:
    """Two ports (AxeOS, CGMiner) free on loopback: every simulated host uses the same two,
    as real miners all use 80 and 4028."""
    first = port_picker()
    second = port_picker()
    while second == first:
        second = port_picker()
    return first, second


@contextlib.asynccontextmanager
async def miners_at(specs: list[tuple[str, str, int]], ports: tuple[int, int],
                    **fleet: Any) -> AsyncIterator[list[Any]]:
    """One simulated miner per (host, kind, index): AxeOS on ports[0], CGMiner on ports[1]."""
    async with contextlib.AsyncExitStack() as stack:
        started = []
        for host, kind, index in specs:
            axeos = kind == "axeos"
            running = await stack.enter_async_context(Fleet(
                axeos=int(axeos), cgminer=int(not axeos), host=host, first_index=index,
                base_port=ports[0] if axeos else ports[1], **fleet))
            started.append(running.miners[0])
        yield started


def sent(outbox: Outbox, kind: type) -> list[Any]:
    return [item.message for item in outbox._items if isinstance(item.message, kind)]


async def until(predicate: Callable[[], bool], timeout: float = 8.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


# --- what is probed -------------------------------------------------------------------


def test_scan_hosts_stay_inside_the_ranges() -> None:
    hosts = list(scan_hosts(["127.77.0.0/28"]))
    assert hosts == [f"127.77.0.{i}" for i in range(1, 15)]  # no network or broadcast
    assert list(scan_hosts(["127.77.0.5/32", "127.77.0.4/31"])) == [
        "127.77.0.5", "127.77.0.4"]  # tiny ranges are every address, each once
    overlapping = list(scan_hosts(["127.77.0.0/29", "127.77.0.0/28", "127.77.0.9"]))
    assert overlapping == hosts
    assert len(list(scan_hosts(["10.7.0.0/16"]))) == 65534  # enumerated, not probed
    with pytest.raises(ValueError, match="larger than a /16"):
        list(scan_hosts(["127.77.0.0/28", "127.0.0.0/8"]))
    assert fitting(80) == ["axeos"] and fitting(4028) == ["cgminer"]
    assert fitting(8080) == ["axeos", "cgminer"]


# --- scanning -------------------------------------------------------------------------


async def test_a_scan_finds_the_miners_in_range_and_nothing_outside(
    ports: tuple[int, int]
) -> None:
    specs = [("127.77.1.2", "axeos", 0), ("127.77.1.2", "cgminer", 0),
             ("127.77.1.9", "axeos", 5), ("127.77.1.17", "axeos", 9)]  # .17: outside
    async with miners_at(specs, ports, axeos_version="v2.15.0") as miners:
        heard: list[Found] = []
        result = await scan(["127.77.1.0/28"], list(ports), timeout_s=1.0,
                            on_found=heard.append)
        skipped = await scan(["127.77.1.0/28"], list(ports), timeout_s=1.0,
                             skip=lambda host, port: host == "127.77.1.2")
    assert result.finished and result.probed == result.total == 14 * 2
    assert heard == result.found
    by_address = {found.address: found for found in result.found}
    assert set(by_address) == {f"127.77.1.2:{ports[0]}", f"127.77.1.2:{ports[1]}",
                               f"127.77.1.9:{ports[0]}"}
    bitaxe = by_address[f"127.77.1.9:{ports[0]}"]
    assert (bitaxe.driver, bitaxe.make, bitaxe.model, bitaxe.firmware) == (
        "axeos", "Bitaxe", "Gamma BM1370", "v2.15.0")
    assert (bitaxe.mac, bitaxe.hostname) == (miners[2].mac, "bitaxe-5")
    antminer = by_address[f"127.77.1.2:{ports[1]}"]
    assert (antminer.driver, antminer.make, antminer.model) == ("cgminer", "Antminer", "S19 Pro")
    assert [found.address for found in skipped.found] == [f"127.77.1.9:{ports[0]}"]


async def test_a_scan_keeps_to_its_concurrency_and_its_budget(ports: tuple[int, int]) -> None:
    specs = [(f"127.77.2.{i}", "axeos", i) for i in (2, 3, 4)]
    async with miners_at(specs, ports) as miners:
        for miner in miners:
            await miner.set_fault(Fault.TIMEOUT)  # they accept, then never answer
        started = time.monotonic()
        one_at_a_time = await scan(["127.77.2.0/29"], [ports[0]], concurrency=1,
                                   timeout_s=0.2)
        serial_s = time.monotonic() - started

        started = time.monotonic()
        cut_short = await scan(["127.77.2.0/29"], [ports[0]], concurrency=2, timeout_s=5.0,
                               budget_s=0.3)
        budget_s = time.monotonic() - started
    assert one_at_a_time.finished and one_at_a_time.found == []
    assert serial_s >= 3 * 0.2  # three silent miners, one after the other
    assert not cut_short.finished and cut_short.probed < cut_short.total
    assert budget_s < 2.0  # the budget, not the 5 s timeouts, ended it


# --- the collector's discovery --------------------------------------------------------


async def test_found_miners_join_without_a_restart_and_moves_are_followed(
    ports: tuple[int, int]
) -> None:
    outbox = Outbox()
    registry = FleetRegistry(CollectorConfig(poll_interval_s=0.1, timeout_s=0.5), outbox)
    config = DiscoveryConfig(cidrs=["127.77.3.0/28"], ports=list(ports),
                             rescan_interval_s=0.2, timeout_s=0.5)
    async with miners_at([("127.77.3.2", "axeos", 30)], ports) as [first]:
        tasks = [asyncio.create_task(Scheduler(registry.config, registry).run()),
                 asyncio.create_task(discover(config, registry))]
        try:
            ids = lambda: {s.miner_id for s in sent(outbox, Sample)}  # noqa: E731
            await until(lambda: mac_id(first.mac) in ids())
            async with miners_at([("127.77.3.5", "axeos", 31)], ports) as [second]:
                await until(lambda: mac_id(second.mac) in ids())  # joined at a rescan
                first_fleet_host = first.host
                await first.move("127.77.3.6")  # a new lease for the first miner
                await until(lambda: any(i.host == "127.77.3.6" for i in sent(outbox, MinerInfo)))
                samples_before = len(sent(outbox, Sample))
                await until(lambda: len(sent(outbox, Sample)) > samples_before + 4)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await registry.aclose()
    assert first_fleet_host == "127.77.3.2"
    assert ids() == {mac_id(first.mac), mac_id(second.mac)}  # the mover kept its id
    assert len(registry.slots) == 2  # and is polled once, at the address that answers
    hosts = [i.host for i in sent(outbox, MinerInfo) if i.miner_id == mac_id(first.mac)]
    assert hosts == ["127.77.3.2", "127.77.3.6"]


async def test_nothing_is_scanned_unless_configured() -> None:
    registry = FleetRegistry(CollectorConfig(), Outbox())
    await asyncio.wait_for(discover(DiscoveryConfig(), registry), 0.5)  # returns at once
    assert registry.slots == []


async def test_mdns_announcements_join_the_polling(ports: tuple[int, int]) -> None:
    announcer = AsyncZeroconf(interfaces=LOOPBACK_ONLY, ip_version=IPVersion.V4Only)
    outbox = Outbox()
    registry = FleetRegistry(CollectorConfig(poll_interval_s=0.1, timeout_s=0.5), outbox)
    heard: list[Found] = []
    browser = MdnsBrowser(heard.append, interfaces=LOOPBACK_ONLY)
    async with miners_at([("127.77.4.2", "axeos", 40)], ports,
                         axeos_version="v2.15.0") as [bitaxe]:
        bitaxe_service = AsyncServiceInfo(
            AXEOS_SERVICE, "bitaxe-40._http._tcp.local.",
            addresses=[socket.inet_aton("127.77.4.2")], port=ports[0],
            properties={"board": "601", "family": "Gamma", "asic": "BM1370",
                        "asic_count": "1", "fw_version": "v2.15.0"},
            server="bitaxe-40.local.")
        printer = AsyncServiceInfo(  # plain _http._tcp, not AxeOS: not a miner
            "_http._tcp.local.", "printer._http._tcp.local.",
            addresses=[socket.inet_aton("127.77.4.3")], port=ports[0],
            server="printer.local.")
        tasks = [asyncio.create_task(Scheduler(registry.config, registry).run()),
                 asyncio.create_task(discover(DiscoveryConfig(mdns=True), registry,
                                              interfaces=LOOPBACK_ONLY))]
        try:
            await browser.start()
            await asyncio.gather(announcer.async_register_service(printer),
                                 announcer.async_register_service(bitaxe_service))
            await until(lambda: any(s.miner_id == mac_id(bitaxe.mac)
                                    for s in sent(outbox, Sample)))
            await until(lambda: len(heard) >= 1)
            await asyncio.sleep(0.3)  # time for a wrong find to show up as well
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await registry.aclose()
            await browser.close()
            await announcer.async_unregister_all_services()
            await announcer.async_close()
    assert heard == [Found(host="127.77.4.2", port=ports[0], driver="axeos", make="Bitaxe",
                           model="Gamma BM1370", firmware="v2.15.0", hostname="bitaxe-40",
                           via="mdns")]
    assert [slot.driver.host for slot in registry.slots] == ["127.77.4.2"]


async def test_the_service_publishes_what_discovery_finds(
    broker: Any, base_topic: str, ports: tuple[int, int]
) -> None:
    config = Config(
        mqtt=MqttConfig(url=broker.url, base_topic=base_topic, reconnect_min_s=0.1),
        collector=CollectorConfig(poll_interval_s=0.2, timeout_s=0.5, discovery=DiscoveryConfig(
            cidrs=["127.77.5.0/29"], ports=list(ports), timeout_s=0.5)),
    )
    specs = [("127.77.5.2", "axeos", 50), ("127.77.5.3", "cgminer", 51)]
    async with miners_at(specs, ports) as [bitaxe, antminer], \
            aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(f"{base_topic}/miners/+/sample", qos=1)
        service = asyncio.create_task(serve(config))
        seen: set[str] = set()
        try:
            async with asyncio.timeout(8):
                async for message in client.messages:
                    seen.add(schemas.decode(message.payload, Sample).miner_id)  # type: ignore[arg-type]
                    if len(seen) == 2:
                        break
        finally:
            service.cancel()
            await asyncio.gather(service, return_exceptions=True)
    assert seen == {mac_id(bitaxe.mac), f"127-77-5-3-{antminer.port}"}
