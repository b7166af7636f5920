"""Routing of MQTT messages to rows, and the rate-limited log of bad ones (no I/O)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from sqlalchemy.dialects import sqlite

from minerwatch.shared import db, fields
from minerwatch.shared.messages import Rejected
from minerwatch.shared.rejects import RejectLog
from minerwatch.shared.schemas import encode
from minerwatch.store.retention import Horizon
from minerwatch.store.routing import (
    AlertRow,
    InfoRow,
    SampleRow,
    StatusRow,
    misfit,
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
        "pool_fallback": None,
        "pool_connected": None,
        "blocks_found": None,
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
        "ts_ms": ms(2026, 11, 22, 10, 0, 5, 0), "label": None, "since_ms": None,
        "muted": False,
    }


def test_nothing_to_store_for_service_status_and_cleared_topics(make: Any) -> None:
    assert route(BASE, "mw/services/collector/status", b"online") is None
    assert route(BASE, "mw/miners/rig-1/sample", b"") is None  # retained message cleared
    assert route(BASE, "mw/alerts/rig-1/overheat", b"") is None


def test_subscriptions_cover_the_history_topics_only() -> None:
    assert subscriptions("mw") == [
        "mw/miners/+/sample", "mw/miners/+/status", "mw/miners/+/info", "mw/alerts/+/+",
        "mw/miners/+/command/result", "mw/miners/+/tune",
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
         "not a real moment"),
        ("id mismatch", sample_topic, tweak(s, miner_id="rig-2"), "sample", "does not match"),
        ("bad payload id", sample_topic, tweak(s, miner_id="Rig 1!"), "sample", "miner_id"),
        ("bad topic id", "mw/miners/Rig.1/sample", encode(s), "sample", "not a schema 1 topic"),
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
         "not a schema 1 topic"),
        ("not ours", "mw/miners/rig-1/sample/extra", encode(s), "topic", "not a schema 1"),
    ]


def test_bad_messages_are_one_line_rejects_naming_topic_and_problem(make: Any) -> None:
    for case, topic, payload, kind, phrase in _bad_cases(make):
        error = route(BASE, topic, payload)
        assert isinstance(error, Rejected), case
        assert error.kind == kind, case
        assert phrase in str(error), (case, str(error))
        assert str(error).startswith(topic + ": "), case
        assert "\n" not in str(error), case


def test_rejects_log_once_per_kind_per_window_with_suppressed_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    rejects = RejectLog(logging.getLogger("minerwatch.store"), window_s=10.0,
                        clock=lambda: now[0])
    bad_sample = route(BASE, "mw/miners/a/sample", b"hashrate=5")
    bad_status = route(BASE, "mw/miners/a/status", b'{"state": 1}')
    assert isinstance(bad_sample, Rejected) and isinstance(bad_status, Rejected)
    with caplog.at_level(logging.WARNING, logger="minerwatch.store"):
        for _ in range(3):
            rejects.note(bad_sample.kind, str(bad_sample))
        rejects.note(bad_status.kind, str(bad_status))
        now[0] += 9.0
        rejects.note(bad_sample.kind, str(bad_sample))  # still inside the window: suppressed
        now[0] += 2.0
        rejects.note(bad_sample.kind, str(bad_sample))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4
    assert lines[0] == f"bad sample message ignored: {bad_sample}"
    assert lines[1] == f"bad status message ignored: {bad_status}"
    # the count held back in the window, reported before the next window's first line
    assert lines[2].startswith("3 more bad sample messages ignored in 10 s")
    assert lines[3] == f"bad sample message ignored: {bad_sample}"
    assert rejects.counts == {"sample": 5, "status": 1}


def test_out_of_range_readings_become_null_by_the_shared_rule(make: Any) -> None:
    """A value no sensor produces is stored as a missing reading, not refused."""
    payload = tweak(make.sample(), shares_accepted=2**63, temp_c=1e308, fan_rpm=[4100, -5])
    row = route(BASE, "mw/miners/rig-1/sample", payload)
    assert isinstance(row, SampleRow)
    assert row.values["shares_accepted"] is None
    assert row.values["temp_c"] is None
    assert row.values["fan_rpm"] == [4100]
    assert row.values["hashrate_ths"] == 1.2345678901234567




def test_hostile_payloads_are_rejected_on_every_topic_without_raising(
    hostile: tuple[bytes, ...],
) -> None:
    topics = ["mw/miners/rig-1/sample", "mw/miners/rig-1/status", "mw/miners/rig-1/info",
              "mw/alerts/rig-1/overheat"]
    for topic in topics:
        for payload in hostile:
            result = route(BASE, topic, payload)
            assert isinstance(result, Rejected), (topic, payload[:40])
            assert "\n" not in str(result) and str(result).startswith(topic + ": ")


def test_samples_older_than_the_horizon_are_rejected(make: Any) -> None:
    now_s = ms(2026, 11, 22, 10, 0, 0, 0) / 1000
    horizon = Horizon(7, clock=lambda: now_s)
    old = route(BASE, "mw/miners/rig-1/sample",
                encode(make.sample(ts="2026-11-15T09:59:59.999Z")), horizon=horizon)
    assert isinstance(old, Rejected) and old.kind == "sample"
    assert "older than the raw retention (7 days)" in str(old)
    recent = route(BASE, "mw/miners/rig-1/sample",
                   encode(make.sample(ts="2026-11-15T10:00:00.000Z")), horizon=horizon)
    assert isinstance(recent, SampleRow)
    # status, info and alerts are not history that expires
    assert isinstance(route(BASE, "mw/miners/rig-1/status", encode(make.status(
        since="2020-01-01T00:00:00.000Z")), horizon=horizon), StatusRow)


def test_the_samples_table_is_the_field_descriptions_and_what_existing_databases_have(
    make: Any,
) -> None:
    """Derived from ``shared.fields``, the columns must still be those of the databases
    earlier releases created, new ones after them and nullable (``create_schema`` adds
    those to an existing table; see test_upgrade)."""
    columns = [(c.name, str(c.type.compile(dialect=sqlite.dialect())), c.nullable)
               for c in db.samples.columns]
    assert columns == [
        ("miner_id", "VARCHAR(64)", False), ("ts_ms", "BIGINT", False),
        ("hashrate_ths", "FLOAT", False), ("expected_hashrate_ths", "FLOAT", True),
        ("power_w", "FLOAT", True), ("efficiency_jth", "FLOAT", True),
        ("temp_c", "FLOAT", True), ("vr_temp_c", "FLOAT", True),
        ("fan_rpm", "JSON", False), ("shares_accepted", "BIGINT", True),
        ("shares_rejected", "BIGINT", True), ("best_diff", "FLOAT", True),
        ("uptime_s", "BIGINT", True), ("pool_url", "TEXT", True),
        ("is_mining", "BOOLEAN", False), ("pool_fallback", "BOOLEAN", True),
        ("pool_connected", "BOOLEAN", True), ("blocks_found", "BIGINT", True),
    ]
    assert db.SAMPLE_FIELDS == fields.FIELD_NAMES
    # every field a Sample carries has its column: a row of every value fits the table
    row = route(BASE, "mw/miners/rig-1/sample", encode(make.sample()))
    assert isinstance(row, SampleRow)
    assert sorted(row.values) == sorted(c.name for c in db.samples.columns)


def test_the_rollup_columns_follow_how_each_field_rolls_up() -> None:
    assert db.ROLLUP_METRICS == ("hashrate_ths", "power_w", "temp_c", "vr_temp_c")
    assert db.ROLLUP_LAST == ("expected_hashrate_ths", "fan_rpm", "shares_accepted",
                              "shares_rejected", "best_diff", "uptime_s", "pool_url",
                              "is_mining", "pool_fallback", "pool_connected",
                              "blocks_found")
    for table in (db.rollups_1m, db.rollups_1h):
        names = [c.name for c in table.columns]
        assert names[:4] == ["miner_id", "bucket_ms", "samples", "last_ts_ms"]
        assert names[4:] == [
            *(f"{m}_{part}" for m in db.ROLLUP_METRICS for part in ("sum", "n", "min", "max")),
            *db.ROLLUP_LAST,
        ]
        for name in db.ROLLUP_LAST:
            assert repr(table.c[name].type) == repr(db.samples.c[name].type)
            assert table.c[name].nullable == db.samples.c[name].nullable
        assert not any(f.name in names for f in fields.SAMPLE_FIELDS if f.rollup == "derived")


def test_misfit_names_what_a_column_cannot_hold(make: Any) -> None:
    assert misfit(db.miners, {"miner_id": "a", "port": 2**31}) == "port 2147483648 is out of range"
    assert misfit(db.samples, {"miner_id": "a", "ts_ms": -(2**63) - 1}) is not None
    assert misfit(db.alert_events, {"rule": "r" * 129}) == "rule is longer than 128 characters"
    assert misfit(db.miners, {"miner_id": "a", "port": 2**31 - 1, "model": None}) is None
    # a text column without a length still refuses NUL, which PostgreSQL cannot store
    nul = route(BASE, "mw/miners/rig-1/sample", tweak(make.sample(), pool_url="a\x00b"))
    assert isinstance(nul, Rejected) and "pool_url contains a NUL character" in str(nul)
