"""The one reconnecting MQTT loop every service runs, and how a service is seen to die.

``await link.run(session)`` connects, announces the service as ``online`` on
``{base}/services/{service}/status`` (retained, QoS 1; the connection's Will says
``offline``), calls ``session(client)`` with the connected client (``protocol.MqttClient``)
and, when the session ends, decides:

- it raised (anything: a lost connection, a refused request, a bug): the service is made
  ``offline`` at once (the client asks the broker for its Will with DISCONNECT 0x04; a
  connection that is gone already left the broker to publish the Will), the exception
  is logged (an MQTT one as one warning line, anything else as an error with its
  traceback), and after a backoff with jitter the
  session runs again on a new connection. The backoff restarts after a connection that
  lasted longer than the longest delay, so a session that fails at once every time is
  retried ever more slowly, up to ``reconnect_max_s``;
- it was cancelled (SIGTERM/SIGINT through ``service.run_service``): ``offline`` is
  published, then a clean disconnect, and the cancellation goes on;
- it returned: ``offline`` too, a clean disconnect, and ``run`` returns.

A service killed outright (SIGKILL, power) is made ``offline`` by the broker's Will: at
once when the socket closes, within 1.5 keep-alives when the host vanished.

A session the broker ends because another client connected with the same client id
(DISCONNECT 0x8E, "session taken over") is a configuration mistake, not a network
hiccup: it is logged as an ERROR naming the client id, at most once per
``TAKEOVER_REPORT_S`` (two processes sharing an id take the session from each other on
every reconnect; the next line says how many takeovers it stands for), and the link
keeps reconnecting with its backoff. Mosquitto before 2.0.15 (Debian 12 ships 2.0.11)
only closes the old connection; for a link with a fixed client id, a connection the
broker closed without a word while it stayed up all along (its ``$SYS/broker/uptime``,
read on a probe connection, is longer than the connection lasted) counts as taken over.

Every link runs on the lean ``client.Client`` (docs/decisions/0003):

- ``MqttLink(config, "collector")``: a fresh session per connection; pipelined
  ``publish_nowait`` within the broker's Receive Maximum. A subscriber passes
  ``receive_maximum=N`` and acknowledges each message once handled (``client.ack``): the
  broker then has at most N messages out to it, and the rest waits at the broker;
- ``PersistentLink(config, "store", client_id=..., receive_maximum=...)``: the same with a
  fixed client id and a session the broker keeps, so what was not acknowledged (committed)
  when the service died is delivered again.

``link.connected`` is for health checks: whether a session's connection is up now.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable

from minerwatch.shared.backoff import backoff_delays
from minerwatch.shared.config import MqttConfig, parse_mqtt_url
from minerwatch.shared.errors import one_line
from minerwatch.shared.mqtt.client import Client
from minerwatch.shared.mqtt.packets import Subscription, Will
from minerwatch.shared.mqtt.protocol import MqttClient, MqttError
from minerwatch.shared.topics import service_status_topic

log = logging.getLogger("minerwatch.mqtt")

#: What an ``MqttLink`` runs on each connection.
Session = Callable[[MqttClient], Awaitable[None]]
#: What a ``PersistentLink`` runs on each connection: the lean client itself.
AckingSession = Callable[[Client], Awaitable[None]]

#: The largest message a link takes; the broker drops larger ones for it.
#: Every payload of ours is a few KB at most.
MAX_PACKET_SIZE = 1 << 20
#: How long announcing ``offline`` on the way out may take.
OFFLINE_WAIT_S = 2.0
#: DISCONNECT reason: the broker gave this client's session to a new connection that
#: came with the same client id.
SESSION_TAKEN_OVER = 0x8E
#: How often, at most, a link logs that its session was taken over.
TAKEOVER_REPORT_S = 60.0

def taken_over(error: MqttError) -> bool:
    """Whether the broker ended the connection because another client connected with
    the same client id (MQTT v5 DISCONNECT 0x8E)."""
    return error.reason == SESSION_TAKEN_OVER


#: Mosquitto's uptime topic, which a silent takeover is told from a restart by.
UPTIME_TOPIC = "$SYS/broker/uptime"
#: How long the probe for the broker's uptime may take (a busy broker answers late).
UPTIME_WAIT_S = 5.0


def closed_without_reason(error: MqttError, host: str, port: int) -> bool:
    """Whether the broker closed the connection without DISCONNECT (``Client``'s text
    for a socket that ended), as Mosquitto before 2.0.15 does on a takeover."""
    return str(error).startswith(f"connection to {host}:{port} lost")


def uptime_s(payload: bytes) -> float | None:
    """Seconds from Mosquitto's ``$SYS/broker/uptime`` (``"1234 seconds"``), else None."""
    words = payload.split()
    if len(words) != 2 or words[1] != b"seconds" or not words[0].isdigit():
        return None
    return float(words[0])


def takeover_text(client_id: str, service: str, delay_s: float, unreported: int) -> str:
    """The one ERROR line for a taken-over session; ``unreported``: takeovers since the
    last line, which the rate limit kept quiet."""
    text = (f"session taken over: another client connected as client id {client_id!r}; "
            "two processes with one client id take the session from each other, so "
            f"give each its own; {service} reconnecting in {delay_s:.1f} s")
    if unreported:
        text += f" ({unreported} more takeover(s) since the last report)"
    return text


async def publish(
    client: MqttClient, topic: str, payload: bytes, *, qos: int = 1, retain: bool = True
) -> None:
    """``client.publish``, retained by default, that never swallows a cancellation.

    On Python 3.11, ``asyncio.wait_for`` drops a cancel that lands as the awaited result
    arrives, which would leave a SIGTERMed service running. The client is safe from that
    now; this stays for the sessions that call it.
    """
    await client.publish(topic, payload, qos=qos, retain=retain)
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class MqttLink:
    """A service's connection to the broker: a new session on each connection.

    ``receive_maximum``: for a subscriber that acknowledges each message once handled,
    the most unacknowledged messages the broker may have out to it (MQTT v5 flow control;
    without it the broker sends as fast as it can and a flood waits in this process).
    """

    #: A new session per connection (``PersistentLink`` keeps one at the broker).
    clean_start = True
    session_expiry_s = 0

    def __init__(self, config: MqttConfig, service: str, *, client_id: str | None = None,
                 receive_maximum: int | None = None) -> None:
        self.config = config
        self.service = service
        self.base = config.base_topic
        self.address = parse_mqtt_url(config.url)
        self.client_id = client_id
        self.receive_maximum = receive_maximum
        self.status_topic = service_status_topic(self.base, service)
        self.will = Will(self.status_topic, b"offline", qos=1, retain=True)
        self._current: Client | None = None
        #: ``TAKEOVER_REPORT_S``, per link so a test can shorten it.
        self.takeover_report_s = TAKEOVER_REPORT_S
        self._takeover_reported: float | None = None  # monotonic time of the last line
        self._takeovers_unreported = 0

    @property
    def connected(self) -> bool:
        """Whether a session's connection is up now (health checks)."""
        return self._current is not None and self._current.connected

    def _tls(self) -> ssl.SSLContext | None:
        return ssl.create_default_context() if self.address.tls else None

    def _client(self) -> Client:
        """A new, unconnected client, used as ``async with``."""
        address = self.address
        return Client(
            address.host, address.port, client_id=self.client_id,
            username=address.username, password=address.password,
            tls_context=self._tls(), keepalive_s=self.config.keepalive_s,
            clean_start=self.clean_start, session_expiry_s=self.session_expiry_s,
            receive_maximum=self.receive_maximum, will=self.will,
            max_packet_size=MAX_PACKET_SIZE)

    async def run(self, session: Callable[[Client], Awaitable[None]]) -> None:
        """Keep ``session`` running until it returns or the task is cancelled."""
        config = self.config
        next_delay = backoff_delays(config.reconnect_min_s, config.reconnect_max_s)
        where = f"{self.address.host}:{self.address.port}"
        while True:
            connected_at: float | None = None
            taken_by: str | None = None  # the client id, when the session was taken over
            client: Client | None = None
            try:
                client = self._client()
                async with client:
                    connected_at = time.monotonic()
                    self._current = client
                    log.info("%s connected to broker %s", self.service, where)
                    try:
                        await publish(client, self.status_topic, b"online")
                        await session(client)
                    except asyncio.CancelledError:
                        await self._say_offline(client)
                        raise
                    except BaseException:
                        # A failed session leaves like a crashed one: with the Will.
                        await client.disconnect(with_will=True)
                        raise
                    await self._say_offline(client)
                    return
            except MqttError as exc:
                failure = (f"broker {where} unavailable ({one_line(exc)})" if connected_at is None
                           else f"session with broker {where} ended ({one_line(exc)})")
                error: BaseException | None = None
                if client is not None and connected_at is not None and (
                        taken_over(exc) or await self._silently_taken_over(exc, connected_at)):
                    taken_by = client.client_id
            except Exception as exc:
                failure = f"session failed: {type(exc).__name__}: {one_line(exc)}"
                error = exc
            finally:
                self._current = None
            if connected_at is not None and (
                    time.monotonic() - connected_at > config.reconnect_max_s):
                next_delay = backoff_delays(config.reconnect_min_s, config.reconnect_max_s)
            delay = next_delay()
            if taken_by is not None:
                self._report_takeover(taken_by, delay)
            elif error is None:
                log.warning("%s: %s; retrying in %.1f s", self.service, failure, delay)
            else:
                log.error("%s: %s; retrying in %.1f s", self.service, failure, delay,
                          exc_info=error)
            await asyncio.sleep(delay)

    async def _silently_taken_over(self, error: MqttError, connected_at: float) -> bool:
        """For a fixed client id: whether a connection the broker closed without a reason
        was a takeover, the broker having been up for longer than the connection lasted
        (so it did not restart). False when the broker's uptime cannot be read.

        Never with an account: a broker that binds client ids to accounts (the production
        mosquitto.conf, ``use_username_as_clientid``) would give the probe this link's
        client id, and its clean start would discard the session it is meant to keep."""
        if self.client_id is None or self.address.username is not None or not (
                closed_without_reason(error, self.address.host, self.address.port)):
            return False
        lasted = time.monotonic() - connected_at
        uptime = await self._broker_uptime()
        return uptime is not None and uptime >= lasted

    async def _broker_uptime(self) -> float | None:
        """The broker's ``$SYS/broker/uptime``, on a short connection of its own (another
        client id); None when there is none (not Mosquitto, $SYS off or not allowed)."""
        address = self.address
        probe = Client(address.host, address.port, username=address.username,
                       password=address.password, tls_context=self._tls(),
                       keepalive_s=self.config.keepalive_s, max_packet_size=MAX_PACKET_SIZE)
        try:
            async with asyncio.timeout(UPTIME_WAIT_S), probe:
                await probe.subscribe([Subscription(UPTIME_TOPIC, qos=0)])
                async for message in probe.messages:
                    return uptime_s(bytes(message.payload))
        except (MqttError, OSError, TimeoutError):
            pass
        return None

    def _report_takeover(self, client_id: str, delay_s: float) -> None:
        now = time.monotonic()
        last = self._takeover_reported
        if last is not None and now - last < self.takeover_report_s:
            self._takeovers_unreported += 1
            log.debug("%s: session taken over again (client id %r)", self.service, client_id)
            return
        log.error("%s", takeover_text(client_id, self.service, delay_s,
                                      self._takeovers_unreported))
        self._takeover_reported = now
        self._takeovers_unreported = 0

    async def _say_offline(self, client: Client) -> None:
        try:
            async with asyncio.timeout(OFFLINE_WAIT_S):
                await client.publish(self.status_topic, b"offline", qos=1, retain=True)
        except (MqttError, TimeoutError):
            pass  # the connection is gone: the broker publishes the Will instead


class PersistentLink(MqttLink):
    """The link of a subscriber that must not lose a message (the store).

    A fixed client id and a session the broker keeps for ``session_expiry_s`` while the
    service is away; the session acknowledges each QoS 1 message itself, with
    ``client.ack(message)``, once it is safe; and the broker never has more than
    ``receive_maximum`` unacknowledged messages out to it.
    """

    clean_start = False

    def __init__(self, config: MqttConfig, service: str, *, client_id: str,
                 receive_maximum: int, session_expiry_s: int = 86400) -> None:
        super().__init__(config, service, client_id=client_id,
                         receive_maximum=receive_maximum)
        self.session_expiry_s = session_expiry_s
