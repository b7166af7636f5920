"""minerwatch's MQTT interface: one client protocol, two clients, one reconnecting link.

- ``protocol``: ``MqttClient``, the interface every session is written against, with
  ``Delivery`` (a pipelined publish) and ``MqttError``.
- ``client``: the lean MQTT v5 client (store, collector); ``packets``: its codec.
- ``aio``: the same interface over aiomqtt (alerts, api).
- ``link``: ``MqttLink`` and ``PersistentLink``, which connect, announce the service,
  reconnect with backoff and make sure a service that dies is seen ``offline``.
"""

from minerwatch.shared.mqtt.link import (
    MAX_PACKET_SIZE,
    AckingSession,
    MqttLink,
    PersistentLink,
    Session,
    publish,
)
from minerwatch.shared.mqtt.packets import Message, Subscription, Will
from minerwatch.shared.mqtt.protocol import Delivery, MqttClient, MqttError

__all__ = [
    "MAX_PACKET_SIZE",
    "AckingSession",
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
