"""The one reconnecting MQTT loop every service runs.

``MqttLink.run(session)`` connects, announces the service as ``online`` (retained, with a
Last Will of ``offline``), hands the connected client to ``session`` and, when the broker
goes away, reconnects with exponential backoff and jitter and calls ``session`` again.
Cancelling the task (SIGTERM/SIGINT through ``service.run_service``) publishes ``offline``
before a clean disconnect, since a broker sends the Last Will only on an unclean one.

A service that must not lose messages (the store) asks for a persistent session, a fixed
client id, manual acknowledgement and a receive maximum: the broker then keeps what is
not acknowledged, redelivers it after a crash, and sends no more than ``receive_maximum``
unacknowledged QoS 1 messages at a time (MQTT v5 flow control).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from minerwatch.shared.config import MqttConfig, parse_mqtt_url
from minerwatch.shared.topics import service_status_topic

log = logging.getLogger("minerwatch.mqtt")

Session = Callable[[aiomqtt.Client], Awaitable[None]]


async def publish(
    client: aiomqtt.Client, topic: str, payload: bytes, *, qos: int = 1, retain: bool = True
) -> None:
    """``client.publish`` that never swallows a cancellation.

    On Python 3.11, ``asyncio.wait_for`` (inside aiomqtt's publish) drops a cancel that lands
    as the broker's acknowledgement arrives, which would leave a SIGTERMed service running.
    """
    await client.publish(topic, payload, qos=qos, retain=retain)
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Acknowledge a message received on a ``manual_ack`` link, once it is safe.

    Only the connection that received a message can acknowledge it: after a reconnect the
    old client is closed and this does nothing, and the broker redelivers the message.
    """
    if message.qos > 0:
        client._client.ack(message.mid, message.qos)


def backoff_delays(first: float, limit: float) -> Callable[[], float]:
    """Successive reconnect delays: doubling from ``first`` up to ``limit``, with full jitter
    in the upper half so a restarted broker is not hit by every service at once."""
    current = first

    def next_delay() -> float:
        nonlocal current
        delay = current * random.uniform(0.5, 1.0)
        current = min(current * 2, limit)
        return delay

    return next_delay


class MqttLink:
    """A service's connection to the broker; ``connected`` is readable for health checks."""

    def __init__(
        self,
        config: MqttConfig,
        service: str,
        *,
        client_id: str | None = None,
        persistent_session: bool = False,
        manual_ack: bool = False,
        receive_maximum: int | None = None,
        max_inflight: int | None = None,
    ) -> None:
        self.config = config
        self.service = service
        self.base = config.base_topic
        self.address = parse_mqtt_url(config.url)
        self.client_id = client_id
        self.persistent_session = persistent_session
        self.manual_ack = manual_ack
        self.receive_maximum = receive_maximum
        #: paho's own cap on unacknowledged outgoing QoS 1 messages (default 20; 0: none),
        #: for publishers that keep a cheaper bound of their own.
        self.max_inflight = max_inflight
        self.status_topic = service_status_topic(self.base, service)
        self.connected = False

    def _client(self) -> aiomqtt.Client:
        properties = Properties(PacketTypes.CONNECT)
        if self.persistent_session:
            # MQTT v5: keep the session (subscriptions, queued QoS 1 messages) for a day.
            properties.SessionExpiryInterval = 86400
        if self.receive_maximum is not None:
            properties.ReceiveMaximum = self.receive_maximum
        client = aiomqtt.Client(
            self.address.host,
            self.address.port,
            username=self.address.username,
            password=self.address.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not self.persistent_session,
            properties=None if properties.isEmpty() else properties,
            keepalive=self.config.keepalive_s,
            timeout=10,
            will=aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True),
            tls_context=ssl.create_default_context() if self.address.tls else None,
            max_inflight_messages=self.max_inflight,
        )
        if self.manual_ack:
            # aiomqtt 2.x has no option for it yet (aiomqtt issue #345); paho-mqtt 2.x does.
            # Set before connecting: a resumed session's messages follow the CONNACK at once.
            client._client.manual_ack_set(True)
        return client

    async def run(self, session: Session) -> None:
        """Keep a session running until it returns or the task is cancelled."""
        next_delay = backoff_delays(self.config.reconnect_min_s, self.config.reconnect_max_s)
        where = f"{self.address.host}:{self.address.port}"
        while True:
            try:
                async with self._client() as client:
                    self.connected = True
                    next_delay = backoff_delays(
                        self.config.reconnect_min_s, self.config.reconnect_max_s
                    )
                    log.info("%s connected to broker %s", self.service, where)
                    try:
                        await publish(client, self.status_topic, b"online")
                        await session(client)
                        return
                    except asyncio.CancelledError:
                        await self._say_offline(client)
                        raise
            except aiomqtt.MqttError as exc:
                delay = next_delay()
                log.warning("%s: broker %s unavailable (%s); retrying in %.1f s",
                            self.service, where, exc, delay)
            finally:
                self.connected = False
            await asyncio.sleep(delay)

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        try:
            async with asyncio.timeout(2):
                await client.publish(self.status_topic, b"offline", qos=1, retain=True)
        except (aiomqtt.MqttError, TimeoutError):
            pass  # the broker will publish the Last Will instead
