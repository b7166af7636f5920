"""The whole system as a user runs it: simulated fleet -> collector -> broker -> store, alerts,
api, each service a real process with its console script, talking through a real Mosquitto,
a real SQLite file, and real HTTP and WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
import pytest_asyncio
import websockets

from minerwatch.shared.metrics import SERVICES
from minerwatch.shared.schemas import MinerStatus, Sample, decode, parse_ts
from minerwatch.shared.topics import mac_miner_id, slugify
from minerwatch.sim.fleet import Fault, Fleet, SimMiner

from running import start_services, stop_services
from waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

POLL_S = 0.5


def miner_id(miner: SimMiner) -> str:
    if miner.mac:
        return mac_miner_id(miner.mac) or ""
    return slugify(f"{miner.host}-{miner.port}")


@dataclass
class Stack:
    broker: Any
    base: str
    fleet: Fleet
    db_path: Path
    api: str
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db_path, timeout=5) as conn:
            return conn.execute(sql, params).fetchall()



@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    broker, port_picker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    api_port = port_picker()
    config = workdir / "minerwatch.toml"
    config.write_text(f"""
[collector]
timeout_s = 0.4
offline_after = 3

[store]
batch_interval_s = 0.1
client_id = "e2e-store-{api_port}"

[[alerts.rules]]
name = "overheat"
field = "temp_c"
op = ">"
threshold = 80
for_s = 1
hysteresis = 3
cooldown_s = 600
severity = "warning"
""")
    base = f"e2e-{api_port}"
    async with Fleet(axeos=2, cgminer=2, host="127.0.0.1", base_port=0, seed=7) as fleet:
        env = {
            **os.environ,
            "MINERWATCH_CONFIG": str(config),
            "MINERWATCH_MQTT_URL": broker.url,
            "MINERWATCH_BASE_TOPIC": base,
            "MINERWATCH_DB_URL": f"sqlite:///{workdir / 'history.db'}",
            "MINERWATCH_API_LISTEN": f"127.0.0.1:{api_port}",
            "MINERWATCH_API_AUTH": "lan",  # reads open, as these tests read
            "MINERWATCH_MINERS": ",".join(fleet.urls()),
            "MINERWATCH_POLL_INTERVAL_S": str(POLL_S),
        }
        stack = Stack(broker, base, fleet, workdir / "history.db", f"http://127.0.0.1:{api_port}")
        stack.procs = await start_services(SERVICES, env, workdir)
        try:
            async with httpx.AsyncClient() as client:
                await eventually(lambda: client.get(f"{stack.api}/healthz"), timeout=20)
            yield stack
        finally:
            await stop_services(stack.procs, workdir)


async def test_samples_reach_the_database_with_the_simulators_values(stack: Stack) -> None:
    ids = {miner_id(m): m for m in stack.fleet.miners}

    def stored() -> dict[str, tuple[Any, ...]]:
        rows = stack.rows(
            "SELECT miner_id, hashrate_ths, temp_c, power_w, fan_rpm, is_mining FROM samples "
            "ORDER BY ts_ms"
        )
        latest = {row[0]: row for row in rows}
        assert set(latest) == set(ids), f"miners in the database: {sorted(latest)}"
        return latest

    latest = await eventually(stored, timeout=20)
    for mid, (_, hashrate, temp, power, fans, mining) in latest.items():
        truth = ids[mid].snapshot()
        assert hashrate == pytest.approx(truth["hashrate_ths"], rel=0.15), mid
        assert temp == pytest.approx(truth["temp_c"], abs=5), mid
        assert mining == 1
        assert json.loads(fans), mid
        if ids[mid].kind == "axeos":
            assert 0.5 < hashrate < 5, "AxeOS GH/s must be converted to TH/s"
            assert power == pytest.approx(truth["power_w"], rel=0.2)
        else:
            assert 50 < hashrate < 500, "Antminer GH/s must be converted to TH/s"
            assert power is None, "stock Antminer firmware reports no power"


async def test_api_serves_the_fleet_and_its_history(stack: Stack) -> None:
    ids = {miner_id(m) for m in stack.fleet.miners}
    async with httpx.AsyncClient(base_url=stack.api) as client:

        async def fleet_listed() -> list[dict[str, Any]]:
            miners = (await client.get("/api/miners")).json()
            listed = {m["miner_id"]: m for m in miners}
            assert ids <= set(listed)
            assert all(listed[i]["sample"] and listed[i]["info"] for i in ids)
            assert all(listed[i]["status"]["state"] == "online" for i in ids), listed
            return miners

        miners = await eventually(fleet_listed)
        axeos = next(m for m in miners if m["info"]["driver"] == "axeos")
        assert axeos["info"]["mac"] and axeos["info"]["make"]

        some_id = axeos["miner_id"]
        async def two_polls_stored() -> list[dict[str, Any]]:
            history = (await client.get(f"/api/miners/{some_id}/samples")).json()
            assert len(history) >= 2
            return history

        history = await eventually(two_polls_stored)
        stamps = [parse_ts(s["ts"]) for s in history]
        assert stamps == sorted(stamps)
        since = history[-2]["ts"].replace("Z", "+00:00")
        recent = (await client.get(f"/api/miners/{some_id}/samples", params={"since": since}))
        assert [s["ts"] for s in recent.json()][:2] == [s["ts"] for s in history[-2:]]

        bad = await client.get(f"/api/miners/{some_id}/samples", params={"since": "yesterday"})
        assert bad.status_code == 400
        assert "since" in bad.text
        missing = await client.get("/api/miners/no-such-miner/samples")
        assert missing.status_code == 404
        health = (await client.get("/healthz")).json()
        assert health["broker"] == "up" and health["database"] == "up"
        assert (await client.get("/schema/openapi.json")).status_code == 200
        page = await client.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()


async def test_websocket_client_receives_live_samples(stack: Stack) -> None:
    url = stack.api.replace("http://", "ws://") + "/ws"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"subscribe": "elsewhere/#"}))
        refused = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert "error" in refused
        wanted = f"{stack.base}/miners/+/sample"
        await ws.send(json.dumps({"subscribe": wanted}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"subscribed": wanted}
        first_seen: dict[str, str] = {}
        newer: set[str] = set()
        async with asyncio.timeout(15):
            while len(newer) < len(stack.fleet.miners):
                message = json.loads(await ws.recv())
                sample = decode(json.dumps(message["payload"]), Sample)
                assert message["topic"] == f"{stack.base}/miners/{sample.miner_id}/sample"
                if sample.miner_id not in first_seen:
                    first_seen[sample.miner_id] = sample.ts
                elif sample.ts > first_seen[sample.miner_id]:
                    newer.add(sample.miner_id)
    assert newer == {miner_id(m) for m in stack.fleet.miners}


async def watch(stack: Stack, topic: str, seconds: float) -> list[tuple[str, bytes, bool]]:
    """Every message on ``topic`` for ``seconds``: (topic, payload, retained)."""
    seen: list[tuple[str, bytes, bool]] = []
    async with aiomqtt.Client(stack.broker.host, stack.broker.port) as client:
        await client.subscribe(topic, qos=1)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(seconds):
                async for message in client.messages:
                    seen.append((str(message.topic), bytes(message.payload), message.retain))
    return seen


async def test_an_overheating_miner_fires_exactly_one_alert(stack: Stack) -> None:
    hot = stack.fleet.by_name("axeos-1")
    hot_id = miner_id(hot)
    topic = f"{stack.base}/alerts/{hot_id}/overheat"
    watcher = asyncio.create_task(watch(stack, topic, seconds=8))
    await asyncio.sleep(0.5)
    hot.temp_override = 90.0
    try:
        events = await watcher
    finally:
        hot.temp_override = None
    firing = [json.loads(p) for _, p, _ in events if json.loads(p)["state"] == "firing"]
    assert len(firing) == 1, events
    assert firing[0]["miner_id"] == hot_id
    assert firing[0]["value"] >= 85 and firing[0]["threshold"] == 80
    # The others stayed quiet, and the store kept the event.
    assert not [e for e in await watch(stack, f"{stack.base}/alerts/#", 1) if hot_id not in e[0]]
    assert await eventually(lambda: stack.rows(
        "SELECT state FROM alert_events WHERE miner_id = ? AND rule = 'overheat'", hot_id))


async def test_a_switched_off_miner_goes_offline_and_stops_publishing(stack: Stack) -> None:
    dead = stack.fleet.by_name("cgminer-0")
    dead_id = miner_id(dead)
    status_topic = f"{stack.base}/miners/{dead_id}/status"
    sample_topic = f"{stack.base}/miners/{dead_id}/sample"
    watcher = asyncio.create_task(watch(stack, f"{stack.base}/miners/{dead_id}/+", seconds=6))
    await asyncio.sleep(0.3)
    await dead.set_fault(Fault.REFUSE)
    try:
        events = await watcher
    finally:
        await dead.set_fault(Fault.NONE)
    live = [(t, p) for t, p, retained in events if not retained]
    statuses = [decode(p, MinerStatus) for t, p in live if t == status_topic]
    assert [s.state for s in statuses] == ["offline"], statuses
    assert statuses[0].failures == 3
    assert statuses[0].reason and "refused" in statuses[0].reason
    went_offline = next(i for i, (t, _) in enumerate(live) if t == status_topic)
    assert not [t for t, _ in live[went_offline:] if t == sample_topic], "samples after offline"
    # Switched back on, it is online again at the first good poll.
    back = await eventually(lambda: stack.rows(
        "SELECT state FROM miners WHERE miner_id = ? AND state = 'online'", dead_id))
    assert back
