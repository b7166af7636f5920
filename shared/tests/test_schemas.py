"""Schema 1 payloads: exact field names, nulls never omitted, bad input rejected."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from minerwatch.shared.schemas import (
    AlertEvent,
    MinerInfo,
    MinerStatus,
    Sample,
    decode,
    efficiency,
    encode,
    finite,
    format_ts,
    parse_ts,
)

SAMPLE_FIELDS = [
    "schema", "miner_id", "ts", "hashrate_ths", "expected_hashrate_ths", "power_w",
    "efficiency_jth", "temp_c", "vr_temp_c", "fan_rpm", "shares_accepted", "shares_rejected",
    "best_diff", "uptime_s", "pool_url", "is_mining", "pool_fallback", "pool_connected",
    "blocks_found",
]


def test_sample_encodes_every_field_with_nulls() -> None:
    sample = Sample(miner_id="aabbccddeeff", ts="2026-11-22T10:00:00.123Z", hashrate_ths=1.2)
    data = json.loads(encode(sample))
    assert list(data) == SAMPLE_FIELDS
    assert data["schema"] == 1
    assert data["power_w"] is None and data["efficiency_jth"] is None
    assert data["fan_rpm"] == []
    assert data["is_mining"] is True


def test_sample_round_trip_is_exact() -> None:
    sample = Sample(
        miner_id="bitaxe-1", ts="2026-11-22T10:00:00.123Z", hashrate_ths=1.234,
        expected_hashrate_ths=1.2, power_w=18.5, efficiency_jth=efficiency(18.5, 1.234),
        temp_c=61.5, vr_temp_c=55.0, fan_rpm=[4100, 3900], shares_accepted=10,
        shares_rejected=1, best_diff=4.29e9, uptime_s=3600,
        pool_url="stratum+tcp://pool.example:3333", is_mining=True,
    )
    assert decode(encode(sample), Sample) == sample


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"not json", "malformed"),
        (b'{"miner_id":"X Y","ts":"2026-11-22T10:00:00.123Z","hashrate_ths":1}', "miner_id"),
        (b'{"miner_id":"a","ts":"yesterday","hashrate_ths":1}', "ts"),
        (b'{"miner_id":"a","ts":"2026-11-22T10:00:00.123Z","hashrate_ths":"fast"}',
         "hashrate_ths"),
        (b'{"miner_id":"a","ts":"2026-11-22T10:00:00.123Z"}', "hashrate_ths"),
    ],
)
def test_bad_samples_are_rejected_with_a_reason(payload: bytes, fragment: str) -> None:
    with pytest.raises(msgspec.DecodeError) as err:
        decode(payload, Sample)
    assert fragment in str(err.value).lower()


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    payload = b'{"miner_id":"a","ts":"2026-11-22T10:00:00.123Z","hashrate_ths":1,"hashboards":[]}'
    assert decode(payload, Sample).hashrate_ths == 1


def test_status_info_alert_shapes() -> None:
    status = MinerStatus(state="offline", reason="timeout after 5.0 s",
                         since="2026-11-22T10:00:00.000Z", last_seen=None, failures=3)
    assert json.loads(encode(status)) == {
        "state": "offline", "reason": "timeout after 5.0 s",
        "since": "2026-11-22T10:00:00.000Z", "last_seen": None, "failures": 3,
    }
    info = MinerInfo(miner_id="a", driver="axeos", host="127.0.0.1", port=80)
    assert list(json.loads(encode(info))) == [
        "miner_id", "driver", "host", "port", "make", "model", "firmware", "hostname", "mac",
        "label",
    ]
    alert = AlertEvent(miner_id="a", rule="overheat", state="firing", severity="warning",
                       value=80.0, threshold=75.0, message="temp_c 80 > 75",
                       ts="2026-11-22T10:00:00.000Z")
    assert list(json.loads(encode(alert))) == [
        "miner_id", "rule", "state", "severity", "value", "threshold", "message", "ts",
        "label", "since", "muted",
    ]
    with pytest.raises(msgspec.ValidationError):
        decode(b'{"state":"sleeping","since":"2026-11-22T10:00:00.000Z"}', MinerStatus)


def test_timestamps() -> None:
    moment = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
    assert format_ts(moment) == "2026-11-22T10:00:00.123Z"
    assert format_ts(moment.astimezone(timezone(timedelta(hours=2)))) == (
        "2026-11-22T10:00:00.123Z"
    )
    assert format_ts(datetime(2026, 11, 22, 10)) == "2026-11-22T10:00:00.000Z"  # naive is UTC
    assert parse_ts("2026-11-22T10:00:00.123Z") == moment.replace(microsecond=123000)
    assert parse_ts("2026-11-22T12:00:00+02:00") == datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert parse_ts("2026-11-22T10:00:00") == datetime(2026, 11, 22, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="not an ISO 8601 timestamp"):
        parse_ts("last tuesday")


def test_efficiency_and_finite() -> None:
    assert efficiency(18.0, 1.2) == pytest.approx(15.0)
    assert efficiency(None, 1.2) is None
    assert efficiency(18.0, 0.0) is None
    assert efficiency(18.0, None) is None
    assert finite(float("nan")) is None
    assert finite(float("inf")) is None
    assert finite(3.5) == 3.5
