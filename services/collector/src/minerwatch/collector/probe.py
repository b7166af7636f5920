"""``minerwatch-collector probe HOST[:PORT]``: poll one miner once, print one Sample.

With ``--driver auto`` the drivers that may fit the port are tried at the same time and
the first good answer wins: no port tries AxeOS on 80 and CGMiner on 4028; port 4028 is
CGMiner, 80 is AxeOS, any other port gets both.
"""

from __future__ import annotations

import asyncio
import contextlib

from minerwatch.collector.drivers import Driver, PollError, Reading, create_driver
from minerwatch.collector.drivers.reading import timeout_reason
from minerwatch.collector.poller import miner_id_for, utc_now_ts
from minerwatch.shared.config import DEFAULT_PORTS, DRIVERS, endpoint
from minerwatch.shared.schemas import Sample

#: Seconds allowed on top of the timeout for process and client setup.
OVERALL_GRACE_S = 0.5


def parse_target(target: str) -> tuple[str | None, str, int | None]:
    """``host``, ``host:port``, ``[v6]:port`` or a miner URL -> (driver, host, port).

    Raises ValueError with a readable message."""
    target = target.strip()
    if "://" in target:
        where = endpoint(target)
        return where.driver, where.host, where.port
    port_text: str | None = None
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{target!r} is not HOST[:PORT]")
            port_text = rest[1:]
    elif target.count(":") == 1:
        host, port_text = target.split(":")
    else:
        host = target  # a name, an IPv4 address or a bare IPv6 address
    if not host:
        raise ValueError(f"{target!r} has no host")
    if port_text is None:
        return None, host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{target!r} has a bad port")
    return None, host, int(port_text)


def candidates(driver: str, port: int | None) -> list[tuple[str, int]]:
    """Which drivers to try on which ports."""
    if driver != "auto":
        return [(driver, port or DEFAULT_PORTS[driver])]
    if port is None:
        return [(kind, DEFAULT_PORTS[kind]) for kind in DRIVERS]
    fitting = [kind for kind in DRIVERS if DEFAULT_PORTS[kind] == port]
    return [(kind, port) for kind in (fitting or list(DRIVERS))]


async def probe(host: str, tries: list[tuple[str, int]], timeout_s: float) -> Sample:
    """The first good reading among ``tries`` as a Sample; PollError naming every failure."""
    drivers: list[Driver] = [create_driver(kind, host, port, timeout_s) for kind, port in tries]
    tasks: dict[asyncio.Task[Reading], Driver] = {
        asyncio.ensure_future(driver.fetch()): driver for driver in drivers
    }
    errors: list[str] = []
    ts = utc_now_ts()
    try:
        async with asyncio.timeout(timeout_s + OVERALL_GRACE_S):
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    driver = tasks[task]
                    error = task.exception()
                    if error is None:
                        reading = task.result()
                        miner_id = miner_id_for(None, reading, driver.host, driver.port)
                        return reading.sample(miner_id, ts)
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
