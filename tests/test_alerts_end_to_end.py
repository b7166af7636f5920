"""The alerts a user needs, through the real thing: simulated miners with the faults of each
rule -> collector -> Mosquitto -> alerts (and store, api), each a real process, with
notifications delivered over HTTP by Apprise to a local receiver.

Each rule must fire exactly once and resolve (events: be recorded once), also with a
per-model override, a mute and a restart of the alerts service in between; five miners
failing at once make one notification; a killed collector shows within two keep-alives as
``degraded`` and every miner ``stale``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
import pytest_asyncio

from minerwatch.alerts.notify import phrase
from minerwatch.shared.metrics import SERVICES
from minerwatch.shared.schemas import AlertEvent, decode
from minerwatch.shared.topics import mac_miner_id, slugify
from minerwatch.sim.fleet import Fault, Fleet, SimMiner

from running import BIN
from waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

POLL_S = 0.5
KEEPALIVE_S = 2


def miner_id(miner: SimMiner) -> str:
    if miner.mac:
        return mac_miner_id(miner.mac) or ""
    return slugify(f"{miner.host}-{miner.port}")


class Receiver:
    """A notification target: Apprise's ``json://`` posts each notification here."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            self.received.append(json.loads(body))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()

    def mentioning(self, *words: str) -> list[dict[str, Any]]:
        return [n for n in self.received
                if all(w in f"{n.get('title')} {n.get('message')}" for w in words)]


@dataclass
class Stack:
    base: str
    broker_url: str
    fleet: Fleet
    workdir: Path
    env: dict[str, str]
    api: str
    receiver: Receiver
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.workdir / "history.db", timeout=5) as conn:
            return conn.execute(sql, params).fetchall()

    async def start(self, name: str) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.procs[name] = await asyncio.create_subprocess_exec(
            BIN / f"minerwatch-{name}", env=self.env, cwd=self.workdir, stderr=log)

    async def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        proc = self.procs[name]
        if proc.returncode is None:
            proc.send_signal(sig)
        return await asyncio.wait_for(proc.wait(), 15)

    def alert_rows(self, miner: str, rule: str) -> list[tuple[str, int]]:
        return self.rows("SELECT state, muted FROM alert_events WHERE miner_id = ? AND rule = ? "
                         "ORDER BY ts_ms", miner, rule)



CONFIG = """
[mqtt]
keepalive_s = {keepalive}

[collector]
timeout_s = 0.4
offline_after = 2

{miners}

[store]
batch_interval_s = 0.1

[api]
public_url = "http://minerwatch.test:8000"
auth = "lan"

[alerts]
group_s = 2
notify = ["json://127.0.0.1:{receiver}/"]

[alerts.offline]
for_s = 1.5
[alerts.not_hashing]
for_s = 1.5
[alerts.hashrate_low]
for_s = 1.5
[alerts.stalled]
for_s = 600
polls = 5
[alerts.fan_failure]
for_s = 1
[alerts.rejects_high]
window_s = 60
min_shares = 10
[alerts.pool_fallback]
for_s = 1
[alerts.temp_high]
for_s = 1
[alerts.vr_temp_high]
enabled = false
[alerts.service_down]
for_s = 2

[[alerts.overrides]]
match = {{ make = "Bitaxe" }}
temp_high = {{ threshold = 66 }}
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    broker, port_picker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    workdir = tmp_path_factory.mktemp("alerts-stack")
    api_port = port_picker()
    receiver = Receiver()
    await receiver.start()
    async with Fleet(axeos=9, cgminer=3, host="127.0.0.1", base_port=0, seed=11) as fleet:
        urls = fleet.urls()
        # The first miner has a label; every miner is in the file (MINERWATCH_MINERS would
        # replace the list, labels and all).
        miners = "\n".join(
            f'[[collector.miners]]\nurl = "{url}"' + ('\nlabel = "Garage Bitaxe"' if not i else "")
            for i, url in enumerate(urls))
        (workdir / "minerwatch.toml").write_text(CONFIG.format(
            keepalive=KEEPALIVE_S, miners=miners, receiver=receiver.port))
        env = {
            **os.environ,
            "MINERWATCH_CONFIG": str(workdir / "minerwatch.toml"),
            "MINERWATCH_MQTT_URL": broker.url,
            "MINERWATCH_BASE_TOPIC": f"alerts-e2e-{api_port}",
            "MINERWATCH_DB_URL": f"sqlite:///{workdir / 'history.db'}",
            "MINERWATCH_API_LISTEN": f"127.0.0.1:{api_port}",
            "MINERWATCH_POLL_INTERVAL_S": str(POLL_S),
        }
        stack = Stack(f"alerts-e2e-{api_port}", broker.url, fleet, workdir, env,
                      f"http://127.0.0.1:{api_port}", receiver)
        for name in SERVICES:
            await stack.start(name)
        try:
            async with httpx.AsyncClient() as client:
                async def everyone_online() -> bool:
                    body = (await client.get(f"{stack.api}/healthz")).json()
                    miners = (await client.get(f"{stack.api}/api/miners")).json()
                    return body["status"] == "ok" and len(miners) == len(fleet.miners) and all(
                        m["state"] == "online" for m in miners)
                await eventually(everyone_online, timeout=30)
            yield stack
        finally:
            codes = {name: await stack.stop(name) for name in SERVICES}
            await receiver.stop()
            logs = {name: (workdir / f"{name}.log").read_text() for name in SERVICES}
            assert codes == dict.fromkeys(SERVICES, 0), f"unclean exits: {codes}\n{logs}"
            for name, text in logs.items():
                assert "Traceback" not in text, f"{name} logged a traceback:\n{text}"


async def retained_alert(stack: Stack, miner: str, rule: str) -> AlertEvent | None:
    """The alert topic's retained event, read by an independent client."""
    topic = f"{stack.base}/alerts/{miner}/{rule}"
    host, port = stack.broker_url.removeprefix("mqtt://").rsplit(":", 1)
    async with aiomqtt.Client(host, int(port)) as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(1.0):
                async for message in client.messages:
                    payload = bytes(message.payload)  # type: ignore[arg-type]
                    return decode(payload, AlertEvent) if payload else None
        except TimeoutError:
            return None
    return None


def sim(stack: Stack, index: int) -> tuple[SimMiner, str]:
    miner = stack.fleet.miners[index]
    return miner, miner_id(miner)


async def fault_fires_and_resolves(stack: Stack, index: int, fault: Fault, rule: str,
                                   *, timeout: float = 20.0) -> AlertEvent:
    miner, mid = sim(stack, index)
    before = [s for s, _ in stack.alert_rows(mid, rule)]
    await miner.set_fault(fault)
    try:
        firing = await eventually(lambda: _state(stack, mid, rule, "firing"), timeout)
    finally:
        await miner.set_fault(Fault.NONE)
    await eventually(lambda: _state(stack, mid, rule, "resolved"), timeout)
    # Stored exactly once each: one firing, one resolve.
    await eventually(lambda: [s for s, _ in stack.alert_rows(mid, rule)] == [
        *before, "firing", "resolved"])
    return firing  # type: ignore[no-any-return]


async def _state(stack: Stack, miner: str, rule: str, state: str) -> AlertEvent | None:
    event = await retained_alert(stack, miner, rule)
    return event if event is not None and event.state == state else None


async def test_offline_fires_once_with_the_reason_and_label_then_resolves(stack: Stack) -> None:
    firing = await fault_fires_and_resolves(stack, 0, Fault.REFUSE, "offline")
    assert firing.label == "Garage Bitaxe" and "refused" in firing.message
    notes = await eventually(lambda: stack.receiver.mentioning("Garage Bitaxe", "offline"))
    firing_notes = [n for n in notes if "resolved" not in f"{n['title']} {n['message']}"]
    assert len(firing_notes) == 1, notes
    assert f"http://minerwatch.test:8000/miners/{miner_id(stack.fleet.miners[0])}" in (
        firing_notes[0]["message"])


async def test_five_miners_offline_at_once_make_one_notification(stack: Stack) -> None:
    group = [stack.fleet.miners[i] for i in range(1, 6)]
    before = len(stack.receiver.received)
    for miner in group:
        await miner.set_fault(Fault.TIMEOUT)
    try:
        for miner in group:
            await eventually(lambda m=miner: _state(stack, miner_id(m), "offline", "firing"))
        await asyncio.sleep(3)  # past group_s: every grouped notification went out
    finally:
        for miner in group:
            await miner.set_fault(Fault.NONE)
    new = stack.receiver.received[before:]
    offline = [n for n in new if "offline" in n["title"] and "resolved" not in n["title"]]
    assert len(offline) == 1, new
    assert "5 miners" in offline[0]["title"]
    for miner in group:
        assert miner_id(miner) in offline[0]["message"]
    for miner in group:
        await eventually(lambda m=miner: _state(stack, miner_id(m), "offline", "resolved"))


async def test_a_paused_miner_is_not_hashing(stack: Stack) -> None:
    await fault_fires_and_resolves(stack, 6, Fault.PAUSED, "not_hashing")


async def test_a_slow_miner_hashes_below_what_it_should(stack: Stack) -> None:
    firing = await fault_fires_and_resolves(stack, 3, Fault.SLOW, "hashrate_low")
    assert firing.value is not None and firing.value < firing.threshold


async def test_a_stopped_fan_is_a_fan_failure(stack: Stack) -> None:
    await fault_fires_and_resolves(stack, 7, Fault.FAN_STOPPED, "fan_failure")


async def test_a_frozen_miner_is_stalled(stack: Stack) -> None:
    await fault_fires_and_resolves(stack, 8, Fault.STALLED, "stalled")


async def test_a_burst_of_rejects(stack: Stack) -> None:
    await fault_fires_and_resolves(stack, 9, Fault.REJECTS, "rejects_high", timeout=40)


async def test_a_fallback_pool(stack: Stack) -> None:
    await fault_fires_and_resolves(stack, 10, Fault.FALLBACK_POOL, "pool_fallback")


async def test_temperature_is_judged_by_the_model_override(stack: Stack) -> None:
    bitaxe, bitaxe_id = sim(stack, 6)
    antminer, antminer_id = sim(stack, 11)
    bitaxe.temp_override = antminer.temp_override = 68.0  # over the Bitaxe override only
    try:
        await eventually(lambda: _state(stack, bitaxe_id, "temp_high", "firing"))
        await asyncio.sleep(2)
        assert await retained_alert(stack, antminer_id, "temp_high") is None
    finally:
        bitaxe.temp_override = antminer.temp_override = None
    await eventually(lambda: _state(stack, bitaxe_id, "temp_high", "resolved"))


async def test_events_are_recorded_once_even_across_a_restart(stack: Stack) -> None:
    miner, mid = sim(stack, 11)
    await miner.set_fault(Fault.BLOCK)
    await miner.set_fault(Fault.BEST_DIFF)
    for rule in ("block_found", "best_difficulty"):
        await eventually(lambda r=rule: _state(stack, mid, r, "event"))
    await asyncio.sleep(3)  # past group_s: the events' notifications went out
    for rule in ("block_found", "best_difficulty"):
        assert len(stack.receiver.mentioning(phrase(rule))) == 1, stack.receiver.received
    notified = len(stack.receiver.received)
    assert await stack.stop("alerts") == 0
    await stack.start("alerts")
    await asyncio.sleep(4)  # the restarted service has read the retained events back
    for rule in ("block_found", "best_difficulty"):
        assert [s for s, _ in stack.alert_rows(mid, rule)] == ["event"]
    assert stack.receiver.received[notified:] == []


async def operator_token(stack: Stack) -> str:
    """A token made as a person makes one (``minerwatch-api token create``): muting is a
    change, which needs an operator even with ``auth = "lan"``."""
    process = await asyncio.create_subprocess_exec(
        BIN / "minerwatch-api", "token", "create", "--role", "operator", "--name", "e2e-mute",
        env=stack.env, cwd=stack.workdir, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode().strip()


async def test_a_muted_alert_is_published_and_stored_but_not_notified(stack: Stack) -> None:
    _miner, mid = sim(stack, 8)
    token = await operator_token(stack)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as client:
        answer = await client.post(f"{stack.api}/api/alerts/mute",
                                   json={"miner_id": mid, "rule": "offline", "for_s": 600})
        assert answer.status_code == 201, answer.text
    await asyncio.sleep(1)  # the alerts service has the retained mute
    before = len(stack.receiver.mentioning(mid))
    firing = await fault_fires_and_resolves(stack, 8, Fault.REFUSE, "offline")
    assert firing.muted
    assert [bool(m) for _, m in stack.alert_rows(mid, "offline")][-2:] == [True, True]
    await asyncio.sleep(3)
    assert len(stack.receiver.mentioning(mid)) == before


async def test_a_killed_collector_turns_everything_stale_and_alerts(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        await stack.stop("collector", signal.SIGKILL)
        started = asyncio.get_running_loop().time()

        async def all_stale() -> bool:
            health = (await client.get(f"{stack.api}/healthz")).json()
            miners = (await client.get(f"{stack.api}/api/miners")).json()
            return (health["status"] == "degraded"
                    and health["services"]["collector"]["state"] == "offline"
                    and all(m["state"] == "stale" for m in miners))

        await eventually(all_stale, timeout=2 * KEEPALIVE_S + 2)
        assert asyncio.get_running_loop().time() - started <= 2 * KEEPALIVE_S + 1
        await eventually(lambda: _state(stack, "minerwatch-collector", "service_down", "firing"))
        await stack.start("collector")
        await eventually(lambda: _state(stack, "minerwatch-collector", "service_down",
                                        "resolved"))
        health = await eventually(lambda: client.get(f"{stack.api}/healthz"))
        await eventually(lambda: _healthy(client, stack))
        assert health.status_code == 200


async def _healthy(client: httpx.AsyncClient, stack: Stack) -> bool:
    body = (await client.get(f"{stack.api}/healthz")).json()
    return bool(body["status"] == "ok")
