"""Routing of MQTT messages to rows, and the rate-limited log of bad ones (no I/O)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from minerwatch.shared.schemas import encode
from minerwatch.store.ingest import (
    AlertRow,
    BadMessage,
    InfoRow,
    Rejects,
    SampleRow,
    StatusRow,
    route,
    subscriptions,
)

BASE = "mw"


def ms(*args: int) -> int:
    """Epoch milliseconds of a UTC wall time, computed without the code under test."""
    *wall, milli = args
    return int(datetime(*wall, tzinfo=UTC).timestamp()) * 1000 + milli


def tweak(message: msgspec.Struct, **changes: Any) -> bytes:
    """A message's JSON with fields replaced (or removed, for the value ...)."""
    data = msgspec.to_builtins(message)
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data).encode()


def test_sample_becomes_a_row_with_every_value(make: Any) -> None:
    row = route(BASE, "mw/miners/rig-1/sample", encode(make.sample()))
    assert isinstance(row, SampleRow)
    assert row.values == {
        "miner_id": "rig-1",
        "ts_ms": ms(2026, 11, 22, 10, 0, 0, 123),
        "hashrate_ths": 1.2345678901234567,
        "expected_hashrate_ths": 1.3,
        "power_w": 17.25,
        "efficiency_jth": 13.97,
        "temp_c": 61.5,
        "vr_temp_c": None,
        "fan_rpm": [4100, 3980],
        "shares_accepted": 12345,
        "shares_rejected": 7,
        "best_diff": 4.29e9,
        "uptime_s": 86400,
        "pool_url": "stratum+tcp://pool.example:3333",
        "is_mining": True,
    }


def test_unknown_fields_are_ignored_for_later_schema_additions(make: Any) -> None:
    row = route(BASE, "mw/miners/rig-1/sample", tweak(make.sample(), frequency_mhz=525))
    assert isinstance(row, SampleRow)
    assert "frequency_mhz" not in row.values


def test_status_takes_the_miner_id_from_the_topic(make: Any) -> None:
    payload = encode(make.status("offline", reason="timeout", failures=3))
    row = route(BASE, "mw/miners/rig-7/status", payload)
    assert isinstance(row, StatusRow)
    assert row.values == {
        "miner_id": "rig-7",
        "state": "offline",
        "reason": "timeout",
        "since_ms": ms(2026, 11, 22, 9, 0, 0, 0),
        "last_seen_ms": ms(2026, 11, 22, 10, 0, 0, 0),
        "failures": 3,
    }


def test_status_without_last_seen(make: Any) -> None:
    row = route(BASE, "mw/miners/rig-7/status", encode(make.status(last_seen=None)))
    assert isinstance(row, StatusRow)
    assert row.values["last_seen_ms"] is None


def test_info_and_alert_rows(make: Any) -> None:
    info = route(BASE, "mw/miners/rig-1/info", encode(make.info()))
    assert isinstance(info, InfoRow)
    assert info.values["port"] == 8080 and info.values["model"] == "Gamma"
    alert = route(BASE, "mw/alerts/rig-1/overheat", encode(make.alert()))
    assert isinstance(alert, AlertRow)
    assert alert.values == {
        "miner_id": "rig-1", "rule": "overheat", "state": "firing", "severity": "warning",
        "value": 77.5, "threshold": 75.0, "message": "temp_c 77.5 > 75 for 60 s",
        "ts_ms": ms(2026, 11, 22, 10, 0, 5, 0),
    }


def test_nothing_to_store_for_service_status_and_cleared_topics(make: Any) -> None:
    assert route(BASE, "mw/services/collector/status", b"online") is None
    assert route(BASE, "mw/miners/rig-1/sample", b"") is None  # retained message cleared
    assert route(BASE, "mw/alerts/rig-1/overheat", b"") is None


def test_subscriptions_cover_the_four_history_topics_only() -> None:
    assert subscriptions("mw") == [
        "mw/miners/+/sample", "mw/miners/+/status", "mw/miners/+/info", "mw/alerts/+/+",
    ]


def _bad_cases(make: Any) -> list[tuple[str, str, bytes, str, str]]:
    """(case, topic, payload, kind, a phrase the error must contain)."""
    s, st, inf, al = make.sample(), make.status(), make.info(), make.alert()
    sample_topic, status_topic = "mw/miners/rig-1/sample", "mw/miners/rig-1/status"
    info_topic, alert_topic = "mw/miners/rig-1/info", "mw/alerts/rig-1/overheat"
    return [
        ("not json", sample_topic, b"hashrate=5", "sample", "malformed"),
        ("not utf-8", sample_topic, b"\xff\xfe\x00", "sample", "malformed"),
        ("json array", sample_topic, b"[1, 2]", "sample", "Expected `object`"),
        ("schema 2", sample_topic, tweak(s, schema=2), "sample", "schema 2"),
        ("wrong type", sample_topic, tweak(s, hashrate_ths="fast"), "sample", "hashrate_ths"),
        ("missing field", sample_topic, tweak(s, ts=...), "sample", "ts"),
        ("ts format", sample_topic, tweak(s, ts="2026-11-22 10:00"), "sample", "ts"),
        ("ts impossible", sample_topic, tweak(s, ts="2026-13-45T10:00:00.000Z"), "sample",
         "ISO 8601"),
        ("id mismatch", sample_topic, tweak(s, miner_id="rig-2"), "sample", "does not match"),
        ("bad payload id", sample_topic, tweak(s, miner_id="Rig 1!"), "sample", "miner_id"),
        ("bad topic id", "mw/miners/Rig.1/sample", encode(s), "sample", "not a schema 1 topic"),
        ("int too big", sample_topic, tweak(s, shares_accepted=2**63), "sample",
         "shares_accepted"),
        ("fan not ints", sample_topic, tweak(s, fan_rpm=["fast"]), "sample", "fan_rpm"),
        ("status state", status_topic, tweak(st, state="exploded"), "status", "state"),
        ("status json", status_topic, b"online", "status", "malformed"),
        ("status failures", status_topic, tweak(st, failures=2**40), "status", "failures"),
        ("info port", info_topic, tweak(inf, port="eighty"), "info", "port"),
        ("info driver", info_topic, tweak(inf, driver="x" * 33), "info", "driver"),
        ("info NUL", info_topic, tweak(inf, host="a\x00b"), "info", "NUL"),
        ("info id", info_topic, tweak(inf, miner_id="rig-9"), "info", "does not match"),
        ("alert id", alert_topic, tweak(al, miner_id="rig-2"), "alert", "does not match"),
        ("alert rule", alert_topic, tweak(al, rule="fan"), "alert", "does not match"),
        ("alert state", alert_topic, tweak(al, state="burning"), "alert", "state"),
        ("alert long rule", "mw/alerts/rig-1/" + "r" * 129, tweak(al, rule="r" * 129), "alert",
         "longer than 128"),
        ("not ours", "mw/miners/rig-1/sample/extra", encode(s), "topic", "not a schema 1"),
    ]


def test_bad_messages_raise_one_line_errors_naming_topic_and_problem(make: Any) -> None:
    for case, topic, payload, kind, phrase in _bad_cases(make):
        with pytest.raises(BadMessage) as caught:
            route(BASE, topic, payload)
        error = caught.value
        assert error.kind == kind, case
        assert phrase in str(error), (case, str(error))
        assert str(error).startswith(topic + ": "), case
        assert "\n" not in str(error), case


def test_rejects_log_once_per_kind_per_window_with_suppressed_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    rejects = Rejects(window_s=10.0, clock=lambda: now[0])
    bad_sample = BadMessage("sample", "mw/miners/a/sample", "JSON is malformed")
    bad_status = BadMessage("status", "mw/miners/a/status", "Expected `str`")
    with caplog.at_level(logging.WARNING, logger="minerwatch.store"):
        for _ in range(3):
            rejects.note(bad_sample)
        rejects.note(bad_status)
        now[0] += 9.0
        rejects.note(bad_sample)  # still inside the window: suppressed
        now[0] += 2.0
        rejects.note(bad_sample)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "bad sample message ignored: mw/miners/a/sample: JSON is malformed",
        "bad status message ignored: mw/miners/a/status: Expected `str`",
        "bad sample message ignored: mw/miners/a/sample: JSON is malformed"
        " (3 more bad sample messages suppressed)",
    ]
    assert rejects.counts == {"sample": 5, "status": 1}
