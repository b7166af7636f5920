"""Counting and logging bad input without flooding the log.

Every service hands each message it cannot use to ``RejectLog.note``. The first bad
message of a kind in a window is logged at once with its reason; the rest of the window
is counted, and the count is logged when the window ends, by a timer, whether or not
another bad message comes. ``counts`` holds the totals per kind since start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable


class RejectLog:
    """Rate-limited warnings about bad input, per kind (a topic name, ``ws``, ...)."""

    def __init__(self, logger: logging.Logger, *, what: str = "message",
                 window_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.what = what
        self.window_s = window_s
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self._window_start: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def note(self, kind: str, reason: str) -> None:
        """One bad input of ``kind``; ``reason`` is one line (it names the topic)."""
        now = self.clock()
        started = self._window_start.get(kind)
        if started is not None and now - started < self.window_s:
            self.counts[kind] += 1
            self._suppressed[kind] += 1
            self._schedule_flush(started + self.window_s - now)
            return
        self._report(kind)  # what the last window held back, before the new line
        self.counts[kind] += 1
        self._window_start[kind] = now
        self.logger.warning("bad %s %s ignored: %s", kind, self.what, reason)

    def flush(self) -> None:
        """Log the counts held back so far (the timer calls this at each window's end)."""
        self._timer = None
        for kind in list(self._suppressed):
            self._report(kind)

    def _report(self, kind: str) -> None:
        held = self._suppressed.pop(kind, 0)
        if held:
            self.logger.warning("%d more bad %s %ss ignored in %g s (%d in all)", held,
                                kind, self.what, self.window_s, self.counts[kind])

    def _schedule_flush(self, delay: float) -> None:
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a unit test): the next note after the window reports
        self._timer = loop.call_later(max(delay, 0.0), self.flush)

    def close(self) -> None:
        """Log what is held back and stop the timer (at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
        self.flush()
