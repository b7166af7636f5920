"""The per-miner status state machine, table-driven: events in, published statuses out."""

from __future__ import annotations

import pytest

from minerwatch.collector.health import IDLE_REASON, MinerHealth

# An event is ("ok", is_mining) or ("fail", reason); each gets ts T0, T1, T2...
# The expected column is the state published after that event, or None (nothing published).
Event = tuple[str, object]

CASES: dict[str, list[tuple[Event, str | None]]] = {
    "first good poll publishes online": [
        (("ok", True), "online"),
        (("ok", True), None),
        (("ok", True), None),
    ],
    "reachable but not hashing is idle": [
        (("ok", False), "idle"),
        (("ok", False), None),
        (("ok", True), "online"),
        (("ok", False), "idle"),
    ],
    "one blip is not offline": [
        (("ok", True), "online"),
        (("fail", "timeout after 5.0 s"), None),
        (("ok", True), None),
        (("fail", "timeout after 5.0 s"), None),
        (("fail", "timeout after 5.0 s"), None),
        (("ok", True), None),
    ],
    "offline after three consecutive failures, online again at once": [
        (("ok", True), "online"),
        (("fail", "timeout after 5.0 s"), None),
        (("fail", "timeout after 5.0 s"), None),
        (("fail", "connection refused"), "offline"),
        (("fail", "connection refused"), None),
        (("fail", "HTTP 500"), None),
        (("ok", True), "online"),
    ],
    "a first failure alone publishes nothing; three from the start do": [
        (("fail", "connection refused"), None),
        (("fail", "connection refused"), None),
        (("fail", "connection refused"), "offline"),
        (("ok", False), "idle"),
    ],
}


@pytest.mark.parametrize("name", list(CASES))
def test_status_changes(name: str) -> None:
    health = MinerHealth(offline_after=3)
    for index, ((kind, value), expected) in enumerate(CASES[name]):
        ts = f"2026-11-22T10:00:{index:02d}.000Z"
        if kind == "ok":
            status = health.succeeded(ts, bool(value))
        else:
            status = health.failed(ts, str(value))
        assert (status.state if status else None) == expected, f"{name}: event {index}"


def test_offline_status_fields() -> None:
    health = MinerHealth(offline_after=3)
    assert health.succeeded("2026-11-22T10:00:00.000Z", True) is not None
    assert health.failed("2026-11-22T10:00:10.000Z", "timeout after 5.0 s") is None
    assert health.failed("2026-11-22T10:00:20.000Z", "timeout after 5.0 s") is None
    status = health.failed("2026-11-22T10:00:30.000Z", "connection refused")
    assert status is not None
    assert status.state == "offline"
    assert status.reason == "connection refused"  # the last failure's reason
    assert status.since == "2026-11-22T10:00:10.000Z"  # unreachable since the first failure
    assert status.last_seen == "2026-11-22T10:00:00.000Z"
    assert status.failures == 3

    back = health.succeeded("2026-11-22T10:00:40.000Z", True)
    assert back is not None
    assert (back.state, back.reason, back.failures) == ("online", None, 0)
    assert back.since == back.last_seen == "2026-11-22T10:00:40.000Z"


def test_never_reached_miner_has_no_last_seen() -> None:
    health = MinerHealth(offline_after=2)
    assert health.failed("2026-11-22T10:00:00.000Z", "connection refused") is None
    status = health.failed("2026-11-22T10:00:10.000Z", "connection refused")
    assert status is not None
    assert (status.state, status.last_seen, status.failures) == ("offline", None, 2)


def test_idle_carries_a_reason_and_the_state_is_unknown_before_any_poll() -> None:
    health = MinerHealth()
    assert health.state is None
    with pytest.raises(ValueError):
        health.status()
    status = health.succeeded("2026-11-22T10:00:00.000Z", False)
    assert status is not None and status.reason == IDLE_REASON


def test_offline_after_one() -> None:
    health = MinerHealth(offline_after=1)
    status = health.failed("2026-11-22T10:00:00.000Z", "connection refused")
    assert status is not None and status.state == "offline"
