"""What the fleet publishes besides changes: ``last_seen`` refreshed while a miner answers,
labels folded into its info, and a forgotten miner published again when it answers. Poll
results go in with their timestamps (the clock of these tests); what comes out is the
outbox, as the publisher would send it."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from minerwatch.collector.drivers import Reading
from minerwatch.collector.fleet import LAST_SEEN_REFRESH_S, FleetRegistry, MinerSlot
from minerwatch.collector.labels import Labels
from minerwatch.collector.listener import Listener
from minerwatch.collector.outbox import Outbox
from minerwatch.shared import schemas
from minerwatch.shared.config import CollectorConfig, MinerConfig
from minerwatch.shared.schemas import (
    MinerInfo,
    MinerLabel,
    MinerStatus,
    Sample,
    format_ts,
    parse_ts,
)

T0 = "2026-11-22T10:00:00.000Z"
BASE = "mw"
READING = Reading(hashrate_ths=1.2, make="Bitaxe", model="Gamma BM1370")


def at(seconds: float) -> str:
    return format_ts(parse_ts(T0) + timedelta(seconds=seconds))


def registry(label: str | None = None) -> tuple[FleetRegistry, MinerSlot, Outbox]:
    outbox = Outbox()
    fleet = FleetRegistry(CollectorConfig(miners=[
        MinerConfig(url="axeos://127.0.0.1:9", name="garage", label=label)]), outbox)
    return fleet, fleet.slots[0], outbox


def drain(outbox: Outbox, kind: type | None = None) -> list[Any]:
    items = [outbox.pop().message for _ in range(len(outbox))]
    return [m for m in items if kind is None or isinstance(m, kind)]


# --- last_seen ------------------------------------------------------------------------


def test_status_is_republished_once_last_seen_is_a_minute_old() -> None:
    fleet, slot, outbox = registry()
    fleet.succeeded(slot, T0, READING)
    [online] = drain(outbox, MinerStatus)
    assert (online.state, online.since, online.last_seen) == ("online", T0, T0)
    for seconds in (10, 30, LAST_SEEN_REFRESH_S - 0.001):
        fleet.succeeded(slot, at(seconds), READING)
    assert drain(outbox, MinerStatus) == []  # samples only: last_seen is fresh enough
    fleet.succeeded(slot, at(LAST_SEEN_REFRESH_S), READING)
    [again] = drain(outbox, MinerStatus)
    assert (again.state, again.since, again.reason, again.failures) == ("online", T0, None, 0)
    assert again.last_seen == at(LAST_SEEN_REFRESH_S)
    fleet.succeeded(slot, at(LAST_SEEN_REFRESH_S + 59), READING)
    assert drain(outbox, MinerStatus) == []  # counted from the last one published
    fleet.succeeded(slot, at(2 * LAST_SEEN_REFRESH_S + 5), READING)
    [third] = drain(outbox, MinerStatus)
    assert (third.since, third.last_seen) == (T0, at(2 * LAST_SEEN_REFRESH_S + 5))
    assert fleet.retained()[-1].message == third  # what a reconnect sends is current too


def test_idle_is_refreshed_and_offline_is_not() -> None:
    fleet, slot, outbox = registry()
    idle = Reading(hashrate_ths=0.0, is_mining=False)
    fleet.succeeded(slot, T0, idle)
    fleet.succeeded(slot, at(61), idle)
    assert [(s.state, s.since, s.last_seen) for s in drain(outbox, MinerStatus)] == [
        ("idle", T0, T0), ("idle", T0, at(61))]
    for seconds in (62, 63, 64, 200, 400):  # away: offline once, then nothing
        fleet.failed(slot, at(seconds), "timeout after 5.0 s")
    [offline] = drain(outbox, MinerStatus)
    assert (offline.state, offline.since, offline.last_seen) == ("offline", at(62), at(61))
    fleet.succeeded(slot, at(401), READING)  # back: a change, published at once
    [back] = drain(outbox, MinerStatus)
    assert (back.state, back.since, back.last_seen) == ("online", at(401), at(401))


# --- labels ---------------------------------------------------------------------------


def test_the_api_label_wins_over_the_config_and_a_change_requeues_the_info() -> None:
    fleet, slot, outbox = registry(label="Garage Bitaxe")
    fleet.set_label("garage", "Before Any Poll")  # kept for a miner not polled yet
    assert drain(outbox) == []
    fleet.succeeded(slot, T0, READING)
    [info] = drain(outbox, MinerInfo)
    assert info.label == "Before Any Poll"
    fleet.set_label("garage", "Before Any Poll")  # the same again: nothing
    assert drain(outbox) == []
    fleet.set_label("garage", None)
    [info] = drain(outbox)
    assert isinstance(info, MinerInfo) and info.label == "Garage Bitaxe"  # the config's
    fleet.succeeded(slot, at(1), READING)
    assert drain(outbox, MinerInfo) == []  # the queued info is current: no repeat
    fleet.set_label("elsewhere", "Not Polled")  # kept, publishes nothing
    assert (drain(outbox), fleet.labels.get("elsewhere")) == ([], "Not Polled")


def test_labels_are_bounded() -> None:
    labels = Labels(max_labels=2)
    assert labels.set("a", "A") and labels.set("b", "B")
    assert not labels.set("c", "C") and labels.get("c") is None and labels.refused == 1
    assert labels.set("a", "A2") and labels.get("a") == "A2"  # kept ones still change
    assert labels.set("b", None) and labels.set("c", "C") and len(labels) == 2


# --- forgotten ------------------------------------------------------------------------


def test_a_forgotten_miner_is_published_again_at_its_next_good_poll() -> None:
    fleet, slot, outbox = registry(label="Garage")
    fleet.succeeded(slot, T0, READING)
    drain(outbox)
    fleet.forgotten("garage")
    fleet.forgotten("unknown")  # not polled: nothing to do
    assert fleet.retained() == [] and drain(outbox) == []  # a reconnect does not undo it
    fleet.set_label("garage", "While Forgotten")  # nothing goes out before it answers
    assert drain(outbox) == []
    fleet.succeeded(slot, at(5), READING)
    info, status, sample = drain(outbox)
    assert isinstance(info, MinerInfo) and info.label == "While Forgotten"
    assert isinstance(status, MinerStatus)
    assert (status.state, status.since, status.last_seen) == ("online", T0, at(5))
    assert sample.ts == at(5)
    fleet.forgotten("garage")
    for seconds in (6, 7, 8):  # offline while forgotten: not published, not a comeback
        fleet.failed(slot, at(seconds), "timeout after 5.0 s")
    assert drain(outbox) == [] and slot.health.state == "offline"
    fleet.succeeded(slot, at(9), READING)  # it answers: back, info and status
    assert [type(m) for m in drain(outbox)] == [MinerInfo, MinerStatus, Sample]
    assert not slot.forgotten and len(fleet.retained()) == 2


# --- the listener's routing -----------------------------------------------------------


def test_listener_routes_labels_and_cleared_infos_and_counts_bad_input(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fleet, slot, outbox = registry()
    listener = Listener(BASE, fleet)
    fleet.succeeded(slot, T0, READING)
    drain(outbox)
    good = schemas.encode(MinerLabel(label="Rig One", ts=T0))
    listener.handle(f"{BASE}/miners/garage/label", good)
    [info] = drain(outbox)
    assert info.label == "Rig One"
    listener.handle(f"{BASE}/miners/garage/info", schemas.encode(info))  # not ours: ignored
    assert not slot.forgotten
    with caplog.at_level(logging.WARNING):
        listener.handle(f"{BASE}/miners/garage/label", b"{not json")
        listener.handle(f"{BASE}/miners/Bad Id/label", good)
        listener.handle(f"{BASE}/miners/garage/label", b'{"label": "", "ts": "' + T0.encode()
                        + b'"}')
    assert listener.rejects.counts["label"] == 3
    assert "bad label message ignored" in caplog.text and "\n" not in caplog.records[0].message
    assert drain(outbox) == []
    listener.handle(f"{BASE}/miners/garage/label", b"")  # removed: no label again
    [info] = drain(outbox)
    assert info.label is None
    listener.handle(f"{BASE}/miners/garage/info", b"")
    assert slot.forgotten


def test_listener_refuses_labels_past_the_bound() -> None:
    fleet, _, _ = registry()
    fleet.labels.max_labels = 1
    listener = Listener(BASE, fleet)
    for name in ("one", "two", "three"):
        listener.handle(f"{BASE}/miners/{name}/label",
                        schemas.encode(MinerLabel(label=name.title(), ts=T0)))
    assert (fleet.labels.get("one"), fleet.labels.get("two")) == ("One", None)
    assert listener.rejects.counts["label"] == 2
