"""Forgotten miners, labels, status refreshes and the new alert columns, routed and written
on both databases (SQLite files and PostgreSQL), and a forget through a real broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from minerwatch.shared import db, topics
from minerwatch.shared.config import Config, DatabaseConfig, MqttConfig, StoreConfig
from minerwatch.shared.messages import Rejected
from minerwatch.shared.schemas import MinerLabel, Mute, encode
from minerwatch.store.__main__ import serve
from minerwatch.store.routing import (
    HISTORY_TOPICS,
    AlertRow,
    ForgetRow,
    InfoRow,
    Row,
    route,
    subscriptions,
)
from minerwatch.store.writer import Writer

BASE = "mw"
T0_MS = 1795341600000  # 2026-11-22T10:00:00.000Z
FORGOT_MS = T0_MS + 3_600_000


def one(topic: str, message: Any, **route_options: Any) -> Row:
    row = route(BASE, topic, encode(message) if message is not None else b"",
                **route_options)
    assert row is not None and not isinstance(row, Rejected), row
    return row


def forget(miner_id: str, at_ms: int = FORGOT_MS) -> Row:
    return one(f"mw/miners/{miner_id}/info", None, clock=lambda: at_ms)


async def select_all(engine: AsyncEngine, table: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(table).order_by(*table.primary_key.columns))
        return [dict(r) for r in result.mappings()]


async def miner_row(engine: AsyncEngine, miner_id: str) -> dict[str, Any]:
    [row] = [r for r in await select_all(engine, db.miners) if r["miner_id"] == miner_id]
    return row


async def write(engine: AsyncEngine, *batches: list[Row]) -> None:
    """Each list in one transaction, in order."""
    async with Writer(engine, batch_size=1000, interval_s=30) as writer:
        for batch in batches:
            for row in batch:
                writer.add(row)
            await writer.flush()


# --- routing -------------------------------------------------------------------------


def test_an_empty_info_is_a_forget_dated_by_the_clock_and_other_empties_nothing(
        make: Any) -> None:
    row = forget("rig-1", 1234)
    assert isinstance(row, ForgetRow)
    assert row.values == {"miner_id": "rig-1", "forgotten_ms": 1234}
    for topic in ("mw/miners/rig-1/sample", "mw/miners/rig-1/status",
                  "mw/alerts/rig-1/offline"):
        assert route(BASE, topic, b"") is None


def test_labels_and_mutes_are_not_history_and_not_subscribed(make: Any) -> None:
    assert topics.LABEL not in HISTORY_TOPICS and topics.MUTE not in HISTORY_TOPICS
    filters = subscriptions(BASE)
    assert topics.LABEL.filter(BASE) not in filters
    assert topics.MUTE.filter(BASE) not in filters
    assert filters == ["mw/miners/+/sample", "mw/miners/+/status", "mw/miners/+/info",
                       "mw/alerts/+/+", "mw/miners/+/command/result", "mw/miners/+/tune"]
    # and should one arrive anyway, nothing is stored from it
    label = MinerLabel(label="Garage Bitaxe", ts="2026-11-22T10:00:00.000Z")
    assert route(BASE, "mw/miners/rig-1/label", encode(label)) is None
    mute = Mute(id="m1", miner_id="rig-1", until="2026-11-23T10:00:00.000Z",
                created="2026-11-22T10:00:00.000Z")
    assert route(BASE, "mw/mutes/m1", encode(mute)) is None


def test_an_info_row_carries_the_label(make: Any) -> None:
    row = one("mw/miners/rig-1/info", make.info(label="Garage Bitaxé 1"))
    assert isinstance(row, InfoRow) and row.values["label"] == "Garage Bitaxé 1"


def test_an_alert_row_carries_label_since_muted_and_the_event_state(make: Any) -> None:
    row = one("mw/alerts/rig-1/block_found", make.alert(
        rule="block_found", state="event", label="Garage", since="2026-11-22T09:59:00.000Z",
        muted=True))
    assert isinstance(row, AlertRow)
    values = row.values
    assert (values["state"], values["label"], values["muted"]) == ("event", "Garage", True)
    assert values["since_ms"] == T0_MS - 60_000 and "since" not in values


# --- writing, on both engines ---------------------------------------------------------


async def test_a_forget_stamps_the_miner_and_keeps_its_history(
        engine: AsyncEngine, make: Any) -> None:
    history = [one("mw/miners/rig-1/info", make.info(label="Garage")),
               one("mw/miners/rig-1/status", make.status()),
               one("mw/miners/rig-1/sample", make.sample()),
               one("mw/alerts/rig-1/overheat", make.alert())]
    await write(engine, history, [forget("rig-1")], [forget("ghost")])
    miner = await miner_row(engine, "rig-1")
    assert miner["forgotten_ms"] == FORGOT_MS
    # everything else as it was: forgetting is not purging
    assert (miner["label"], miner["model"], miner["state"]) == ("Garage", "Gamma", "online")
    assert len(await select_all(engine, db.samples)) == 1
    assert len(await select_all(engine, db.status_events)) == 1
    assert len(await select_all(engine, db.alert_events)) == 1
    # a miner the store never heard of gets a row of its own, forgotten
    ghost = await miner_row(engine, "ghost")
    assert ghost["forgotten_ms"] == FORGOT_MS and ghost["model"] is None


async def test_a_new_info_or_status_brings_a_forgotten_miner_back(
        engine: AsyncEngine, make: Any) -> None:
    await write(engine, [one("mw/miners/rig-1/info", make.info()),
                         one("mw/miners/rig-2/info", make.info("rig-2"))],
                [forget("rig-1"), forget("rig-2")])
    refreshed = make.status(last_seen="2026-11-22T11:00:01.000Z")
    await write(engine, [one("mw/miners/rig-1/info", make.info(label="Back"))],
                [one("mw/miners/rig-2/status", refreshed)])
    one_back, two_back = (await miner_row(engine, "rig-1"), await miner_row(engine, "rig-2"))
    assert one_back["forgotten_ms"] is None and one_back["label"] == "Back"
    assert two_back["forgotten_ms"] is None and two_back["state"] == "online"


async def test_in_one_batch_the_last_of_forget_and_info_wins(
        engine: AsyncEngine, make: Any) -> None:
    info = one("mw/miners/rig-1/info", make.info())
    info_two = one("mw/miners/rig-2/info", make.info("rig-2"))
    status_three = one("mw/miners/rig-3/status", make.status())
    await write(engine, [info, forget("rig-1"),  # forgotten after its info
                         forget("rig-2"), info_two,  # back after being forgotten
                         forget("rig-3"), status_three])
    assert (await miner_row(engine, "rig-1"))["forgotten_ms"] == FORGOT_MS
    assert (await miner_row(engine, "rig-2"))["forgotten_ms"] is None
    assert (await miner_row(engine, "rig-3"))["forgotten_ms"] is None


async def test_a_status_refresh_moves_last_seen_without_a_new_event(
        engine: AsyncEngine, make: Any) -> None:
    def status(last_seen: str) -> Row:
        return one("mw/miners/rig-1/status", make.status(
            since="2026-11-22T09:00:00.000Z", last_seen=last_seen))

    first, minute, two_minutes = (status("2026-11-22T10:00:00.000Z"),
                                  status("2026-11-22T10:01:00.000Z"),
                                  status("2026-11-22T10:02:00.000Z"))
    await write(engine, [first], [minute], [minute, two_minutes, first])
    assert (await miner_row(engine, "rig-1"))["last_seen_ms"] == T0_MS + 120_000
    [event] = await select_all(engine, db.status_events)
    assert (event["state"], event["since_ms"], event["last_seen_ms"]) == (
        "online", T0_MS - 3_600_000, T0_MS + 120_000)
    # a late redelivery of an older refresh, alone, moves nothing back
    await write(engine, [minute])
    assert (await miner_row(engine, "rig-1"))["last_seen_ms"] == T0_MS + 120_000
    [event] = await select_all(engine, db.status_events)
    assert event["last_seen_ms"] == T0_MS + 120_000
    # a new state is a new event, and the older refresh cannot undo it
    offline = one("mw/miners/rig-1/status", make.status(
        "offline", since="2026-11-22T10:03:00.000Z", last_seen="2026-11-22T10:02:00.000Z",
        reason="timeout after 5 s", failures=3))
    await write(engine, [offline], [two_minutes])
    miner = await miner_row(engine, "rig-1")
    assert (miner["state"], miner["since_ms"]) == ("offline", T0_MS + 180_000)
    assert [e["state"] for e in await select_all(engine, db.status_events)] == [
        "online", "offline"]


async def test_alert_events_keep_label_since_muted_and_events(
        engine: AsyncEngine, make: Any) -> None:
    firing = one("mw/alerts/rig-1/offline", make.alert(
        rule="offline", label="Garage", since="2026-11-22T09:59:00.000Z", muted=True))
    block = one("mw/alerts/rig-1/block_found", make.alert(rule="block_found", state="event"))
    await write(engine, [firing, block, block])
    stored = {r["rule"]: r for r in await select_all(engine, db.alert_events)}
    assert stored["offline"] == firing.values
    assert (stored["offline"]["label"], stored["offline"]["since_ms"],
            stored["offline"]["muted"]) == ("Garage", T0_MS - 60_000, True)
    assert stored["block_found"]["state"] == "event"
    assert stored["block_found"]["muted"] is False and stored["block_found"]["label"] is None


# --- through a real broker ------------------------------------------------------------


async def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)


async def test_clearing_a_miners_retained_info_marks_it_forgotten_in_the_store(
        broker: Any, base_topic: str, tmp_path: Path, make: Any) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    config = Config(
        mqtt=MqttConfig(url=broker.url, base_topic=base_topic, reconnect_min_s=0.1,
                        reconnect_max_s=0.5),
        database=DatabaseConfig(url=url),
        store=StoreConfig(batch_size=50, batch_interval_s=0.02, client_id=base_topic,
                          keep_raw_days=0, keep_1m_days=0),
    )
    reader = db.create_engine(url)

    async def row() -> dict[str, Any] | None:
        try:
            rows = [r for r in await select_all(reader, db.miners) if r["miner_id"] == "rig-1"]
        except Exception:
            return None  # the tables may not exist yet
        return rows[0] if rows else None

    store = asyncio.create_task(serve(config))
    info_topic = f"{base_topic}/miners/rig-1/info"
    try:
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.publish(info_topic, encode(make.info(label="Garage")), qos=1,
                                 retain=True)
            await wait_until(row)
            before = await row()
            assert before is not None and before["forgotten_ms"] is None
            await client.publish(info_topic, b"", qos=1, retain=True)  # forget
            await wait_until(lambda: _forgotten(row))
            forgotten = await row()
            assert forgotten is not None and forgotten["label"] == "Garage"
            # the collector polls it again: its info comes back, and so does the miner
            await client.publish(info_topic, encode(make.info(label="Garage")), qos=1,
                                 retain=True)
            await wait_until(lambda: _forgotten(row, False))
            assert not store.done()
    finally:
        store.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await store
        await reader.dispose()


async def _forgotten(row: Callable[[], Any], forgotten: bool = True) -> bool:
    current = await row()
    return current is not None and (current["forgotten_ms"] is not None) == forgotten
