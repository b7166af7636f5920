"""``minerwatch-collector probe HOST[:PORT]``: poll one miner once, print one Sample.

With ``--driver auto`` the drivers that may fit the port are tried at the same time and
the first good answer wins: no port tries AxeOS on 80 and CGMiner on 4028; port 4028 is
CGMiner, 80 is AxeOS, any other port gets both.
"""

from __future__ import annotations

from minerwatch.collector.drivers import DRIVERS, first_reading, fitting
from minerwatch.collector.identity import miner_id_for
from minerwatch.shared.config import DEFAULT_PORTS, endpoint
from minerwatch.shared.schemas import Sample, now_ts


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
    return [(kind, port) for kind in fitting(port)]


async def probe(host: str, tries: list[tuple[str, int]], timeout_s: float) -> Sample:
    """The first good reading among ``tries`` as a Sample; PollError naming every failure."""
    ts = now_ts()
    _, port, reading = await first_reading(host, tries, timeout_s)
    return reading.sample(miner_id_for(None, reading, host, port), ts)
