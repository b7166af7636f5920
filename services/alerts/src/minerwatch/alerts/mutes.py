"""Mutes: which alerts are notified to no one, for now.

A ``Mute`` (retained on ``{base}/mutes/{id}``) matches alerts of its ``miner_id`` (None:
every miner) and its ``rule`` (None: every rule) until its ``until``. Muted alerts are still
published and stored; only their notification is held back. The engine ``apply``s each
retained mute, ``lift``s one on an empty payload, and clears (with an empty retained
payload) what ``expired`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from minerwatch.shared.schemas import Mute, parse_ts

#: Mutes kept at most: past it a new one is refused (a flood of retained mutes must not
#: grow the process without end). Replacing a mute already held is always accepted.
MAX_MUTES = 10_000

#: Which mutes one (miner, rule) pair can match: its own, the miner's, the rule's, all.
Key = tuple[str | None, str | None]


@dataclass(frozen=True, slots=True)
class Held:
    mute: Mute
    until: float  # epoch seconds


class Mutes:
    """The mutes in force, indexed so ``muted`` looks at four keys, not every mute."""

    def __init__(self, max_mutes: int = MAX_MUTES) -> None:
        self.max_mutes = max_mutes
        self._held: dict[str, Held] = {}
        self._by_key: dict[Key, set[str]] = {}

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, mute_id: object) -> bool:
        return mute_id in self._held

    def apply(self, mute: Mute) -> str | None:
        """Hold ``mute`` (replacing one with its id); None, or why it was refused (one
        line). An already expired mute is held too, so ``expired`` hands it back to be
        cleared."""
        try:
            until = parse_ts(mute.until).timestamp()
        except (ValueError, OverflowError) as exc:
            return f"mute {mute.id}: bad until {mute.until!r}: {exc}"
        if mute.id not in self._held and len(self._held) >= self.max_mutes:
            return f"mute {mute.id}: refused, {self.max_mutes} mutes are already held"
        self.lift(mute.id)
        self._held[mute.id] = Held(mute, until)
        self._by_key.setdefault((mute.miner_id, mute.rule), set()).add(mute.id)
        return None

    def lift(self, mute_id: str) -> bool:
        """Forget mute ``mute_id``; whether it was held."""
        held = self._held.pop(mute_id, None)
        if held is None:
            return False
        key = (held.mute.miner_id, held.mute.rule)
        ids = self._by_key[key]
        ids.discard(mute_id)
        if not ids:
            del self._by_key[key]
        return True

    def muted(self, miner_id: str, rule: str, now: float) -> bool:
        """Whether a mute in force at ``now`` (epoch seconds) matches this alert."""
        for key in ((miner_id, rule), (miner_id, None), (None, rule), (None, None)):
            for mute_id in self._by_key.get(key, ()):
                if now < self._held[mute_id].until:
                    return True
        return False

    def expired(self, now: float) -> list[str]:
        """The ids of the mutes whose ``until`` has passed at ``now``, forgotten here:
        each is handed out once, for the caller to clear on the broker."""
        gone = [mute_id for mute_id, held in self._held.items() if held.until <= now]
        for mute_id in gone:
            self.lift(mute_id)
        return gone

    def active(self, now: float) -> list[Mute]:
        """The mutes in force at ``now``, soonest to end first."""
        held = sorted((h for h in self._held.values() if now < h.until),
                      key=lambda h: h.until)
        return [h.mute for h in held]
