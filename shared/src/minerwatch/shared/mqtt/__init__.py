"""minerwatch's MQTT: one client interface, two clients behind it, one reconnecting link.

Start here:

- ``protocol``: ``MqttClient``, the interface every session is written against
  (``publish``, ``publish_nowait`` -> ``Delivery``, ``subscribe``, ``messages``, ``ack``,
  ``wait_closed``), and its errors ``MqttError`` (the connection) and
  ``BrokerLimitError`` (a message the broker said it cannot take).
- ``link``: ``MqttLink`` and ``PersistentLink``, which connect, announce the service
  ``online``, run the session, reconnect with backoff, and make sure a service whose
  session dies, stops or is killed is seen ``offline``.
- ``client``: the lean MQTT v5 client (the store's acknowledged ingest, the collector's
  pipelined publishing); ``packets``: its codec, pure functions over bytes.
- ``aio``: the same interface over aiomqtt (alerts, api).

A service writes ``async def session(client: MqttClient) -> None`` and runs
``await MqttLink(config.mqtt, "name").run(session)``.
"""

from minerwatch.shared.mqtt.aio import AiomqttClient
from minerwatch.shared.mqtt.client import Client
from minerwatch.shared.mqtt.link import (
    MAX_PACKET_SIZE,
    AckingSession,
    MqttLink,
    PersistentLink,
    Session,
    publish,
)
from minerwatch.shared.mqtt.packets import Message, Subscription, Will
from minerwatch.shared.mqtt.protocol import BrokerLimitError, Delivery, MqttClient, MqttError

__all__ = [
    "MAX_PACKET_SIZE",
    "AckingSession",
    "AiomqttClient",
    "BrokerLimitError",
    "Client",
    "Delivery",
    "Message",
    "MqttClient",
    "MqttError",
    "MqttLink",
    "PersistentLink",
    "Session",
    "Subscription",
    "Will",
    "publish",
]
