"""The fleet as ``GET /api/miners`` shows it: the history's miners with the broker's
retained state on top, each in the state ``presence`` gives it, with its firing alerts.

The store may lag or be stopped; the relay's cache holds what the collector published
last. Of each part the newer one counts (the sample with the later ``ts``, the status
with the later ``since``/``last_seen``; the retained info over the stored one), so a
miner is never shown staler than what minerwatch published, nor fresher.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from minerwatch.api.history import StoredMiner, ts_text
from minerwatch.api.models import MinerEntry
from minerwatch.api.mutes import is_muted
from minerwatch.api.presence import Observed, forgotten, presence
from minerwatch.shared.db import ts_to_ms
from minerwatch.shared.schemas import AlertEvent, MinerInfo, MinerStatus, Mute, Sample


@dataclass(slots=True)
class LiveMiner:
    """A miner's retained topics in the relay's cache."""

    info: MinerInfo | None = None
    status: MinerStatus | None = None
    sample: Sample | None = None


def live_miners(payloads: Iterable[tuple[str, Sample | MinerStatus | MinerInfo]]
                ) -> dict[str, LiveMiner]:
    """The relay's cached payloads gathered per miner."""
    live: dict[str, LiveMiner] = {}
    for miner_id, payload in payloads:
        miner = live.setdefault(miner_id, LiveMiner())
        if isinstance(payload, Sample):
            miner.sample = payload
        elif isinstance(payload, MinerStatus):
            miner.status = payload
        else:
            miner.info = payload
    return live


def _status_key(status: MinerStatus) -> tuple[int, int]:
    return ts_to_ms(status.since), ts_to_ms(status.last_seen) if status.last_seen else 0


def newer_status(a: MinerStatus | None, b: MinerStatus | None) -> MinerStatus | None:
    if a is None or b is None:
        return a or b
    return b if _status_key(b) >= _status_key(a) else a


def newer_sample(a: Sample | None, b: Sample | None) -> Sample | None:
    if a is None or b is None:
        return a or b
    return b if ts_to_ms(b.ts) >= ts_to_ms(a.ts) else a


def _ts(ms: int | None) -> str | None:
    return ts_text(ms) if ms is not None else None


def observed(status: MinerStatus | None, sample: Sample | None) -> Observed:
    return Observed(
        status_state=status.state if status else None,
        status_since_ms=ts_to_ms(status.since) if status else None,
        status_last_seen_ms=ts_to_ms(status.last_seen) if status and status.last_seen else None,
        sample_ts_ms=ts_to_ms(sample.ts) if sample else None,
        is_mining=sample.is_mining if sample else True,
    )


def firing_by_miner(alerts: Iterable[AlertEvent], mutes: Sequence[Mute],
                    now_ms: int) -> dict[str, list[AlertEvent]]:
    """The firing alerts per miner, by rule, ``muted`` as the mutes say now."""
    grouped: dict[str, list[AlertEvent]] = {}
    for alert in sorted(alerts, key=lambda a: (a.miner_id, a.rule)):
        if alert.state == "firing":
            alert.muted = is_muted(mutes, alert.miner_id, alert.rule, now_ms)
            grouped.setdefault(alert.miner_id, []).append(alert)
    return grouped


def build_fleet(
    stored: Sequence[StoredMiner],
    live: dict[str, LiveMiner],
    firing: dict[str, list[AlertEvent]],
    *,
    collector_online: bool,
    now_ms: int,
    stale_after_ms: int,
) -> list[MinerEntry]:
    """Every miner of the history or the broker, sorted by id, the forgotten left out."""
    by_id = {miner.miner_id: miner for miner in stored}
    entries = []
    for miner_id in sorted(by_id.keys() | live.keys()):
        kept = by_id.get(miner_id)
        on_broker = live.get(miner_id)
        info = (on_broker.info if on_broker and on_broker.info else None) or (
            kept.info if kept else None)
        status = newer_status(kept.status if kept else None,
                              on_broker.status if on_broker else None)
        sample = newer_sample(kept.sample if kept else None,
                              on_broker.sample if on_broker else None)
        seen = observed(status, sample)
        if kept is not None and forgotten(
                kept.forgotten_ms,
                (seen.status_since_ms, seen.status_last_seen_ms, seen.sample_ts_ms),
                on_broker=on_broker is not None):
            continue
        shown = presence(seen, collector_online=collector_online, now_ms=now_ms,
                         stale_after_ms=stale_after_ms)
        entries.append(MinerEntry(
            miner_id=miner_id,
            label=info.label if info is not None and info.label else miner_id,
            state=shown.state,
            state_since=_ts(shown.since_ms),
            last_seen=_ts(shown.last_seen_ms),
            info=info,
            status=status,
            sample=sample,
            alerts=firing.get(miner_id, []),
        ))
    return entries
