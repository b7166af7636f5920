"""The driver interface: a driver fetches one reading from one endpoint.

``await driver.fetch()`` returns a ``Reading`` (the Sample's measured fields plus the
miner's identity) or raises ``PollError(reason)`` with a short, clear reason. A driver is
built once per miner and reused across polls (``aclose`` when the miner goes away).

``DRIVERS`` is the one list of drivers, by the scheme of a miner URL, in the order of the
names the config accepts (``shared.config.DRIVERS``): ``axeos`` (``drivers.axeos``, with
the live push of ``drivers.live``) and ``cgminer`` (``drivers.cgminer``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from minerwatch.collector.drivers.axeos import AxeosDriver
from minerwatch.collector.drivers.cgminer import CgminerDriver
from minerwatch.collector.drivers.reading import PollError, Reading, timeout_reason
from minerwatch.shared import config
from minerwatch.shared.config import DEFAULT_PORTS

#: Seconds allowed on top of a poll timeout for connection and client setup.
SETUP_GRACE_S = 0.5


class Driver(Protocol):
    # Read-only to the fleet: a wrapper (the live push) may derive them.
    @property
    def name(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def timeout_s(self) -> float: ...

    async def fetch(self) -> Reading: ...

    async def aclose(self) -> None: ...


class DriverFactory(Protocol):
    def __call__(
        self, host: str, port: int, timeout_s: float, keepalive_s: float = ...
    ) -> Driver: ...


_FACTORIES: dict[str, DriverFactory] = {"axeos": AxeosDriver, "cgminer": CgminerDriver}
#: Driver by the scheme of a miner URL (``axeos://``, ``cgminer://``); a name the config
#: accepts without a driver here fails at import, not at the first poll.
DRIVERS: dict[str, DriverFactory] = {kind: _FACTORIES[kind] for kind in config.DRIVERS}


def create_driver(
    kind: str, host: str, port: int, timeout_s: float, keepalive_s: float = 30.0
) -> Driver:
    try:
        factory = DRIVERS[kind]
    except KeyError:
        raise ValueError(f"unknown driver {kind!r}; known: {', '.join(DRIVERS)}") from None
    return factory(host, port, timeout_s, keepalive_s)


def fitting(port: int) -> list[str]:
    """The driver kinds that may answer on ``port``: the one whose default port it is,
    else every kind (a miner moved to another port)."""
    kinds = [kind for kind in DRIVERS if DEFAULT_PORTS[kind] == port]
    return kinds or list(DRIVERS)


async def first_reading(
    host: str, tries: list[tuple[str, int]], timeout_s: float
) -> tuple[str, int, Reading]:
    """Ask ``host`` with every (driver kind, port) in ``tries`` at once; the first good
    reading wins, as (kind, port, reading). PollError names every failure (just the reason
    when there was one try), within ``timeout_s`` plus a little setup time."""
    drivers = [create_driver(kind, host, port, timeout_s) for kind, port in tries]
    tasks = {asyncio.ensure_future(driver.fetch()): driver for driver in drivers}
    errors: list[str] = []
    try:
        async with asyncio.timeout(timeout_s + SETUP_GRACE_S):
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    driver = tasks[task]
                    error = task.exception()
                    if error is None:
                        return driver.name, driver.port, task.result()
                    reason = error.reason if isinstance(error, PollError) else repr(error)
                    errors.append(f"{driver.name} on port {driver.port}: {reason}")
    except TimeoutError:
        errors.extend(f"{driver.name} on port {driver.port}: {timeout_reason(timeout_s)}"
                      for task, driver in tasks.items() if not task.done())
    finally:
        for task in tasks:
            task.cancel()
        for driver in drivers:
            with contextlib.suppress(Exception):
                await driver.aclose()
    if len(tries) == 1:  # no need to name the one driver tried
        raise PollError(errors[-1].removeprefix(f"{tries[0][0]} on port {tries[0][1]}: "))
    raise PollError("; ".join(errors))


__all__ = [
    "DRIVERS", "Driver", "PollError", "Reading", "create_driver", "first_reading", "fitting",
]
