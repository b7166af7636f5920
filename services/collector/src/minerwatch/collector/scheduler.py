"""The polling loop: every miner on a fixed cadence, results into the outbox.

One scheduler serves the whole fleet: a heap of the idle miners' due times, woken at most
every ``TICK_S``, starts each due poll as a task (at most ``concurrency`` at once; the rest
wait their turn in order) — no sleeping task per miner. Each miner keeps a fixed phase in
the interval (configured miners are spread evenly over it, so 1000 miners do not all fire
at t=0; miners added later are spread by the golden ratio) and is polled at
``phase + k * interval``: a slow poll does not push the next one later (no
interval+duration drift); a poll that overruns its slot skips the ticks it missed. Each
poll is bounded by ``timeout_s``. ``stats`` says how late
polls start; the log says so once a minute when the fleet is more than this machine
keeps up with.

Miner ids (one topic level): the configured name, else the MAC address the miner reports
at its first good poll, else a slug of host and port. Until a miner has answered once, its
id is the name or the host-port slug; if it then turns out to have a MAC (and no name), the
id switches to the MAC for good and the offline status published under the slug meanwhile
is cleared, so no phantom miner stays behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from minerwatch.collector.drivers import Driver, PollError, Reading, create_driver
from minerwatch.collector.drivers.reading import timeout_reason
from minerwatch.collector.health import MinerHealth
from minerwatch.collector.identity import Identities
from minerwatch.collector.live import with_live_push
from minerwatch.collector.publisher import Outbox, Outgoing
from minerwatch.shared.config import CollectorConfig, endpoint
from minerwatch.shared.schemas import MinerInfo, MinerStatus, format_ts
from minerwatch.shared.topics import is_miner_id, mac_miner_id, slugify

log = logging.getLogger("minerwatch.collector.poller")

#: Drivers bound their own time; this guard only catches a driver that does not.
TIMEOUT_GRACE_S = 1.0
#: Polls due within one tick start together: fewer wake-ups, at most this much later.
TICK_S = 0.005
#: What the outbox holds while the broker is away, unless ``buffer_messages`` says.
BUFFER_S = 600.0
MIN_BUFFER = 1000
#: A poll that starts this much after its due time counts as late in the log.
LATE_S = 1.0
REPORT_EVERY_S = 60.0
_GOLDEN = (math.sqrt(5) - 1) / 2


def host_port_id(host: str, port: int) -> str:
    return slugify(f"{host}-{port}")


def miner_id_for(name: str | None, reading: Reading | None, host: str, port: int) -> str:
    """The configured name, else the reported MAC, else the host-port slug."""
    if name:
        return name
    if reading is not None and reading.mac:
        mac_id = mac_miner_id(reading.mac)
        if mac_id:
            return mac_id
    return host_port_id(host, port)


def utc_now_ts() -> str:
    return format_ts(datetime.now(UTC))


def buffer_messages(config: CollectorConfig, miners: int) -> int:
    """The outbox bound: ``buffer_messages``, else ``BUFFER_S`` of samples from every
    miner plus room for a status and info change each (at least ``MIN_BUFFER``)."""
    if config.buffer_messages is not None:
        return config.buffer_messages
    per_miner = math.ceil(BUFFER_S / config.poll_interval_s) + 3
    return max(MIN_BUFFER, miners * per_miner)


@dataclass(slots=True)
class MinerSlot:
    """One configured miner: its driver, its health and what was last published for it."""

    driver: Driver
    name: str | None
    health: MinerHealth
    miner_id: str
    id_decided: bool = False
    info: MinerInfo | None = None
    published_status_ids: set[str] = field(default_factory=set)
    #: Other addresses this miner answered at (identity.py); tried when this one fails.
    alternates: list[Driver] = field(default_factory=list)
    #: Removed, or merged into another slot with the same MAC: no more polls.
    retired: bool = False

    @property
    def where(self) -> str:
        return f"{self.driver.name}://{self.driver.host}:{self.driver.port}"


class PollStats:
    """What the scheduler did, for the log and the benchmarks."""

    WINDOW = 1 << 16

    def __init__(self) -> None:
        self.started = 0
        self.completed = 0
        self.failed = 0
        #: Ticks a miner missed because its previous poll was still running (or it
        #: waited that long for its turn).
        self.skipped = 0
        #: Polls that started ``LATE_S`` or more after their due time.
        self.late = 0
        #: Seconds between due time and start, most recent polls.
        self.lateness: deque[float] = deque(maxlen=self.WINDOW)

    def percentile(self, fraction: float) -> float | None:
        """Of the recent lateness values; None before the first poll."""
        if not self.lateness:
            return None
        ordered = sorted(self.lateness)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Poller:
    def __init__(self, config: CollectorConfig, outbox: Outbox) -> None:
        self.config = config
        self.outbox = outbox
        self.slots: list[MinerSlot] = []
        self.identities = Identities(self.slots, outbox)
        self.stats = PollStats()
        # Idle miners by due time: (due, order, slot). A miner whose poll runs or waits
        # for its turn is not in it; it comes back when the poll ends.
        self._queue: list[tuple[float, int, MinerSlot]] = []
        self._order = itertools.count()
        self._waiting: deque[tuple[MinerSlot, float]] = deque()  # due, no free poll yet
        self._active = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeup: asyncio.Future[None] | None = None
        self._wake_at = math.inf  # when the sleeping scheduler wakes next
        self._running = False
        self._added = 0
        for miner in config.miners:
            where = endpoint(miner.url)
            name = miner.name or where.name
            if name is not None and not is_miner_id(name):  # ?name= is not validated upstream
                log.warning("%s: name %r is not a valid miner id; using %r",
                            miner.url, name, slugify(name))
                name = slugify(name)
            driver = self._make_driver(where.driver, where.host, where.port)
            self.slots.append(
                MinerSlot(
                    driver=driver,
                    name=name,
                    health=MinerHealth(offline_after=config.offline_after),
                    # Known now unless a MAC may decide it at the first good poll.
                    miner_id=miner_id_for(name, None, where.host, where.port),
                    id_decided=name is not None,
                )
            )
        self._warn_duplicate_ids()
        self._resize_outbox()

    def _make_driver(self, kind: str, host: str, port: int) -> Driver:
        keepalive_s = self.config.poll_interval_s + self.config.timeout_s
        driver = create_driver(kind, host, port, self.config.timeout_s, keepalive_s)
        if not self.config.live_push:
            return driver
        return with_live_push(driver, retry_s=keepalive_s)  # AxeOS v2.14+: WebSocket

    def add(self, kind: str, host: str, port: int, mac: str | None = None) -> MinerSlot | None:
        """Poll a miner found while running (discovery), from now on; None when it is
        polled already (same address, or same MAC: then it is an alternate address)."""
        if self.identities.known((kind, host, port), mac,
                                 lambda: self._make_driver(kind, host, port)):
            return None
        slot = MinerSlot(
            driver=self._make_driver(kind, host, port),
            name=None,
            health=MinerHealth(offline_after=self.config.offline_after),
            miner_id=miner_id_for(None, None, host, port),
        )
        self.slots.append(slot)
        log.info("added %s", slot.where)
        self._resize_outbox()
        if self._running:
            # Spread what discovery brings in over the interval, however many at once.
            self._added += 1
            offset = (self._added * _GOLDEN) % 1.0 * self.config.poll_interval_s
            self._push(slot, asyncio.get_running_loop().time() + offset)
        return slot

    async def remove(self, slot: MinerSlot) -> None:
        """Stop polling ``slot`` and close its drivers; a poll under way ends unheard."""
        slot.retired = True
        if slot in self.slots:
            self.slots.remove(slot)
        self._resize_outbox()
        for driver in (slot.driver, *slot.alternates):
            with contextlib.suppress(Exception):
                await driver.aclose()

    def _warn_duplicate_ids(self) -> None:
        seen: dict[str, str] = {}
        for slot in self.slots:
            if slot.miner_id in seen and slot.id_decided:
                log.warning("%s and %s share the miner id %r: their topics will mix",
                            seen[slot.miner_id], slot.where, slot.miner_id)
            seen[slot.miner_id] = slot.where

    def _resize_outbox(self) -> None:
        self.outbox.maxsize = buffer_messages(self.config, len(self.slots))

    # -- the scheduler ------------------------------------------------------------------

    async def run(self) -> None:
        """Poll every miner forever (until cancelled); drivers are closed on the way out."""
        if not self.slots:
            log.warning("no miners configured: set MINERWATCH_MINERS or [[collector.miners]]")
        log.info("polling %d miner(s) every %g s (timeout %g s, concurrency %d)",
                 len(self.slots), self.config.poll_interval_s, self.config.timeout_s,
                 self.config.concurrency)
        loop = asyncio.get_running_loop()
        start = loop.time()
        interval = self.config.poll_interval_s
        for index, slot in enumerate(self.slots):
            self._push(slot, start + interval * index / len(self.slots))
        self._running = True
        next_report = start + REPORT_EVERY_S
        reported = (0, 0, 0)
        try:
            while True:
                now = loop.time()
                self._start_due(now)
                if now >= next_report:
                    reported = self._report(reported)
                    next_report = now + REPORT_EVERY_S
                wake_at = min(self._queue[0][0], next_report) if self._queue else next_report
                await self._sleep_until(max(wake_at, now + TICK_S))
        finally:
            self._running = False
            self._waiting.clear()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.aclose()

    async def aclose(self) -> None:
        for slot in self.slots:
            for driver in (slot.driver, *slot.alternates):
                with contextlib.suppress(Exception):
                    await driver.aclose()

    def _push(self, slot: MinerSlot, due: float) -> None:
        heapq.heappush(self._queue, (due, next(self._order), slot))
        if due + TICK_S < self._wake_at and self._wakeup is not None:
            _resolve(self._wakeup)  # due well before the scheduler would look again

    def _start_due(self, now: float) -> None:
        queue = self._queue
        while queue and queue[0][0] <= now:
            due, _, slot = heapq.heappop(queue)
            if slot.retired:
                continue
            if self._active < self.config.concurrency:
                self._launch(slot, due, now)
            else:
                self._waiting.append((slot, due))

    def _launch(self, slot: MinerSlot, due: float, now: float) -> None:
        self._active += 1
        stats = self.stats
        stats.started += 1
        late = now - due
        stats.lateness.append(late)
        if late >= LATE_S:
            stats.late += 1
        task = asyncio.get_running_loop().create_task(self._poll(slot, due))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll(self, slot: MinerSlot, due: float) -> None:
        try:
            await self.poll_once(slot)
        finally:
            self._active -= 1
            self.stats.completed += 1
            if self._running:
                now = asyncio.get_running_loop().time()
                if not slot.retired:
                    self._push(slot, self._next_due(slot, due, now))
                while self._waiting and self._active < self.config.concurrency:
                    waiting, waiting_due = self._waiting.popleft()
                    if not waiting.retired:
                        self._launch(waiting, waiting_due, now)

    def _next_due(self, slot: MinerSlot, due: float, now: float) -> float:
        """The next tick on the miner's phase after ``now``: the ones a long poll (or a
        long wait for its turn) ran over are skipped, not made up."""
        interval = self.config.poll_interval_s
        next_due = due + interval
        if next_due <= now:
            missed = int((now - next_due) // interval) + 1
            self.stats.skipped += missed
            next_due += missed * interval
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s: skipped %d poll(s) that could not start on time",
                          slot.where, missed)
        return next_due

    async def _sleep_until(self, when: float) -> None:
        loop = asyncio.get_running_loop()
        wakeup = self._wakeup = loop.create_future()
        self._wake_at = when
        timer = loop.call_at(when, _resolve, wakeup)
        try:
            await wakeup
        finally:
            timer.cancel()
            self._wakeup = None
            self._wake_at = math.inf

    def _report(self, before: tuple[int, int, int]) -> tuple[int, int, int]:
        stats = self.stats
        now = (stats.started, stats.late, stats.skipped)
        started, late, skipped = (a - b for a, b in zip(now, before, strict=True))
        if late or skipped:
            log.warning(
                "the last %g s: %d of %d polls started %g s or more late and %d were "
                "skipped (still running when due again): %d miners every %g s is more "
                "than this collector keeps up with (raise collector.concurrency, "
                "lengthen the interval or split the fleet)",
                REPORT_EVERY_S, late, started, LATE_S, skipped, len(self.slots),
                self.config.poll_interval_s)
        return now

    # -- one poll -----------------------------------------------------------------------

    async def poll_once(self, slot: MinerSlot) -> None:
        """Poll one miner once and queue what changed. Never raises (but on cancel)."""
        ts = utc_now_ts()
        try:
            async with asyncio.timeout(self.config.timeout_s + TIMEOUT_GRACE_S):
                reading = await slot.driver.fetch()
        except PollError as exc:
            self._failed(slot, ts, exc.reason)
        except TimeoutError:
            self._failed(slot, ts, timeout_reason(self.config.timeout_s))
        except Exception as exc:  # a driver bug must not stop the other miners
            if not slot.retired:
                log.exception("%s: unexpected error while polling", slot.where)
            self._failed(slot, ts, f"internal error: {type(exc).__name__}")
        else:
            self._succeeded(slot, ts, reading)

    def _failed(self, slot: MinerSlot, ts: str, reason: str) -> None:
        if slot.retired:  # removed while this poll ran
            return
        self.stats.failed += 1
        log.debug("%s: poll failed: %s", slot.where, reason)
        status = slot.health.failed(ts, reason)
        if status is not None:
            log.warning("%s (%s) is offline: %s", slot.miner_id, slot.where, reason)
            self._publish_status(slot, status)
        self.identities.failed(slot)  # the next poll tries another known address

    def _succeeded(self, slot: MinerSlot, ts: str, reading: Reading) -> None:
        if slot.retired:
            return
        owner = self.identities.claim(slot, reading)  # one miner per MAC
        if owner is None:
            return  # polled through another address already
        slot = owner
        if not slot.id_decided:
            self._decide_id(slot, reading)
        driver = slot.driver
        info = reading.info(slot.miner_id, driver.name, driver.host, driver.port)
        if info != slot.info:
            slot.info = info
            self.outbox.put(Outgoing.of(slot.miner_id, info))
        status = slot.health.succeeded(ts, reading.is_mining)
        if status is not None:
            log.info("%s (%s) is %s", slot.miner_id, slot.where, status.state)
            self._publish_status(slot, status)
        self.outbox.put(Outgoing.of(slot.miner_id, reading.sample(slot.miner_id, ts)))

    def _decide_id(self, slot: MinerSlot, reading: Reading) -> None:
        driver = slot.driver
        slot.miner_id = miner_id_for(slot.name, reading, driver.host, driver.port)
        slot.id_decided = True
        for stale in slot.published_status_ids - {slot.miner_id}:
            self.outbox.put(Outgoing.clear(stale, "status"))
        slot.published_status_ids &= {slot.miner_id}

    def _publish_status(self, slot: MinerSlot, status: MinerStatus) -> None:
        slot.published_status_ids.add(slot.miner_id)
        self.outbox.put(Outgoing.of(slot.miner_id, status))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
