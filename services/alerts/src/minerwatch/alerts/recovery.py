"""Restarting a stalled miner (``[alerts.stalled] restart``, off by default).

When the ``stalled`` alert fires for a miner whose rule (overrides applied) has
``restart`` set, a ``restart`` Command (``by`` ``alerts``, a fresh id, ``ts`` now) is
asked for it, at most once per ``restart_backoff_s`` per miner: a miner that stalls again
soon after is left alone, with one log line saying so. The service publishes it on
``{base}/miners/{miner_id}/command`` (QoS 1, not retained); the collector answers on
``command/result`` like any command, which the store keeps: every restart is audited.

Only a firing the service sees happen asks: a firing alert recovered at start or
republished on reconnect does not. ``Restarts`` decides and remembers, and does no I/O.
Memory is bounded: what it remembers of a miner goes once the backoff has passed (so it
holds at most the miners the engine keeps), and a restart the broker did not take yet
(it was away) waits for the next session for at most ``STALE_S``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from minerwatch.shared.config import AlertsConfig, StalledRule
from minerwatch.shared.schemas import AlertEvent, Command, format_ts, parse_ts

log = logging.getLogger("minerwatch.alerts")

RESTART_BY = "alerts"
#: A restart not handed to the broker within this many seconds is dropped: the miner
#: stalled that long ago may be fine by now, and its alert fires again if not.
STALE_S = 120.0


def restart_command(miner_id: str, now: float) -> Command:
    return Command(id=uuid.uuid4().hex, miner_id=miner_id, action="restart", by=RESTART_BY,
                   ts=format_ts(datetime.fromtimestamp(now, UTC)))


def restarts_configured(alerts: AlertsConfig) -> bool:
    """Whether any miner may be restarted: the rule's table or an override says so."""
    return alerts.stalled.restart or any(
        bool((override.stalled or {}).get("restart")) for override in alerts.overrides)


@dataclass(frozen=True, slots=True)
class Asked:
    """When a restart of one miner was asked, and the backoff it was asked under."""

    at: float
    backoff_s: float


class Restarts:
    """The restarts to ask for (``on_events``), to publish (``due``) and asked lately."""

    def __init__(self) -> None:
        self._asked: dict[str, Asked] = {}
        self._pending: dict[str, Command] = {}

    @property
    def remembered(self) -> int:
        """Miners whose backoff still runs (what memory holds)."""
        return len(self._asked)

    def on_events(self, events: Iterable[AlertEvent], rule_of: Callable[[str], StalledRule],
                  now: float) -> list[Command]:
        """The restarts new events ask for: a firing ``stalled`` with ``restart`` on,
        outside the miner's backoff. ``rule_of`` gives a miner's rule (overrides
        applied)."""
        asked = []
        for event in events:
            if event.rule != "stalled" or event.state != "firing":
                continue
            rule = rule_of(event.miner_id)
            if rule.restart:
                command = self.ask(event.miner_id, rule.restart_backoff_s, now)
                if command is not None:
                    asked.append(command)
        return asked

    def ask(self, miner_id: str, backoff_s: float, now: float) -> Command | None:
        """A restart of ``miner_id``, due until ``sent``; None within its backoff."""
        self.prune(now)
        last = self._asked.get(miner_id)
        if last is not None:
            log.info("stalled miner %s not restarted: a restart was asked %.0f s ago "
                     "(restart_backoff_s %.0f)", miner_id, now - last.at, last.backoff_s)
            return None
        self._asked[miner_id] = Asked(now, backoff_s)
        command = restart_command(miner_id, now)
        self._pending[miner_id] = command
        log.info("stalled miner %s: restart asked (command %s)", miner_id, command.id)
        return command

    def due(self, now: float) -> list[Command]:
        """The restarts to publish now (each stays until ``sent``); one waiting longer
        than ``STALE_S`` is dropped instead, with a line."""
        self.prune(now)
        for miner_id, command in list(self._pending.items()):
            if now - parse_ts(command.ts).timestamp() > STALE_S:
                del self._pending[miner_id]
                log.warning("restart of stalled miner %s dropped: the broker did not take "
                            "it within %.0f s", miner_id, STALE_S)
        return list(self._pending.values())

    def sent(self, command: Command) -> None:
        """The broker took it (or refused it for good): no longer due."""
        if self._pending.get(command.miner_id) is command:
            del self._pending[command.miner_id]

    def forget(self, miner_id: str) -> None:
        """A forgotten miner is not restarted (its backoff stays: no restart loop)."""
        self._pending.pop(miner_id, None)

    def prune(self, now: float) -> None:
        """Forget the miners whose backoff has passed."""
        for miner_id in [m for m, a in self._asked.items() if now - a.at >= a.backoff_s]:
            del self._asked[miner_id]
