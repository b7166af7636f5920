"""Mutes: what each matches, when it ends, and the bound on how many are held."""

from __future__ import annotations

from datetime import UTC, datetime

from minerwatch.alerts.mutes import Mutes
from minerwatch.shared.schemas import Mute, format_ts

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC).timestamp()


def mute(mute_id: str, miner_id: str | None = None, rule: str | None = None,
         for_s: float = 3600) -> Mute:
    return Mute(id=mute_id, miner_id=miner_id, rule=rule,
                until=format_ts(datetime.fromtimestamp(NOW + for_s, UTC)),
                created=format_ts(datetime.fromtimestamp(NOW, UTC)))


def test_a_miner_and_rule_mute_matches_only_that_pair() -> None:
    mutes = Mutes()
    assert mutes.apply(mute("m1", "bitaxe-1", "offline")) is None
    assert mutes.muted("bitaxe-1", "offline", NOW)
    assert not mutes.muted("bitaxe-1", "temp_high", NOW)
    assert not mutes.muted("bitaxe-2", "offline", NOW)


def test_a_missing_miner_or_rule_matches_every_one() -> None:
    mutes = Mutes()
    mutes.apply(mute("miner", miner_id="bitaxe-1"))
    mutes.apply(mute("rule", rule="stalled"))
    assert mutes.muted("bitaxe-1", "offline", NOW)
    assert mutes.muted("bitaxe-1", "anything", NOW)
    assert mutes.muted("s19-7", "stalled", NOW)
    assert not mutes.muted("s19-7", "offline", NOW)
    mutes.apply(mute("all"))
    assert mutes.muted("s19-7", "offline", NOW)


def test_a_mute_ends_at_its_until_and_is_handed_out_once() -> None:
    mutes = Mutes()
    mutes.apply(mute("short", "bitaxe-1", for_s=60))
    mutes.apply(mute("long", "bitaxe-2", for_s=7200))
    assert mutes.muted("bitaxe-1", "offline", NOW + 59.9)
    assert not mutes.muted("bitaxe-1", "offline", NOW + 60)  # until passed: no match
    assert mutes.expired(NOW + 59) == []
    assert mutes.expired(NOW + 60) == ["short"]
    assert mutes.expired(NOW + 61) == []  # forgotten once handed out
    assert "short" not in mutes
    assert [m.id for m in mutes.active(NOW + 61)] == ["long"]


def test_an_expired_mute_applied_is_held_to_be_cleared() -> None:
    mutes = Mutes()
    assert mutes.apply(mute("old", "bitaxe-1", for_s=-10)) is None
    assert not mutes.muted("bitaxe-1", "offline", NOW)
    assert mutes.expired(NOW) == ["old"]


def test_lift_and_replace() -> None:
    mutes = Mutes()
    mutes.apply(mute("m1", "bitaxe-1"))
    # The same id again replaces it: now it mutes another miner.
    mutes.apply(mute("m1", "bitaxe-2"))
    assert len(mutes) == 1
    assert not mutes.muted("bitaxe-1", "offline", NOW)
    assert mutes.muted("bitaxe-2", "offline", NOW)
    assert mutes.lift("m1")
    assert not mutes.lift("m1")
    assert not mutes.muted("bitaxe-2", "offline", NOW)
    assert len(mutes) == 0


def test_two_mutes_on_one_pair_both_count() -> None:
    mutes = Mutes()
    mutes.apply(mute("a", "bitaxe-1", "offline", for_s=60))
    mutes.apply(mute("b", "bitaxe-1", "offline", for_s=600))
    mutes.lift("b")
    assert mutes.muted("bitaxe-1", "offline", NOW)
    assert not mutes.muted("bitaxe-1", "offline", NOW + 120)


def test_past_the_bound_new_mutes_are_refused_with_a_reason() -> None:
    mutes = Mutes(max_mutes=3)
    for number in range(3):
        assert mutes.apply(mute(f"m{number}", f"miner-{number}")) is None
    reason = mutes.apply(mute("m3", "miner-3"))
    assert reason == "mute m3: refused, 3 mutes are already held"
    assert not mutes.muted("miner-3", "offline", NOW)
    assert mutes.apply(mute("m0", "miner-9")) is None  # replacing one still works
    mutes.lift("m1")
    assert mutes.apply(mute("m3", "miner-3")) is None


def test_a_bad_until_is_refused_with_a_reason() -> None:
    mutes = Mutes()
    bad = Mute(id="x", miner_id="a", until="2026-13-40T99:00:00.000Z",
               created="2026-11-22T10:00:00.000Z")
    reason = mutes.apply(bad)
    assert reason is not None
    assert reason.startswith("mute x: bad until '2026-13-40T99:00:00.000Z'")
    assert len(mutes) == 0
