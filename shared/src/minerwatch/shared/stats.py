"""Publishing a service's own health (``metrics``) beside its session on the broker link.

``StatsPublisher(base, service, interval_s, read).around(session)`` is the session a
service gives its link instead of ``session``: on each connection it publishes ``read()``
as the ``ServiceStats`` of the service at once and every ``interval_s`` (QoS 0, not
retained: a lost one is replaced by the next), for as long as the session runs. Reading
or publishing the stats never ends the session: a connection that is gone ends only the
stats (the session notices it itself), anything else is logged and the next round tried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from minerwatch.shared.errors import one_line
from minerwatch.shared.mqtt.protocol import MqttClient, MqttError
from minerwatch.shared.schemas import ServiceMetric, ServiceStats, encode, now_ts
from minerwatch.shared.topics import STATS

log = logging.getLogger("minerwatch.stats")


Client = TypeVar("Client", bound=MqttClient)


class StatsPublisher:
    """Publishes ``read()`` as the ServiceStats of ``service`` on each broker session:
    ``link.run(stats.around(session))`` runs it beside the service's own session."""

    #: An error reading the stats is logged at most once per this many seconds.
    LOG_EVERY_S = 300.0

    def __init__(self, base: str, service: str, interval_s: float,
                 read: Callable[[], Iterable[ServiceMetric]]) -> None:
        self.topic = STATS.topic(base, service=service)
        self.service = service
        self.interval_s = interval_s
        self.read = read
        #: Stats payloads handed to the broker (since start).
        self.published = 0
        self._logged_at: float | None = None

    def payload(self) -> bytes:
        return encode(ServiceStats(service=self.service, ts=now_ts(),
                                   metrics=list(self.read())))

    async def run(self, client: MqttClient) -> None:
        """Publish now and every ``interval_s`` until cancelled or the connection is gone
        (then it returns: the session beside it notices the connection too)."""
        while True:
            try:
                payload = self.payload()
                await client.publish(self.topic, payload, qos=STATS.qos, retain=STATS.retained)
                self.published += 1
            except MqttError:
                return
            except Exception as exc:  # a bug, a payload over the broker's limits: go on
                self._log(exc)
            await asyncio.sleep(self.interval_s)

    def around(self, session: Callable[[Client], Awaitable[None]]
               ) -> Callable[[Client], Awaitable[None]]:
        """``session`` with the stats published beside it for as long as it runs."""

        async def with_stats(client: Client) -> None:
            publishing = asyncio.ensure_future(self.run(client))
            try:
                await session(client)
            finally:
                publishing.cancel()
                await asyncio.gather(publishing, return_exceptions=True)

        return with_stats

    def _log(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._logged_at is None or now - self._logged_at >= self.LOG_EVERY_S:
            self._logged_at = now
            log.error("%s: stats not published: %s: %s", self.service, type(exc).__name__,
                      one_line(exc), exc_info=exc)
