"""Home Assistant MQTT discovery from the collector: the fleet's configs, kept on the broker.

``HomeAssistantDiscovery.run`` runs beside the publishing on each broker session (the
``listener`` starts it once its subscriptions are in place) and publishes, retained at QoS 1,
the configs ``shared.homeassistant`` derives:

- at the start of every session: the collector's device and the configs of every miner
  whose info is known (a broker that lost its retained messages is whole again);
- when a miner's info first appears or changes (identity, label): that miner's, within
  ``WATCH_S``. The fleet replaces a slot's info object whenever it changes, so a look at
  every slot costs one identity comparison each; the fleet needs no hook for it;
- when Home Assistant announces itself (``{prefix}/status`` says ``online``, its birth
  message after a restart): everything again;
- when a miner is forgotten (its info cleared, heard by the ``listener``): an empty retained
  payload on every config topic of it, so Home Assistant removes its entities. A forgotten
  miner still polled gets its configs again once it answers and its info is published again.

Publishing goes through ``client.publish`` a batch at a time (``IN_FLIGHT``), within the
broker's Receive Maximum that it shares with the samples; a config the broker refuses (an
ACL without the discovery topics) is counted and logged, and the session goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from importlib.metadata import PackageNotFoundError, version

from minerwatch.collector.fleet import FleetRegistry
from minerwatch.shared import homeassistant as ha
from minerwatch.shared.config import Config
from minerwatch.shared.errors import one_line
from minerwatch.shared.mqtt import MqttClient, MqttError, Subscription
from minerwatch.shared.schemas import MinerInfo

log = logging.getLogger(__name__)

#: How often the fleet is looked at for new or changed infos.
WATCH_S = 1.0
#: Configs handed to the client at once.
IN_FLIGHT = 64
#: Miners whose configs are built and sent in one step (about ``IN_FLIGHT`` configs).
MINERS_AT_ONCE = max(1, IN_FLIGHT // len(ha.MINER_ENTITIES))
#: Log the first refused config and then every this many.
LOG_EVERY = 1000


def minerwatch_version() -> str:
    try:
        return version("minerwatch-collector")
    except PackageNotFoundError:  # running from a source tree without metadata
        return "unknown"


class HomeAssistantDiscovery:
    """The discovery configs of one collector's fleet, published on each session."""

    def __init__(self, config: Config, fleet: FleetRegistry) -> None:
        self.settings = ha.settings(
            config.homeassistant.prefix, config.mqtt.base_topic,
            config.collector.poll_interval_s, minerwatch_version(), config.api.public_url)
        self.fleet = fleet
        #: Home Assistant's birth and Last Will topic.
        self.status_topic = f"{self.settings.prefix}/status"
        #: The info each miner's configs on the broker were made from (this session).
        self._published: dict[str, MinerInfo] = {}
        #: Forgotten miners whose configs are still to be cleared (kept across sessions).
        self._clearing: deque[str] = deque()
        self._everything = True
        self._wake = asyncio.Event()
        #: Configs the broker took (removals too), and those it refused.
        self.published = 0
        self.refused = 0

    def subscriptions(self) -> list[Subscription]:
        # Live births only: a retained "online" at subscribe time adds nothing to the
        # session's own start.
        return [Subscription(self.status_topic, qos=1, retain_handling=2)]

    def heard(self, payload: bytes) -> None:
        """Home Assistant's status: ``online`` (it started) means every config again."""
        if payload.strip() == b"online":
            log.info("Home Assistant is online: publishing the discovery configs again")
            self._everything = True
            self._wake.set()

    def forgotten(self, miner_id: str) -> None:
        """The miner's info was cleared: its configs go too."""
        self._published.pop(miner_id, None)
        if miner_id not in self._clearing:
            self._clearing.append(miner_id)
        self._wake.set()

    async def run(self, client: MqttClient) -> None:
        """Keep the broker's configs true for this session; returns when the connection
        is gone."""
        self._everything = True
        try:
            while client.connected:
                self._wake.clear()  # what is asked while catching up wakes the next round
                await self._catch_up(client)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(WATCH_S):
                        await self._wake.wait()
        except MqttError:
            return  # the connection is gone: the publisher's session ends with it
        except Exception:  # a bug stops discovery for this session, never the publishing
            log.exception("Home Assistant discovery failed; it starts again next session")

    async def _catch_up(self, client: MqttClient) -> None:
        """Removals first, then the collector (at a session's start or a birth), then every
        miner whose info is new to this session or changed."""
        prefix, base = self.settings.prefix, self.settings.base
        while self._clearing:
            await self._send(client, ha.removals(prefix, base, self._clearing[0]))
            self._clearing.popleft()
        if self._everything:
            self._everything = False
            self._published.clear()
            await self._send(client, ha.collector_configs(self.settings))
        changed = list(self._changed().items())
        # A few miners at a time: building a thousand miners' configs at once would hold
        # the event loop (and the polls) for a tenth of a second.
        for start in range(0, len(changed), MINERS_AT_ONCE):
            chunk = changed[start:start + MINERS_AT_ONCE]
            await self._send(client, [message for _, info in chunk
                                      for message in ha.miner_configs(info, self.settings)])
            for miner_id, info in chunk:
                if miner_id not in self._clearing:  # not forgotten while they went out
                    self._published[miner_id] = info

    def _changed(self) -> dict[str, MinerInfo]:
        """The miners whose configs on the broker are missing or out of date."""
        changed: dict[str, MinerInfo] = {}
        published = self._published
        for slot in self.fleet.slots:
            info = slot.info
            if info is None or slot.forgotten or slot.retired:
                continue
            before = published.get(slot.miner_id)
            if before is info:
                continue
            if before == info:  # a new object, the same info
                published[slot.miner_id] = info
                continue
            changed[slot.miner_id] = info
        return changed

    async def _send(self, client: MqttClient, messages: list[ha.DiscoveryMessage]) -> None:
        """Publish and wait for the broker's answers; MqttError when the connection is
        gone (what was not answered goes again next session: it starts over)."""
        for start in range(0, len(messages), IN_FLIGHT):
            batch = messages[start:start + IN_FLIGHT]
            results = await asyncio.gather(
                *(client.publish(m.topic, m.payload, qos=1, retain=True) for m in batch),
                return_exceptions=True)
            for message, result in zip(batch, results, strict=True):
                if isinstance(result, MqttError) and not client.connected:
                    raise result
                if isinstance(result, BaseException):
                    self._refused(message.topic, result)
                else:
                    self.published += 1

    def _refused(self, topic: str, error: BaseException) -> None:
        if isinstance(error, asyncio.CancelledError):
            raise error
        self.refused += 1
        if self.refused == 1 or self.refused % LOG_EVERY == 0:
            log.warning("the broker refused %d Home Assistant config(s) (last: %s: %s); "
                        "check its ACL grants %s/+/%s/#", self.refused, topic[:200],
                        one_line(error), self.settings.prefix, self.settings.node_id)
