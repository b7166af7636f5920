"""The one reconnecting MQTT loop every service runs.

``MqttLink.run(session)`` connects, announces the service as ``online`` (retained, with a
Last Will of ``offline``), hands the connected client to ``session`` and, when the broker
goes away, reconnects with exponential backoff and jitter and calls ``session`` again.
Cancelling the task (SIGTERM/SIGINT through ``service.run_service``) publishes ``offline``
before a clean disconnect, since a broker sends the Last Will only on an unclean one.

A service that must not lose messages (the store) runs a ``PersistentLink``: a fixed client
id, a session the broker keeps, acknowledgement by the service once a message is safe
and a receive maximum. The broker then keeps what is not acknowledged, redelivers it after
a crash, and sends no more than ``receive_maximum`` unacknowledged QoS 1 messages at a
time (MQTT v5 flow control). That link runs on ``mqtt_client.Client``, which is built
for this; every other link on aiomqtt.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

import aiomqtt

from minerwatch.shared.backoff import backoff_delays
from minerwatch.shared.config import MqttConfig, parse_mqtt_url
from minerwatch.shared.mqtt import client as mqtt_client
from minerwatch.shared.topics import service_status_topic

log = logging.getLogger("minerwatch.mqtt")

Session = Callable[[aiomqtt.Client], Awaitable[None]]
#: What a ``PersistentLink`` runs on each connection.
AckingSession = Callable[[mqtt_client.Client], Awaitable[None]]
#: Either client: both publish with ``publish(topic, payload, qos=, retain=)``.
AnyClient = aiomqtt.Client | mqtt_client.Client


async def publish(
    client: AnyClient, topic: str, payload: bytes, *, qos: int = 1, retain: bool = True
) -> None:
    """``client.publish`` that never swallows a cancellation.

    On Python 3.11, ``asyncio.wait_for`` (inside aiomqtt's publish) drops a cancel that lands
    as the broker's acknowledgement arrives, which would leave a SIGTERMed service running.
    """
    await client.publish(topic, payload, qos=qos, retain=retain)
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class MqttLink:
    """A service's connection to the broker; ``connected`` is readable for health checks."""

    def __init__(
        self,
        config: MqttConfig,
        service: str,
        *,
        client_id: str | None = None,
        max_inflight: int | None = None,
    ) -> None:
        self.config = config
        self.service = service
        self.base = config.base_topic
        self.address = parse_mqtt_url(config.url)
        self.client_id = client_id
        #: paho's own cap on unacknowledged outgoing QoS 1 messages (default 20; 0: none),
        #: for publishers that keep a cheaper bound of their own.
        self.max_inflight = max_inflight
        self.status_topic = service_status_topic(self.base, service)
        self.connected = False

    def _tls(self) -> ssl.SSLContext | None:
        return ssl.create_default_context() if self.address.tls else None

    def _client(self) -> AnyClient:
        """A new, unconnected client, used as ``async with``."""
        return aiomqtt.Client(
            self.address.host,
            self.address.port,
            username=self.address.username,
            password=self.address.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=True,
            keepalive=self.config.keepalive_s,
            timeout=10,
            will=aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True),
            tls_context=self._tls(),
            max_inflight_messages=self.max_inflight,
        )

    async def run(self, session: Session | AckingSession) -> None:
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
            except (aiomqtt.MqttError, mqtt_client.MqttError) as exc:
                delay = next_delay()
                log.warning("%s: broker %s unavailable (%s); retrying in %.1f s",
                            self.service, where, exc, delay)
            finally:
                self.connected = False
            await asyncio.sleep(delay)

    async def _say_offline(self, client: AnyClient) -> None:
        try:
            async with asyncio.timeout(2):
                await client.publish(self.status_topic, b"offline", qos=1, retain=True)
        except (aiomqtt.MqttError, mqtt_client.MqttError, TimeoutError):
            pass  # the broker will publish the Last Will instead


#: The largest message a ``PersistentLink`` takes; the broker drops larger ones for it.
#: Every payload of ours is a few KB at most.
MAX_PACKET_SIZE = 1 << 20


class PersistentLink(MqttLink):
    """The link of a subscriber that must not lose a message.

    A fixed client id and a session the broker keeps for ``session_expiry_s`` while the
    service is away; the session acknowledges each QoS 1 message itself, with
    ``client.ack(message)``, once it is safe; and the broker never has more than
    ``receive_maximum`` unacknowledged messages out to it.
    """

    def __init__(self, config: MqttConfig, service: str, *, client_id: str,
                 receive_maximum: int, session_expiry_s: int = 86400) -> None:
        super().__init__(config, service, client_id=client_id)
        self.receive_maximum = receive_maximum
        self.session_expiry_s = session_expiry_s

    def _client(self) -> mqtt_client.Client:
        return mqtt_client.Client(
            self.address.host,
            self.address.port,
            client_id=self.client_id,
            username=self.address.username,
            password=self.address.password,
            tls_context=self._tls(),
            keepalive_s=self.config.keepalive_s,
            clean_start=False,
            session_expiry_s=self.session_expiry_s,
            receive_maximum=self.receive_maximum,
            will=mqtt_client.Will(self.status_topic, b"offline", qos=1, retain=True),
            max_packet_size=MAX_PACKET_SIZE,
        )
