"""Retry delays: the broker link and the database writer wait the same way."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delays(first: float, limit: float) -> Callable[[], float]:
    """Successive retry delays: doubling from ``first`` up to ``limit``, with full jitter
    in the upper half so a restarted broker or database is not hit by everyone at once."""
    current = first

    def next_delay() -> float:
        nonlocal current
        delay = current * random.uniform(0.5, 1.0)
        current = min(current * 2, limit)
        return delay

    return next_delay
