"""The one decode path: typed messages or one-line reasons, never an exception."""

from __future__ import annotations

import json
import random

import pytest

from minerwatch.shared.messages import (
    MAX_DEPTH,
    Received,
    Rejected,
    decode_message,
    nesting_depth_exceeds,
)
from minerwatch.shared.schemas import AlertEvent, MinerInfo, MinerStatus, Sample, encode

BASE = "mw"
TS = "2026-11-22T10:00:00.000Z"


def sample(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {"schema": 1, "miner_id": "gamma-1", "ts": TS,
                               "hashrate_ths": 1.2, "temp_c": 60.5, "fan_rpm": [4000]}
    body.update(changes)
    return body


def raw(body: object) -> bytes:
    return json.dumps(body).encode()


def reject_reason(topic: str, payload: bytes) -> str:
    result = decode_message(BASE, topic, payload)
    assert isinstance(result, Rejected), result
    assert "\n" not in result.reason and result.reason
    return result.reason


def test_a_valid_sample_decodes_to_its_struct() -> None:
    result = decode_message(BASE, "mw/miners/gamma-1/sample", raw(sample()))
    assert isinstance(result, Received)
    assert result.spec.name == "sample" and result.miner_id == "gamma-1"
    assert isinstance(result.message, Sample) and result.message.temp_c == 60.5


def test_every_payload_type_round_trips() -> None:
    cases = [
        ("mw/miners/a/status", MinerStatus(state="offline", reason="timeout", since=TS)),
        ("mw/miners/a/info", MinerInfo(miner_id="a", driver="axeos", host="10.0.0.5",
                                       port=80)),
        ("mw/alerts/a/overheat", AlertEvent(miner_id="a", rule="overheat", state="firing",
                                            severity="warning", value=80.0, threshold=75.0,
                                            message="hot", ts=TS)),
    ]
    for topic, message in cases:
        result = decode_message(BASE, topic, encode(message))
        assert isinstance(result, Received) and result.message == message
    online = decode_message(BASE, "mw/services/store/status", b"online")
    assert isinstance(online, Received) and online.message == "online"
    assert online.name == "store"


def test_an_empty_payload_is_a_deleted_retained_message() -> None:
    result = decode_message(BASE, "mw/miners/a/info", b"")
    assert isinstance(result, Received) and result.message is None


@pytest.mark.parametrize(("payload", "says"), [
    (b'{"miner_id": "gamma-1", "pool_url": "\xed\xa0\x80"}', "utf-8"),
    (b"[" * 5000 + b"]" * 5000, "nested deeper"),
    (raw(sample(extra=json.loads("[" * 900 + "]" * 900))), "nested deeper"),
    (raw(sample(hashrate_ths=1.7e308)), "not a possible reading"),
    (raw(sample(hashrate_ths=-1)), "not a possible reading"),
    (b'{"miner_id": "gamma-1", "ts": "' + TS.encode() + b'", "hashrate_ths": 1e999}',
     "out of range"),
    (raw(sample(schema=2)), "schema 2"),
    (raw(sample(miner_id="other")), "does not match the topic"),
    (raw(sample(ts="2026-13-45T10:00:00.000Z")), "not a real moment"),
    (raw(sample(hashrate_ths="fast")), "Expected `float`"),
    (raw(sample(fan_rpm=[1.5])), "Expected `int`"),
    (b"not json", "not a Sample"),
    (b"\x00" * 100, "not a Sample"),
    (b'{"x": "' + b"a" * 70_000 + b'"}', "over"),
])
def test_hostile_samples_are_rejected_with_one_line(payload: bytes, says: str) -> None:
    assert says in reject_reason("mw/miners/gamma-1/sample", payload)


def test_impossible_optional_readings_become_null_by_one_rule() -> None:
    result = decode_message(BASE, "mw/miners/gamma-1/sample", raw(sample(
        temp_c=1e300, power_w=-5, vr_temp_c=80.0, fan_rpm=[4000, -1, 10**7, 3900],
        uptime_s=10**15, shares_accepted=12)))
    assert isinstance(result, Received) and isinstance(result.message, Sample)
    message = result.message
    assert message.temp_c is None and message.power_w is None and message.uptime_s is None
    assert message.vr_temp_c == 80.0 and message.shares_accepted == 12
    assert message.fan_rpm == [4000, 3900]


def test_topics_that_are_not_ours_are_rejected() -> None:
    for topic in ("mw/miners/Bad Id/sample", "mw/miners/a/b/sample", "mw/else", "other/x",
                  "mw/alerts/a/", "mw/services//status"):
        result = decode_message(BASE, topic, raw(sample()))
        assert isinstance(result, Rejected), topic
    assert decode_message(BASE, "mw/miners/BAD/sample", b"{}").kind == "sample"  # type: ignore[union-attr]
    assert decode_message(BASE, "mw/junk", b"{}").kind == "topic"  # type: ignore[union-attr]


def test_alert_and_service_payloads_are_checked_against_their_topics() -> None:
    event = AlertEvent(miner_id="a", rule="overheat", state="firing", severity="warning",
                       value=80.0, threshold=75.0, message="hot", ts=TS)
    assert "rule" in reject_reason("mw/alerts/a/other", encode(event))
    assert "online or offline" in reject_reason("mw/services/store/status", b"maybe")
    assert "utf-8" in reject_reason("mw/services/store/status", b"\xff\xfe")


def test_depth_check_ignores_brackets_inside_strings() -> None:
    inside = b'{"a": "' + b"[" * 100 + b'"}'
    assert not nesting_depth_exceeds(inside)
    assert nesting_depth_exceeds(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    assert not nesting_depth_exceeds(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    escaped = b'{"a": "\\"' + b"[" * 100 + b'"}'
    assert not nesting_depth_exceeds(escaped)


def test_random_input_never_raises() -> None:
    rng = random.Random(8)
    valid = raw(sample())
    topics = ["mw/miners/gamma-1/sample", "mw/miners/gamma-1/status", "mw/miners/x/info",
              "mw/alerts/gamma-1/r", "mw/services/api/status", "mw/zz"]
    for _ in range(20_000):
        choice = rng.random()
        if choice < 0.4:
            payload = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64)))
        else:
            mutated = bytearray(valid)
            for _ in range(rng.randrange(1, 6)):
                mutated[rng.randrange(len(mutated))] = rng.getrandbits(8)
            payload = bytes(mutated)
        result = decode_message(BASE, rng.choice(topics), payload)
        assert isinstance(result, Received | Rejected)


def test_labels_and_mutes_decode_by_the_registry() -> None:
    from minerwatch.shared.schemas import MinerLabel, Mute

    got = decode_message("mw", "mw/miners/s19/label",
                         b'{"label":"Garage S19","ts":"2026-11-22T10:00:00.000Z"}')
    assert isinstance(got, Received) and got.message == MinerLabel(
        label="Garage S19", ts="2026-11-22T10:00:00.000Z")
    mute = (b'{"id":"m1","miner_id":null,"rule":"offline",'
            b'"until":"2026-11-22T12:00:00.000Z","created":"2026-11-22T10:00:00.000Z"}')
    got = decode_message("mw", "mw/mutes/m1", mute)
    assert isinstance(got, Received) and isinstance(got.message, Mute)
    assert got.name == "m1" and got.message.rule == "offline"
    wrong = decode_message("mw", "mw/mutes/m2", mute)
    assert isinstance(wrong, Rejected) and "does not match" in wrong.reason
    control = decode_message("mw", "mw/miners/s19/label",
                             b'{"label":"a\\u0000b","ts":"2026-11-22T10:00:00.000Z"}')
    assert isinstance(control, Rejected)
