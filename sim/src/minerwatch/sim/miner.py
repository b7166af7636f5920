"""One simulated miner: its model, its fault switch and its listening socket.

The protocol-specific parts (what the reply looks like, how a connection is served) live in
the ``axeos`` and ``cgminer`` subclasses; this base owns the listener life cycle, which is
what the faults REFUSE and NONE act on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from minerwatch.sim.model import Fault, MinerModel

log = logging.getLogger(__name__)

Clock = Callable[[], float]


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

    async def start(self) -> None:
        if self._fault is not Fault.REFUSE:
            await self._listen()
        self._running = True

    async def stop(self) -> None:
        self._running = False
        await self._unlisten()

    async def set_fault(self, fault: Fault | str) -> None:
        """Switch to ``fault``; a one-shot (block, best_diff) acts and leaves ``none``."""
        self.model.apply(Fault(fault), self.clock())
        fault = self.model.condition
        previous, self._fault = self._fault, fault
        if fault is Fault.REFUSE and previous is not Fault.REFUSE:
            await self._unlisten()
        elif fault is not Fault.REFUSE and self._running and self._server is None:
            await self._listen()  # the same port again: clients find the miner where it was

    async def move(self, host: str) -> None:
        """Listen at ``host`` instead (same port). The caller checks that it is loopback."""
        await self._unlisten()
        self.host = host
        if self._running and self._fault is not Fault.REFUSE:
            await self._listen()

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
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # Re-binding the same port after REFUSE must not trip over TIME_WAIT leftovers,
            # hence SO_REUSEADDR (accepted sockets inherit it). For an ephemeral port it is
            # set after bind: Linux's port search with it set is slow with thousands bound.
            if self.port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setblocking(False)
            sock.bind((self.host, self.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        except OSError as exc:
            sock.close()
            raise OSError(
                exc.errno, f"{self.name}: cannot listen on {self.host}:{self.port}: {exc.strerror}"
            ) from None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.protocol_factory(), sock=sock, backlog=128)
        self.port = sock.getsockname()[1]

    async def _unlisten(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        # A device that went away takes its open connections with it.
        for transport in list(self._connections):
            if isinstance(transport, asyncio.WriteTransport):
                transport.abort()  # at once, unsent data dropped: the device is gone
            else:
                transport.close()
        self._connections.clear()
        if server is not None:
            await server.wait_closed()
