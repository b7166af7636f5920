"""The one client interface every service's MQTT session is written against.

Two implementations satisfy it: ``client.Client`` (minerwatch's lean MQTT v5 client, for
the store's acknowledged ingest and the collector's pipelined publishing) and
``aio.AiomqttClient`` (aiomqtt, for the alerts and the api). A session never needs to
know which one it has.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from minerwatch.shared.mqtt.packets import Message, Subscription


class MqttError(Exception):
    """The connection failed, was refused or was lost; the text is one line."""


class Delivery:
    """A QoS 1 publish handed over without waiting (``publish_nowait``). ``settled``
    once the broker answered it: ``reason`` is its PUBACK reason code (0x80 and up:
    refused, e.g. by an ACL). A connection lost before the answer leaves it unsettled."""

    __slots__ = ("packet_id", "reason", "topic")

    def __init__(self, topic: str, packet_id: int) -> None:
        self.topic = topic
        self.packet_id = packet_id
        self.reason: int | None = None

    @property
    def settled(self) -> bool:
        return self.reason is not None

    @property
    def refused(self) -> bool:
        return self.reason is not None and self.reason >= 0x80


class MqttClient(Protocol):
    """One connected MQTT v5 session (a new object per connection)."""

    @property
    def connected(self) -> bool: ...

    #: Called with each Delivery the broker settles (the publisher's wake-up).
    on_settled: Callable[[Delivery], None] | None

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> None:
        """Publish and, at QoS 1, return once the broker acknowledged it; MqttError if it
        refused or the connection is gone."""

    def publish_nowait(self, topic: str, payload: bytes, *, retain: bool = False
                       ) -> Delivery:
        """Hand a QoS 1 publish to the connection without waiting (pipelined, in order);
        MqttError when not connected. At most ``send_quota`` may be unsettled at once."""

    @property
    def send_quota(self) -> int:
        """How many more QoS 1 publishes may be unsettled now (the broker's Receive
        Maximum less those in flight)."""

    async def subscribe(self, subscriptions: Sequence[Subscription | str]) -> tuple[int, ...]:
        """Subscribe; the granted QoS per filter. A refused filter raises MqttError."""

    async def unsubscribe(self, topic_filters: Sequence[str]) -> None: ...

    @property
    def messages(self) -> AsyncIterator[Message]:
        """Messages in the order the broker sent them; ends with MqttError once the
        connection is gone."""

    def ack(self, message: Message) -> None:
        """Acknowledge a QoS 1 message (for clients that acknowledge late; a no-op for
        those that acknowledge on receipt)."""

    async def wait_closed(self) -> MqttError:
        """Return, with the reason, once the connection is gone (how a publisher that
        subscribes to nothing notices a dead broker)."""


__all__ = ["Delivery", "Message", "MqttClient", "MqttError", "Subscription"]
