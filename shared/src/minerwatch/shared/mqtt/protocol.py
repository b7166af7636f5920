"""The one client interface every service's MQTT session is written against.

A session is ``async def session(client: MqttClient) -> None``; ``MqttLink.run`` calls it
with a connected client and calls it again on every reconnect (see ``link``).
``client.Client``, minerwatch's lean MQTT v5 client, is what every link runs on; sessions
are typed against this interface so that what they may rely on is written down once (and
a test can hand them something else).

What the interface promises:

- QoS 0 and 1 only. Subscribing at QoS 2 raises ``ValueError`` before anything is sent.
- ``publish`` waits for the PUBACK; ``publish_nowait`` does not: it returns a ``Delivery``
  at once, settled later (``on_settled`` is called with it). At most ``send_quota``
  publishes may be unsettled at once (the broker's Receive Maximum).
- Whatever the broker said in its CONNACK that it cannot take (a packet over its maximum
  size, QoS 1 above its maximum QoS, a retained message where retain is unavailable, more
  unsettled publishes than its Receive Maximum) is refused with ``BrokerLimitError``
  before a byte is written: never dropped silently, and the connection stays up.
- Everything about the connection itself (refused, lost, a reply that never came, the
  broker refusing a subscription) is ``MqttError``, with a one-line text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

from minerwatch.shared.mqtt.packets import Message, Subscription


class MqttError(Exception):
    """The connection failed, was refused or was lost, or the broker refused a request;
    the text is one line. ``reason`` is the MQTT reason code when the broker gave one
    (its DISCONNECT), else None."""

    def __init__(self, text: str, *, reason: int | None = None) -> None:
        super().__init__(text)
        self.reason = reason


class BrokerLimitError(ValueError):
    """A publish the broker announced it cannot take (its CONNACK limits): not sent, and
    the connection is unharmed. A ``ValueError``: sending it again will not help."""


class Delivery:
    """A QoS 1 publish handed over without waiting (``publish_nowait``). ``settled``
    once the broker answered it: ``reason`` is its PUBACK reason code (0x80 and up:
    refused, e.g. by an ACL). A connection lost before the answer leaves it unsettled:
    the broker may or may not have it, so the publisher sends it again on the next one."""

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

    def __repr__(self) -> str:
        state = "unsettled" if self.reason is None else f"reason 0x{self.reason:02X}"
        return f"Delivery({self.topic!r}, packet_id={self.packet_id}, {state})"


class MqttClient(Protocol):
    """One connected MQTT v5 session (a new object per connection)."""

    @property
    def connected(self) -> bool:
        """False once the connection is gone (or is being closed)."""

    #: Called with each Delivery the broker settles, in the order the PUBACKs arrive (the
    #: publisher's wake-up): those of ``publish`` too, as each frees room in the window.
    #: It runs inside the client's receive path: keep it short and never raise from it.
    on_settled: Callable[[Delivery], None] | None

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False, properties: dict[str, Any] | None = None
                      ) -> None:
        """Publish and, at QoS 1, return once the broker acknowledged it (waiting for room
        under the Receive Maximum first). MqttError if the broker refused it or the
        connection is gone; BrokerLimitError if the broker cannot take it at all.
        ``properties``: MQTT v5 publish properties by name (``response_topic``,
        ``correlation_data``, ``message_expiry_interval``)."""

    def publish_nowait(self, topic: str, payload: bytes, *, retain: bool = False
                       ) -> Delivery:
        """Hand a QoS 1 publish to the connection without waiting (pipelined, in order).
        MqttError when not connected; BrokerLimitError when ``send_quota`` is 0 or the
        broker cannot take this message."""

    @property
    def send_quota(self) -> int:
        """How many more QoS 1 publishes may be unsettled now (the broker's Receive
        Maximum, 65535 when it names none, less those in flight)."""

    async def subscribe(self, subscriptions: Sequence[Subscription | str]) -> tuple[int, ...]:
        """Subscribe (a plain string is a QoS 1 filter); the granted QoS per filter.
        ValueError for QoS 2 (before sending); MqttError if the broker refused a filter."""

    async def unsubscribe(self, topic_filters: Sequence[str]) -> None:
        """Unsubscribe; MqttError if the broker refused it."""

    @property
    def messages(self) -> AsyncIterator[Message]:
        """Messages in the order the broker sent them; ends with MqttError once the
        connection is gone and what arrived before has been handed out."""

    def ack(self, message: Message) -> None:
        """Acknowledge a QoS 1 message (for clients that acknowledge late; a no-op for
        those that acknowledge on receipt). Never raises, even once disconnected."""

    async def wait_closed(self) -> MqttError:
        """Return, with the reason, once the connection is gone (how a publisher that
        subscribes to nothing notices a dead broker)."""


__all__ = [
    "BrokerLimitError",
    "Delivery",
    "Message",
    "MqttClient",
    "MqttError",
    "Subscription",
]
