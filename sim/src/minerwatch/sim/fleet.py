"""The Fleet: N simulated AxeOS miners and M simulated CGMiner miners in one event loop.

Each miner is one listening socket and nothing else: no task, no timer. Values are computed
when a request arrives, so thousands of miners idle at no cost.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import time
from types import TracebackType

from minerwatch.sim.axeos import DEFAULT_VERSION, AxeOSMiner, check_otp_secret
from minerwatch.sim.cgminer import CGMinerMiner
from minerwatch.sim.miner import Clock, Quirks, SimMiner
from minerwatch.sim.model import Fault, Settings

__all__ = [
    "AxeOSMiner", "CGMinerMiner", "Fault", "Fleet", "Quirks", "Settings", "SimMiner",
    "check_host", "fleet_urls",
]

log = logging.getLogger(__name__)

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
START_BATCH = 500  # listeners opened concurrently; keeps start-up fast without a thundering herd


def check_host(host: str) -> str:
    """The host, if it is a loopback IPv4 address; a simulator never listens elsewhere."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host {host!r} is not an IPv4 address in 127.0.0.0/8") from None
    if address not in LOOPBACK:
        raise ValueError(f"host {host} is outside 127.0.0.0/8: the simulator stays on loopback")
    return host


def check_counts(axeos: int, cgminer: int, base_port: int) -> None:
    if axeos < 0 or cgminer < 0:
        raise ValueError("miner counts cannot be negative")
    if not 0 <= base_port <= 65535:
        raise ValueError(f"base port {base_port} is not a TCP port")
    if base_port and base_port + axeos + cgminer - 1 > 65535:
        raise ValueError(f"{axeos + cgminer} miners from base port {base_port} run past port 65535")


def fleet_urls(axeos: int, cgminer: int, host: str, base_port: int) -> list[str]:
    """The miners' URLs for fixed ports, without binding anything (for ``--print-urls``)."""
    check_host(host)
    check_counts(axeos, cgminer, base_port)
    if base_port == 0:
        raise ValueError("URLs are only known in advance with a fixed base port")
    return [f"axeos://{host}:{base_port + i}" for i in range(axeos)] + [
        f"cgminer://{host}:{base_port + axeos + j}" for j in range(cgminer)
    ]


def raise_fd_limit(needed: int, wanted: int) -> None:
    """Lift the soft open-files limit toward ``wanted`` (at most the hard limit).

    Warns only when even ``needed`` (the listeners themselves) will not fit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning(
            "open-files limit %d is too low for %d listeners; raise `ulimit -n`", target, needed
        )


class Fleet:
    def __init__(
        self,
        axeos: int = 3,
        cgminer: int = 3,
        host: str = "127.0.0.1",
        base_port: int = 0,
        seed: int = 0,
        clock: Clock = time.time,
        first_index: int = 0,
        axeos_version: str = DEFAULT_VERSION,
        otp_secret: str | None = None,
        web: bool = False,
    ) -> None:
        """``first_index`` numbers the miners from there (names, MACs and values follow it),
        so fleets on different hosts do not look like the same miners. ``axeos_version``
        is the AxeOS firmware they report: v2.14.0 or later also serves the live WebSocket.
        ``otp_secret`` (base32) makes every AxeOS miner want a TOTP on writes (NerdQAxe);
        ``web`` gives every CGMiner miner the stock Antminer web CGI on an ephemeral port."""
        check_host(host)
        check_counts(axeos, cgminer, base_port)
        if first_index < 0:
            raise ValueError("first index cannot be negative")
        if otp_secret is not None:
            check_otp_secret(otp_secret)
        self.host = host
        self.base_port = base_port
        self.seed = seed
        self.clock = clock
        t0 = clock()

        def port_of(offset: int) -> int:
            return base_port + offset if base_port else 0

        self.miners: list[SimMiner] = [
            AxeOSMiner(first_index + i, host, port_of(i), clock, seed, t0, axeos_version)
            for i in range(axeos)
        ]
        self.miners += [
            CGMinerMiner(first_index + j, host, port_of(axeos + j), clock, seed, t0, web=web)
            for j in range(cgminer)
        ]
        for miner in self.axeos_miners:
            miner.quirks.otp_secret = otp_secret
        self._by_name = {miner.name: miner for miner in self.miners}
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        # a listener per miner, plus room for the connections of a benchmark in this process
        raise_fd_limit(len(self.miners) + 64, 3 * len(self.miners) + 256)
        try:
            for first in range(0, len(self.miners), START_BATCH):
                batch = self.miners[first : first + START_BATCH]
                results = await asyncio.gather(
                    *(miner.start() for miner in batch), return_exceptions=True
                )
                failures = [result for result in results if isinstance(result, BaseException)]
                if failures:
                    raise failures[0]
        except BaseException:
            await self._close_all()
            raise
        self._started = True

    async def stop(self) -> None:
        self._started = False
        await self._close_all()

    async def _close_all(self) -> None:
        await asyncio.gather(*(miner.stop() for miner in self.miners), return_exceptions=True)

    @property
    def axeos_miners(self) -> list[AxeOSMiner]:
        return [miner for miner in self.miners if isinstance(miner, AxeOSMiner)]

    @property
    def cgminer_miners(self) -> list[CGMinerMiner]:
        return [miner for miner in self.miners if isinstance(miner, CGMinerMiner)]

    def axeos(self, name: str) -> AxeOSMiner:
        """The AxeOS miner called ``name``; KeyError when there is none."""
        miner = self.by_name(name)
        if not isinstance(miner, AxeOSMiner):
            raise KeyError(f"{name!r} is not an AxeOS miner")
        return miner

    def cgminer(self, name: str) -> CGMinerMiner:
        """The CGMiner miner called ``name``; KeyError when there is none."""
        miner = self.by_name(name)
        if not isinstance(miner, CGMinerMiner):
            raise KeyError(f"{name!r} is not a CGMiner miner")
        return miner

    def by_name(self, name: str) -> SimMiner:
        """The miner called ``name``; KeyError when there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no simulated miner named {name!r}") from None

    async def move(self, name: str, host: str) -> None:
        """The miner called ``name`` now answers at ``host`` (same port), as after a new
        DHCP lease: its old address stops answering, its open connections drop."""
        miner = self.by_name(name)
        check_host(host)
        await miner.move(host)

    def urls(self) -> list[str]:
        return [miner.url for miner in self.miners]

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
