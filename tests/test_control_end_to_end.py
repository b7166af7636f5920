"""Control as a user runs it: HTTP (or MQTT) -> api -> broker -> collector -> simulated
miner, and the audit back through the store; every service a real process with its
console script, tokens made with `minerwatch-api token create`, a real Mosquitto and a real
SQLite file. The collector is the only one that talks to the miners."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from minerwatch.shared.metrics import SERVICES
from minerwatch.shared.mqtt import Client, Subscription
from minerwatch.shared.schemas import Command, CommandResult, TuneProgress, decode, encode, now_ts
from minerwatch.shared.topics import command_topic, reply_topic, tune_topic
from minerwatch.sim.axeos import AxeOSMiner
from minerwatch.sim.cgminer import CGMinerMiner
from minerwatch.sim.fleet import Fault, Fleet

from running import BIN, start_services, stop_services
from waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

NAMES = ("gamma-a", "gamma-b", "gamma-c")  # the AxeOS miners, by their configured names
#: A seed whose gamma-b and gamma-c hash at least 99 % of what they should: the
#: simulator's noise (a few percent) then never makes a stable step miss the 94 % rule.
SEED = 7


@dataclass
class Stack:
    base: str
    broker: Any
    fleet: Fleet
    api: str
    tokens: dict[str, str] = field(default_factory=dict)
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    def bitaxe(self, name: str) -> AxeOSMiner:
        return self.fleet.axeos(f"axeos-{NAMES.index(name)}")

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


async def make_token(env: dict[str, str], cwd: Path, role: str) -> str:
    """A token made the documented way: the api's CLI prints it once on stdout."""
    proc = await asyncio.create_subprocess_exec(
        BIN / "minerwatch-api", "token", "create", "--role", role, "--name", f"e2e-{role}",
        env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    token = out.decode().strip()
    assert token.startswith("mw_") and "\n" not in token
    return token


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(broker, port_picker, tmp_path_factory: pytest.TempPathFactory  # type: ignore[no-untyped-def]
                ) -> AsyncIterator[Stack]:
    workdir = tmp_path_factory.mktemp("control")
    api_port = port_picker()
    base = f"ctl-{api_port}"
    async with Fleet(axeos=3, cgminer=1, host="127.0.0.1", base_port=0, seed=SEED,
                     web=True) as fleet:
        for miner in fleet.axeos_miners[1:]:  # the tuned ones: see SEED
            assert miner.model.nominal_ghs >= 0.99 * miner.model.expected_ghs, "another SEED"
        for miner in fleet.miners:  # quick restarts: the simulated boot takes 0.3 s
            miner.quirks.restart_s = 0.3  # type: ignore[attr-defined]
        s19 = fleet.cgminer("cgminer-0")
        miners = "".join(f'[[collector.miners]]\nurl = "{miner.url}"\nname = "{name}"\n\n'
                         for name, miner in zip(NAMES, fleet.axeos_miners, strict=True))
        miners += (f'[[collector.miners]]\nurl = "{s19.url}"\nname = "s19"\n'
                   f"web_port = {s19.web_port}\n")
        config = workdir / "minerwatch.toml"
        config.write_text(f"""
[collector]
timeout_s = 0.4
offline_after = 3
poll_interval_s = 0.5

{miners}
[store]
batch_interval_s = 0.1
client_id = "ctl-store-{api_port}"

[api]
auth = "token"
command_timeout_s = 30

[control]
enabled = true
timeout_s = 5
restart_timeout_s = 20
antminer_password = "root"

[control.tune]
settle_s = 0.3
window_s = 1.2
poll_s = 0.1

# The flatline (a frozen hashrate reading for 4 polls) restarts the miner; the share
# clock is too long to fire during the tests.
[alerts.stalled]
for_s = 600
polls = 4
restart = true
restart_backoff_s = 60
""")
        env = {
            **os.environ,
            "MINERWATCH_CONFIG": str(config),
            "MINERWATCH_MQTT_URL": broker.url,
            "MINERWATCH_BASE_TOPIC": base,
            "MINERWATCH_DB_URL": f"sqlite:///{workdir / 'history.db'}",
            "MINERWATCH_API_LISTEN": f"127.0.0.1:{api_port}",
        }
        stack = Stack(base, broker, fleet, f"http://127.0.0.1:{api_port}")
        for role in ("viewer", "operator"):
            stack.tokens[role] = await make_token(env, workdir, role)
        stack.procs = await start_services(SERVICES, env, workdir)
        try:
            async with httpx.AsyncClient(headers=stack.headers("viewer"), timeout=40) as client:
                async def every_miner_live() -> bool:
                    miners = (await client.get(f"{stack.api}/api/miners")).json()
                    return sorted(m["miner_id"] for m in miners if m["state"] == "online") == [
                        *NAMES, "s19"]
                await eventually(every_miner_live, timeout=30)
            yield stack
        finally:
            await stop_services(stack.procs, workdir, timeout_s=30)


@pytest_asyncio.fixture(loop_scope="module")
async def operator(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api, headers=stack.headers("operator"),
                                 timeout=40) as client:
        yield client


async def command_events(stack: Stack, miner_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(headers=stack.headers("viewer")) as client:
        reply = await client.get(f"{stack.api}/api/events",
                                 params={"type": "command", "miner_id": miner_id})
    reply.raise_for_status()
    events: list[dict[str, Any]] = reply.json()
    return events


async def test_a_restart_over_http_is_confirmed_by_the_uptime_and_audited(
        stack: Stack, operator: httpx.AsyncClient) -> None:
    miner = stack.bitaxe("gamma-a")
    reply = await operator.post("/api/miners/gamma-a/actions/restart")
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert (result["status"], result["action"], result["by"]) == (
        "ok", "restart", "token:e2e-operator")
    assert miner.restarts == 1
    # The store keeps it; the api shows it among the miner's events.
    events = await eventually(lambda: command_events(stack, "gamma-a"))
    assert [(e["type"], e["action"], e["status"], e["by"]) for e in events] == [
        ("command", "restart", "ok", "token:e2e-operator")]


async def test_settings_are_read_with_their_range_and_only_a_change_is_written(
        stack: Stack, operator: httpx.AsyncClient) -> None:
    miner = stack.bitaxe("gamma-a")
    reply = await operator.get("/api/miners/gamma-a/settings")
    assert reply.status_code == 200, reply.text
    read = reply.json()
    assert read["settings"]["frequency_mhz"] == miner.model.settings.frequency_mhz
    assert read["limits"]["frequency_mhz"] == {"min": 400, "max": 625}
    assert read["limits"]["core_voltage_mv"] == {"min": 1000, "max": 1250}
    writes = miner.writes
    voltage = miner.model.settings.core_voltage_mv
    reply = await operator.patch("/api/miners/gamma-a/settings",
                                 json={"frequency_mhz": 550, "core_voltage_mv": voltage})
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["changed"] == ["frequency_mhz"]
    assert result["after"]["frequency_mhz"] == 550
    # One PATCH, with the one value that changed (each write goes to the ESP32's flash).
    assert miner.writes == writes + 1 and miner.last_patch == {"frequency": 550}
    assert miner.model.settings.frequency_mhz == 550


async def test_out_of_range_is_refused_naming_the_range_and_nothing_is_sent(
        stack: Stack, operator: httpx.AsyncClient) -> None:
    miner = stack.bitaxe("gamma-a")
    writes = miner.writes
    reply = await operator.patch("/api/miners/gamma-a/settings", json={"frequency_mhz": 700})
    assert reply.status_code == 422, reply.text
    body = reply.json()
    assert "400-625 MHz" in body["detail"] and body["limits"]["frequency_mhz"]["max"] == 625
    assert miner.writes == writes


async def test_a_write_the_miner_does_not_keep_is_reported_unverified(
        stack: Stack, operator: httpx.AsyncClient) -> None:
    miner = stack.bitaxe("gamma-c")
    miner.quirks.ignore_writes = True
    try:
        reply = await operator.patch("/api/miners/gamma-c/settings",
                                     json={"frequency_mhz": 525})
    finally:
        miner.quirks.ignore_writes = False
    assert reply.status_code == 502, reply.text
    assert reply.json()["result"]["status"] == "unverified"
    assert "frequency_mhz" in reply.json()["detail"]


async def test_no_token_a_bad_one_or_a_viewer_gets_nothing_done(stack: Stack) -> None:
    url = f"{stack.api}/api/miners/gamma-b/actions/identify"
    async with httpx.AsyncClient() as client:
        assert (await client.post(url)).status_code == 401
        assert (await client.get(f"{stack.api}/api/miners")).status_code == 401
        bad = await client.post(url, headers={"Authorization": "Bearer mw_not-a-token"})
        assert bad.status_code == 401
        viewer = await client.post(url, headers=stack.headers("viewer"))
        assert viewer.status_code == 403
    assert stack.bitaxe("gamma-b").identified_at is None


async def test_an_mqtt_command_gets_its_result_on_the_response_topic(stack: Stack) -> None:
    miner = stack.bitaxe("gamma-b")
    host, port = stack.broker.host, stack.broker.port
    reply_to = reply_topic(stack.base, "e2e-script")
    command = Command(id=uuid.uuid4().hex, miner_id="gamma-b", action="identify",
                      by="e2e-script", ts=now_ts())
    async with Client(host, port) as client:
        await client.subscribe([Subscription(reply_to, qos=1)])
        await client.publish(command_topic(stack.base, "gamma-b"), encode(command), qos=1,
                             properties={"response_topic": reply_to,
                                         "correlation_data": b"\x01ask-1"})
        async with asyncio.timeout(15):
            message = await anext(aiter(client.messages))
    assert message.properties["correlation_data"] == b"\x01ask-1"
    result = decode(message.payload, CommandResult)
    assert (result.id, result.status, result.action) == (command.id, "ok", "identify")
    assert miner.identified_at is not None


async def test_autotune_over_http_finds_the_hidden_limit_and_applies_the_best_step(
        stack: Stack, operator: httpx.AsyncClient) -> None:
    miner = stack.bitaxe("gamma-b")
    # Stable up to 610 MHz at 1150 mV, 10 MHz more per 20 mV: from the sim's 600 MHz and
    # 1150 mV, 625 MHz needs 1190 mV, and 625 is the top of a BM1370's range.
    miner.set_limit(610, 0.5)
    assert (miner.model.settings.frequency_mhz, miner.model.settings.core_voltage_mv) == (
        600, 1150)
    reply = await operator.post("/api/miners/gamma-b/tune", json={"objective": "hashrate"})
    assert reply.status_code == 200, reply.text

    async def finished() -> TuneProgress | None:
        async with httpx.AsyncClient(headers=stack.headers("viewer")) as client:
            runs = (await client.get(f"{stack.api}/api/miners/gamma-b/tune-runs")).json()
        return runs[0] if runs and runs[0]["state"] != "running" else None

    run = await eventually(finished, timeout=45)
    assert run["state"] == "done", run
    steps = [(s["frequency_mhz"], s["core_voltage_mv"], s["stable"]) for s in run["steps"]]
    assert steps == [(600, 1150, True), (625, 1150, False), (625, 1170, False),
                     (625, 1190, True)]
    assert run["applied"]["frequency_mhz"] == 625
    assert run["applied"]["core_voltage_mv"] == 1190
    assert (miner.model.settings.frequency_mhz, miner.model.settings.core_voltage_mv) == (
        625, 1190)
    # The retained progress says the same to any MQTT client.
    async with Client(stack.broker.host, stack.broker.port) as client:
        await client.subscribe([Subscription(tune_topic(stack.base, "gamma-b"), qos=1)])
        async with asyncio.timeout(5):
            retained = decode((await anext(aiter(client.messages))).payload, TuneProgress)
    assert retained.state == "done" and retained.run_id == run["run_id"]


async def test_aborting_autotune_restores_the_settings_the_miner_had(
        stack: Stack, operator: httpx.AsyncClient) -> None:
    miner = stack.bitaxe("gamma-c")
    miner.set_limit(700, 0.5)  # stable everywhere: the run would climb to the top
    original = (miner.model.settings.frequency_mhz, miner.model.settings.core_voltage_mv)
    reply = await operator.post("/api/miners/gamma-c/tune", json={"objective": "efficiency"})
    assert reply.status_code == 200, reply.text
    await eventually(lambda: miner.model.settings.frequency_mhz != original[0], timeout=20)
    busy = await operator.post("/api/miners/gamma-c/actions/restart")
    assert busy.status_code == 409, busy.text  # the run holds the miner
    reply = await operator.delete("/api/miners/gamma-c/tune")
    assert reply.status_code == 200, reply.text
    assert (miner.model.settings.frequency_mhz,
            miner.model.settings.core_voltage_mv) == original
    async def audited() -> set[str]:
        actions = {e["action"] for e in await command_events(stack, "gamma-c")}
        return actions if {"tune", "tune_abort"} <= actions else set()

    assert await eventually(audited)


async def test_a_stalled_antminer_is_restarted_by_the_alerts_through_its_web_interface(
        stack: Stack) -> None:
    s19: CGMinerMiner = stack.fleet.cgminer("cgminer-0")
    await s19.set_fault(Fault.STALLED)
    # alerts (the flatline) -> restart command -> collector -> reboot.cgi (digest auth)

    async def restarted_by_alerts() -> list[dict[str, Any]]:
        return [e for e in await command_events(stack, "s19")
                if e["by"] == "alerts" and e["action"] == "restart"]

    found = await eventually(restarted_by_alerts, timeout=40)
    assert found[0]["status"] == "ok", found
    assert s19.restarts >= 1
    assert s19.fault is Fault.NONE  # the restart cleared the stall
    text = json.dumps(found[0])
    assert "password" not in text
