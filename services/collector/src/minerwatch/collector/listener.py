"""What the collector hears on its MQTT session: labels, forgotten miners, commands.

The publisher's session runs ``Listener.listen`` in a task of its own, so receiving never
slows publishing. It subscribes, with MQTT v5 ``no_local`` (the collector's own infos
never come back to it), to:

- ``{base}/miners/+/label`` (retained ones too): a ``MinerLabel`` from the api sets the
  miner's label (``FleetRegistry.set_label``); ``label: null`` or an empty payload removes
  it, and the config's ``label`` applies again;
- ``{base}/miners/+/info``, live messages only (``retain_handling`` 2: the fleet's
  retained infos are not sent again at each connect): an empty payload is a miner
  forgotten by the api or ``minerwatch-collector forget``
  (``FleetRegistry.forgotten``; its Home Assistant configs are cleared too). Other infos
  mean nothing here;
- ``{prefix}/status``, Home Assistant's birth message, when discovery is on
  (``homeassistant``, whose publishing runs beside this for the session);
- ``{base}/miners/+/command``, live messages only: a ``Command`` goes, with the message's
  MQTT v5 properties (response topic, correlation data), to ``control.commands``, which
  carries it out in a task of its own and answers (the loop here never waits for it).

Each message is acknowledged once handled. Bad input (a payload that does not decode, a
topic that is not ours) is counted and logged through ``RejectLog``, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from minerwatch.collector.control.commands import Commands
from minerwatch.collector.fleet import FleetRegistry
from minerwatch.collector.homeassistant import HomeAssistantDiscovery
from minerwatch.shared.errors import one_line
from minerwatch.shared.messages import Rejected, decode_message
from minerwatch.shared.mqtt import Message, MqttClient, Subscription
from minerwatch.shared.rejects import RejectLog
from minerwatch.shared.schemas import Command, MinerLabel
from minerwatch.shared.topics import COMMAND, INFO, LABEL

log = logging.getLogger(__name__)

#: The RejectLog kind of a message whose handling failed for a reason nobody foresaw.
UNHANDLED = "unhandled"


class Listener:
    """Routes the messages of the collector's subscriptions to the fleet."""

    def __init__(self, base_topic: str, fleet: FleetRegistry,
                 homeassistant: HomeAssistantDiscovery | None = None,
                 commands: Commands | None = None) -> None:
        self.base = base_topic
        self.fleet = fleet
        self.homeassistant = homeassistant
        self.commands = commands
        self.rejects = RejectLog(log)
        self.handled = 0

    def subscriptions(self) -> list[Subscription]:
        return [
            Subscription(LABEL.filter(self.base), qos=1, no_local=True),
            Subscription(INFO.filter(self.base), qos=1, no_local=True, retain_handling=2),
            *(self.homeassistant.subscriptions() if self.homeassistant else ()),
            *((self.commands.subscription(),) if self.commands is not None else ()),
        ]

    async def listen(self, client: MqttClient) -> None:
        """Subscribe and handle every message until the connection ends (MqttError)."""
        await client.subscribe(self.subscriptions())
        discovery = (None if self.homeassistant is None
                     else asyncio.ensure_future(self.homeassistant.run(client)))
        if self.commands is not None:
            self.commands.attach(client)  # results go out on this session
        try:
            async for message in client.messages:
                self.consume(message)
                client.ack(message)
        finally:
            if self.commands is not None:
                self.commands.detach(client)
            if discovery is not None:
                discovery.cancel()
                with contextlib.suppress(BaseException):
                    await discovery

    def consume(self, message: Message) -> None:
        """``handle``, behind a guard: a bug costs one message, never the session."""
        try:
            self.handle(message.topic, message.payload, message)
        except Exception as exc:
            self.rejects.note(UNHANDLED, f"{message.topic[:200]}: handling failed: "
                                         f"{type(exc).__name__}: {one_line(exc)}")
            log.debug("handling a message on %s failed", message.topic[:200], exc_info=True)

    def handle(self, topic: str, payload: bytes, message: Message | None = None) -> None:
        """One message; ``message`` (when given) carries its MQTT properties."""
        self.handled += 1
        if self.homeassistant is not None and topic == self.homeassistant.status_topic:
            self.homeassistant.heard(payload)
            return
        if payload and topic.endswith("/info"):
            return  # another's info (a second collector?): nothing to do, not decoded
        decoded = decode_message(self.base, topic, payload)
        if isinstance(decoded, Rejected):
            self.rejects.note(decoded.kind, str(decoded))
            return
        miner_id = decoded.miner_id
        if miner_id is None:
            return
        if decoded.spec is COMMAND:
            if self.commands is not None and isinstance(decoded.message, Command):
                self.commands.submit(decoded.message, message)
            return  # an empty payload deletes a retained message: nothing to carry out
        if decoded.spec is LABEL:
            label = decoded.message.label if isinstance(decoded.message, MinerLabel) else None
            labels = self.fleet.labels
            refused = labels.refused
            self.fleet.set_label(miner_id, label)
            if labels.refused > refused:
                self.rejects.note(LABEL.name, f"{topic[:200]}: {labels.max_labels} labels "
                                              "are kept already; this new one is ignored")
        elif decoded.spec is INFO and decoded.message is None:
            self.fleet.forgotten(miner_id)
            if self.homeassistant is not None:
                self.homeassistant.forgotten(miner_id)
