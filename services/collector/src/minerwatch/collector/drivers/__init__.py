"""The driver interface: a driver fetches one reading from one endpoint.

``await driver.fetch()`` returns a ``Reading`` (the Sample's measured fields plus the
miner's identity) or raises ``PollError(reason)`` with a short, clear reason. A driver is
built once per miner and reused across polls (``aclose`` when the miner goes away).
"""

from __future__ import annotations

from typing import Protocol

from minerwatch.collector.drivers.axeos import AxeosDriver
from minerwatch.collector.drivers.cgminer import CgminerDriver
from minerwatch.collector.drivers.reading import PollError, Reading


class Driver(Protocol):
    name: str
    host: str
    port: int
    timeout_s: float

    async def fetch(self) -> Reading: ...

    async def aclose(self) -> None: ...


class DriverFactory(Protocol):
    def __call__(
        self, host: str, port: int, timeout_s: float, keepalive_s: float = ...
    ) -> Driver: ...


#: Driver by the scheme of a miner URL (``axeos://``, ``cgminer://``).
DRIVERS: dict[str, DriverFactory] = {"axeos": AxeosDriver, "cgminer": CgminerDriver}


def create_driver(
    kind: str, host: str, port: int, timeout_s: float, keepalive_s: float = 30.0
) -> Driver:
    try:
        factory = DRIVERS[kind]
    except KeyError:
        raise ValueError(f"unknown driver {kind!r}; known: {', '.join(DRIVERS)}") from None
    return factory(host, port, timeout_s, keepalive_s)


__all__ = ["DRIVERS", "Driver", "PollError", "Reading", "create_driver"]
