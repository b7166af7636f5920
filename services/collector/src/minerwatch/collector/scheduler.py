"""The polling schedule: every miner of the fleet on a fixed cadence.

One scheduler serves the whole fleet: a heap of the idle miners' due times, woken at most
every ``TICK_S``, starts each due poll as a task (at most ``concurrency`` at once; the rest
wait their turn in order) — no sleeping task per miner. Each miner keeps a fixed phase in
the interval (configured miners are spread evenly over it, so 1000 miners do not all fire
at t=0; miners added later are spread by the golden ratio) and is polled at
``phase + k * interval``: a slow poll does not push the next one later (no
interval+duration drift); a poll that overruns its slot skips the ticks it missed. What a
poll does and what becomes of its result is the fleet's (``FleetRegistry.poll``). ``stats`` says
how late polls start; the log says so once a minute when the fleet is more than this
machine keeps up with.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from collections import deque

from minerwatch.collector.fleet import FleetRegistry, MinerSlot
from minerwatch.shared.config import CollectorConfig

log = logging.getLogger(__name__)

#: Polls due within one tick start together: fewer wake-ups, at most this much later.
TICK_S = 0.005
#: A poll that starts this much after its due time counts as late in the log.
LATE_S = 1.0
REPORT_EVERY_S = 60.0
_GOLDEN = (math.sqrt(5) - 1) / 2


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
        #: Seconds between due time and start, most recent polls; and of every poll.
        self.lateness: deque[float] = deque(maxlen=self.WINDOW)
        self.lateness_sum = 0.0

    def percentile(self, fraction: float) -> float | None:
        """Of the recent lateness values; None before the first poll."""
        if not self.lateness:
            return None
        ordered = sorted(self.lateness)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Scheduler:
    """Polls every miner of ``fleet``, those it gains while running too, on the cadence."""

    def __init__(self, config: CollectorConfig, fleet: FleetRegistry) -> None:
        self.config = config
        self.fleet = fleet
        fleet.on_added = self._added
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
        self._added_count = 0

    def _added(self, slot: MinerSlot) -> None:
        if self._running:
            # Spread what discovery brings in over the interval, however many at once.
            self._added_count += 1
            offset = (self._added_count * _GOLDEN) % 1.0 * self.config.poll_interval_s
            self._push(slot, asyncio.get_running_loop().time() + offset)

    async def run(self) -> None:
        """Poll every miner forever (until cancelled); polls under way are cancelled on
        the way out (the fleet's drivers stay open: ``FleetRegistry.aclose``)."""
        slots = list(self.fleet.slots)
        if not slots:
            log.warning("no miners configured: set MINERWATCH_MINERS or [[collector.miners]]")
        log.info("polling %d miner(s) every %g s (timeout %g s, concurrency %d)",
                 len(slots), self.config.poll_interval_s, self.config.timeout_s,
                 self.config.concurrency)
        loop = asyncio.get_running_loop()
        start = loop.time()
        interval = self.config.poll_interval_s
        for index, slot in enumerate(slots):
            self._push(slot, start + interval * index / len(slots))
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
        stats.lateness_sum += late
        if late >= LATE_S:
            stats.late += 1
        task = asyncio.get_running_loop().create_task(self._poll(slot, due))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll(self, slot: MinerSlot, due: float) -> None:
        good = False
        try:
            good = await self.fleet.poll(slot)
        finally:
            self._active -= 1
            self.stats.completed += 1
            self.stats.failed += not good
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
                REPORT_EVERY_S, late, started, LATE_S, skipped, len(self.fleet),
                self.config.poll_interval_s)
        return now


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
