"""The audit of control: command results and autotune progress routed to rows, and stored
through a real broker into both databases (SQLite files and PostgreSQL), duplicates
idempotent, read-only commands skipped, malformed payloads rejected without harm."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from minerwatch.shared import db
from minerwatch.shared.config import Config, MqttConfig, StoreConfig
from minerwatch.shared.messages import Rejected
from minerwatch.shared.rejects import RejectLog
from minerwatch.shared.schemas import (
    CommandResult,
    MinerSettings,
    Pool,
    Pools,
    TuneProgress,
    TuneStep,
    encode,
)
from minerwatch.store.consumer import mqtt_session, store_link
from minerwatch.store.routing import CommandRow, TuneRow, route, subscriptions
from minerwatch.store.writer import Writer

BASE = "mw"
T0_MS = 1795341600000  # 2026-11-22T10:00:00.000Z
STORE_LOG = logging.getLogger("minerwatch.store")


def ts(seconds: float) -> str:
    ms = T0_MS + int(seconds * 1000)
    return db.ms_to_datetime(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def result(command_id: str = "c1", action: str = "configure", **fields: Any) -> CommandResult:
    values: dict[str, Any] = {
        "miner_id": "rig-1", "by": "token:ops", "status": "ok", "message": "frequency set",
        "requested": ts(0), "ts": ts(2), "changed": ["frequency_mhz"],
        "before": MinerSettings(frequency_mhz=525, core_voltage_mv=1150),
        "after": MinerSettings(frequency_mhz=550, core_voltage_mv=1150),
    }
    values.update(fields)
    return CommandResult(id=command_id, action=action, **values)  # type: ignore[arg-type]


def step(index: int, **fields: Any) -> TuneStep:
    values: dict[str, Any] = {
        "frequency_mhz": 500 + 25 * index, "core_voltage_mv": 1150, "ts": ts(60 * (index + 1)),
        "stable": True, "hashrate_ths": 1.0 + index / 10, "expected_ths": 1.0 + index / 10,
        "power_w": 15.0, "efficiency_jth": 15.0 / (1.0 + index / 10), "temp_c": 60.0,
        "vr_temp_c": 55.0, "reject_ratio": 0.001,
    }
    values.update(fields)
    return TuneStep(index=index, **values)


def progress(steps: int, state: str = "running", **fields: Any) -> TuneProgress:
    values: dict[str, Any] = {
        "run_id": "run-1", "miner_id": "rig-1", "objective": "efficiency", "phase": "settling",
        "by": "token:ops", "started": ts(0), "ts": ts(60 * steps + 1), "progress": 0.5,
        "original": MinerSettings(frequency_mhz=525, core_voltage_mv=1150),
        "steps": [step(i) for i in range(steps)], "best": 0 if steps else None,
    }
    values.update(fields)
    return TuneProgress(state=state, **values)  # type: ignore[arg-type]


def tweak(original: msgspec.Struct, **changes: Any) -> bytes:
    data = msgspec.to_builtins(original)
    data.update(changes)
    return json.dumps(data).encode()


# --- routing ---------------------------------------------------------------------------


def test_the_store_subscribes_to_command_results_and_tune_progress() -> None:
    filters = subscriptions(BASE)
    assert "mw/miners/+/command/result" in filters and "mw/miners/+/tune" in filters
    assert "mw/miners/+/command" not in filters  # the request is not the record


def test_a_command_result_is_one_row_without_pool_passwords() -> None:
    pools = Pools(primary=Pool(url="stratum+tcp://pool:3333", user="me", password="hunter2"))
    message = result(changed=["pools"], before=MinerSettings(pools=pools),
                     after=MinerSettings(pools=pools, frequency_mhz=550))
    row = route(BASE, "mw/miners/rig-1/command/result", encode(message))
    assert isinstance(row, CommandRow)
    values = row.values
    assert (values["id"], values["miner_id"], values["action"], values["status"]) == (
        "c1", "rig-1", "configure", "ok")
    assert (values["requested_ms"], values["ts_ms"]) == (T0_MS, T0_MS + 2000)
    assert values["changed"] == ["pools"]
    assert values["before"]["pools"]["primary"] == {
        "url": "stratum+tcp://pool:3333", "user": "me", "password": None}
    assert values["after"]["frequency_mhz"] == 550
    assert "hunter2" not in json.dumps(values)


def test_a_settings_read_is_not_audited() -> None:
    read = result(action="settings", changed=[], before=None, after=None,
                  settings=MinerSettings(frequency_mhz=525))
    assert route(BASE, "mw/miners/rig-1/command/result", encode(read)) is None


def test_tune_progress_is_the_run_and_its_steps_with_impossible_readings_null() -> None:
    message = progress(2, "done", applied=MinerSettings(frequency_mhz=525))
    message.steps[1].temp_c = float("inf")
    row = route(BASE, "mw/miners/rig-1/tune", encode(message))
    assert isinstance(row, TuneRow)
    assert row.values == {
        "run_id": "run-1", "miner_id": "rig-1", "objective": "efficiency", "state": "done",
        "by": "token:ops", "started_ms": T0_MS, "ts_ms": T0_MS + 121_000, "best": 0,
        "original": msgspec.to_builtins(MinerSettings(frequency_mhz=525,
                                                      core_voltage_mv=1150)),
        "applied": msgspec.to_builtins(MinerSettings(frequency_mhz=525)), "message": None,
    }
    assert [(s["run_id"], s["index"], s["frequency_mhz"], s["ts_ms"]) for s in row.steps] == [
        ("run-1", 0, 500, T0_MS + 60_000), ("run-1", 1, 525, T0_MS + 120_000)]
    assert row.steps[1]["temp_c"] is None and row.steps[0]["temp_c"] == 60.0
    assert set(row.steps[0]) == {c.name for c in db.tune_steps.columns}
    assert set(row.values) == {c.name for c in db.tune_runs.columns}


def malformed() -> list[tuple[str, bytes, str]]:
    """(topic, payload, a phrase the one-line reason holds)."""
    results, tune = "mw/miners/rig-1/command/result", "mw/miners/rig-1/tune"
    return [
        (results, b"{not json", "CommandResult"),
        (results, tweak(result(), miner_id="rig-2"), "does not match"),
        (results, tweak(result(), status="maybe"), "status"),
        (results, tweak(result(), ts="2026-13-45T10:00:00.000Z"), "not a real moment"),
        (results, tweak(result(), message="nul\x00byte"), "NUL"),
        (tune, tweak(progress(1), steps=[{"index": 0}]), "frequency_mhz"),
        (tune, tweak(progress(1), best=2**40), "best"),
        (tune, tweak(progress(0), steps=[msgspec.to_builtins(step(0, frequency_mhz=2**40))]),
         "frequency_mhz"),
    ]


def test_malformed_results_and_progress_are_rejected_with_one_line() -> None:
    for topic, payload, phrase in malformed():
        rejected = route(BASE, topic, payload)
        assert isinstance(rejected, Rejected), (payload, rejected)
        assert phrase in rejected.reason and "\n" not in rejected.reason, rejected.reason


# --- through a real broker, into both databases -----------------------------------------


async def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


async def rows(engine: AsyncEngine, table: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(table).order_by(*table.primary_key.columns))
        return [dict(r) for r in result.mappings()]


@contextlib.asynccontextmanager
async def running_store(engine: AsyncEngine, broker: Any, base: str, rejects: RejectLog,
                        client_id: str) -> AsyncIterator[Writer]:
    config = Config(mqtt=MqttConfig(url=broker.url, base_topic=base, reconnect_min_s=0.1,
                                    reconnect_max_s=0.5),
                    store=StoreConfig(client_id=client_id, batch_size=50,
                                      batch_interval_s=0.02))
    async with Writer(engine, batch_size=50, interval_s=0.02) as writer:
        link = asyncio.create_task(store_link(config).run(
            mqtt_session(base, writer, rejects)))
        try:
            yield writer
        finally:
            link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link


async def test_results_and_tune_progress_are_stored_once_and_the_bad_ones_harm_nothing(
    engine: AsyncEngine, broker: Any, base_topic: str, caplog: Any,
) -> None:
    caplog.set_level(logging.WARNING, "minerwatch.store")
    rejects = RejectLog(STORE_LOG, window_s=3600)
    results_topic = f"{base_topic}/miners/rig-1/command/result"
    tune_topic = f"{base_topic}/miners/rig-1/tune"
    configure, restart = result("c1"), result(
        "c2", "restart", by="alerts", requested=ts(10), ts=ts(70), changed=[], before=None,
        after=None, message="restarted, answering again")
    read = result("c3", "settings", changed=[], before=None, after=None)
    first, second = progress(1), progress(2)
    done = progress(2, "done", applied=MinerSettings(frequency_mhz=550, core_voltage_mv=1150),
                    best=1, message="best: 550 MHz 1150 mV", ts=ts(200))
    async with aiomqtt.Client(broker.host, broker.port) as client:
        async with running_store(engine, broker, base_topic, rejects, base_topic) as writer:
            # the tune topic first, as retained as the collector leaves it
            await client.publish(tune_topic, encode(first), qos=1, retain=True)
            await wait_until(lambda: _count(engine, db.tune_steps, 1))
            for payload in (encode(configure), encode(read), encode(restart),
                            encode(configure)):  # ``configure`` again: a redelivery
                await client.publish(results_topic, payload, qos=1)
            for topic, payload, _phrase in malformed():
                await client.publish(f"{base_topic}/{topic.removeprefix('mw/')}", payload,
                                     qos=1)
            for message in (second, done, second):  # a late ``second``: no step back
                await client.publish(tune_topic, encode(message), qos=1, retain=True)
            received = 1 + 4 + len(malformed()) + 3
            await wait_until(lambda: _settled(writer, received))
        # a new session gets the retained progress again: a duplicate, nothing changes
        async with running_store(engine, broker, base_topic, rejects,
                                 f"{base_topic}-new") as again:
            await wait_until(lambda: _settled(again, 1))
            await client.publish(results_topic, encode(restart), qos=1)  # and a late copy
            await wait_until(lambda: _settled(again, 2))
    rejects.close()

    commands = await rows(engine, db.command_events)
    assert [(c["id"], c["action"], c["by"], c["status"]) for c in commands] == [
        ("c1", "configure", "token:ops", "ok"), ("c2", "restart", "alerts", "ok")]
    assert commands[0]["changed"] == ["frequency_mhz"]
    assert commands[0]["before"] == msgspec.to_builtins(configure.before)
    assert commands[0]["after"] == msgspec.to_builtins(configure.after)
    assert (commands[1]["requested_ms"], commands[1]["ts_ms"]) == (T0_MS + 10_000,
                                                                     T0_MS + 70_000)
    assert commands[1]["before"] is None and commands[1]["changed"] == []
    [run] = await rows(engine, db.tune_runs)
    assert (run["state"], run["best"], run["message"], run["ts_ms"]) == (
        "done", 1, "best: 550 MHz 1150 mV", db.ts_to_ms(done.ts))
    assert run["applied"] == msgspec.to_builtins(done.applied)
    assert run["original"] == msgspec.to_builtins(first.original)
    steps = await rows(engine, db.tune_steps)
    assert [(s["index"], s["frequency_mhz"], s["stable"]) for s in steps] == [
        (0, 500, True), (1, 525, True)]
    assert steps[1]["hashrate_ths"] == 1.1 and steps[1]["miner_id"] == "rig-1"
    # every malformed payload counted as a reject, no row refused by the database
    assert rejects.total == len(malformed())
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]


async def _count(engine: AsyncEngine, table: Any, count: int) -> bool:
    return len(await rows(engine, table)) >= count


async def _settled(writer: Writer, received: int) -> bool:
    return writer.received >= received and writer.pending == 0
