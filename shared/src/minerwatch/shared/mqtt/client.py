"""minerwatch's lean asyncio MQTT v5 client, the one every service runs on.

Why not aiomqtt (docs/decisions/0003): the store acknowledges a QoS 1 message only once
its row is committed, at 10,000 messages a second or more; the collector pipelines
thousands of QoS 1 publishes; alerts and the api must be able to leave a flood waiting
at the broker (aiomqtt acknowledges on receipt and queues without bound). Through
aiomqtt and paho-mqtt each message cost about 130 µs (a task per received message, one
packet read per event-loop wake-up, a thread-safe write wake-up per acknowledgement,
MQTT v5 properties built per packet), more than the database spends on it. This client
reads whatever the socket holds in one go, hands messages out of a plain deque, and
writes what a turn of the event loop produced (acknowledgements of a committed batch, a
batch of publishes) as one write. It is one connection: ``MqttLink`` makes a new
one per reconnect. It satisfies ``protocol.MqttClient``; ``packets`` is its codec.

Scope: CONNECT with a Will, session expiry, receive maximum and maximum packet size;
SUBSCRIBE with options (QoS 0 or 1: QoS 2 is refused before sending, this client cannot
acknowledge it); UNSUBSCRIBE; PUBLISH at QoS 0 or 1 both ways, awaited (``publish``) or
pipelined (``publish_nowait``, settled by PUBACK); PUBACK sent when the caller says
(``ack``); keep-alive pings; DISCONNECT. No QoS 2, no topic aliases, no enhanced auth.

What the broker's CONNACK allows is honoured (``limits``): its Receive Maximum bounds the
unsettled publishes (``send_quota``), and a publish over its maximum packet size, above its
maximum QoS or retained where it keeps none raises ``BrokerLimitError`` before a byte is
written. SUBACK and UNSUBACK must carry one reason code per filter. On a protocol error of
the broker's (malformed packet, a topic alias it was never allowed, a packet over our
maximum size, an unexpected packet) the client publishes its own Will, sends DISCONNECT
with the reason code (0x81, 0x82, 0x94, 0x95) and closes; ``messages`` then ends with
MqttError. Mosquitto 2.0 drops the Will on every DISCONNECT reason but 0x04, hence the
client's own copy.

Flow control: the broker may have at most ``receive_maximum`` unacknowledged messages out
to the client. One that sends more (Mosquitto 2.0 does, once acknowledgements flow) finds
the client no longer reading until acknowledgements make room, so the rest stays queued
at the broker rather than in this process. The same happens while more than
``max_queued`` received messages wait for the session to take them: that bounds QoS 0
messages too, which no receive maximum covers. The keep-alive cannot judge the broker then
(its answers wait unread), so two other signals do, neither of which reads a byte: the
socket's TCP state (a broker that crashed or closed the connection) and TCP_USER_TIMEOUT
of 1.5 keep-alives (the pings that still go out stay unacknowledged when the broker's
host or the network died, and the kernel drops the connection). A broker process that
hangs with its host up is noticed 1.5 keep-alives after reading resumes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from minerwatch.shared.mqtt import packets
from minerwatch.shared.mqtt.packets import (
    DISCONNECT_WITH_WILL,
    PROTOCOL_ERROR,
    MalformedPacket,
    Message,
    ServerLimits,
    Subscription,
    Will,
)
from minerwatch.shared.mqtt.protocol import BrokerLimitError, Delivery, MqttError

__all__ = ["BrokerLimitError", "Client", "Delivery", "Message", "MqttError", "Subscription",
           "Will"]


#: How long ``disconnect`` waits for the broker to close the connection.
DISCONNECT_WAIT_S = 1.0
#: ``tcp_info.tcpi_state`` of an open connection (Linux ``TCP_ESTABLISHED``).
_TCP_ESTABLISHED = 1


class Client(asyncio.Protocol):
    """One MQTT v5 connection. ``async with Client(...) as client`` connects; then
    ``subscribe``, ``async for m in client.messages`` (acknowledge each QoS 1 message
    with ``ack(m)`` once it is safe), ``publish`` / ``publish_nowait``. Leaving the block
    disconnects cleanly (no Will); ``disconnect(with_will=True)`` asks for the Will."""

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
        max_queued: int = 4096,
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
        #: Received messages the session has not taken yet, past which reading stops.
        self.max_queued = max_queued
        self.will = will
        #: Announced to the broker, which then drops larger messages instead of sending
        #: them (MQTT 5.0 section 3.1.2.11.4): an oversized payload never reaches memory.
        self.max_packet_size = max_packet_size
        self.timeout_s = timeout_s
        #: Whether the broker still had this client's session (its subscriptions and
        #: unacknowledged messages) when it connected.
        self.session_present = False
        #: What the broker's CONNACK allows (its defaults until connected).
        self.limits = ServerLimits()
        self.on_settled: Callable[[Delivery], None] | None = None
        self.messages = Messages(self)

        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._incoming: collections.deque[Message] = collections.deque()
        self._message_waiter: asyncio.Future[None] | None = None
        self._connack: asyncio.Future[packets.Connack] | None = None
        self._replies: dict[int, asyncio.Future[packets.Ack]] = {}
        #: Every QoS 1 PUBLISH sent and not answered yet (awaited, pipelined, or awaited
        #: by a caller that gave up): what counts against the broker's Receive Maximum.
        self._inflight: dict[int, Delivery] = {}
        self._room: asyncio.Future[None] | None = None  # woken by each PUBACK
        self._next_packet_id = 0
        self._outgoing = bytearray()  # acknowledgements and publishes for the next write
        self._write_scheduled = False
        #: True while data_received runs: what it makes us send (acknowledgements, the
        #: publishes on_settled hands over) leaves at its end, not one loop turn later.
        self._receiving = False
        self._last_heard = 0.0
        self._error: MqttError | None = None
        self._closed = asyncio.Event()  # set once the client gave the connection up
        self._gone = asyncio.Event()  # the socket is closed
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
            raise self._close(MqttError(f"no answer from {self.host}:{self.port} within "
                                        f"{self.timeout_s:g} s")) from None
        except OSError as exc:
            raise MqttError(f"cannot connect to {self.host}:{self.port}: "
                            f"{exc.strerror or exc}") from None
        except asyncio.CancelledError:
            self._close(MqttError("connecting was cancelled"))  # no socket left behind
            raise
        if connack.reason >= 0x80:
            reason = packets.reason_text(connack.reason, connack.properties)
            raise self._close(MqttError(f"connection refused: {reason}"))
        try:
            self.limits = packets.server_limits(connack.properties)
        except MalformedPacket as exc:
            raise self._fail(exc.reason, f"protocol error from the broker: {exc}") from None
        self.session_present = connack.session_present
        # The server may shorten our keep-alive; it must then be used (section 3.2.2.3.14).
        self.keepalive_s = connack.properties.get("server_keep_alive", self.keepalive_s)
        self._set_user_timeout()
        if self.keepalive_s:
            self._pinger = asyncio.create_task(self._ping(), name="mqtt-keepalive")

    async def disconnect(self, *, with_will: bool = False) -> None:
        """Send DISCONNECT and close. Normally the broker then drops the Will;
        ``with_will`` (reason 0x04) asks it to publish the Will, as for a crash."""
        leaving = MqttError("disconnected by the client")
        if self._transport is not None and self._error is None:
            self._write_now()
            self._transport.write(packets.disconnect(DISCONNECT_WITH_WILL if with_will else 0))
            self._error = leaving
            # The broker closes the connection once it has read everything before the
            # DISCONNECT. Waiting for that keeps a new connection under the same client id
            # from taking the session over while acknowledgements are still unread. What
            # arrives meanwhile is dropped (see data_received): reading resumes only so
            # that the close is seen.
            self._resume_reading()
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

    async def wait_closed(self) -> MqttError:
        """Return, with the reason, once the connection is gone."""
        await self._closed.wait()
        assert self._error is not None
        return self._error

    # --- requests -------------------------------------------------------------------------

    async def subscribe(self, subscriptions: Sequence[Subscription | str]) -> tuple[int, ...]:
        """Subscribe (a string is a QoS 1 filter); the granted QoS per filter. ValueError
        for QoS 2 or bad options, before sending; MqttError for a refused filter."""
        items = [Subscription(s) if isinstance(s, str) else s for s in subscriptions]
        if not items:
            raise ValueError("subscribe needs at least one topic filter")
        for item in items:
            if item.qos not in (0, 1):
                raise ValueError(f"cannot subscribe to {item.topic_filter!r} at QoS "
                                 f"{item.qos}: this client takes QoS 0 or 1 (it cannot "
                                 "acknowledge QoS 2)")
            if item.retain_handling not in (0, 1, 2):
                raise ValueError(f"retain_handling {item.retain_handling} is not 0, 1 or 2")
        packet_id = self._packet_id()
        reply = await self._request(packet_id, packets.subscribe(packet_id, items))
        codes = reply.reasons
        if len(codes) != len(items):
            raise self._fail(PROTOCOL_ERROR, "protocol error from the broker: SUBACK with "
                             f"{len(codes)} reason code(s) for {len(items)} filter(s)")
        for item, code in zip(items, codes, strict=True):
            if item.qos < code < 0x80:  # a server may grant less than asked, never more
                raise self._fail(PROTOCOL_ERROR, "protocol error from the broker: SUBACK "
                                 f"grants QoS {code} to {item.topic_filter!r} (asked for "
                                 f"QoS {item.qos})")
        refused = [f"{item.topic_filter!r}: {packets.reason_text(code, reply.properties)}"
                   for item, code in zip(items, codes, strict=True) if code >= 0x80]
        if refused:
            raise MqttError(f"subscription refused: {'; '.join(refused)}")
        return codes

    async def unsubscribe(self, topic_filters: Sequence[str]) -> None:
        """Unsubscribe; MqttError if the broker refused a filter (0x11, no such
        subscription, is not a refusal)."""
        if not topic_filters:
            raise ValueError("unsubscribe needs at least one topic filter")
        packet_id = self._packet_id()
        reply = await self._request(packet_id, packets.unsubscribe(packet_id, topic_filters))
        if len(reply.reasons) != len(topic_filters):
            raise self._fail(PROTOCOL_ERROR, "protocol error from the broker: UNSUBACK with "
                             f"{len(reply.reasons)} reason code(s) for "
                             f"{len(topic_filters)} filter(s)")
        refused = [f"{topic_filter!r}: {packets.reason_text(code, reply.properties)}"
                   for topic_filter, code in zip(topic_filters, reply.reasons, strict=True)
                   if code >= 0x80]
        if refused:
            raise MqttError(f"unsubscribe refused: {'; '.join(refused)}")

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False, properties: dict[str, Any] | None = None
                      ) -> None:
        """Publish; at QoS 1, wait for room under the broker's Receive Maximum, then for
        its acknowledgement. MqttError if it refused the message."""
        if qos not in (0, 1):
            raise ValueError("this client publishes at QoS 0 or 1")
        if qos == 0:
            self._write(self._encode_publish(topic, payload, 0, retain, 0, properties))
            return
        while len(self._inflight) >= self.limits.receive_maximum:
            await self._wait_for_room()
        packet_id = self._packet_id()
        packet = self._encode_publish(topic, payload, 1, retain, packet_id, properties)
        self._inflight[packet_id] = Delivery(topic, packet_id)
        reply = await self._request(packet_id, packet)
        if reply.reasons[0] >= 0x80:
            raise MqttError(f"publish to {topic!r} refused: "
                            f"{packets.reason_text(reply.reasons[0], reply.properties)}")

    def publish_nowait(self, topic: str, payload: bytes, *, retain: bool = False
                       ) -> Delivery:
        """Hand a QoS 1 publish to the connection: written with the others of this turn
        of the event loop, settled when its PUBACK comes (``on_settled``)."""
        if self._error is not None:
            raise self._error
        if self._transport is None:
            raise MqttError("not connected")
        if len(self._inflight) >= self.limits.receive_maximum:
            raise BrokerLimitError(
                f"publish to {topic!r} refused: the broker takes "
                f"{self.limits.receive_maximum} unsettled publishes at most (its Receive "
                "Maximum); wait for settlements (send_quota)")
        packet_id = self._packet_id()
        packet = self._encode_publish(topic, payload, 1, retain, packet_id)
        delivery = self._inflight[packet_id] = Delivery(topic, packet_id)
        self._outgoing += packet
        if not self._write_scheduled and not self._receiving:
            self._write_scheduled = True
            asyncio.get_running_loop().call_soon(self._write_now)
        return delivery

    @property
    def send_quota(self) -> int:
        if not self.connected:
            return 0
        return max(0, self.limits.receive_maximum - len(self._inflight))

    def ack(self, message: Message) -> None:
        """Acknowledge a QoS 1 message received on this connection. Acknowledgements made
        in one go (a committed batch) leave in one write. On a closed connection this
        does nothing: the broker redelivers the message on the next one."""
        if message.qos != 1 or not self.connected or message.packet_id not in self._unacked:
            return
        self._unacked.discard(message.packet_id)
        self._outgoing += packets.puback(message.packet_id)
        if not self._write_scheduled and not self._receiving:
            self._write_scheduled = True
            asyncio.get_running_loop().call_soon(self._write_now)
        if not self._over_window() and len(self._incoming) <= self.max_queued:
            self._resume_reading()

    # --- internals ----------------------------------------------------------------------

    def _encode_publish(self, topic: str, payload: bytes, qos: int, retain: bool,
                        packet_id: int, properties: dict[str, Any] | None = None) -> bytes:
        """The PUBLISH, or BrokerLimitError for one the broker said it cannot take."""
        limits = self.limits
        if qos > limits.maximum_qos:
            raise BrokerLimitError(f"publish to {topic!r} refused: the broker takes QoS "
                                   f"{limits.maximum_qos} at most")
        if retain and not limits.retain_available:
            raise BrokerLimitError(f"publish to {topic!r} refused: the broker keeps no "
                                   "retained messages (Retain Available 0)")
        packet = packets.publish(topic, payload, qos=qos, retain=retain, packet_id=packet_id,
                                 properties=properties)
        if limits.maximum_packet_size is not None and len(packet) > limits.maximum_packet_size:
            raise BrokerLimitError(f"publish to {topic!r} refused: a packet of {len(packet)} "
                                   "bytes, over the broker's maximum of "
                                   f"{limits.maximum_packet_size}")
        return packet

    async def _wait_for_room(self) -> None:
        if self._error is not None:
            raise self._error
        if self._room is None or self._room.done():
            self._room = asyncio.get_running_loop().create_future()
        await self._room

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
            if self._next_packet_id not in self._replies and (
                    self._next_packet_id not in self._inflight):
                return self._next_packet_id
        raise MqttError("every packet identifier is in use")

    async def _request(self, packet_id: int, packet: bytes) -> packets.Ack:
        if self._error is not None:
            self._inflight.pop(packet_id, None)
            raise self._error
        reply: asyncio.Future[packets.Ack] = asyncio.get_running_loop().create_future()
        self._replies[packet_id] = reply
        self._resume_reading()  # the reply may be behind messages past the window
        try:
            self._write(packet)
            async with asyncio.timeout(self.timeout_s):
                return await reply
        except TimeoutError:
            raise MqttError(f"no reply from the broker within {self.timeout_s:g} s") from None
        finally:
            # A publish given up on still counts against the Receive Maximum (in
            # _inflight) until its PUBACK comes.
            self._replies.pop(packet_id, None)

    def _write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._transport is None:
            raise MqttError("not connected")
        self._write_now()  # acknowledgements and pipelined publishes first: they came first
        self._transport.write(data)

    def _write_now(self) -> None:
        self._write_scheduled = False
        if self._outgoing and self._transport is not None and self._error is None:
            self._transport.write(bytes(self._outgoing))
        self._outgoing.clear()

    def _set_user_timeout(self) -> None:
        """TCP_USER_TIMEOUT of 1.5 keep-alives: the kernel drops the connection when what
        was sent stays unacknowledged that long, as pings do once the broker's host or the
        network is gone. It needs no reading, so it works while reading is paused."""
        option = getattr(socket, "TCP_USER_TIMEOUT", None)
        sock = self._transport.get_extra_info("socket") if self._transport else None
        if option is None or sock is None or not self.keepalive_s:
            return
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, int(1500 * self.keepalive_s))

    def _peer_closed(self) -> bool:
        """Whether the TCP connection is no longer open (the broker closed it or the kernel
        dropped it), read from the socket's state: no byte of the stream is read."""
        option = getattr(socket, "TCP_INFO", None)
        sock = self._transport.get_extra_info("socket") if self._transport else None
        if option is None or sock is None:
            return False
        try:
            state: bytes = sock.getsockopt(socket.IPPROTO_TCP, option, 1)
        except OSError:
            return False
        return state[0] != _TCP_ESTABLISHED

    async def _ping(self) -> None:
        """PINGREQ every keep-alive interval; a broker silent for 1.5 intervals is gone."""
        while self._error is None:
            await asyncio.sleep(self.keepalive_s)
            if self._reading_paused:
                # The broker's answers wait unread: no keep-alive verdict, but a closed
                # connection shows in the socket, and TCP_USER_TIMEOUT fails a ping whose
                # host is gone (the write below then raises, and the transport closes).
                if self._peer_closed():
                    self._close(MqttError(f"connection to {self.host}:{self.port} lost "
                                          "while reading was paused"))
                    return
            elif time.monotonic() - self._last_heard > 1.5 * self.keepalive_s:
                self._close(MqttError(f"the broker did not answer for {self.keepalive_s} s "
                                      "(keep-alive)"))
                return
            with contextlib.suppress(MqttError):
                self._write(packets.PINGREQ_PACKET)

    def _fail(self, reason: int, text: str) -> MqttError:
        """Close on the broker's protocol error, saying why (section 4.13): what was due
        is written, then the Will (Mosquitto 2.0 drops it on a DISCONNECT reason other
        than 0x04, though the session did end abnormally), then DISCONNECT with
        ``reason``. Returns the error to raise."""
        transport = self._transport
        if transport is not None and self._error is None:
            self._write_now()
            will = self.will
            if will is not None:
                with contextlib.suppress(MqttError, ValueError):
                    packet_id = self._packet_id() if will.qos else 0
                    transport.write(packets.publish(will.topic, will.payload, qos=will.qos,
                                                    retain=will.retain, packet_id=packet_id))
            transport.write(packets.disconnect(reason))
        return self._close(MqttError(text))

    def _close(self, error: MqttError) -> MqttError:
        """Give the connection up (the first reason given stays); returns that reason."""
        if self._error is None:
            self._error = error
        if self._transport is not None:
            self._transport.close()
        if self._pinger is not None and self._pinger is not asyncio.current_task():
            self._pinger.cancel()
        for waiter in (self._connack, *self._replies.values()):
            if waiter is not None and not waiter.done():
                waiter.set_exception(self._error)
        if self._room is not None and not self._room.done():
            self._room.set_result(None)  # its waiter finds the error
        self._wake_reader()
        self._closed.set()
        return self._error

    def _wake_reader(self) -> None:
        waiter = self._message_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _settle(self, packet_id: int, reason: int, body: bytes) -> None:
        """A PUBACK: settle its Delivery, wake who waits for it or for room."""
        delivery = self._inflight.pop(packet_id, None)
        if delivery is None:
            return  # not ours (any more): nothing waits for it
        delivery.reason = reason
        waiter = self._replies.get(packet_id)
        if waiter is not None and not waiter.done():
            properties = packets.parse_ack(packets.PUBACK, body).properties
            waiter.set_result(packets.Ack(packet_id, (reason,), properties))
        # Awaited publishes too: each settlement is room under the Receive Maximum, and
        # who fills the window with publish_nowait must hear of it.
        if self.on_settled is not None:
            self.on_settled(delivery)
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    # --- asyncio.Protocol callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._last_heard = time.monotonic()
        self._set_user_timeout()

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone.set()
        reason = f": {exc}" if exc else ""
        self._close(MqttError(f"connection to {self.host}:{self.port} lost{reason}"))

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return  # leaving (DISCONNECT sent) or closed: the broker redelivers
        self._receiving = True
        try:
            self._receive(data)
        finally:
            self._receiving = False
            if self._outgoing:
                self._write_now()

    def _receive(self, data: bytes) -> None:
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
                    if message.qos == 1:
                        self._unacked.add(message.packet_id)
                    elif message.qos:
                        raise MalformedPacket("PUBLISH at QoS 2, which this client never "
                                              "subscribes to", PROTOCOL_ERROR)
                    self._incoming.append(message)
                    received = True
                else:
                    self._control(first_byte >> 4, body)
        except MalformedPacket as exc:
            self._fail(exc.reason, f"malformed packet from the broker: {exc}")
            return
        finally:
            del buffer[:pos]
        if received:
            self._wake_reader()
            if (self._over_window() or len(self._incoming) > self.max_queued) and (
                    not self._reading_paused and not self._replies):
                # Our own flow control, on top of the broker's: Mosquitto 2.0 sends past
                # the receive maximum once acknowledgements flow (its issue #2301), and
                # a stopped store's queue can be hours of a fleet. Not reading leaves the
                # rest in the broker, held back by TCP, until acknowledgements make room.
                # Never while a reply is awaited: it may be behind these messages.
                self._reading_paused = True
                assert self._transport is not None
                self._transport.pause_reading()

    def _control(self, kind: int, body: bytes) -> None:
        if kind == packets.PUBACK:
            if len(body) <= 3:  # the usual short forms (section 3.4.2.1)
                if len(body) < 2:
                    raise MalformedPacket("PUBACK without a packet identifier")
                self._settle(int.from_bytes(body[:2], "big"), body[2] if len(body) == 3 else 0,
                             body)
            else:
                reply = packets.parse_ack(kind, body)
                self._settle(reply.packet_id, reply.reasons[0], body)
        elif self._connack is None or not self._connack.done():
            if kind != packets.CONNACK:
                raise MalformedPacket(f"unexpected packet type {kind} from the broker before "
                                      "CONNACK", PROTOCOL_ERROR)
            if self._connack is not None:
                self._connack.set_result(packets.parse_connack(body))
        elif kind in (packets.SUBACK, packets.UNSUBACK):
            reply = packets.parse_ack(kind, body)
            waiter = self._replies.get(reply.packet_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(reply)
        elif kind == packets.DISCONNECT:
            code, properties = packets.parse_disconnect(body)
            self._close(MqttError("the broker disconnected: "
                                  f"{packets.reason_text(code, properties)}", reason=code))
        elif kind != packets.PINGRESP:
            raise MalformedPacket(f"unexpected packet type {kind} from the broker",
                                  PROTOCOL_ERROR)


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
        if client._reading_paused and len(client._incoming) <= client.max_queued // 2 and (
                not client._over_window()):
            client._resume_reading()
        return client._incoming.popleft()

    def __len__(self) -> int:
        return len(self._client._incoming)
