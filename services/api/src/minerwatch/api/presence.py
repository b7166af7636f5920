"""Whether what is known about a miner is live: the one rule behind every state shown.

A miner is ``stale`` when the collector is not ``online`` (nobody polls it, whatever its
retained status says), or when its latest sample is older than ``STALE_POLLS`` poll
intervals while its status says ``online`` or ``idle`` (the collector runs but this miner's
data stopped coming). Stale since its ``last_seen``: the last time live data came. An
``offline`` miner (collector online) stays ``offline`` since its status's ``since``; a
miner with neither status nor sample is ``unknown``.

``last_seen`` is the latest of the status's ``last_seen`` and the latest sample's ``ts``.

A forgotten miner (``miners.forgotten_ms``) is left out of the fleet until something newer
than the forget is known about it, or a retained topic of it is on the broker again (the
forget cleared them all, so any there now came after it).

Times are epoch milliseconds; everything here is pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

PresenceState = Literal["online", "idle", "offline", "stale", "unknown"]

#: A sample older than this many poll intervals is no longer live.
STALE_POLLS = 3


def stale_after_s(poll_interval_s: float) -> float:
    return STALE_POLLS * poll_interval_s


@dataclass(frozen=True, slots=True)
class Presence:
    """The state to show, since when (None: not known), and when live data last came."""

    state: PresenceState
    since_ms: int | None
    last_seen_ms: int | None


def latest(*moments: int | None) -> int | None:
    """The latest of the moments that are known, or None."""
    known = [moment for moment in moments if moment is not None]
    return max(known) if known else None


@dataclass(frozen=True, slots=True)
class Observed:
    """What is known of one miner: its status (state, since, last_seen) and latest sample."""

    status_state: str | None = None
    status_since_ms: int | None = None
    status_last_seen_ms: int | None = None
    sample_ts_ms: int | None = None
    is_mining: bool = True


def presence(seen: Observed, *, collector_online: bool, now_ms: int,
             stale_after_ms: int) -> Presence:
    """The miner's state by the rule in the module docstring."""
    last_seen = latest(seen.status_last_seen_ms, seen.sample_ts_ms)
    if seen.status_state is None and seen.sample_ts_ms is None:
        return Presence("unknown", None, last_seen)
    stale_since = last_seen if last_seen is not None else seen.status_since_ms
    if not collector_online:
        return Presence("stale", stale_since, last_seen)
    if seen.status_state == "offline":
        return Presence("offline", seen.status_since_ms, last_seen)
    # Without a sample yet, the status's own moments say whether the collector still reports.
    reference = seen.sample_ts_ms if seen.sample_ts_ms is not None else stale_since
    if reference is None or now_ms - reference > stale_after_ms:
        return Presence("stale", stale_since, last_seen)
    if seen.status_state == "online":
        return Presence("online", seen.status_since_ms, last_seen)
    if seen.status_state == "idle":
        return Presence("idle", seen.status_since_ms, last_seen)
    # Samples but no status (yet): the sample says whether it mines.
    return Presence("online" if seen.is_mining else "idle", None, last_seen)


def forgotten(forgotten_ms: int | None, known_ms: Iterable[int | None], *,
              on_broker: bool) -> bool:
    """Whether a forgotten miner stays out of the fleet: forgotten after everything known
    about it (``known_ms``), and none of its retained topics back on the broker."""
    if forgotten_ms is None or on_broker:
        return False
    newest = latest(*known_ms)
    return newest is None or forgotten_ms > newest
