"""One simulated miner: its model, its fault switch and its listening socket.

The protocol-specific parts (what the reply looks like, how a connection is served) live in
the ``axeos`` and ``cgminer`` subclasses; this base owns the listener life cycle, which is
what the fault REFUSE and a restart act on, and the quirks tests switch on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from minerwatch.sim.model import Fault, MinerModel, Pool

log = logging.getLogger(__name__)

Clock = Callable[[], float]
#: How long a restarting miner is gone, and how long after the command it goes.
RESTART_S = 2.0
RESTART_DELAY_S = 1.0


@dataclass(slots=True)
class Quirks:
    """How a miner reacts to control, switched from tests (Python or the control API).

    Fields that a kind of miner has no use for are ignored by it.
    """

    restart_s: float = RESTART_S  # gone this long when restarting
    restart_delay_s: float = RESTART_DELAY_S  # after answering a restart, before going
    ignore_writes: bool = False  # AxeOS: PATCH answers 200 and changes nothing
    otp_secret: str | None = None  # AxeOS (NerdQAxe): writes need a valid X-TOTP header
    frequency_options: tuple[int, ...] | None = None  # AxeOS /api/system/asic; None: chip's
    voltage_options: tuple[int, ...] | None = None
    privileged: bool = True  # CGMiner: --api-allow W:127.0.0.1 (write commands allowed)
    web_user: str = "root"  # Antminer web CGI digest credentials
    web_password: str = "root"


async def open_listener(
    label: str, host: str, port: int, factory: Callable[[], asyncio.Protocol]
) -> tuple[asyncio.AbstractServer, int]:
    """Listen on ``host:port`` (0: ephemeral); the server and the port it got."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Re-binding the same port after REFUSE must not trip over TIME_WAIT leftovers,
        # hence SO_REUSEADDR (accepted sockets inherit it). For an ephemeral port it is
        # set after bind: Linux's port search with it set is slow with thousands bound.
        if port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setblocking(False)
        sock.bind((host, port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"{label}: cannot listen on {host}:{port}: {exc.strerror}"
        ) from None
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, sock=sock, backlog=128)
    return server, sock.getsockname()[1]


async def close_listener(
    server: asyncio.AbstractServer | None, connections: set[asyncio.BaseTransport]
) -> None:
    """Stop listening and drop the open connections at once, as a device that went away."""
    if server is not None:
        server.close()
    for transport in list(connections):
        if isinstance(transport, asyncio.WriteTransport):
            transport.abort()  # at once, unsent data dropped: the device is gone
        else:
            transport.close()
    connections.clear()
    if server is not None:
        await server.wait_closed()


def pool_state(pool: Pool) -> dict[str, Any]:
    """A pool in the control API (with its password: the control API is for tests)."""
    return {"url": pool.url, "user": pool.user, "password": pool.password}


class SimMiner:
    kind: str = ""
    scheme: str = ""

    def __init__(
        self,
        name: str,
        index: int,
        host: str,
        port: int,
        model: MinerModel,
        clock: Clock,
        seed: int,
    ) -> None:
        self.name = name
        self.index = index
        self.host = host
        self.port = port  # 0 until bound when an ephemeral port was asked for
        self.model = model
        self.clock = clock
        self.seed = seed
        self.mac: str | None = None
        self._fault = Fault.NONE
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.BaseTransport] = set()
        self._replies = 0  # counts answers, so GARBAGE can vary its kind of garbage
        self._running = False
        self.quirks = Quirks()
        self.restarts = 0  # restart commands accepted
        self._restart_task: asyncio.Task[None] | None = None
        self._rebooting = False  # gone for a restart: not listening

    # -- public API ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def fault(self) -> Fault:
        return self._fault

    @property
    def temp_override(self) -> float | None:
        return self.model.temp_override

    @temp_override.setter
    def temp_override(self, value: float | None) -> None:
        self.model.temp_override = None if value is None else float(value)

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def restarting(self) -> bool:
        """A restart was accepted and the miner is not back yet."""
        return self._restart_task is not None and not self._restart_task.done()

    def _reachable(self) -> bool:
        return self._fault is not Fault.REFUSE and not self._rebooting

    async def start(self) -> None:
        if self._reachable():
            await self._listen()
        self._running = True

    async def stop(self) -> None:
        self._running = False
        task, self._restart_task = self._restart_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._rebooting = False
        await self._unlisten()

    async def set_fault(self, fault: Fault | str) -> None:
        """Switch to ``fault``; a one-shot (block, best_diff) acts and leaves ``none``."""
        self.model.apply(Fault(fault), self.clock())
        self._fault = self.model.condition
        await self._follow()

    async def _follow(self) -> None:
        """Listen or not, as the fault and a restart say."""
        if not self._reachable():
            if self._server is not None:
                await self._unlisten()
        elif self._running and self._server is None:
            await self._listen()  # the same port again: clients find the miner where it was

    async def move(self, host: str) -> None:
        """Listen at ``host`` instead (same port). The caller checks that it is loopback."""
        await self._unlisten()
        self.host = host
        if self._running and self._reachable():
            await self._listen()

    def set_paused(self, paused: bool) -> None:
        """Pause or resume mining by command (the hashrate goes to 0, shares stop)."""
        self.model.set_paused(paused, self.clock())

    def set_limit(self, base_limit_mhz: float, mhz_per_mv: float | None = None) -> None:
        """Pin the hidden stability limit: ``base_limit_mhz`` at the default voltage,
        ``mhz_per_mv`` more per mV above it (None: keep the slope)."""
        slope = self.model.limit_slope if mhz_per_mv is None else mhz_per_mv
        self.model.set_limit(base_limit_mhz, slope, self.clock())

    def request_restart(self) -> None:
        """A restart command was accepted: ``restart_delay_s`` later the miner goes away
        for ``restart_s`` and boots again (uptime from 0, settings kept)."""
        self.restarts += 1
        if not self.restarting:
            self._restart_task = asyncio.get_running_loop().create_task(self._restart())

    async def _restart(self) -> None:
        await asyncio.sleep(self.quirks.restart_delay_s)
        log.info("%s: restarting for %.1f s", self.name, self.quirks.restart_s)
        self._rebooting = True
        await self._unlisten()
        await asyncio.sleep(self.quirks.restart_s)
        self.model.reboot(self.clock())
        self._fault = self.model.condition
        self._rebooting = False
        try:
            await self._follow()
        except OSError as exc:
            log.error("%s: does not come back after its restart: %s", self.name, exc)

    def control_state(self) -> dict[str, Any]:
        """What the control API adds to this miner's state: settings, quirks, counters."""
        model, quirks = self.model, self.quirks
        settings = model.settings
        pools = [settings.pools[n] for n in settings.pool_priority if n < len(settings.pools)]
        return {
            "settings": {
                "frequency_mhz": _number(settings.frequency_mhz),
                "core_voltage_mv": settings.core_voltage_mv,
                "fan_mode": "auto" if settings.auto_fan else "manual",
                "fan_percent": settings.fan_percent,
                "temp_target_c": settings.temp_target_c,
                "pools": {
                    "primary": pool_state(pools[0]) if pools else None,
                    "fallback": pool_state(pools[1]) if len(pools) > 1 else None,
                },
            },
            "paused": model.user_paused,
            "restarts": self.restarts,
            "restarting": self.restarting,
            "listening": self.listening,
            "uptime_s": model.uptime_s(self.clock()),
            "hidden_limit_mhz": round(model.limit_mhz(), 3),
            "limit": {"base_limit_mhz": model.limit_base_mhz, "mhz_per_mv": model.limit_slope},
            "stable": model.stable,
            "restart_s": quirks.restart_s,
            "restart_delay_s": quirks.restart_delay_s,
            "writes": 0,
            "patch_requests": 0,
            "last_patch": None,
            "identified_at": None,
            "otp_secret": None,
            "ignore_writes": None,
            "privileged": None,
            "web_port": None,
        }

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The values the miner reports right now, in Sample units (TH/s, °C, W...)."""
        return self.normalize(self.report(self.clock() if now is None else now))

    # -- for the protocol modules -------------------------------------------------------

    def report(self, now: float) -> dict[str, Any]:
        """The firmware-shaped data this miner would send at ``now``."""
        raise NotImplementedError

    def normalize(self, report: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        raise NotImplementedError

    def next_reply_number(self) -> int:
        self._replies += 1
        return self._replies

    # -- listener -----------------------------------------------------------------------

    async def _listen(self) -> None:
        self._server, self.port = await open_listener(
            self.name, self.host, self.port, self.protocol_factory()
        )
        try:
            await self._listen_more()
        except OSError:
            await self._unlisten()
            raise

    async def _unlisten(self) -> None:
        server, self._server = self._server, None
        await self._unlisten_more()
        await close_listener(server, self._connections)

    async def _listen_more(self) -> None:
        """Open the miner's other ports, if it has any (the Antminer web CGI)."""

    async def _unlisten_more(self) -> None:
        """Close the miner's other ports."""


def _number(value: float) -> int | float:
    """A whole number as an int, as cJSON prints it."""
    return int(value) if float(value).is_integer() else value
