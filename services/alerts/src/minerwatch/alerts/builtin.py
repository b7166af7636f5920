"""The pieces of state the built-in rules keep per miner: pure, the clock passed in.

``Hold`` is the state machine every condition rule shares (the same semantics as the free
threshold rules in ``rules``): the condition must hold for ``for_s`` from when it began
before it FIRES; a reading where it does not hold restarts the hold; a firing alert
RESOLVES once its clear condition is met (for temperatures: below the threshold by the
hysteresis band; otherwise simply the condition no longer holding); after a firing the
same (miner, rule) fires again only once ``cooldown_s`` has passed since that firing.
No reading (``None``) changes nothing.

``RejectWindow`` sums share-counter deltas over a time window, surviving counter resets;
``ShareWatch`` notices accepted shares that stopped rising and a hashrate frozen in place.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

Transition = Literal["fire", "resolve"]

#: Reject-window entries kept per miner at most, whatever the window and poll rate.
MAX_WINDOW_ENTRIES = 4096


@dataclass(slots=True)
class Hold:
    """One (miner, rule) condition: holding since when, firing or not, fired when."""

    firing: bool = False
    #: When the current run of the condition began (None: it does not hold now).
    since: float | None = None
    #: When it last fired: the cooldown counts from here.
    fired_at: float | None = None
    #: When the condition of the firing alert began (kept for its resolve event).
    began: float | None = None

    def step(self, holds: bool, clears: bool, now: float, for_s: float, cooldown_s: float,
             began: float | None = None) -> Transition | None:
        """One reading at ``now``: whether the condition holds, whether a firing alert
        clears; ``began`` says when the condition started when the reading knows it
        (a status's ``since``), else the first reading that held counts."""
        if self.firing:
            if clears:
                self.firing = False
                self.since = None
                return "resolve"
            return None
        if not holds:
            self.since = None
            return None
        if self.since is None:
            self.since = began if began is not None else now
        if now - self.since < for_s:
            return None
        if self.fired_at is not None and now - self.fired_at < cooldown_s:
            return None
        self.firing = True
        self.fired_at = now
        self.began = self.since
        return "fire"

    def restore(self, fired_at: float, since: float | None) -> None:
        """Firing since a retained event said so."""
        self.firing = True
        self.fired_at = fired_at
        self.since = since if since is not None else fired_at
        self.began = self.since


def counter_delta(previous: int | None, current: int | None) -> int | None:
    """How much a share counter rose since the last reading; a counter that went down
    restarted from zero (a reboot), so all of ``current`` is new. None: no reading."""
    if current is None or previous is None:
        return None
    return current - previous if current >= previous else current


@dataclass(slots=True)
class RejectWindow:
    """Accepted and rejected share deltas of the last ``window_s`` seconds."""

    entries: deque[tuple[float, int, int]] = field(
        default_factory=lambda: deque(maxlen=MAX_WINDOW_ENTRIES))
    accepted: int = 0
    rejected: int = 0
    last_accepted: int | None = None
    last_rejected: int | None = None

    def add(self, now: float, accepted: int | None, rejected: int | None,
            window_s: float) -> None:
        d_acc = counter_delta(self.last_accepted, accepted)
        d_rej = counter_delta(self.last_rejected, rejected)
        if accepted is not None:
            self.last_accepted = accepted
        if rejected is not None:
            self.last_rejected = rejected
        if d_acc is not None and d_rej is not None and (d_acc or d_rej):
            if len(self.entries) == self.entries.maxlen:
                _, old_acc, old_rej = self.entries[0]
                self.accepted -= old_acc
                self.rejected -= old_rej
            self.entries.append((now, d_acc, d_rej))
            self.accepted += d_acc
            self.rejected += d_rej
        horizon = now - window_s
        while self.entries and self.entries[0][0] <= horizon:
            _, old_acc, old_rej = self.entries.popleft()
            self.accepted -= old_acc
            self.rejected -= old_rej

    @property
    def total(self) -> int:
        return self.accepted + self.rejected

    def reject_pct(self) -> float | None:
        total = self.total
        return self.rejected / total * 100.0 if total else None


@dataclass(slots=True)
class ShareWatch:
    """When accepted shares last rose, and how many samples in a row showed one hashrate.

    ``shares_moved`` and ``hashrate_moved`` say whether the latest sample changed the
    value an earlier one showed: the evidence that clears a stall (a first sample, after
    a restart, proves nothing either way)."""

    accepted: int | None = None
    #: When ``accepted`` last changed (or was first seen).
    rose_at: float | None = None
    hashrate: float | None = None
    same_count: int = 0
    same_since: float | None = None
    shares_moved: bool = False
    hashrate_moved: bool = False

    def add(self, now: float, accepted: int | None, hashrate: float) -> None:
        self.shares_moved = False
        if accepted is not None:
            if self.accepted is None or accepted != self.accepted:
                # Up, or down after a reboot: either way the counter moved.
                self.shares_moved = self.accepted is not None
                self.rose_at = now
            self.accepted = accepted
        self.hashrate_moved = self.hashrate is not None and hashrate != self.hashrate
        if hashrate > 0 and hashrate == self.hashrate:
            self.same_count += 1
        else:
            self.same_count = 1
            self.same_since = now
        self.hashrate = hashrate

    def reset(self) -> None:
        """Forget the runs (the miner stopped mining: not a stall)."""
        self.accepted = None
        self.rose_at = None
        self.hashrate = None
        self.same_count = 0
        self.same_since = None
        self.shares_moved = self.hashrate_moved = False
