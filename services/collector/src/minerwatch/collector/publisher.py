"""From the poller to the broker: a bounded outbox and a pipelined publishing session.

The poller never waits for the broker: it drops messages into the ``Outbox`` (bounded;
when full the oldest message goes, with a log line). ``Publisher.session`` is what
``MqttLink.run`` calls with each connected client: it keeps up to ``max_inflight`` QoS 1
publishes in flight (pipelined, in order) and takes a message out of the outbox for good
only once the broker acknowledged it. When the connection drops, the unacknowledged ones
go back to the front of the outbox, in order, and go out again after the reconnect
(at least once, as QoS 1 promises).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiomqtt

from minerwatch.shared import schemas, topics
from minerwatch.shared.schemas import MinerInfo, MinerStatus, Sample

log = logging.getLogger("minerwatch.collector.publisher")

Message = Sample | MinerStatus | MinerInfo

_KINDS: dict[type, topics.MinerTopicKind] = {
    Sample: "sample",
    MinerStatus: "status",
    MinerInfo: "info",
}


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
    connection left unacknowledged)."""

    LOG_EVERY_S = 10.0
    #: How far from the front to look for a sample to drop before dropping whatever is oldest.
    SAMPLE_SCAN = 256

    def __init__(self, maxsize: int = 10_000) -> None:
        if maxsize < 1:
            raise ValueError("outbox size must be at least 1")
        self.maxsize = maxsize
        self.dropped = 0
        self._items: deque[Outgoing] = deque()
        self._ready = asyncio.Event()
        self._dropped_unlogged = 0
        self._last_log = float("-inf")

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Outgoing) -> None:
        self._items.append(item)
        self._trim()
        self._ready.set()

    def put_front(self, items: Iterable[Outgoing]) -> None:
        """Put ``items`` back before everything else, keeping their order."""
        self._items.extendleft(reversed(list(items)))
        self._trim()
        if self._items:
            self._ready.set()

    async def get(self) -> Outgoing:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def _trim(self) -> None:
        while len(self._items) > self.maxsize:
            oldest = self._drop_one()
            self.dropped += 1
            self._dropped_unlogged += 1
            now = time.monotonic()
            # One line per burst, not one per message, while the broker stays away.
            if now - self._last_log >= self.LOG_EVERY_S:
                log.warning(
                    "outbox full (%d messages, broker unreachable?): dropped the oldest "
                    "(%s for %s) and %d more since the last report",
                    self.maxsize, oldest.kind, oldest.miner_id, self._dropped_unlogged - 1,
                )
                self._last_log = now
                self._dropped_unlogged = 0

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


class Publisher:
    """Drains the outbox into a connected client; run as ``MqttLink.run(publisher.session)``."""

    def __init__(self, outbox: Outbox, base_topic: str, *, max_inflight: int = 64) -> None:
        self.outbox = outbox
        self.base = base_topic
        self.max_inflight = max_inflight
        self.published = 0

    async def session(self, client: aiomqtt.Client) -> None:
        """Publish until the connection drops (raises MqttError) or the task is cancelled."""
        inflight: deque[tuple[Outgoing, asyncio.Task[None]]] = deque()
        # Nothing subscribes, so the message iterator only ever ends by raising MqttError
        # when the connection drops: the way to notice a dead broker while idle.
        watcher = asyncio.ensure_future(anext(aiter(client.messages)))
        taking: asyncio.Task[Outgoing] | None = None
        try:
            while True:
                while inflight and inflight[0][1].done():
                    inflight.popleft()[1].result()  # raises when the publish failed
                    self.published += 1
                waiting: set[asyncio.Future[Any]] = {watcher}
                waiting.update(task for _, task in inflight)
                if len(inflight) < self.max_inflight:
                    if taking is None:
                        taking = asyncio.ensure_future(self.outbox.get())
                    waiting.add(taking)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if watcher in done:
                    watcher.result()  # raises MqttError on a lost connection
                    watcher = asyncio.ensure_future(anext(aiter(client.messages)))
                for finished in done:
                    if finished is not watcher and finished is not taking:
                        error = finished.exception()
                        if error is not None:  # a publish failed: reconnect
                            raise error
                if taking is not None and taking in done:
                    item = taking.result()
                    taking = None
                    # paho writes the packet on this call's first step, so starting the
                    # tasks in outbox order sends the messages in outbox order.
                    task = asyncio.ensure_future(
                        client.publish(item.topic(self.base), item.payload(), qos=1,
                                       retain=True)
                    )
                    inflight.append((item, task))
        finally:
            self._give_back(inflight, taking)
            if watcher.done() and not watcher.cancelled():
                watcher.exception()  # seen: the publish failure already told the story
            watcher.cancel()

    def _give_back(
        self,
        inflight: deque[tuple[Outgoing, asyncio.Task[None]]],
        taking: asyncio.Task[Outgoing] | None,
    ) -> None:
        """Unacknowledged messages return to the front of the outbox, oldest first."""
        unacked: list[Outgoing] = []
        for item, task in inflight:
            acked = task.done() and not task.cancelled() and task.exception() is None
            if acked:
                self.published += 1
            else:
                task.cancel()
                unacked.append(item)
        if taking is not None:
            if taking.done() and not taking.cancelled():
                unacked.append(taking.result())
            else:
                taking.cancel()
        if unacked:
            log.info("session ended: %d unacknowledged message(s) go back to the outbox",
                     len(unacked))
            self.outbox.put_front(unacked)
