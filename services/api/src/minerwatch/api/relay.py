"""The live relay: one MQTT subscription per api process, fanned out to WebSocket clients.

The relay subscribes to ``{base}/#`` once. Every message goes through the one decode path,
``messages.decode_message``: a message that is not a schema-1 message of a topic in the
registry is counted and logged (rate-limited, ``RejectLog``) and goes no further; nothing a
publisher sends can stop the relay, and a last-resort guard around the handling of each
message logs and drops whatever the decoder did not foresee. A frame carries the decoded
message as JSON (a Struct with every field, as the schema writes it; the text ``online`` /
``offline`` of a service topic; ``""`` for an empty payload, which deletes a retained one).

Retained state: the relay keeps the newest frame of every topic the registry marks as
retained (an empty payload deletes it), so a new WebSocket subscriber first gets the
current value of every topic its filter matches, then the live messages. The cache holds
at most ``MAX_CACHED_TOPICS`` topics and ``MAX_CACHED_BYTES`` of frames (about 1 KB a topic
for real payloads: 2,000 miners with a few alerts each fit many times over). Past either
bound a NEW topic is relayed live but not cached, and the log says so once per connection:
refusing newcomers, rather than evicting, keeps the state of the miners already known.

Service liveness: the relay follows ``{base}/services/+/status`` of the four services
(``SERVICES``) and remembers each one's state and since when the api saw it change
(``services``). While its own broker link is down it cannot know: every service is then
``unknown`` (the api itself ``offline``) since the link went down. It keeps the latest stats
of each on ``{base}/services/+/stats`` too (``stats``; not retained, so never replayed),
for ``GET /metrics``.

Commands: a ``{base}/miners/+/command`` message is never relayed to WebSocket clients (a
settings change may carry a pool password); their results (``command/result``, the
``replies/`` topics) and autotune progress (``tune``, retained) are relayed like any
other topic. A message on a topic in ``reply_handlers`` (the api's own response topic,
see ``commands``) is also handed, with its MQTT v5 properties, to its handler.

Publishing: ``publish`` sends one retained QoS 1 message on the relay's session and waits
for the broker's PUBACK (at most ``PUBLISH_TIMEOUT_S``); a broker that is not there is
``BrokerUnavailable``, one line. The cache takes the published state at once, so what the
api answers next already shows it (the broker's echo replaces it again, unchanged).

Slow clients: every client has its own backlog of frames, filled without ever waiting, so
one client can never hold up the MQTT loop or the other clients. A backlog holds at most
``backlog_limit`` frames; past it the OLDEST frames go, counted (logged once per client and
when it disconnects). Dropping old frames rather than disconnecting suits this data: every
topic is a state whose newer message supersedes the older ones. Replays and the replies to
a client's commands count against the backlog and are dropped like any other frame, except
that a subscription's replay is cut to fit behind its ``{"subscribed": ...}`` notice, so
it never starts without it.

Clients that do not read: a client is closed (WebSocket code 1008) when it sends a command
while ``MAX_UNREAD_REPLIES`` replies to its earlier commands have not been sent to it, be
they still waiting in its backlog or dropped from it. Such a client is asking for work
whose results it never takes.

The MQTT side is bounded too: the relay's client announces a Receive Maximum of
``RECEIVE_MAXIMUM`` and acknowledges each message once handled, so no more QoS 1 messages
than that wait in the api for the relay; a flood waits at the broker, within its limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import msgspec

from minerwatch.shared.config import MqttConfig
from minerwatch.shared.errors import one_line
from minerwatch.shared.messages import Payload, Rejected, decode_message
from minerwatch.shared.metrics import SERVICES  # whose liveness the api follows
from minerwatch.shared.mqtt import BrokerLimitError, MqttClient, MqttError, MqttLink
from minerwatch.shared.rejects import RejectLog
from minerwatch.shared.schemas import (
    AlertEvent,
    MinerInfo,
    MinerStatus,
    Mute,
    Sample,
    ServiceStats,
    now_ts,
)
from minerwatch.shared.topics import ALERT, COMMAND, FilterError, filter_matches, match_topic
from minerwatch.shared.topics import check_filter as check_mqtt_filter

log = logging.getLogger("minerwatch.api.relay")

DEFAULT_BACKLOG_LIMIT = 1000
MAX_FILTERS_PER_CLIENT = 64
#: Replies to its own commands a client may leave unread before its next command closes it
#: (a client may pipeline a command per filter, and as many unsubscribes, before reading).
MAX_UNREAD_REPLIES = 2 * MAX_FILTERS_PER_CLIENT
#: Bounds of the retained-state cache (see the module docstring).
MAX_CACHED_TOPICS = 20_000
MAX_CACHED_BYTES = 32 * 1024 * 1024
#: QoS 1 messages the broker may have out to the relay unacknowledged (each is acknowledged
#: once handled): at most this many wait in the MQTT client, at most 1 MiB each.
RECEIVE_MAXIMUM = 100
#: An unforeseen error is logged with its traceback at most once per this many seconds.
UNFORESEEN_LOG_INTERVAL_S = 30.0
#: How long a publish from the api may wait for the broker's PUBACK.
PUBLISH_TIMEOUT_S = 5.0

ServiceStateName = Literal["online", "offline", "unknown"]
#: Called with a message's payload and MQTT v5 properties; must not block or raise.
ReplyHandler = Callable[[bytes, dict[str, Any]], None]
_MINER_PAYLOADS: dict[str, type[Sample | MinerStatus | MinerInfo]] = {
    "sample": Sample, "status": MinerStatus, "info": MinerInfo}

_json_encoder = msgspec.json.Encoder()

__all__ = [
    "DEFAULT_BACKLOG_LIMIT",
    "MAX_CACHED_BYTES",
    "MAX_CACHED_TOPICS",
    "MAX_FILTERS_PER_CLIENT",
    "MAX_UNREAD_REPLIES",
    "RECEIVE_MAXIMUM",
    "SERVICES",
    "BrokerUnavailable",
    "FilterError",
    "Relay",
    "ReplyHandler",
    "ServiceSeen",
    "Subscriber",
    "TopicFilter",
    "check_filter",
    "message_frame",
    "notice_frame",
]


def message_frame(topic: str, message: Payload | None) -> str:
    """``{"topic": ..., "payload": ...}``: the decoded message as JSON, ``""`` for none."""
    payload = "" if message is None else message
    return _json_encoder.encode({"topic": topic, "payload": payload}).decode()


def notice_frame(key: str, value: str) -> str:
    """``{"error": "..."}``, ``{"subscribed": "<filter>"}``, ``{"unsubscribed": "<filter>"}``."""
    return _json_encoder.encode({key: value}).decode()


class BrokerUnavailable(Exception):
    """The api cannot publish right now; the message is one line for the client."""


@dataclass(frozen=True, slots=True)
class ServiceSeen:
    """A service's state as the api sees it, and since when (``None``: never seen)."""

    state: ServiceStateName
    since: str | None


T = TypeVar("T")


class _Frame(msgspec.Struct, Generic[T]):
    """A cached frame read back: its payload as the Struct of its topic."""

    topic: str
    payload: T


_frame_decoders: dict[type, msgspec.json.Decoder[_Frame[Any]]] = {}


def frame_payload(frame: str, kind: type[T]) -> T | None:
    """The payload of a cached frame as ``kind``; None if it is not one (never raises)."""
    decoder = _frame_decoders.get(kind)
    if decoder is None:
        decoder = _frame_decoders[kind] = msgspec.json.Decoder(_Frame[kind])  # type: ignore[valid-type]
    try:
        payload = decoder.decode(frame).payload
    except msgspec.DecodeError:
        return None
    return payload if isinstance(payload, kind) else None


@dataclass(frozen=True, slots=True)
class TopicFilter:
    """A client's MQTT topic filter, checked, with its levels for matching."""

    text: str
    levels: tuple[str, ...]

    def __str__(self) -> str:
        return self.text

    def matches(self, topic: str) -> bool:
        return filter_matches(self.levels, topic)


def check_filter(base: str, text: object) -> TopicFilter:
    """A valid MQTT topic filter inside ``{base}/#``, else FilterError."""
    if not isinstance(text, str):
        raise FilterError("the topic filter must be a non-empty string")
    levels = check_mqtt_filter(text)
    if levels[0] != base:
        raise FilterError(f"{text!r} is outside {base}/#: only topics under {base}/ are relayed")
    return TopicFilter(text, tuple(levels))


class Subscriber:
    """One WebSocket client: its filters and its backlog of frames waiting to be sent."""

    def __init__(self, backlog_limit: int = DEFAULT_BACKLOG_LIMIT) -> None:
        self.backlog_limit = max(backlog_limit, 1)
        self.filters: dict[str, TopicFilter] = {}
        self.dropped = 0
        #: Replies to this client's commands not sent to it (waiting, or dropped).
        self.unread_replies = 0
        self._backlog: deque[tuple[str, bool]] = deque()
        self._ready = asyncio.Event()

    def matches(self, topic: str) -> bool:
        return any(topic_filter.matches(topic) for topic_filter in self.filters.values())

    def push(self, frame: str, *, reply: bool = False) -> None:
        """Queue a frame without waiting; past the limit the oldest frame goes. ``reply``:
        the answer to one of the client's commands (counted until it is sent)."""
        if len(self._backlog) >= self.backlog_limit:
            self._backlog.popleft()
            self._count_dropped(1)
        self._backlog.append((frame, reply))
        if reply:
            self.unread_replies += 1
        self._ready.set()

    def push_subscription(self, notice: str, replay: list[str]) -> None:
        """A subscription's notice, then as much of its replay as fits behind it."""
        room = self.backlog_limit - 1
        if len(replay) > room:
            self._count_dropped(len(replay) - room)
            replay = replay[len(replay) - room:] if room else []
        self.push(notice, reply=True)
        for frame in replay:
            self.push(frame)

    def _count_dropped(self, count: int) -> None:
        if not self.dropped:
            log.warning("a WebSocket client is not keeping up; dropping its oldest messages")
        self.dropped += count

    async def next_frame(self) -> str:
        while not self._backlog:
            self._ready.clear()
            await self._ready.wait()
        frame, reply = self._backlog.popleft()
        if reply:
            self.unread_replies -= 1
        return frame

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    @property
    def ignores_replies(self) -> bool:
        """Whether the client has left too many replies unread to be given more work."""
        return self.unread_replies >= MAX_UNREAD_REPLIES


class Relay:
    """Owns the api's MQTT connection, the retained-state cache and the subscribers."""

    def __init__(self, config: MqttConfig, *, backlog_limit: int = DEFAULT_BACKLOG_LIMIT,
                 max_cached_topics: int = MAX_CACHED_TOPICS,
                 max_cached_bytes: int = MAX_CACHED_BYTES) -> None:
        self.base = config.base_topic
        # A Receive Maximum bounds what waits in the api for the relay: a flood of junk on
        # {base}/# waits at the broker instead (without one Mosquitto sends as fast as it can).
        self.link = MqttLink(config, "api", receive_maximum=RECEIVE_MAXIMUM)
        self.backlog_limit = backlog_limit
        self.max_cached_topics = max_cached_topics
        self.max_cached_bytes = max_cached_bytes
        #: topic -> the frame of its newest message, for the retained topics of the registry
        self.retained: dict[str, str] = {}
        self.cached_bytes = 0
        #: New topics not cached because the cache was full (since start).
        self.uncached = 0
        self._said_full = False
        self.rejects = RejectLog(log)
        #: Messages dropped by the last-resort guard (since start).
        self.unforeseen = 0
        self._unforeseen_logged_at: float | None = None
        self.subscribers: set[Subscriber] = set()
        #: exact topic -> who takes its messages with their properties (``commands``)
        self.reply_handlers: dict[str, ReplyHandler] = {}
        #: True once the broker acknowledged the ``{base}/#`` subscription of this session.
        self.listening = False
        self._task: asyncio.Task[None] | None = None
        self._client: MqttClient | None = None
        #: service -> its last state seen on MQTT, and since when (see ``service``)
        self._services: dict[str, ServiceSeen] = {}
        #: service -> its latest stats and when they came (monotonic), see ``stats``
        self._stats: dict[str, tuple[float, ServiceStats]] = {}
        #: Frames dropped for WebSocket clients that have left (see ``dropped_frames``).
        self._dropped_by_gone = 0
        #: When the broker link last went down (None: never up yet, or up now).
        self._down_since: str | None = now_ts()

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
        self.rejects.close()

    async def _session(self, client: MqttClient) -> None:
        # The broker replays every retained message on (re)subscription: start the cache
        # afresh so a topic deleted while we were away does not live on here.
        self._clear_cache()
        self._client = client
        self._down_since = None
        try:
            await client.subscribe([f"{self.base}/#"])
            self.listening = True
            async for message in client.messages:
                self.receive(message.topic, message.payload, message.properties)
                client.ack(message)  # relayed or not, it is done with
                # Queued messages come without suspending: let the clients' senders run
                # between messages so a burst does not pile up in every backlog.
                await asyncio.sleep(0)
        finally:
            self.listening = False
            self._client = None
            self._down_since = now_ts()

    async def publish(self, topic: str, payload: bytes, *, retain: bool = True,
                      properties: dict[str, Any] | None = None) -> None:
        """Publish at QoS 1 on the relay's session and wait for the PUBACK; the cache takes
        the new state at once. ``properties``: MQTT v5 publish properties (a command's
        response topic and correlation data). BrokerUnavailable (one line) when that
        cannot be done."""
        client = self._client
        if client is None or not client.connected:
            raise BrokerUnavailable(f"the broker is not connected: {topic} was not published")
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await client.publish(topic, payload, qos=1, retain=retain,
                                     properties=properties)
        except TimeoutError:
            raise BrokerUnavailable(f"the broker did not acknowledge {topic} within "
                                    f"{PUBLISH_TIMEOUT_S:g} s") from None
        except (MqttError, BrokerLimitError) as exc:
            raise BrokerUnavailable(f"publishing {topic} failed: {one_line(exc)}") from None
        decoded = decode_message(self.base, topic, payload)
        if not isinstance(decoded, Rejected):
            self._note(decoded.topic, decoded.spec.retained, decoded.spec.name, decoded.name,
                       decoded.message)

    def receive(self, topic: str, payload: bytes,
                properties: dict[str, Any] | None = None) -> None:
        """``dispatch`` (and the topic's reply handler, if any) behind the last-resort
        guard: whatever goes wrong with one message is logged and that message dropped;
        the relay goes on."""
        try:
            handler = self.reply_handlers.get(topic)
            if handler is not None:
                handler(payload, properties or {})
            self.dispatch(topic, payload)
        except Exception as exc:
            self._unforeseen(topic, exc)

    def dispatch(self, topic: str, payload: bytes) -> None:
        """Decode, remember the topic's state, and queue the frame for every matching
        client; a message that does not decode is counted and logged."""
        decoded = decode_message(self.base, topic, payload)
        if isinstance(decoded, Rejected):
            self.rejects.note(decoded.kind, str(decoded))
            return
        if decoded.spec is COMMAND:
            return  # may carry a pool password: not for WebSocket clients
        frame = self._note(topic, decoded.spec.retained, decoded.spec.name, decoded.name,
                           decoded.message)
        for subscriber in self.subscribers:
            if subscriber.matches(topic):
                subscriber.push(frame)

    def _note(self, topic: str, retained: bool, kind: str, name: str | None,
              message: Payload | None) -> str:
        """Take a decoded message into the state (cache, services); its frame."""
        frame = message_frame(topic, message)
        if retained:
            self._remember(topic, None if message is None else frame)
        if kind == "service" and name in SERVICES:
            self._see_service(name, message if isinstance(message, str) else None)
        elif kind == "stats" and name in SERVICES and isinstance(message, ServiceStats):
            self._stats[name] = (time.monotonic(), message)
        return frame

    # --- service liveness ---------------------------------------------------------------

    def _see_service(self, service: str, state: str | None) -> None:
        seen: ServiceStateName = "online" if state == "online" else (
            "offline" if state == "offline" else "unknown")
        old = self._services.get(service)
        if old is None or old.state != seen:
            self._services[service] = ServiceSeen(seen, now_ts())

    def service(self, name: str) -> ServiceSeen:
        """What the api knows of a service now. With the broker link down nothing is
        known: ``unknown`` (the api itself ``offline``) since the link went down."""
        if not self.connected:
            return ServiceSeen("offline" if name == "api" else "unknown", self._down_since)
        return self._services.get(name, ServiceSeen("unknown", None))

    def stats(self, name: str) -> tuple[float, ServiceStats] | None:
        """A service's latest stats and when they came (``time.monotonic``), if any came."""
        return self._stats.get(name)

    @property
    def dropped_frames(self) -> int:
        """Frames dropped for slow WebSocket clients since start, gone ones included."""
        return self._dropped_by_gone + sum(s.dropped for s in list(self.subscribers))

    # --- reading the cached state -------------------------------------------------------

    def cached(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(topic, frame) of every cached topic starting with ``prefix``."""
        for topic, frame in list(self.retained.items()):
            if topic.startswith(prefix):
                yield topic, frame

    def cached_payloads(self, prefix: str, kind: type[T]) -> Iterator[tuple[str, T]]:
        """(topic, payload) of the cached topics under ``prefix`` whose payload is a ``kind``."""
        for topic, frame in self.cached(prefix):
            payload = frame_payload(frame, kind)
            if payload is not None:
                yield topic, payload

    def alerts(self) -> list[AlertEvent]:
        """Every cached alert event (firing, resolved and one-off), by topic."""
        return [alert for _topic, alert in self.cached_payloads(
            f"{self.base}/alerts/", AlertEvent)]

    def mutes(self) -> list[Mute]:
        """Every cached mute, expired or not."""
        return [mute for _topic, mute in self.cached_payloads(
            f"{self.base}/mutes/", Mute)]

    def miner_payloads(self) -> Iterator[tuple[str, Sample | MinerStatus | MinerInfo]]:
        """(miner id, payload) of every cached sample, status and info."""
        for topic, frame in self.cached(f"{self.base}/miners/"):
            found = match_topic(self.base, topic)
            kind = _MINER_PAYLOADS.get(found[0].name) if found is not None else None
            if found is None or found[1] is None or kind is None:
                continue
            payload = frame_payload(frame, kind)
            if payload is not None:
                yield found[1], payload

    def knows_miner(self, miner_id: str) -> bool:
        """Whether any retained topic of this miner (its own or an alert) is cached."""
        return any(True for _ in self.cached(f"{self.base}/miners/{miner_id}/")) or bool(
            self.alert_topics(miner_id))

    def alert_topics(self, miner_id: str) -> list[str]:
        """The cached retained alert topics of one miner."""
        prefix = ALERT.topic(self.base, miner_id=miner_id, rule="")
        return sorted(topic for topic, _frame in self.cached(prefix))

    def _unforeseen(self, topic: str, exc: Exception) -> None:
        self.unforeseen += 1
        now = time.monotonic()
        last = self._unforeseen_logged_at
        if last is None or now - last >= UNFORESEEN_LOG_INTERVAL_S:
            self._unforeseen_logged_at = now
            log.error("unexpected error relaying a message on %r, dropped (%d so far): %s",
                      topic[:200], self.unforeseen, one_line(exc), exc_info=exc)

    # --- the retained-state cache -------------------------------------------------------

    def _clear_cache(self) -> None:
        self.retained.clear()
        self.cached_bytes = 0
        self._said_full = False

    def _remember(self, topic: str, frame: str | None) -> None:
        """Cache ``frame`` as the state of ``topic``; None deletes it."""
        old = self.retained.pop(topic, None)
        if old is not None:
            self.cached_bytes -= sys.getsizeof(old)
        if frame is None:
            return
        size = sys.getsizeof(frame)
        if self.cached_bytes + size > self.max_cached_bytes or (
                old is None and len(self.retained) >= self.max_cached_topics):
            # A topic replaced past the byte bound is forgotten rather than kept stale.
            self._refuse(topic)
            return
        self.retained[topic] = frame
        self.cached_bytes += size

    def _refuse(self, topic: str) -> None:
        self.uncached += 1
        if not self._said_full:
            self._said_full = True
            log.warning(
                "the relay's cache of retained state is full (%d topics, %.1f MB; at most "
                "%d topics, %.0f MB): %r and other new topics are relayed live but not "
                "replayed to new WebSocket clients", len(self.retained),
                self.cached_bytes / 1e6, self.max_cached_topics, self.max_cached_bytes / 1e6,
                topic[:200])

    # --- WebSocket side -----------------------------------------------------------------

    def attach(self) -> Subscriber:
        subscriber = Subscriber(self.backlog_limit)
        self.subscribers.add(subscriber)
        return subscriber

    def detach(self, subscriber: Subscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.discard(subscriber)
            self._dropped_by_gone += subscriber.dropped
        if subscriber.dropped:
            log.info("WebSocket client left after %d dropped messages", subscriber.dropped)

    def subscribe(self, subscriber: Subscriber, text: object) -> None:
        """Add a filter, then queue the current state of every topic it matches; both
        happen before any further MQTT message is dispatched, so the replay comes first."""
        topic_filter = check_filter(self.base, text)
        key = topic_filter.text
        if key not in subscriber.filters and len(subscriber.filters) >= MAX_FILTERS_PER_CLIENT:
            raise FilterError(f"too many subscriptions (at most {MAX_FILTERS_PER_CLIENT})")
        subscriber.filters[key] = topic_filter
        subscriber.push_subscription(notice_frame("subscribed", key), self.replay(topic_filter))

    def unsubscribe(self, subscriber: Subscriber, text: str) -> None:
        if text not in subscriber.filters:
            raise FilterError(f"not subscribed to {text!r}")
        del subscriber.filters[text]
        subscriber.push(notice_frame("unsubscribed", text), reply=True)

    def replay(self, topic_filter: TopicFilter) -> list[str]:
        return [frame for topic, frame in self.retained.items() if topic_filter.matches(topic)]
