"""From the poller to the broker: a bounded outbox and a pipelined publishing session.

The poller never waits for the broker: it drops messages into the ``Outbox``. While the
broker is unreachable they wait there, up to a bound (``collector.buffer_messages``, by
default about ten minutes of the whole fleet); past it the oldest samples go first, and
the log says how many of what, and from when to when, were dropped.

``Publisher.session`` is what ``MqttLink.run`` calls with each connected client. It
hands messages to the client in batches, keeps up to ``max_inflight`` QoS 1 publishes
unacknowledged at once (pipelined, in order) and takes a message out of the outbox for
good only once the broker acknowledged it. When the connection drops, the unacknowledged
ones go back to the front of the outbox, in order, and go out again after the reconnect
(at least once, as QoS 1 promises).

The session publishes through the paho client under aiomqtt (``client._client``, aiomqtt
2.x) rather than ``await client.publish`` per message: aiomqtt gives each publish its own
future, timeout and wake-up, which cost about four times the publish itself at fleet
rates. Paho writes and acknowledges in order on its own; we only watch the
acknowledgements arrive. Paho's own in-flight limit is off (``MqttLink(max_inflight=0)``):
it re-scans every unacknowledged message at each acknowledgement, and lets only that many
out per turn of a busy event loop; the session's ``max_inflight`` bounds them instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

from minerwatch.shared import schemas, topics
from minerwatch.shared.schemas import MinerInfo, MinerStatus, Sample

log = logging.getLogger("minerwatch.collector.publisher")

Message = Sample | MinerStatus | MinerInfo

_KINDS: dict[type, topics.MinerTopicKind] = {
    Sample: "sample",
    MinerStatus: "status",
    MinerInfo: "info",
}

#: Messages handed to the client per step before other tasks get the loop again.
BATCH = 512


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One retained message for ``{base}/miners/{miner_id}/{kind}``. ``message`` None
    clears the retained message there (an empty retained payload deletes it)."""

    miner_id: str
    kind: topics.MinerTopicKind
    message: Message | None

    @classmethod
    def of(cls, miner_id: str, message: Message) -> Outgoing:
        return cls(miner_id, _KINDS[type(message)], message)

    @classmethod
    def clear(cls, miner_id: str, kind: topics.MinerTopicKind) -> Outgoing:
        return cls(miner_id, kind, None)

    def topic(self, base: str) -> str:
        return topics.miner_topic(base, self.miner_id, self.kind)

    def payload(self) -> bytes:
        return schemas.encode(self.message) if self.message is not None else b""


class Outbox:
    """A bounded FIFO that drops its oldest message (its oldest sample, when there is one
    near the front) when full, and can take messages back at the front (those a lost
    connection left unacknowledged). ``maxsize`` may change while it runs."""

    LOG_EVERY_S = 10.0
    #: How far from the front to look for a sample to drop before dropping whatever is oldest.
    SAMPLE_SCAN = 256

    def __init__(self, maxsize: int = 10_000) -> None:
        if maxsize < 1:
            raise ValueError("outbox size must be at least 1")
        self.maxsize = maxsize
        self.dropped = 0
        self._items: deque[Outgoing] = deque()
        self._waiter: asyncio.Event | None = None
        self._unreported: Counter[str] = Counter()
        self._dropped_between: list[str] = []  # ts of the first and last dropped sample
        self._last_log = float("-inf")

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Outgoing) -> None:
        self._items.append(item)
        if len(self._items) > self.maxsize:
            self._trim()
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None

    def put_front(self, items: Iterable[Outgoing]) -> None:
        """Put ``items`` back before everything else, keeping their order."""
        self._items.extendleft(reversed(list(items)))
        self._trim()
        if self._items and self._waiter is not None:
            self._waiter.set()
            self._waiter = None

    def pop(self) -> Outgoing:
        """The oldest message; IndexError when there is none."""
        return self._items.popleft()

    def notify(self, event: asyncio.Event) -> None:
        """Set ``event`` at the next ``put`` (once)."""
        self._waiter = event

    async def get(self) -> Outgoing:
        while not self._items:
            event = asyncio.Event()
            self.notify(event)
            await event.wait()
        return self._items.popleft()

    def _trim(self) -> None:
        while len(self._items) > self.maxsize:
            dropped = self._drop_one()
            self.dropped += 1
            self._unreported[dropped.kind] += 1
            if dropped.kind == "sample" and isinstance(dropped.message, Sample):
                ts = dropped.message.ts
                if self._dropped_between:
                    self._dropped_between[1:] = [ts]
                else:
                    self._dropped_between = [ts, ts]
        # One line per burst, not one per message, while the broker stays away.
        if time.monotonic() - self._last_log >= self.LOG_EVERY_S:
            self.report_drops()

    def report_drops(self) -> None:
        """Log what was dropped since the last report, if anything."""
        if not self._unreported:
            return
        what = ", ".join(f"{count} {kind}" for kind, count in self._unreported.most_common())
        when = ""
        if len(self._dropped_between) == 2:
            when = f" (samples taken {self._dropped_between[0]} to {self._dropped_between[1]})"
        log.warning("outbox full (%d messages; broker unreachable?): dropped the oldest: "
                    "%s%s", self.maxsize, what, when)
        self._unreported.clear()
        self._dropped_between = []
        self._last_log = time.monotonic()

    def _drop_one(self) -> Outgoing:
        """The oldest sample goes first: a lost sample is a gap in history, but a lost
        status or info change would leave a wrong retained state behind for good."""
        for index, item in enumerate(self._items):
            if index >= self.SAMPLE_SCAN:
                break
            if item.kind == "sample":
                del self._items[index]
                return item
        return self._items.popleft()


OnPublish = Callable[..., None]


def _acknowledged(info: paho.MQTTMessageInfo) -> bool:
    # is_published() raises for a publish that failed (not connected): not acknowledged.
    return info.rc == paho.MQTT_ERR_SUCCESS and info.is_published()


def _watch(client: aiomqtt.Client, wake: asyncio.Event) -> asyncio.Future[Any]:
    """Nothing subscribes, so the message iterator only ever ends by raising MqttError when
    the connection drops: the way to notice a dead broker while idle. It wakes ``wake``."""
    watcher = asyncio.ensure_future(anext(aiter(client.messages)))

    def done(future: asyncio.Future[Any]) -> None:
        if not future.cancelled():
            future.exception()  # retrieved here; the session raises it from result()
        wake.set()

    watcher.add_done_callback(done)
    return watcher


class Publisher:
    """Drains the outbox into a connected client; run as ``MqttLink.run(publisher.session)``."""

    def __init__(self, outbox: Outbox, base_topic: str, *, max_inflight: int = 1024) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self.outbox = outbox
        self.base = base_topic
        self.max_inflight = max_inflight
        #: Messages the broker acknowledged, and the most unacknowledged at once.
        self.published = 0
        self.most_inflight = 0
        self.refused = 0

    async def session(self, client: aiomqtt.Client) -> None:
        """Publish until the connection drops (raises MqttError) or the task is cancelled."""
        mqtt: paho.Client = client._client
        wake = asyncio.Event()
        previous: OnPublish | None = mqtt.on_publish
        mqtt.on_publish = self._on_publish(previous, wake)
        inflight: deque[tuple[Outgoing, paho.MQTTMessageInfo]] = deque()
        watcher = _watch(client, wake)
        self.outbox.report_drops()
        try:
            while True:
                if watcher.done():
                    watcher.result()  # raises MqttError on a lost connection
                    watcher = _watch(client, wake)
                while inflight and _acknowledged(inflight[0][1]):
                    inflight.popleft()
                    self.published += 1
                try:
                    sent = self._send(mqtt, inflight)
                except aiomqtt.MqttCodeError:
                    # Paho found the connection gone; aiomqtt says why once it noticed too
                    # (and its reason is then seen, not left unretrieved).
                    await asyncio.wait([watcher], timeout=1.0)
                    if watcher.done():
                        watcher.result()
                    raise
                if sent == BATCH:  # more to send: let the poller and paho's I/O run first
                    await asyncio.sleep(0)
                    continue
                wake.clear()
                if len(inflight) < self.max_inflight:
                    self.outbox.notify(wake)
                await wake.wait()
        finally:
            mqtt.on_publish = previous
            self._give_back(inflight)
            watcher.cancel()

    def _send(self, mqtt: paho.Client, inflight: deque[tuple[Outgoing, Any]]) -> int:
        """Hand up to ``BATCH`` messages to paho, which writes them as the socket allows."""
        sent = 0
        outbox = self.outbox
        while sent < BATCH and len(outbox) and len(inflight) < self.max_inflight:
            item = outbox.pop()
            try:
                info = mqtt.publish(item.topic(self.base), item.payload(), 1, True)
            except ValueError as exc:  # a topic or payload MQTT cannot carry: never will
                log.error("cannot publish %s for %s: %s", item.kind, item.miner_id, exc)
                continue
            inflight.append((item, info))  # even if it failed: it goes back on the way out
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
            sent += 1
        self.most_inflight = max(self.most_inflight, len(inflight))
        return sent

    def _on_publish(self, previous: OnPublish | None, wake: asyncio.Event) -> OnPublish:
        """Paho's acknowledgement callback: aiomqtt's own first, then wake the session."""

        def on_publish(client: Any, userdata: Any, mid: int, reason: Any,
                       properties: Any) -> None:
            if previous is not None:
                previous(client, userdata, mid, reason, properties)
            if getattr(reason, "is_failure", False):  # MQTT 5: e.g. refused by an ACL
                self.refused += 1
                if self.refused == 1 or self.refused % 1000 == 0:
                    log.warning("the broker refused %d message(s) (last: %s); check its ACL",
                                self.refused, reason)
            wake.set()

        return on_publish

    def _give_back(self, inflight: deque[tuple[Outgoing, Any]]) -> None:
        """Unacknowledged messages return to the front of the outbox, oldest first."""
        unacked: list[Outgoing] = []
        for item, info in inflight:
            if _acknowledged(info):
                self.published += 1
            else:
                unacked.append(item)
        if unacked:
            log.info("session ended: %d unacknowledged message(s) go back to the outbox",
                     len(unacked))
            self.outbox.put_front(unacked)
