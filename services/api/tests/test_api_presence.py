"""The stale rule and the forgotten rule (``presence``), and mute matching (``mutes``):
pure functions, every branch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from minerwatch.api.history import BadParameter
from minerwatch.api.models import MuteRequest
from minerwatch.api.mutes import active, is_muted, new_mute
from minerwatch.api.presence import Observed, Presence, forgotten, presence, stale_after_s
from minerwatch.shared.schemas import Mute

NOW = 1_000_000_000
STALE = 30_000


def shown(seen: Observed, *, collector_online: bool = True) -> Presence:
    return presence(seen, collector_online=collector_online, now_ms=NOW, stale_after_ms=STALE)


def test_stale_after_is_three_polls() -> None:
    assert stale_after_s(10.0) == 30.0


def test_nothing_known_is_unknown() -> None:
    assert shown(Observed()) == Presence("unknown", None, None)
    assert shown(Observed(), collector_online=False).state == "unknown"


def test_live_miner_keeps_its_status_state_and_since() -> None:
    seen = Observed("online", NOW - 600_000, NOW - 2_000, NOW - 5_000)
    assert shown(seen) == Presence("online", NOW - 600_000, NOW - 2_000)
    idle = Observed("idle", NOW - 60_000, None, NOW - 1_000, is_mining=False)
    assert shown(idle) == Presence("idle", NOW - 60_000, NOW - 1_000)


def test_collector_not_online_makes_everything_stale_since_last_seen() -> None:
    online = Observed("online", NOW - 600_000, NOW - 2_000, NOW - 5_000)
    assert shown(online, collector_online=False) == Presence("stale", NOW - 2_000, NOW - 2_000)
    offline = Observed("offline", NOW - 300_000, None, None)
    # never seen: stale since its status began
    assert shown(offline, collector_online=False) == Presence("stale", NOW - 300_000, None)


def test_old_sample_is_stale_exactly_past_three_polls() -> None:
    at_limit = Observed("online", NOW - 600_000, None, NOW - STALE)
    assert shown(at_limit).state == "online"
    past = Observed("online", NOW - 600_000, None, NOW - STALE - 1)
    assert shown(past) == Presence("stale", NOW - STALE - 1, NOW - STALE - 1)
    # a fresh status last_seen does not make an old sample live
    old_sample = Observed("idle", NOW - 600_000, NOW - 1_000, NOW - 60_000)
    assert shown(old_sample) == Presence("stale", NOW - 1_000, NOW - 1_000)


def test_online_status_without_samples_is_judged_by_its_own_moments() -> None:
    assert shown(Observed("online", NOW - 5_000)).state == "online"
    assert shown(Observed("online", NOW - 600_000)) == Presence("stale", NOW - 600_000, None)


def test_offline_stays_offline_since_its_status_while_the_collector_runs() -> None:
    seen = Observed("offline", NOW - 300_000, NOW - 320_000, NOW - 320_000)
    assert shown(seen) == Presence("offline", NOW - 300_000, NOW - 320_000)


def test_samples_without_status() -> None:
    assert shown(Observed(sample_ts_ms=NOW - 1_000)) == Presence("online", None, NOW - 1_000)
    assert shown(Observed(sample_ts_ms=NOW - 1_000, is_mining=False)).state == "idle"
    assert shown(Observed(sample_ts_ms=NOW - 60_000)).state == "stale"


def test_forgotten_until_something_newer_or_back_on_the_broker() -> None:
    assert not forgotten(None, [NOW], on_broker=False)
    assert forgotten(NOW, [NOW - 1, None], on_broker=False)
    assert forgotten(NOW, [], on_broker=False)
    assert not forgotten(NOW, [NOW + 1], on_broker=False)
    assert not forgotten(NOW, [NOW - 1], on_broker=True)


MOMENT = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
NOW_TS_MS = int(MOMENT.timestamp() * 1000)


def mute(miner_id: str | None, rule: str | None, until: str = "2026-11-22T11:00:00.000Z"
         ) -> Mute:
    return Mute(id="m", miner_id=miner_id, rule=rule, until=until,
                created="2026-11-22T09:00:00.000Z")


def test_mutes_cover_their_miner_and_rule_until_they_end() -> None:
    by_miner, by_rule = mute("a", None), mute(None, "offline")
    both = mute("b", "temp_high")
    ended = mute(None, None, until="2026-11-22T09:59:59.999Z")
    mutes = [by_miner, by_rule, both, ended]
    assert is_muted(mutes, "a", "anything", NOW_TS_MS)
    assert is_muted(mutes, "z", "offline", NOW_TS_MS)
    assert is_muted(mutes, "b", "temp_high", NOW_TS_MS)
    assert not is_muted(mutes, "b", "fan_failure", NOW_TS_MS)
    assert not is_muted([ended], "a", "offline", NOW_TS_MS)
    assert active(mutes, NOW_TS_MS) == [by_miner, by_rule, both]


def test_new_mute_from_for_s_and_from_until() -> None:
    made = new_mute(MuteRequest(rule="offline", for_s=90), now=MOMENT, mute_id="abc")
    assert made == Mute(id="abc", miner_id=None, rule="offline",
                        until="2026-11-22T10:01:30.000Z", created="2026-11-22T10:00:00.000Z")
    until = new_mute(MuteRequest(miner_id="a", until="2026-11-22T13:30:00+02:00"),
                     now=MOMENT, mute_id="abc")
    assert (until.miner_id, until.until) == ("a", "2026-11-22T11:30:00.000Z")


@pytest.mark.parametrize(("request_", "name"), [
    (MuteRequest(for_s=1), "miner_id"),
    (MuteRequest(miner_id="a", until="2026-11-22T10:00:00Z"), "until"),  # not after now
    (MuteRequest(miner_id="a", until="0001-01-01T00:00:00+01:00"), "until"),
    (MuteRequest(miner_id="a", for_s=float("inf")), "for_s"),
    (MuteRequest(miner_id="a", for_s=float("nan")), "for_s"),
    (MuteRequest(rule="", for_s=1), "rule"),
])
def test_bad_mutes_name_the_field(request_: MuteRequest, name: str) -> None:
    with pytest.raises(BadParameter) as raised:
        new_mute(request_, now=MOMENT, mute_id="x")
    assert str(raised.value).startswith(name)
