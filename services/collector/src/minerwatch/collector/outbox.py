"""What the collector has to publish, waiting for the broker: a bounded outbox.

Polling never waits for the broker: it drops messages into the ``Outbox``. While the
broker is unreachable they wait there, up to a bound (``collector.buffer_messages``, by
default about ten minutes of the whole fleet); past it the oldest samples go first, and
the log says how many of what, and from when to when, were dropped. The publisher takes
them out in order and puts back at the front those a lost connection left unacknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass

from minerwatch.shared import schemas, topics
from minerwatch.shared.config import CollectorConfig
from minerwatch.shared.schemas import MinerInfo, MinerStatus, Sample

log = logging.getLogger(__name__)

Message = Sample | MinerStatus | MinerInfo

_KINDS: dict[type, topics.MinerTopicKind] = {
    Sample: "sample",
    MinerStatus: "status",
    MinerInfo: "info",
}

#: What the outbox holds while the broker is away, unless ``buffer_messages`` says.
BUFFER_S = 600.0
MIN_BUFFER = 1000


def outbox_size(config: CollectorConfig, miners: int) -> int:
    """The outbox bound: ``buffer_messages``, else ``BUFFER_S`` of samples from every
    miner plus room for a status and info change each (at least ``MIN_BUFFER``)."""
    if config.buffer_messages is not None:
        return config.buffer_messages
    per_miner = math.ceil(BUFFER_S / config.poll_interval_s) + 3
    return max(MIN_BUFFER, miners * per_miner)


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

    def refresh(self, current: Iterable[Outgoing]) -> int:
        """Queue the ``current`` state of miners (their info and status) again, after
        everything else, except where a message of that miner and kind is queued already:
        the newest of those is the current one, and it must stay the last. How many were
        queued."""
        queued = {(item.miner_id, item.kind) for item in self._items if item.kind != "sample"}
        fresh = [item for item in current if (item.miner_id, item.kind) not in queued]
        self._items.extend(fresh)
        self._trim()
        if self._items and self._waiter is not None:
            self._waiter.set()
            self._waiter = None
        return len(fresh)

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
