"""A small asyncio MQTT v5 client for a subscriber that acknowledges late (the store).

Why not aiomqtt here: the store acknowledges a QoS 1 message only once its row is
committed, at 10,000 messages a second or more. Through aiomqtt and paho-mqtt each
message cost about 130 µs (a task per received message, one packet read per event-loop
wake-up, a thread-safe write wake-up per acknowledgement, MQTT v5 properties built per
packet), more than the database spends on it. This client reads whatever the socket
holds in one go, hands messages out of a plain deque, and sends the acknowledgements of a
committed batch as one write. It is one connection: ``MqttLink`` makes a new one per
reconnect.

Scope: what a subscriber needs and nothing else. CONNECT with a Will, session expiry and
receive maximum; SUBSCRIBE with options; UNSUBSCRIBE; PUBLISH at QoS 0 or 1 both ways;
PUBACK sent when the caller says (``ack``); keep-alive pings; DISCONNECT. No QoS 2, no
topic aliases, no enhanced authentication.

Flow control: the broker may have at most ``receive_maximum`` unacknowledged messages out
to the client. One that sends more (Mosquitto 2.0 does, once acknowledgements flow) finds
the client no longer reading until acknowledgements make room, so the rest stays queued
at the broker rather than in this process.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from minerwatch.shared.mqtt import packets
from minerwatch.shared.mqtt.packets import Message, Subscription, Will
from minerwatch.shared.mqtt.protocol import MqttError

__all__ = ["Client", "Message", "MqttError", "Subscription", "Will"]


#: How long ``disconnect`` waits for the broker to close the connection.
DISCONNECT_WAIT_S = 1.0


class Client(asyncio.Protocol):
    """One MQTT v5 connection. ``async with Client(...) as client`` connects, subscribes
    through ``subscribe``, yields messages from ``async for m in client.messages`` and
    acknowledges each QoS 1 message when the caller calls ``ack(m)``; leaving the block
    disconnects cleanly (no Will)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        keepalive_s: int = 30,
        clean_start: bool = True,
        session_expiry_s: int = 0,
        receive_maximum: int | None = None,
        will: Will | None = None,
        max_packet_size: int | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id or f"minerwatch-{uuid.uuid4().hex[:12]}"
        self.username = username
        self.password = password
        self.tls_context = tls_context
        self.keepalive_s = keepalive_s
        self.clean_start = clean_start
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self.will = will
        #: Announced to the broker, which then drops larger messages instead of sending
        #: them (MQTT 5.0 section 3.1.2.11.4): an oversized payload never reaches memory.
        self.max_packet_size = max_packet_size
        self.timeout_s = timeout_s
        #: Whether the broker still had this client's session (its subscriptions and
        #: unacknowledged messages) when it connected.
        self.session_present = False
        self.messages = Messages(self)

        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._incoming: collections.deque[Message] = collections.deque()
        self._message_waiter: asyncio.Future[None] | None = None
        self._connack: asyncio.Future[packets.Connack] | None = None
        self._replies: dict[int, asyncio.Future[packets.Ack]] = {}
        self._next_packet_id = 0
        self._outgoing = bytearray()  # acknowledgements waiting for the next write
        self._write_scheduled = False
        self._last_heard = 0.0
        self._error: MqttError | None = None
        self._gone = asyncio.Event()  # the connection is closed
        self._unacked: set[int] = set()  # packet ids of QoS 1 messages not acknowledged
        self._reading_paused = False
        self._pinger: asyncio.Task[None] | None = None

    # --- connecting and leaving ---------------------------------------------------------

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        try:
            async with asyncio.timeout(self.timeout_s):
                await loop.create_connection(
                    lambda: self, self.host, self.port, ssl=self.tls_context,
                    server_hostname=self.host if self.tls_context else None)
                properties: dict[str, Any] = {}
                if self.session_expiry_s:
                    properties["session_expiry_interval"] = self.session_expiry_s
                if self.receive_maximum is not None:
                    properties["receive_maximum"] = self.receive_maximum
                if self.max_packet_size is not None:
                    properties["maximum_packet_size"] = self.max_packet_size
                self._write(packets.connect(
                    self.client_id, keepalive_s=self.keepalive_s,
                    clean_start=self.clean_start, username=self.username,
                    password=self.password, will=self.will, properties=properties))
                connack = await self._connack
        except TimeoutError:
            self._close(MqttError(f"no answer from {self.host}:{self.port} within "
                                  f"{self.timeout_s:g} s"))
            raise self._error from None  # type: ignore[misc]
        except OSError as exc:
            raise MqttError(f"cannot connect to {self.host}:{self.port}: "
                            f"{exc.strerror or exc}") from None
        except asyncio.CancelledError:
            self._close(MqttError("connecting was cancelled"))  # no socket left behind
            raise
        if connack.reason >= 0x80:
            reason = packets.reason_text(connack.reason, connack.properties)
            self._close(MqttError(f"connection refused: {reason}"))
            raise self._error  # type: ignore[misc]
        self.session_present = connack.session_present
        # The server may shorten our keep-alive; it must then be used (section 3.2.2.3.14).
        self.keepalive_s = connack.properties.get("server_keep_alive", self.keepalive_s)
        if self.keepalive_s:
            self._pinger = asyncio.create_task(self._ping(), name="mqtt-keepalive")

    async def disconnect(self) -> None:
        """Send DISCONNECT (the broker then drops the Will) and close."""
        leaving = MqttError("disconnected by the client")
        if self._transport is not None and self._error is None:
            self._write_now()
            self._transport.write(packets.disconnect())
            self._error = leaving
            # The broker closes the connection once it has read everything before the
            # DISCONNECT. Waiting for that keeps a new connection under the same client id
            # from taking the session over while acknowledgements are still unread.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DISCONNECT_WAIT_S):
                    await self._gone.wait()
        self._close(leaving)

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.disconnect()

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._error is None

    # --- requests -------------------------------------------------------------------------

    async def subscribe(self, subscriptions: Sequence[Subscription | str]) -> tuple[int, ...]:
        """Subscribe; the granted QoS per filter. A refused filter raises MqttError."""
        items = [Subscription(s) if isinstance(s, str) else s for s in subscriptions]
        packet_id = self._packet_id()
        reply = await self._request(packet_id, packets.subscribe(packet_id, items))
        refused = [f"{item.topic_filter!r}: {packets.reason_text(code, reply.properties)}"
                   for item, code in zip(items, reply.reasons, strict=False) if code >= 0x80]
        if refused:
            raise MqttError(f"subscription refused: {'; '.join(refused)}")
        return reply.reasons

    async def unsubscribe(self, topic_filters: Sequence[str]) -> None:
        packet_id = self._packet_id()
        await self._request(packet_id, packets.unsubscribe(packet_id, topic_filters))

    async def publish(self, topic: str, payload: bytes, *, qos: int = 0,
                      retain: bool = False) -> None:
        """Publish; at QoS 1, return once the broker acknowledged it."""
        if qos not in (0, 1):
            raise ValueError("this client publishes at QoS 0 or 1")
        if qos == 0:
            self._write(packets.publish(topic, payload, retain=retain))
            return
        packet_id = self._packet_id()
        reply = await self._request(packet_id, packets.publish(
            topic, payload, qos=1, retain=retain, packet_id=packet_id))
        if reply.reasons[0] >= 0x80:
            raise MqttError(f"publish to {topic!r} refused: "
                            f"{packets.reason_text(reply.reasons[0], reply.properties)}")

    def ack(self, message: Message) -> None:
        """Acknowledge a QoS 1 message received on this connection. Acknowledgements made
        in one go (a committed batch) leave in one write. On a closed connection this
        does nothing: the broker redelivers the message on the next one."""
        if message.qos != 1 or not self.connected or message.packet_id not in self._unacked:
            return
        self._unacked.discard(message.packet_id)
        self._outgoing += packets.puback(message.packet_id)
        if not self._write_scheduled:
            self._write_scheduled = True
            asyncio.get_running_loop().call_soon(self._write_now)
        if not self._over_window():
            self._resume_reading()

    # --- internals ----------------------------------------------------------------------

    def _over_window(self) -> bool:
        """Whether the broker sent more unacknowledged messages than we allowed."""
        return (self.receive_maximum is not None
                and len(self._unacked) > self.receive_maximum)

    def _resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._last_heard = time.monotonic()  # the keep-alive clock restarts now
            self._transport.resume_reading()

    def _packet_id(self) -> int:
        for _ in range(0xFFFF):
            self._next_packet_id = self._next_packet_id % 0xFFFF + 1
            if self._next_packet_id not in self._replies:
                return self._next_packet_id
        raise MqttError("every packet identifier is in use")

    async def _request(self, packet_id: int, packet: bytes) -> packets.Ack:
        if self._error is not None:
            raise self._error
        reply = self._replies[packet_id] = asyncio.get_running_loop().create_future()
        self._resume_reading()  # the reply may be behind messages past the window
        try:
            self._write(packet)
            async with asyncio.timeout(self.timeout_s):
                return await reply
        except TimeoutError:
            raise MqttError(f"no reply from the broker within {self.timeout_s:g} s") from None
        finally:
            self._replies.pop(packet_id, None)

    def _write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._transport is None:
            raise MqttError("not connected")
        self._write_now()  # acknowledgements first: they were due earlier
        self._transport.write(data)

    def _write_now(self) -> None:
        self._write_scheduled = False
        if self._outgoing and self._transport is not None and self._error is None:
            self._transport.write(bytes(self._outgoing))
        self._outgoing.clear()

    async def _ping(self) -> None:
        """PINGREQ every keep-alive interval; a broker silent for 1.5 intervals is gone."""
        while self._error is None:
            await asyncio.sleep(self.keepalive_s)
            # While reading is paused the broker's answers wait unread: no verdict then.
            silent = time.monotonic() - self._last_heard > 1.5 * self.keepalive_s
            if silent and not self._reading_paused:
                self._close(MqttError(f"the broker did not answer for {self.keepalive_s} s "
                                      "(keep-alive)"))
                return
            with contextlib.suppress(MqttError):
                self._write(packets.PINGREQ_PACKET)

    def _close(self, error: MqttError) -> None:
        if self._error is None:
            self._error = error
        if self._transport is not None:
            self._transport.close()
        if self._pinger is not None and self._pinger is not asyncio.current_task():
            self._pinger.cancel()
        for waiter in (self._connack, *self._replies.values()):
            if waiter is not None and not waiter.done():
                waiter.set_exception(self._error)
        self._wake_reader()

    def _wake_reader(self) -> None:
        waiter = self._message_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- asyncio.Protocol callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._last_heard = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone.set()
        reason = f": {exc}" if exc else ""
        self._close(MqttError(f"connection to {self.host}:{self.port} lost{reason}"))

    def data_received(self, data: bytes) -> None:
        self._last_heard = time.monotonic()
        buffer = self._buffer
        buffer += data
        pos = 0
        received = False
        try:
            limit = self.max_packet_size
            while (found := packets.split_packet(buffer, pos, limit)) is not None:
                first_byte, start, end = found
                body = bytes(buffer[start:end])
                pos = end
                if first_byte >> 4 == packets.PUBLISH:
                    message = packets.parse_publish(first_byte, body)
                    if message.qos:
                        self._unacked.add(message.packet_id)
                    self._incoming.append(message)
                    received = True
                else:
                    self._control(first_byte >> 4, body)
        except packets.MalformedPacket as exc:
            self._close(MqttError(f"malformed packet from the broker: {exc}"))
            return
        finally:
            del buffer[:pos]
        if received:
            self._wake_reader()
            if self._over_window() and not self._reading_paused and not self._replies:
                # Our own flow control, on top of the broker's: Mosquitto 2.0 sends past
                # the receive maximum once acknowledgements flow (its issue #2301), and
                # a stopped store's queue can be hours of a fleet. Not reading leaves the
                # rest in the broker, held back by TCP, until acknowledgements make room.
                # Never while a reply is awaited: it may be behind these messages.
                self._reading_paused = True
                assert self._transport is not None
                self._transport.pause_reading()

    def _control(self, kind: int, body: bytes) -> None:
        if kind == packets.CONNACK:
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(packets.parse_connack(body))
        elif kind in (packets.PUBACK, packets.SUBACK, packets.UNSUBACK):
            reply = packets.parse_ack(kind, body)
            waiter = self._replies.get(reply.packet_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(reply)
        elif kind == packets.DISCONNECT:
            code, properties = packets.parse_disconnect(body)
            self._close(MqttError("the broker disconnected: "
                                  f"{packets.reason_text(code, properties)}"))
        elif kind != packets.PINGRESP:
            raise packets.MalformedPacket(f"unexpected packet type {kind} from the broker")


class Messages:
    """``async for message in client.messages``: in the order the broker sent them; ends
    with MqttError once the connection is gone and what it delivered has been handed out."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def __aiter__(self) -> Messages:
        return self

    async def __anext__(self) -> Message:
        client = self._client
        while not client._incoming:
            if client._error is not None:
                raise client._error
            client._message_waiter = asyncio.get_running_loop().create_future()
            await client._message_waiter
        return client._incoming.popleft()

    def __len__(self) -> int:
        return len(self._client._incoming)
