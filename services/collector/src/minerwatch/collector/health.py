"""Per-miner status as a pure state machine: poll results in, status changes out.

- The state is unknown until the first poll result; nothing is published before that.
- A good poll makes the miner ``online`` (hashing) or ``idle`` (reachable, not hashing).
- Failures count up; only ``offline_after`` consecutive failures make it ``offline``,
  with the last failure's reason. One blip never does.
- A status is returned (to publish) only when the state changes.

``since`` is when the current state began: the first good poll for online/idle, and the
first failed poll of the streak for offline (the miner has been unreachable since then,
even though it is declared offline only at the ``offline_after``-th failure).
"""

from __future__ import annotations

from dataclasses import dataclass

from minerwatch.shared.schemas import MinerState, MinerStatus

IDLE_REASON = "not hashing"


@dataclass(slots=True)
class MinerHealth:
    offline_after: int = 3
    state: MinerState | None = None
    reason: str | None = None
    since: str | None = None
    last_seen: str | None = None
    failures: int = 0
    first_failure: str | None = None

    def succeeded(
        self, ts: str, is_mining: bool, idle_reason: str | None = None
    ) -> MinerStatus | None:
        """A good poll at ``ts``; returns the status to publish when the state changed."""
        self.failures = 0
        self.first_failure = None
        self.last_seen = ts
        if is_mining:
            return self._enter("online", None, ts)
        return self._enter("idle", idle_reason or IDLE_REASON, ts)

    def failed(self, ts: str, reason: str) -> MinerStatus | None:
        """A failed poll at ``ts``; returns the offline status when this failure is the one
        that crosses ``offline_after``."""
        self.failures += 1
        if self.first_failure is None:
            self.first_failure = ts
        if self.failures < self.offline_after:
            return None
        return self._enter("offline", reason, self.first_failure)

    def status(self) -> MinerStatus:
        if self.state is None or self.since is None:
            raise ValueError("no status before the first poll result")
        return MinerStatus(
            state=self.state,
            reason=self.reason,
            since=self.since,
            last_seen=self.last_seen,
            failures=self.failures,
        )

    def _enter(self, state: MinerState, reason: str | None, since: str) -> MinerStatus | None:
        if state == self.state:
            return None
        self.state, self.reason, self.since = state, reason, since
        return self.status()
