"""The store's MQTT side: the session on each broker connection, its window and its acks.

Nothing acknowledged is lost: the store keeps a persistent MQTT session under a fixed
client id (``{base_topic}-store`` unless configured, so two stacks sharing a broker keep
separate sessions) and acknowledges each QoS 1 message only after the transaction
holding its row is committed. Whatever it had not acknowledged when it died (SIGKILL,
power, a crash) the broker delivers again, and the writes are idempotent. The broker sends at most
``receive_window(batch_size)`` unacknowledged messages (the client stops reading when one
sends more): while the database is away the store holds that much and the broker queues
the rest.

A message the store cannot take is counted and logged (``RejectLog``), and acknowledged
in its turn like any other, since a redelivery would not fix it. One that makes routing
raise, which nothing should, is treated the same way by the loop's last-resort guard:
one message is never a reason to stop the batch it came in, or the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial

from minerwatch.shared.config import Config, store_client_id
from minerwatch.shared.errors import one_line
from minerwatch.shared.messages import Rejected
from minerwatch.shared.mqtt import PersistentLink
from minerwatch.shared.mqtt.protocol import Message, MqttClient, Subscription
from minerwatch.shared.rejects import RejectLog
from minerwatch.shared.topics import topic_label
from minerwatch.store.retention import Horizon
from minerwatch.store.routing import route, subscriptions
from minerwatch.store.writer import Writer

log = logging.getLogger("minerwatch.store")

#: What runs on each broker connection.
StoreSession = Callable[[MqttClient], Awaitable[None]]
Acknowledge = Callable[[MqttClient, Message], None]

#: How long a session that is being stopped waits for its last rows to be committed.
SETTLE_S = 5.0


def ack(client: MqttClient, message: Message) -> None:
    """Acknowledge once committed (tests pass another, to play a store killed between its
    commit and its acknowledgement)."""
    client.ack(message)


def receive_window(batch_size: int) -> int:
    """Unacknowledged messages the broker may send: a batch being written, the next one
    filling up (MQTT v5 Receive Maximum, at most 65535)."""
    return min(2 * batch_size, 65535)


def topic_filters(base: str, group: str | None) -> list[str]:
    if group is None:
        return subscriptions(base)
    return [f"$share/{group}/{topic}" for topic in subscriptions(base)]


def unforeseen(base: str, topic: str, error: Exception) -> Rejected:
    """The reject for a message whose handling raised (a bug, not bad input)."""
    log.debug("unexpected error routing a message on %s", topic[:200], exc_info=error)
    return Rejected(topic, topic_label(base, topic),
                    f"dropped after an unexpected error ({type(error).__name__}: "
                    f"{one_line(error)})")


def mqtt_session(
    base: str,
    writer: Writer,
    rejects: RejectLog,
    *,
    group: str | None = None,
    horizon: Horizon | None = None,
    acknowledge: Acknowledge = ack,
) -> StoreSession:
    """What runs on each broker connection: subscribe (QoS 1), route every message, and
    hand it to the writer with its acknowledgement.

    Every message is acknowledged after the rows received before it are committed, bad
    ones included (they are counted and logged, and a redelivery would not fix them).
    """
    async def session(client: MqttClient) -> None:
        if group is not None:
            # a session that used to subscribe without the group would get everything twice
            await client.unsubscribe(subscriptions(base))
        # Retained messages only when the subscription is new: a resumed session has them.
        await client.subscribe([Subscription(topic, qos=1, retain_handling=1)
                                for topic in topic_filters(base, group)])
        try:
            async for message in client.messages:
                try:
                    routed = route(base, message.topic, message.payload, horizon=horizon)
                except Exception as exc:  # the last resort: log, drop, acknowledge
                    routed = unforeseen(base, message.topic, exc)
                if isinstance(routed, Rejected):
                    rejects.note(routed.kind, str(routed))
                    routed = None
                writer.add(routed, partial(acknowledge, client, message) if message.qos
                           else None)
        except asyncio.CancelledError:
            # commit and acknowledge what came on this connection while it is still up
            with contextlib.suppress(Exception):
                await writer.write_pending(SETTLE_S)
            raise

    return session


def store_link(config: Config) -> PersistentLink:
    """The store's broker connection: fixed client id (``store_client_id``: the configured
    one, else ``{base_topic}-store``), persistent session, acknowledgement after commit and
    a bounded receive window."""
    return PersistentLink(config.mqtt, "store", client_id=store_client_id(config),
                          receive_maximum=receive_window(config.store.batch_size))
