"""The collector service: the poller and the MQTT publisher, side by side.

The poller never waits for the broker: while the broker is away, messages wait in the
outbox and go out in order after the reconnect.
"""

from __future__ import annotations

import asyncio
import logging

from minerwatch.collector.poller import Poller
from minerwatch.collector.publisher import Outbox, Publisher
from minerwatch.shared.config import Config
from minerwatch.shared.mqtt import MqttLink

OUTBOX_SIZE = 10_000


async def serve(config: Config, outbox: Outbox | None = None) -> None:
    """Run until cancelled (SIGTERM/SIGINT through ``run_service``)."""
    # httpx logs every request at INFO: at fleet scale that is noise, not news.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    outbox = outbox if outbox is not None else Outbox(OUTBOX_SIZE)
    poller = Poller(config.collector, outbox)
    publisher = Publisher(outbox, config.mqtt.base_topic)
    link = MqttLink(config.mqtt, "collector")
    async with asyncio.TaskGroup() as group:
        group.create_task(poller.run())
        group.create_task(link.run(publisher.session))
