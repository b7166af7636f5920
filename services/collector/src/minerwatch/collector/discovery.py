"""Finding miners: CIDR scans and mDNS, only ever where configured.

A scan probes every address of the configured ranges (never one outside them) on each
configured port: first a plain TCP connect, then, where something listens, the drivers
that fit the port (80: AxeOS, 4028: CGMiner, any other port: both) identify it. At most
``concurrency`` probes run at once, each bounded by ``timeout_s``, and the whole scan by
``budget_s``: what was found by then counts, the rest waits for the next scan.

mDNS browses ``_axeos._sub._http._tcp.local.``: AxeOS v2.15+ announces itself as
``_http._tcp`` on port 80 with that subtype and TXT keys ``board``, ``family``, ``asic``,
``asic_count``, ``fw_version``. Older units are found by scanning.

``discover`` runs both for the collector service and hands every find to the fleet
registry (``FleetRegistry.add``), which polls it from then on unless it is polled already (same
address, or a MAC it knows). ``scan`` is also what ``minerwatch-collector scan`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from minerwatch.collector.drivers import DRIVERS, PollError, Reading, first_reading, fitting
from minerwatch.shared.config import DiscoveryConfig, scan_network

if TYPE_CHECKING:
    from minerwatch.collector.fleet import FleetRegistry

log = logging.getLogger(__name__)

#: What zeroconf takes as ``interfaces`` (its own alias is not exported).
InterfacesType = Sequence[str | int | tuple[tuple[str, int, int], int]] | InterfaceChoice

AXEOS_SERVICE = "_axeos._sub._http._tcp.local."
MDNS_RESOLVE_MS = 3000


class Found(msgspec.Struct, kw_only=True):
    """A miner that answered: where, which driver, and who it says it is."""

    host: str
    port: int
    driver: str
    make: str | None = None
    model: str | None = None
    firmware: str | None = None
    hostname: str | None = None
    mac: str | None = None
    via: str = "scan"  # or "mdns"

    @classmethod
    def of(cls, host: str, port: int, driver: str, reading: Reading) -> Found:
        return cls(host=host, port=port, driver=driver, make=reading.make,
                   model=reading.model, firmware=reading.firmware,
                   hostname=reading.hostname, mac=reading.mac)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


# --- what to probe (pure) -------------------------------------------------------------


def scan_hosts(cidrs: Iterable[str]) -> Iterator[str]:
    """Every address to probe in the ranges, each once, never one outside them. Network
    and broadcast addresses are left out where a range has them (IPv4 /30 and larger)."""
    seen: set[str] = set()
    for cidr in cidrs:
        network = scan_network(cidr)
        hosts = network.hosts() if network.num_addresses > 2 else iter(network)
        for address in hosts:
            text = str(address)
            if text not in seen:
                seen.add(text)
                yield text


def count_hosts(cidrs: Iterable[str]) -> int:
    return sum(1 for _ in scan_hosts(cidrs))


# --- probing --------------------------------------------------------------------------


async def port_open(host: str, port: int, timeout_s: float) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True


async def identify(host: str, port: int, timeout_s: float) -> Found | None:
    """The miner listening at host:port, asked by each fitting driver at once; None when
    no driver gets a miner's answer."""
    try:
        kind, _, reading = await first_reading(
            host, [(kind, port) for kind in fitting(port)], timeout_s)
    except PollError as exc:
        log.debug("%s:%d is no miner: %s", host, port, exc.reason)
        return None
    return Found.of(host, port, kind, reading)


@dataclass(slots=True)
class ScanResult:
    found: list[Found] = field(default_factory=list)
    probed: int = 0  # (address, port) pairs done
    total: int = 0
    finished: bool = True  # False when the budget ran out first


async def scan(
    cidrs: list[str],
    ports: list[int],
    *,
    concurrency: int = 64,
    timeout_s: float = 1.0,
    budget_s: float | None = None,
    skip: Callable[[str, int], bool] | None = None,
    on_found: Callable[[Found], None] | None = None,
    on_progress: Callable[[ScanResult], None] | None = None,
) -> ScanResult:
    """Probe every (address, port) of the ranges. ``skip`` leaves out addresses already
    known; ``on_found`` hears each miner as soon as it answers. Raises ValueError for a
    bad or absurd range before probing anything."""
    hosts = list(scan_hosts(cidrs))  # validates every range first
    result = ScanResult(total=len(hosts) * len(ports))
    work = ((host, port) for host in hosts for port in ports)

    async def worker() -> None:
        for host, port in work:  # one shared iterator: each pair is taken once
            if not (skip is not None and skip(host, port)) and await port_open(
                    host, port, timeout_s):
                found = await identify(host, port, timeout_s)
                if found is not None:
                    result.found.append(found)
                    if on_found is not None:
                        on_found(found)
            result.probed += 1
            if on_progress is not None:
                on_progress(result)

    try:
        async with asyncio.timeout(budget_s), asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, result.total)):
                group.create_task(worker())
    except TimeoutError:
        result.finished = False
    return result


# --- mDNS -----------------------------------------------------------------------------


def found_from_service(info: AsyncServiceInfo) -> list[Found]:
    """An AxeOS mDNS announcement -> one Found per IPv4 address it gives."""
    txt = info.decoded_properties
    family, asic = txt.get("family"), txt.get("asic")
    model = " ".join(part for part in (family, asic) if part) or None
    hostname = (info.server or "").removesuffix(".").removesuffix(".local") or None
    return [
        Found(host=address, port=info.port or 80, driver="axeos", make="Bitaxe",
              model=model, firmware=txt.get("fw_version"), hostname=hostname, via="mdns")
        for address in info.parsed_addresses(IPVersion.V4Only)
    ]


class MdnsBrowser:
    """Browses AxeOS announcements until closed; ``on_found`` hears each resolved one."""

    def __init__(self, on_found: Callable[[Found], None],
                 interfaces: InterfacesType = InterfaceChoice.All) -> None:
        self.on_found = on_found
        self.interfaces = interfaces
        self._zeroconf: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._resolving: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._zeroconf = AsyncZeroconf(interfaces=self.interfaces, ip_version=IPVersion.V4Only)
        self._browser = AsyncServiceBrowser(self._zeroconf.zeroconf, [AXEOS_SERVICE],
                                            handlers=[self._changed])

    async def close(self) -> None:
        for task in list(self._resolving):
            task.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
        if self._zeroconf is not None:
            await self._zeroconf.async_close()

    def _changed(self, zeroconf: Zeroconf, service_type: str, name: str,
                 state_change: ServiceStateChange) -> None:
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            task = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
            self._resolving.add(task)
            task.add_done_callback(self._resolving.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        assert self._zeroconf is not None
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(self._zeroconf.zeroconf, MDNS_RESOLVE_MS):
            log.debug("mDNS: %s did not resolve", name)
            return
        for found in found_from_service(info):
            self.on_found(found)


# --- the collector's discovery --------------------------------------------------------


def describe(found: Found) -> str:
    what = " ".join(part for part in (found.make, found.model) if part) or "unknown model"
    return f"{found.driver}://{found.address} ({what}, via {found.via})"


async def discover(config: DiscoveryConfig, fleet: FleetRegistry,
                   interfaces: InterfacesType = InterfaceChoice.All) -> None:
    """Scan and browse as configured, forever; every miner found joins the polling."""
    if not config.cidrs and not config.mdns:
        return  # never scan by default

    def join(found: Found) -> None:
        if fleet.add(found.driver, found.host, found.port, mac=found.mac) is not None:
            log.info("found %s", describe(found))

    def polled(host: str, port: int) -> bool:
        return any(fleet.polled_at((kind, host, port)) is not None for kind in DRIVERS)

    async def rescans() -> None:
        ranges = ", ".join(config.cidrs)
        while True:
            try:
                result = await scan(config.cidrs, config.ports, concurrency=config.concurrency,
                                    timeout_s=config.timeout_s, budget_s=config.budget_s,
                                    skip=polled, on_found=join)
            except Exception:  # never the end of the collector: try again next time
                log.exception("scan of %s failed", ranges)
            else:
                report(result)
            await asyncio.sleep(config.rescan_interval_s)

    def report(result: ScanResult) -> None:
        ranges = ", ".join(config.cidrs)
        if result.finished:
            log.info("scanned %s: %d miner(s) answered", ranges, len(result.found))
        else:
            log.warning("scan of %s stopped after %g s with %d of %d probes done: "
                        "raise budget_s or concurrency", ranges, config.budget_s,
                        result.probed, result.total)

    browser = MdnsBrowser(join, interfaces) if config.mdns else None
    try:
        if browser is not None:
            try:
                await browser.start()
            except OSError as exc:  # no multicast here, 5353 not ours...: scans still run
                log.error("mDNS unavailable: %s", exc)
                browser = None
            else:
                log.info("browsing mDNS for %s", AXEOS_SERVICE)
        if config.cidrs:
            await rescans()
        else:
            await asyncio.get_running_loop().create_future()  # mDNS only: wait
    finally:
        if browser is not None:
            await browser.close()

