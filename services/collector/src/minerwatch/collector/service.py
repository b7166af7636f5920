"""The collector service: the fleet, its schedule and the publisher, wired together.

Polling never waits for the broker: while the broker is away, messages wait in the
outbox (bounded: ``collector.buffer_messages``, by default ten minutes of the fleet) and
go out in order after the reconnect. Each new broker session starts by sending the
fleet's current info and status again (``FleetRegistry.retained``), after what is queued,
and subscribes to the labels set through the api, to cleared infos and to commands
(``listener``); commands are carried out beside the polling (``control.commands``), and
only with ``[control] enabled`` (else each is answered ``disabled``).
"""

from __future__ import annotations

import asyncio
import logging
import resource

from minerwatch.collector.control.commands import Commands
from minerwatch.collector.discovery import discover
from minerwatch.collector.fleet import FleetRegistry
from minerwatch.collector.homeassistant import HomeAssistantDiscovery
from minerwatch.collector.listener import Listener
from minerwatch.collector.outbox import Outbox
from minerwatch.collector.publisher import Publisher
from minerwatch.collector.scheduler import Scheduler
from minerwatch.collector.stats import collector_stats
from minerwatch.shared.config import Config
from minerwatch.shared.mqtt import MqttLink
from minerwatch.shared.service import fewer_collections
from minerwatch.shared.stats import StatsPublisher

log = logging.getLogger("minerwatch.collector")

#: Open files to allow at least: a kept-alive connection per miner, and room to grow.
OPEN_FILES = 65536


def raise_open_files(wanted: int = OPEN_FILES) -> None:
    """Lift the soft open-files limit toward ``wanted`` (at most the hard limit): every
    miner keeps a connection open, and a soft limit of 1024 stops the fleet near 1000."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Collector:
    """The parts of a running collector, reachable for hooks (discovery adds miners with
    ``collector.fleet.add``) and for the benchmarks (``scheduler.stats``, ``publisher``)."""

    def __init__(self, config: Config, outbox: Outbox | None = None) -> None:
        self.config = config
        self.outbox = outbox if outbox is not None else Outbox()
        self.fleet = FleetRegistry(config.collector, self.outbox)  # sizes the outbox
        self.scheduler = Scheduler(config.collector, self.fleet)
        # Labels and forgotten miners, heard on the publisher's own session.
        # Home Assistant discovery configs, published beside the listening (on by default).
        self.homeassistant = (HomeAssistantDiscovery(config, self.fleet)
                              if config.homeassistant.discovery else None)
        # Commands (restart, settings, autotune...), answered on the same session.
        self.commands = Commands(config, self.fleet)
        self.listener = Listener(config.mqtt.base_topic, self.fleet, self.homeassistant,
                                 self.commands)
        self.publisher = Publisher(self.outbox, config.mqtt.base_topic,
                                   republish=self.fleet.retained,
                                   listen=self.listener.listen)
        # The lean client: pipelined publishing at the broker's Receive Maximum.
        self.link = MqttLink(config.mqtt, "collector")
        # Its own health, beside the publishing on the same session (GET /metrics).
        self.stats = StatsPublisher(
            config.mqtt.base_topic, "collector", config.metrics.stats_interval_s,
            lambda: collector_stats(self.scheduler.stats, self.fleet.failures,
                                    len(self.fleet), self.outbox))

    async def run(self) -> None:
        """Run until cancelled (SIGTERM/SIGINT through ``run_service``)."""
        raise_open_files()
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < len(self.fleet) + 256:
            log.warning("the open-files limit (%d) is low for %d miners: raise `ulimit -n`",
                        soft, len(self.fleet))
        try:
            with fewer_collections():
                await self._run()
        finally:
            try:
                await self.commands.aclose()  # autotune runs restore their miners first
            finally:
                await self.fleet.aclose()

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.scheduler.run())
            # CIDR scans and mDNS, only when configured: never by default.
            group.create_task(discover(self.config.collector.discovery, self.fleet))
            group.create_task(self.link.run(self.stats.around(self.publisher.session)))


async def serve(config: Config, outbox: Outbox | None = None) -> None:
    """Run the collector until cancelled."""
    await Collector(config, outbox).run()
