"""minerwatch's MQTT: one client interface, one client behind it, one reconnecting link.

Start here:

- ``protocol``: ``MqttClient``, the interface every session is written against
  (``publish``, ``publish_nowait`` -> ``Delivery``, ``subscribe``, ``messages``, ``ack``,
  ``wait_closed``), and its errors ``MqttError`` (the connection) and
  ``BrokerLimitError`` (a message the broker said it cannot take).
- ``link``: ``MqttLink`` and ``PersistentLink``, which connect, announce the service
  ``online``, run the session, reconnect with backoff, and make sure a service whose
  session dies, stops or is killed is seen ``offline``.
- ``client``: the lean MQTT v5 client every service runs on (the store's acknowledged
  ingest, the collector's pipelined publishing, flow control for alerts and api; why not
  aiomqtt: docs/decisions/0003); ``packets``: its codec, pure functions over bytes.

A service writes ``async def session(client: MqttClient) -> None`` and runs
``await MqttLink(config.mqtt, "name").run(session)``.
"""

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
