"""The live relay: one MQTT subscription per api process, fanned out to WebSocket clients.

The relay subscribes to ``{base}/#`` once and keeps the last payload of every topic (the
retained state: an empty payload deletes a topic, as it deletes a retained message), so a
new WebSocket subscriber first gets the current value of every topic its filter matches,
then the live messages.

Slow clients: every client has its own backlog of frames, filled without ever waiting, so
one client can never hold up the MQTT loop or the other clients. When a client's backlog of
live messages reaches ``backlog_limit``, its OLDEST frames are dropped and counted (logged
once per client and when it disconnects). Dropping old frames rather than disconnecting
suits this data: every topic is a state whose newer message supersedes the older ones.
The retained replay and the replies to a client's own commands are queued whatever the
limit (they are bounded by the number of topics), so a subscription never starts cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import aiomqtt
import msgspec

from minerwatch.shared.config import MqttConfig
from minerwatch.shared.mqtt import MqttLink

log = logging.getLogger("minerwatch.api.relay")

DEFAULT_BACKLOG_LIMIT = 1000
MAX_FILTERS_PER_CLIENT = 64

_json_decoder = msgspec.json.Decoder()
_json_encoder = msgspec.json.Encoder()


class FilterError(ValueError):
    """A topic filter a client may not use; ``str()`` is the one-line reason."""


def decode_payload(payload: bytes) -> object:
    """JSON payloads as their value; anything else (``online``/``offline``) as text."""
    try:
        return _json_decoder.decode(payload)
    except msgspec.DecodeError:
        return payload.decode("utf-8", errors="replace")


def payload_bytes(payload: object) -> bytes:
    """aiomqtt hands payloads over as bytes, but its type also allows str and numbers."""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()


def message_frame(topic: str, payload: bytes) -> str:
    return _json_encoder.encode({"topic": topic, "payload": decode_payload(payload)}).decode()


def notice_frame(key: str, value: str) -> str:
    """``{"error": "..."}``, ``{"subscribed": "<filter>"}``, ``{"unsubscribed": "<filter>"}``."""
    return _json_encoder.encode({key: value}).decode()


def check_filter(base: str, text: str) -> aiomqtt.Wildcard:
    """A valid MQTT topic filter inside ``{base}/#``, else FilterError."""
    if not isinstance(text, str) or not text:
        raise FilterError("the topic filter must be a non-empty string")
    try:
        wildcard = aiomqtt.Wildcard(text)
    except ValueError:
        raise FilterError(f"{text!r} is not a valid MQTT topic filter") from None
    if text.split("/", 1)[0] != base:
        raise FilterError(f"{text!r} is outside {base}/#: only topics under {base}/ are relayed")
    return wildcard


@dataclass(slots=True)
class Retained:
    topic: aiomqtt.Topic
    frame: str


class Subscriber:
    """One WebSocket client: its filters and its backlog of frames waiting to be sent."""

    def __init__(self, backlog_limit: int = DEFAULT_BACKLOG_LIMIT) -> None:
        self.backlog_limit = backlog_limit
        self.filters: dict[str, aiomqtt.Wildcard] = {}
        self.dropped = 0
        self._backlog: deque[str] = deque()
        self._ready = asyncio.Event()

    def matches(self, topic: aiomqtt.Topic) -> bool:
        return any(topic.matches(wildcard) for wildcard in self.filters.values())

    def push(self, frame: str, *, droppable: bool = True) -> None:
        """Queue a frame without waiting. Live frames beyond the limit push out the oldest;
        the retained replay and replies to the client's own commands are always kept."""
        if droppable and len(self._backlog) >= self.backlog_limit:
            self._backlog.popleft()
            self.dropped += 1
            if self.dropped == 1:
                log.warning("a WebSocket client is not keeping up; dropping its oldest messages")
        self._backlog.append(frame)
        self._ready.set()

    async def next_frame(self) -> str:
        while not self._backlog:
            self._ready.clear()
            await self._ready.wait()
        return self._backlog.popleft()

    @property
    def backlog(self) -> int:
        return len(self._backlog)


class Relay:
    """Owns the api's MQTT connection, the retained-state cache and the subscribers."""

    def __init__(self, config: MqttConfig, *, backlog_limit: int = DEFAULT_BACKLOG_LIMIT) -> None:
        self.base = config.base_topic
        self.link = MqttLink(config, "api")
        self.backlog_limit = backlog_limit
        self.retained: dict[str, Retained] = {}
        self.subscribers: set[Subscriber] = set()
        #: True once the broker acknowledged the ``{base}/#`` subscription of this session.
        self.listening = False
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self.link.connected

    # --- MQTT side ----------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.link.run(self._session), name="mqtt-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _session(self, client: aiomqtt.Client) -> None:
        # The broker replays every retained message on (re)subscription: start the cache
        # afresh so a topic deleted while we were away does not live on here.
        self.retained.clear()
        await client.subscribe(f"{self.base}/#", qos=1)
        self.listening = True
        try:
            async for message in client.messages:
                self.dispatch(message.topic.value, payload_bytes(message.payload))
                # aiomqtt hands over queued messages without suspending: let the clients'
                # senders run between messages so a burst does not pile up in every backlog.
                await asyncio.sleep(0)
        finally:
            self.listening = False

    def dispatch(self, topic_name: str, payload: bytes) -> None:
        """Remember the topic's state and queue the message for every matching client."""
        try:
            topic = aiomqtt.Topic(topic_name)
        except ValueError:
            log.warning("ignoring a message on an invalid topic %r", topic_name)
            return
        frame = message_frame(topic_name, payload)
        if payload:
            self.retained[topic_name] = Retained(topic, frame)
        else:
            self.retained.pop(topic_name, None)
        for subscriber in self.subscribers:
            if subscriber.matches(topic):
                subscriber.push(frame)

    # --- WebSocket side -----------------------------------------------------------------

    def attach(self) -> Subscriber:
        subscriber = Subscriber(self.backlog_limit)
        self.subscribers.add(subscriber)
        return subscriber

    def detach(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        if subscriber.dropped:
            log.info("WebSocket client left after %d dropped messages", subscriber.dropped)

    def subscribe(self, subscriber: Subscriber, text: str) -> None:
        """Add a filter, then queue the current state of every topic it matches; both
        happen before any further MQTT message is dispatched, so the replay comes first."""
        wildcard = check_filter(self.base, text)
        if text not in subscriber.filters and len(subscriber.filters) >= MAX_FILTERS_PER_CLIENT:
            raise FilterError(f"too many subscriptions (at most {MAX_FILTERS_PER_CLIENT})")
        subscriber.filters[text] = wildcard
        subscriber.push(notice_frame("subscribed", text), droppable=False)
        for frame in self.replay(wildcard):
            subscriber.push(frame, droppable=False)

    def unsubscribe(self, subscriber: Subscriber, text: str) -> None:
        if text not in subscriber.filters:
            raise FilterError(f"not subscribed to {text!r}")
        del subscriber.filters[text]
        subscriber.push(notice_frame("unsubscribed", text), droppable=False)

    def replay(self, wildcard: aiomqtt.Wildcard) -> Iterator[str]:
        for retained in self.retained.values():
            if retained.topic.matches(wildcard):
                yield retained.frame
