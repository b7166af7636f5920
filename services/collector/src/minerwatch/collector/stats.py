"""The collector's own health for ``GET /metrics`` (``shared.metrics``): polls, failures by
what happened, how late polls start, the fleet's size and the outbox."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from minerwatch.shared.metrics import POLL_FAILURE_REASONS, stat
from minerwatch.shared.schemas import ServiceMetric

if TYPE_CHECKING:  # the fleet imports this module: no import cycle through the scheduler
    from minerwatch.collector.outbox import Outbox
    from minerwatch.collector.scheduler import PollStats

#: A ``PollError`` reason's first words (drivers/reading.py) -> the metric's label.
_BEGINNINGS: tuple[tuple[str, str], ...] = (
    ("timeout", "timeout"),
    ("refused", "refused"),
    ("unreachable", "unreachable"),
    ("closed", "closed"),
    ("reset", "closed"),
    ("http ", "http"),
    ("bad reply", "bad_reply"),
    ("internal error", "internal"),
)


def failure_reason(reason: str) -> str:
    """The label of a failed poll's reason: one of ``POLL_FAILURE_REASONS``."""
    text = reason.lstrip().lower()
    for beginning, label in _BEGINNINGS:
        if text.startswith(beginning):
            return label
    return "other"


def collector_stats(polls: PollStats, failures: Counter[str], miners: int,
                    outbox: Outbox) -> list[ServiceMetric]:
    """What the collector publishes on its stats topic; ``failures`` by label."""
    return [
        stat("minerwatch_collector_polls_total", polls.completed),
        *(stat("minerwatch_collector_poll_failures_total", failures[reason], reason=reason)
          for reason in POLL_FAILURE_REASONS),
        stat("minerwatch_collector_poll_lateness_seconds", polls.lateness_sum,
             count=polls.started),
        stat("minerwatch_collector_miners", miners),
        stat("minerwatch_collector_outbox_messages", len(outbox)),
        stat("minerwatch_collector_outbox_dropped_total", outbox.dropped),
    ]
