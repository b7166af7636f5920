"""The audit of control through the api: command events merged with status changes and
alerts (a miner's and the fleet's, ``type=command``), a miner's autotune runs with their
steps, their documentation, their errors, and purging; on SQLite and PostgreSQL (the api
with ``[api] auth = "lan"``: reads open)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from minerwatch.api.forget import purge
from minerwatch.shared.db import (
    command_events,
    create_engine,
    create_schema,
    ts_to_ms,
    tune_runs,
    tune_steps,
)
from minerwatch.shared.schemas import (
    AlertEvent,
    CommandResult,
    MinerInfo,
    MinerSettings,
    MinerStatus,
    TuneProgress,
    TuneStep,
    format_ts,
)

StartApi = Callable[..., Any]
Seed = Callable[..., Awaitable[None]]

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
BEFORE = MinerSettings(frequency_mhz=525, core_voltage_mv=1150)
AFTER = MinerSettings(frequency_mhz=550, core_voltage_mv=1150)


@pytest.fixture
def db_url(any_db_url: str) -> str:
    return any_db_url


def ts(minutes: float) -> str:
    return format_ts(T0 + timedelta(minutes=minutes))


def info(miner_id: str) -> MinerInfo:
    return MinerInfo(miner_id=miner_id, driver="axeos", host="127.0.0.1", port=80)


def result(command_id: str, miner_id: str, minute: float, action: str = "configure",
           **fields: Any) -> CommandResult:
    values: dict[str, Any] = {"by": "token:ops", "status": "ok", "message": "done",
                              "requested": ts(minute - 0.5), "ts": ts(minute)}
    if action == "configure":
        values.update(changed=["frequency_mhz"], before=BEFORE, after=AFTER)
    values.update(fields)
    return CommandResult(id=command_id, miner_id=miner_id, action=action,  # type: ignore[arg-type]
                         **values)


def command_row(message: CommandResult) -> dict[str, Any]:
    """The ``command_events`` row the store writes for a result."""
    return {"id": message.id, "miner_id": message.miner_id, "ts_ms": ts_to_ms(message.ts),
            "requested_ms": ts_to_ms(message.requested), "action": message.action,
            "by": message.by, "status": message.status, "message": message.message,
            "changed": message.changed, "before": msgspec.to_builtins(message.before),
            "after": msgspec.to_builtins(message.after)}


def step(index: int, minute: float, stable: bool = True) -> TuneStep:
    return TuneStep(index=index, frequency_mhz=500 + 25 * index, core_voltage_mv=1150,
                    ts=ts(minute), stable=stable, hashrate_ths=1.0 + index / 10,
                    expected_ths=1.0 + index / 10, power_w=15.0, efficiency_jth=14.0,
                    temp_c=60.0, vr_temp_c=None, reject_ratio=0.0,
                    reason=None if stable else "temp_c 71 over 70")


def run(run_id: str, miner_id: str, minute: float, steps: list[TuneStep], **fields: Any
        ) -> TuneProgress:
    values: dict[str, Any] = {"objective": "efficiency", "state": "done", "phase": "done",
                              "by": "token:ops", "started": ts(minute), "ts": ts(minute + 30),
                              "progress": 1.0, "original": BEFORE, "steps": steps,
                              "best": 0 if steps else None, "applied": AFTER,
                              "message": "best: 525 MHz"}
    values.update(fields)
    return TuneProgress(run_id=run_id, miner_id=miner_id, **values)


def run_rows(message: TuneProgress) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``tune_runs`` and ``tune_steps`` rows the store writes for a progress."""
    row = {"run_id": message.run_id, "miner_id": message.miner_id,
           "objective": message.objective, "state": message.state, "by": message.by,
           "started_ms": ts_to_ms(message.started), "ts_ms": ts_to_ms(message.ts),
           "best": message.best, "original": msgspec.to_builtins(message.original),
           "applied": msgspec.to_builtins(message.applied), "message": message.message}
    steps = []
    for item in message.steps:
        values = msgspec.structs.asdict(item)
        values["ts_ms"] = ts_to_ms(values.pop("ts"))
        steps.append({**values, "run_id": message.run_id, "miner_id": message.miner_id})
    return row, steps


async def seed_audit(db_url: str, results: list[CommandResult], runs: list[TuneProgress]
                     ) -> None:
    engine = create_engine(db_url)
    try:
        await create_schema(engine)
        async with engine.begin() as conn:
            if results:
                await conn.execute(command_events.insert(), [command_row(r) for r in results])
            for message in runs:
                row, steps = run_rows(message)
                await conn.execute(tune_runs.insert(), [row])
                if steps:
                    await conn.execute(tune_steps.insert(), steps)
    finally:
        await engine.dispose()


async def test_command_events_merge_in_time_order_and_filter_by_type(
    start_api: StartApi, db_url: str, seed: Seed,
) -> None:
    await seed(db_url, infos=[info("a"), info("b")], events=[
        ("a", MinerStatus(state="online", since=ts(0))),
        AlertEvent(miner_id="a", rule="stalled", state="firing", severity="warning",
                   value=90.0, threshold=900.0, message="a: stuck", ts=ts(2)),
        ("a", MinerStatus(state="offline", since=ts(4), reason="restarting")),
    ])
    restart = result("r1", "a", 3, "restart", by="alerts", message="restarted")
    configure = result("c1", "a", 5)
    other = result("c2", "b", 1, "pause")
    await seed_audit(db_url, [configure, restart, other], [])
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        mine = (await http.get("/api/miners/a/events")).json()
        commands = (await http.get("/api/events", params={"type": "command"})).json()
        fleet = (await http.get("/api/events")).json()
        b_only = (await http.get("/api/events", params={"type": "command",
                                                        "miner_id": "b"})).json()
        latest = (await http.get("/api/miners/a/events", params={"limit": 2})).json()
        spec = (await http.get("/schema/openapi.json")).json()

    assert [(e["type"], e["ts"]) for e in mine] == [
        ("status", ts(0)), ("alert", ts(2)), ("command", ts(3)), ("status", ts(4)),
        ("command", ts(5))]
    assert mine[2] == {
        "type": "command", "ts": ts(3), "miner_id": "a", "action": "restart", "by": "alerts",
        "status": "ok", "message": "restarted", "changed": [], "before": None,
        "after": None, "requested": ts(2.5), "id": "r1"}
    assert mine[4]["changed"] == ["frequency_mhz"]
    assert mine[4]["before"] == msgspec.to_builtins(BEFORE)
    assert mine[4]["after"] == msgspec.to_builtins(AFTER)
    assert [(e["id"], e["miner_id"]) for e in commands] == [
        ("c2", "b"), ("r1", "a"), ("c1", "a")]
    assert [e["type"] for e in fleet] == [
        "status", "command", "alert", "command", "status", "command"]
    assert [e["id"] for e in b_only] == ["c2"]
    assert [e["type"] for e in latest] == ["status", "command"]
    events = spec["paths"]["/api/events"]["get"]
    parameters = {p["name"]: p for p in events["parameters"]}
    assert parameters["type"]["schema"]["enum"] == ["status", "alert", "command"]
    assert "CommandChange" in spec["components"]["schemas"]
    assert "command" in spec["paths"]["/api/miners/{miner_id}/events"]["get"]["description"]


async def test_tune_runs_newest_first_with_their_steps(
    start_api: StartApi, db_url: str, seed: Seed,
) -> None:
    await seed(db_url, infos=[info("a"), info("quiet")])
    older = run("run-old", "a", 0, [step(0, 5), step(1, 10, stable=False)],
                state="aborted", applied=BEFORE, message="aborted by token:ops")
    newer = run("run-new", "a", 60, [step(1, 70), step(0, 65)], best=1)
    elsewhere = run("run-b", "b", 30, [])
    await seed_audit(db_url, [], [older, newer, elsewhere])
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        runs = (await http.get("/api/miners/a/tune-runs")).json()
        one = (await http.get("/api/miners/a/tune-runs", params={"limit": 1})).json()
        none = await http.get("/api/miners/quiet/tune-runs")
        unknown = await http.get("/api/miners/ghost/tune-runs")
        bad_id = await http.get("/api/miners/Not%20Me/tune-runs")
        bad_limits = [await http.get("/api/miners/a/tune-runs", params={"limit": limit})
                      for limit in ("0", "101", "many")]
        spec = (await http.get("/schema/openapi.json")).json()

    assert [r["run_id"] for r in runs] == ["run-new", "run-old"]
    assert [r["run_id"] for r in one] == ["run-new"]
    newest, oldest = runs
    assert set(newest) == {"run_id", "miner_id", "objective", "state", "by", "started", "ts",
                           "original", "steps", "best", "applied", "message"}
    assert (newest["state"], newest["best"], newest["started"], newest["ts"]) == (
        "done", 1, ts(60), ts(90))
    assert [s["index"] for s in newest["steps"]] == [0, 1]  # in order, however stored
    assert newest["steps"][0] == msgspec.to_builtins(step(0, 65))
    assert newest["original"] == msgspec.to_builtins(BEFORE)
    assert newest["applied"] == msgspec.to_builtins(AFTER)
    assert (oldest["state"], oldest["message"]) == ("aborted", "aborted by token:ops")
    assert oldest["steps"][1]["stable"] is False
    assert oldest["steps"][1]["reason"] == "temp_c 71 over 70"
    assert oldest["applied"] == msgspec.to_builtins(BEFORE)
    assert none.status_code == 200 and none.json() == []
    assert unknown.status_code == 404
    assert set(unknown.json()) == {"status_code", "detail"} and "ghost" in unknown.json()[
        "detail"]
    assert bad_id.status_code == 400 and bad_id.json()["detail"].startswith("miner_id")
    for response in bad_limits:
        assert response.status_code == 400, response.text
        assert response.json()["detail"].startswith("limit"), response.text
    operation = spec["paths"]["/api/miners/{miner_id}/tune-runs"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"miner_id", "limit"}
    for status in ("400", "404", "503"):
        assert operation["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"}
    assert operation["summary"] and operation["description"]
    assert {"TuneRun", "TuneStep"} <= set(spec["components"]["schemas"])


async def test_without_a_database_the_audit_answers_503(
    start_api: StartApi, tmp_path: Path,
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the database directory should be")
    async with start_api(db_url=f"sqlite:///{blocker}/sub/history.db") as api, \
            httpx.AsyncClient(base_url=api.url) as http:
        answers = [await http.get(path) for path in (
            "/api/miners/a/tune-runs", "/api/events?type=command", "/api/miners/a/events")]
    for response in answers:
        assert response.status_code == 503 and "database" in response.json()["detail"]


async def test_purging_a_miner_deletes_its_commands_and_tune_runs(db_url: str) -> None:
    await seed_audit(db_url, [result("c1", "a", 1), result("c2", "b", 1)],
                     [run("r1", "a", 0, [step(0, 5)]), run("r2", "b", 0, [step(0, 5)])])
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await purge(conn, "a")
        async with engine.connect() as conn:
            left = {table.name: sorted((await conn.execute(table.select())).mappings().all(),
                                       key=str)
                    for table in (command_events, tune_runs, tune_steps)}
    finally:
        await engine.dispose()
    assert {name: [row["miner_id"] for row in found] for name, found in left.items()} == {
        "command_events": ["b"], "tune_runs": ["b"], "tune_steps": ["b"]}
