"""``protocol.MqttClient`` over aiomqtt (paho-mqtt underneath): the alerts and the api.

aiomqtt stays the library for services that receive and publish little: it is widely
used, and what it costs per message (about 130 µs) does not matter at their rates. This
adapter gives their sessions the same interface the lean client gives the store and the
collector, so a session reads like any other:

- messages arrive as ``packets.Message`` (``topic`` a str, ``payload`` bytes), acknowledged
  by paho on receipt (``ack`` is a no-op);
- ``subscribe`` takes ``Subscription`` options (no_local, retain_handling, ...) through
  paho's ``SubscribeOptions``, refuses QoS 2 like the lean client, and checks that the
  SUBACK carries one reason code per filter;
- ``publish`` is awaited and cancel-safe (aiomqtt waits through ``asyncio.wait_for``,
  which on Python 3.11 can drop a cancellation: the wait runs in a task of its own here,
  and the caller waits with ``asyncio.wait``); it also ends at once, with MqttError, when
  the connection goes instead of running into aiomqtt's timeout;
- ``publish_nowait`` is a task per publish, settled when aiomqtt returns (fine for
  services that publish a few messages a minute); ``send_quota`` is paho's own in-flight
  window of 20;
- aiomqtt's errors become ``protocol.MqttError`` with one line of text.

What aiomqtt does not expose, this adapter cannot offer: a PUBACK's reason code (a publish
the broker refuses, e.g. by ACL, returns normally: use the lean client where that
matters), UNSUBACK reason codes, and the broker's CONNACK limits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeVar

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.subscribeoptions import SubscribeOptions

from minerwatch.shared.errors import one_line
from minerwatch.shared.mqtt.packets import Message, Subscription, Will
from minerwatch.shared.mqtt.protocol import BrokerLimitError, Delivery, MqttError

__all__ = ["AiomqttClient"]

T = TypeVar("T")

#: Unsettled ``publish_nowait`` publishes at once: paho's own in-flight window (it queues
#: the rest where ``send_quota`` would not see them).
NOWAIT_WINDOW = 20
#: How long leaving with the Will waits for the broker to take it.
WILL_WAIT_S = 2.0


def _payload(value: object) -> bytes:
    """aiomqtt's payload as bytes (paho always gives bytes; aiomqtt's type allows more)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray):
        return bytes(value)
    return b"" if value is None else str(value).encode()


def _adapt(message: aiomqtt.Message) -> Message:
    return Message(str(message.topic), _payload(message.payload), message.qos,
                   bool(message.retain), message.mid)


class AiomqttClient:
    """One MQTT v5 connection through aiomqtt: ``async with AiomqttClient(...) as
    client``. Leaving the block disconnects cleanly (no Will);
    ``disconnect(with_will=True)`` publishes the Will first (aiomqtt cannot send
    DISCONNECT 0x04)."""

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
        will: Will | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.username = username
        self.password = password
        self.tls_context = tls_context
        self.keepalive_s = keepalive_s
        self.will = will
        self.timeout_s = timeout_s
        self.on_settled: Callable[[Delivery], None] | None = None
        self.messages = AioMessages(self)

        self._raw: aiomqtt.Client | None = None
        self._pump: asyncio.Task[None] | None = None
        self._incoming: collections.deque[Message] = collections.deque()
        self._message_waiter: asyncio.Future[None] | None = None
        self._error: MqttError | None = None
        self._closed: asyncio.Future[None] | None = None
        self._nowait: set[asyncio.Task[None]] = set()
        self._left = False
        self._sequence = 0

    # --- connecting and leaving ---------------------------------------------------------

    async def connect(self) -> None:
        will = self.will
        raw = aiomqtt.Client(
            self.host, self.port, username=self.username, password=self.password,
            identifier=self.client_id, protocol=aiomqtt.ProtocolVersion.V5, clean_start=True,
            keepalive=self.keepalive_s, timeout=self.timeout_s, tls_context=self.tls_context,
            will=None if will is None else aiomqtt.Will(will.topic, will.payload, qos=will.qos,
                                                         retain=will.retain))
        self._closed = asyncio.get_running_loop().create_future()
        try:
            await raw.__aenter__()
        except MqttConnectError as exc:
            raise self._close(MqttError(f"connection refused: {one_line(exc)}")) from None
        except aiomqtt.MqttError as exc:
            raise self._close(MqttError(f"cannot connect to {self.host}:{self.port}: "
                                        f"{one_line(exc)}")) from None
        self._raw = raw
        self._pump = asyncio.create_task(self._read(raw), name="mqtt-aiomqtt-messages")

    async def disconnect(self, *, with_will: bool = False) -> None:
        """Disconnect; ``with_will`` publishes the Will first, as the broker would have
        for a crash (within ``WILL_WAIT_S``; if the connection is gone already, the
        broker publishes it itself)."""
        raw = self._raw
        if raw is None or self._left:
            self._close(MqttError("disconnected by the client"))
            return
        self._left = True  # aiomqtt's client is left once
        if with_will and self.will is not None and self._error is None:
            will = self.will
            with contextlib.suppress(MqttError, TimeoutError):
                async with asyncio.timeout(WILL_WAIT_S):
                    await self.publish(will.topic, will.payload, qos=will.qos,
                                       retain=will.retain)
        self._close(MqttError("disconnected by the client"))
        with contextlib.suppress(aiomqtt.MqttError):
            await raw.__aexit__(None, None, None)  # returns at once if the connection is gone

    async def __aenter__(self) -> AiomqttClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.disconnect()

    @property
    def connected(self) -> bool:
        return self._raw is not None and self._error is None

    async def wait_closed(self) -> MqttError:
        if self._closed is None:
            raise MqttError("not connected")
        await asyncio.shield(self._closed)
        assert self._error is not None
        return self._error

    # --- requests -----------------------------------------------------------------------

    async def subscribe(self, subscriptions: Sequence[Subscription | str]) -> tuple[int, ...]:
        items = [Subscription(s) if isinstance(s, str) else s for s in subscriptions]
        if not items:
            raise ValueError("subscribe needs at least one topic filter")
        for item in items:
            if item.qos not in (0, 1):
                raise ValueError(f"cannot subscribe to {item.topic_filter!r} at QoS "
                                 f"{item.qos}: minerwatch's sessions take QoS 0 or 1")
        raw = self._connection()
        topics = [(item.topic_filter, SubscribeOptions(
            qos=item.qos, noLocal=item.no_local, retainAsPublished=item.retain_as_published,
            retainHandling=item.retain_handling)) for item in items]
        granted = await self._call(raw.subscribe(topics))
        codes = tuple(code if isinstance(code, int) else code.value for code in granted)
        if len(codes) != len(items):
            raise MqttError(f"protocol error from the broker: SUBACK with {len(codes)} "
                            f"reason code(s) for {len(items)} filter(s)")
        refused = [f"{item.topic_filter!r}: {reason}"
                   for item, code, reason in zip(items, codes, granted, strict=True)
                   if code >= 0x80]
        if refused:
            raise MqttError(f"subscription refused: {'; '.join(refused)}")
        return codes

    async def unsubscribe(self, topic_filters: Sequence[str]) -> None:
        if not topic_filters:
            raise ValueError("unsubscribe needs at least one topic filter")
        await self._call(self._connection().unsubscribe(list(topic_filters)))

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> None:
        if qos not in (0, 1):
            raise ValueError("minerwatch publishes at QoS 0 or 1")
        raw = self._connection()
        await self._call(raw.publish(topic, payload, qos=qos, retain=retain))

    def publish_nowait(self, topic: str, payload: bytes, *, retain: bool = False
                       ) -> Delivery:
        raw = self._connection()
        if len(self._nowait) >= NOWAIT_WINDOW:
            raise BrokerLimitError(f"publish to {topic!r} refused: {NOWAIT_WINDOW} publishes "
                                   "are unsettled already; wait for settlements (send_quota)")
        self._sequence += 1
        delivery = Delivery(topic, self._sequence)
        task = asyncio.create_task(self._deliver(raw, delivery, payload, retain))
        self._nowait.add(task)
        task.add_done_callback(self._nowait.discard)
        return delivery

    @property
    def send_quota(self) -> int:
        return max(0, NOWAIT_WINDOW - len(self._nowait)) if self.connected else 0

    def ack(self, message: Message) -> None:
        """Nothing to do: paho acknowledged the message when it arrived."""

    # --- internals ----------------------------------------------------------------------

    def _connection(self) -> aiomqtt.Client:
        if self._error is not None:
            raise self._error
        if self._raw is None:
            raise MqttError("not connected")
        return self._raw

    async def _call(self, call: Coroutine[Any, Any, T]) -> T:
        """Await an aiomqtt call in a task of its own, until it ends or the connection
        does; cancelling the caller cancels the call and is never lost."""
        closed = self._closed
        if self._error is not None or closed is None:
            call.close()
            raise self._error or MqttError("not connected")
        task = asyncio.ensure_future(call)
        task.add_done_callback(_retrieve)
        try:
            await asyncio.wait((task, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
        if not task.done() or task.cancelled():
            assert self._error is not None
            raise self._error
        try:
            return task.result()
        except aiomqtt.MqttError as exc:
            raise MqttError(one_line(exc)) from None

    async def _deliver(self, raw: aiomqtt.Client, delivery: Delivery, payload: bytes,
                       retain: bool) -> None:
        try:
            await self._call(raw.publish(delivery.topic, payload, qos=1, retain=retain))
        except MqttError:
            return  # unsettled: the connection is gone, or going
        delivery.reason = 0  # aiomqtt does not say which success code
        if self.on_settled is not None:
            self.on_settled(delivery)

    async def _read(self, raw: aiomqtt.Client) -> None:
        """Move aiomqtt's messages over as they come; notice the connection ending."""
        try:
            async for message in raw.messages:
                self._incoming.append(_adapt(message))
                self._wake_reader()
        except aiomqtt.MqttError as exc:
            cause = exc.__cause__
            reason = f": {one_line(cause)}" if cause is not None else ""
            self._close(MqttError(f"connection to {self.host}:{self.port} lost{reason}"))
        except Exception as exc:  # aiomqtt's own failure: the connection is unusable
            self._close(MqttError(f"connection to {self.host}:{self.port} failed: "
                                  f"{one_line(exc)}"))

    def _close(self, error: MqttError) -> MqttError:
        if self._error is None:
            self._error = error
        pump = self._pump
        if pump is not None and pump is not asyncio.current_task():
            pump.cancel()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        self._wake_reader()
        return self._error

    def _wake_reader(self) -> None:
        waiter = self._message_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a call's outcome as seen (a call abandoned with the connection may fail)."""
    if not task.cancelled():
        task.exception()


class AioMessages:
    """``async for message in client.messages``, as the lean client's ``Messages``."""

    def __init__(self, client: AiomqttClient) -> None:
        self._client = client

    def __aiter__(self) -> AioMessages:
        return self

    async def __anext__(self) -> Message:
        client = self._client
        while not client._incoming:
            if client._error is not None:
                raise client._error
            if client._raw is None:
                raise MqttError("not connected")
            client._message_waiter = asyncio.get_running_loop().create_future()
            await client._message_waiter
        return client._incoming.popleft()

    def __len__(self) -> int:
        return len(self._client._incoming)
