"""The collector service: the poller and the MQTT publisher, side by side.

The poller never waits for the broker: while the broker is away, messages wait in the
outbox (bounded: ``collector.buffer_messages``, by default ten minutes of the fleet) and
go out in order after the reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
from collections.abc import Iterator

from minerwatch.collector.discovery import discover
from minerwatch.collector.poller import Poller
from minerwatch.collector.publisher import Outbox, Publisher
from minerwatch.shared.config import Config
from minerwatch.shared.mqtt import MqttLink

log = logging.getLogger("minerwatch.collector")

#: Open files to allow at least: a kept-alive connection per miner, and room to grow.
OPEN_FILES = 65536
#: Allocations between collections of the youngest generation (Python's default: 700).
#: Each poll allocates a few hundred objects that die at once; with the default, objects
#: of the polls in flight are caught alive, promoted, and drag full collections over the
#: whole fleet's state (~300 ms each at 10,000 miners): a third of the CPU, measured.
GC_YOUNG = 50_000


def raise_open_files(wanted: int = OPEN_FILES) -> None:
    """Lift the soft open-files limit toward ``wanted`` (at most the hard limit): every
    miner keeps a connection open, and a soft limit of 1024 stops the fleet near 1000."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@contextlib.contextmanager
def fewer_collections(young: int = GC_YOUNG) -> Iterator[None]:
    previous = gc.get_threshold()
    gc.set_threshold(young, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


class Collector:
    """The parts of a running collector, reachable for hooks (discovery adds miners with
    ``collector.poller.add``) and for the benchmarks (``poller.stats``, ``publisher``)."""

    def __init__(self, config: Config, outbox: Outbox | None = None) -> None:
        self.config = config
        self.outbox = outbox if outbox is not None else Outbox()
        self.poller = Poller(config.collector, self.outbox)  # sizes the outbox
        self.publisher = Publisher(self.outbox, config.mqtt.base_topic)
        # The publisher bounds what is in flight itself; paho's limit would only slow it.
        self.link = MqttLink(config.mqtt, "collector", max_inflight=0)

    async def run(self) -> None:
        """Run until cancelled (SIGTERM/SIGINT through ``run_service``)."""
        # httpx logs every request at INFO: at fleet scale that is noise, not news.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        raise_open_files()
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < len(self.poller.slots) + 256:
            log.warning("the open-files limit (%d) is low for %d miners: raise `ulimit -n`",
                        soft, len(self.poller.slots))
        with fewer_collections():
            await self._run()

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.poller.run())
            # CIDR scans and mDNS, only when configured: never by default.
            group.create_task(discover(self.config.collector.discovery, self.poller))
            group.create_task(self.link.run(self.publisher.session))


async def serve(config: Config, outbox: Outbox | None = None) -> None:
    """Run the collector until cancelled."""
    await Collector(config, outbox).run()
