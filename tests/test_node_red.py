"""The example flow docs/node-red/minerwatch-flow.json in a real Node-RED 4 (installed by
`make node-red` from tests/node-red/package-lock.json) against the demo: a simulated fleet,
the real collector and a real Mosquitto. The flow is deployed as the editor's Deploy does
(the admin API), and what its debug nodes output is read where the editor reads it: the
admin ``/comms`` WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import getpass
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
import pytest_asyncio
import websockets

from minerwatch.shared.schemas import parse_ts
from minerwatch.shared.topics import mac_miner_id, slugify
from minerwatch.sim.fleet import Fault, Fleet, SimMiner

from running import BIN
from waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[1]
FLOW = ROOT / "docs" / "node-red" / "minerwatch-flow.json"
NODE_RED = ROOT / ".tools" / "node-red" / "node_modules" / ".bin" / "node-red"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
POLL_S = 1.0
# The flow's fixed ids: its outputs and the nodes the test looks at.
DASHBOARD, CHART, NOTIFY = "minerwatch-dashboard", "minerwatch-chart", "minerwatch-notify"
SAMPLES_IN, SAMPLE_FN, STATUS_FN = (
    "minerwatch-samples-in", "minerwatch-sample-fn", "minerwatch-status-fn")


def miner_id(miner: SimMiner) -> str:
    if miner.mac:
        return mac_miner_id(miner.mac) or ""
    return slugify(f"{miner.host}-{miner.port}")



def example_flow(broker_port: int) -> list[dict[str, Any]]:
    """The example flow with its broker node pointed at the test's broker, as a user edits
    it after the import."""
    flow: list[dict[str, Any]] = json.loads(FLOW.read_text())
    brokers = [node for node in flow if node["type"] == "mqtt-broker"]
    assert len(brokers) == 1, "the example flow has one broker node for the user to edit"
    brokers[0]["broker"], brokers[0]["port"] = "127.0.0.1", str(broker_port)
    return flow


@dataclass
class Output:
    """One message a debug node showed, or a warning a node logged, as the editor gets it."""

    node: str
    msg: Any
    level: int | None
    #: Its place among the frames the comms connection received.
    index: int


@dataclass
class NodeRed:
    """One Node-RED runtime on a free loopback port, with a fresh user directory."""

    workdir: Path
    port: int
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)
    _ws: Any = None
    _reader: asyncio.Task[None] | None = None
    _runs: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / f"node-red-{self._runs}.log"

    async def start(self) -> None:
        self._runs += 1
        user_dir = self.workdir / f"user-{self._runs}"
        user_dir.mkdir()
        (user_dir / "flows.json").write_text("[]")
        # Loopback only, no credential key to keep, and nothing that calls out: no
        # telemetry or update check, no palette catalogue, no module installs.
        (user_dir / "settings.js").write_text(f"""module.exports = {{
    uiHost: "127.0.0.1",
    uiPort: {self.port},
    flowFile: "flows.json",
    credentialSecret: false,
    telemetry: {{enabled: false, updateNotification: false}},
    diagnostics: {{enabled: false}},
    externalModules: {{autoInstall: false, palette: {{allowInstall: false}},
                       modules: {{allowInstall: false}}}},
    functionExternalModules: false,
    editorTheme: {{palette: {{catalogues: []}}, projects: {{enabled: false}}, tours: false}},
    logging: {{console: {{level: "info", metrics: false, audit: false}}}},
}};
""")
        assert NODE_RED.exists(), f"{NODE_RED} is missing: run `make node-red`"
        self.proc = await asyncio.create_subprocess_exec(
            NODE_RED, "--userDir", str(user_dir), "--settings", str(user_dir / "settings.js"),
            env=self.env, cwd=user_dir,
            stdout=open(self.log, "wb"), stderr=asyncio.subprocess.STDOUT,  # noqa: SIM115
        )
        async with httpx.AsyncClient(base_url=self.url) as client:
            async def answers() -> bool:
                assert self.proc is not None and self.proc.returncode is None, self.log_text()
                try:
                    return (await client.get("/settings")).status_code == 200
                except httpx.HTTPError:
                    return False
            deadline = asyncio.get_running_loop().time() + 30
            while not await answers():
                assert asyncio.get_running_loop().time() < deadline, self.log_text()
                await asyncio.sleep(0.2)
        self.frames = []
        self._ws = await websockets.connect(f"ws://127.0.0.1:{self.port}/comms")
        for topic in ("debug", "status/#"):
            await self._ws.send(json.dumps({"subscribe": topic}))
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self._ws:
            self.frames.extend(json.loads(raw))

    async def deploy(self, flow: list[dict[str, Any]]) -> int:
        """Deploy as the editor does; returns the index of the first frame after it."""
        await asyncio.sleep(0.2)  # the comms subscriptions are in before anything runs
        start = len(self.frames)
        async with httpx.AsyncClient(base_url=self.url) as client:
            answer = await client.post("/flows", json=flow,
                                       headers={"Node-RED-Deployment-Type": "full"})
        assert answer.status_code in (200, 204), answer.text
        return start

    def outputs(self, node: str, start: int = 0) -> list[Output]:
        found = []
        for index, frame in enumerate(self.frames[start:], start):
            data = frame["data"]
            if frame["topic"] != "debug" or data.get("id") != node:
                continue
            msg = json.loads(data["msg"]) if data.get("format") == "Object" else data["msg"]
            found.append(Output(node, msg, data.get("level"), index))
        return found

    def status(self, node: str) -> str:
        texts = [f["data"].get("text", "") for f in self.frames if f["topic"] == f"status/{node}"]
        return texts[-1] if texts else ""

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else "(no log)"

    async def stop(self) -> int:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 15)


@dataclass
class Demo:
    broker_port: int
    fleet: Fleet
    env: dict[str, str]
    workdir: Path
    node_red: NodeRed
    collector: asyncio.subprocess.Process | None = None
    _logs: list[Path] = field(default_factory=list)

    def ids(self) -> dict[str, SimMiner]:
        return {miner_id(m): m for m in self.fleet.miners}

    async def start_collector(self) -> None:
        log = self.workdir / f"collector-{len(self._logs)}.log"
        self._logs.append(log)
        self.collector = await asyncio.create_subprocess_exec(
            BIN / "minerwatch-collector", env=self.env, cwd=self.workdir,
            stderr=open(log, "wb"),  # noqa: SIM115 - the child owns it
        )

    async def stop_collector(self) -> None:
        assert self.collector is not None
        if self.collector.returncode is None:
            self.collector.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.collector.wait(), 15)
        text = self._logs[-1].read_text()
        assert code == 0 and "Traceback" not in text, text


@pytest.fixture(scope="module")
def mosquitto(
    tmp_path_factory: pytest.TempPathFactory, port_picker: Callable[[], int],
    port_waiter: Callable[[int], None],
) -> Iterator[int]:
    """A broker of this module's own on a free port: the flow subscribes under the default
    base topic `minerwatch`, which no other test's broker traffic must reach."""
    port = port_picker()
    conf = tmp_path_factory.mktemp("mosquitto") / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"log_dest stderr\nlog_type error\nuser {getpass.getuser()}\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)])
    try:
        port_waiter(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def demo(
    mosquitto: int, port_picker: Callable[[], int], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Demo]:
    workdir = tmp_path_factory.mktemp("node-red")
    config = workdir / "minerwatch.toml"
    config.write_text("[collector]\ntimeout_s = 0.4\noffline_after = 3\n")
    async with Fleet(axeos=2, cgminer=2, host="127.0.0.1", base_port=0, seed=11) as fleet:
        env = {
            **os.environ,
            "MINERWATCH_CONFIG": str(config),
            "MINERWATCH_MQTT_URL": f"mqtt://127.0.0.1:{mosquitto}",
            "MINERWATCH_BASE_TOPIC": "minerwatch",
            "MINERWATCH_MINERS": ",".join(fleet.urls()),
            # The flow reads it too: a sample older than 3 poll intervals is not live.
            "MINERWATCH_POLL_INTERVAL_S": str(POLL_S),
        }
        demo = Demo(mosquitto, fleet, env, workdir, NodeRed(workdir, port_picker(), env))
        await demo.start_collector()
        try:  # a Node-RED that does not start must not leave the collector running
            await demo.node_red.start()
        except BaseException:
            await demo.stop_collector()
            raise
        try:
            yield demo
        finally:
            assert await demo.node_red.stop() == 0, demo.node_red.log_text()
            await demo.stop_collector()
            assert "Error" not in demo.node_red.log_text(), demo.node_red.log_text()


def live_dashboard(demo: Demo, start: int) -> dict[str, dict[str, Any]]:
    """The latest live dashboard message of each miner since ``start``; asserts all came."""
    latest = {o.msg["topic"]: o.msg for o in demo.node_red.outputs(DASHBOARD, start)
              if o.msg["payload"]["live"]}
    assert set(latest) == set(demo.ids()), f"live dashboard messages of {sorted(latest)}"
    return latest


def live_miners(demo: Demo, start: int) -> set[str]:
    return {o.msg["topic"] for o in demo.node_red.outputs(DASHBOARD, start)
            if o.msg["payload"]["live"]}


def notifications(demo: Demo, start: int = 0) -> list[dict[str, Any]]:
    return [o.msg for o in demo.node_red.outputs(NOTIFY, start)]


def notice_index(demo: Demo, start: int) -> int:
    return demo.node_red.outputs(NOTIFY, start)[0].index


async def test_every_miner_reaches_the_dashboard_output_as_numbers(demo: Demo) -> None:
    start = await demo.node_red.deploy(example_flow(demo.broker_port))
    latest = await eventually(lambda: live_dashboard(demo, start), timeout=20)
    ids = demo.ids()
    for output in demo.node_red.outputs(DASHBOARD, start):
        assert isinstance(output.msg["payload"], dict), f"not an object: {output.msg}"
    for mid, msg in latest.items():
        reading, truth = msg["payload"], ids[mid].snapshot()
        assert reading["miner_id"] == mid and reading["stale_reason"] is None
        for key in ("hashrate_ths", "temp_c"):
            assert isinstance(reading[key], int | float), (key, reading)
        assert reading["hashrate_ths"] == pytest.approx(truth["hashrate_ths"], rel=0.15), mid
        assert reading["temp_c"] == pytest.approx(truth["temp_c"], abs=5), mid
        parse_ts(reading["ts"])
        if ids[mid].kind == "axeos":
            assert 0.5 < reading["hashrate_ths"] < 5, "AxeOS GH/s arrive as TH/s"
            assert reading["power_w"] == pytest.approx(truth["power_w"], rel=0.2), mid
            assert reading["efficiency_jth"] == pytest.approx(
                reading["power_w"] / reading["hashrate_ths"], rel=0.01)
        else:
            assert 50 < reading["hashrate_ths"] < 500, "Antminer GH/s arrive as TH/s"
            assert reading["power_w"] is None, "stock Antminer firmware reports no power"

    # The chart output: one number per message, the miner as the series, at the poll's time.
    points = [o.msg for o in demo.node_red.outputs(CHART, start)]
    assert {p["topic"] for p in points} == set(ids)
    for point in points:
        assert isinstance(point["payload"], int | float), point
        assert point["timestamp"] > 1.7e12, "a time in milliseconds"
    assert not notifications(demo, start), "healthy miners, no notification"


async def test_a_miner_that_stops_answering_is_notified_once_with_its_reason(
        demo: Demo) -> None:
    start = len(demo.node_red.frames)
    await eventually(lambda: live_dashboard(demo, start), timeout=10)
    dead = demo.fleet.by_name("cgminer-1")
    dead_id = miner_id(dead)
    await dead.set_fault(Fault.TIMEOUT)
    notice = (await eventually(lambda: notifications(demo, start), timeout=15))[0]
    assert notice["kind"] == "miner_offline" and notice["miner_id"] == dead_id, notice
    assert "timeout" in notice["reason"], notice
    assert dead_id in notice["topic"] and dead_id in notice["payload"], notice
    assert notice["reason"] in notice["payload"], notice
    assert notice["failures"] == 3
    # Failed polls go on: still one notification, and the dead miner's dashboard is quiet.
    after = len(demo.node_red.frames)
    await asyncio.sleep(4 * POLL_S)
    assert notifications(demo, start) == [notice]
    assert live_miners(demo, after) == set(demo.ids()) - {dead_id}
    assert "1 offline" in demo.node_red.status(STATUS_FN), demo.node_red.status(STATUS_FN)


async def test_a_collector_restart_is_announced_once_and_a_repeated_offline_is_not(
        demo: Demo) -> None:
    dead = demo.fleet.by_name("cgminer-1")
    dead_id = miner_id(dead)
    assert dead.fault is Fault.TIMEOUT, "the previous test left it offline"
    start = len(demo.node_red.frames)
    try:
        async with aiomqtt.Client("127.0.0.1", demo.broker_port) as watcher:
            await watcher.subscribe(f"minerwatch/miners/{dead_id}/status", qos=1)
            await demo.stop_collector()
            notice = (await eventually(lambda: notifications(demo, start), timeout=10))[0]
            assert notice["kind"] == "collector_offline", notice
            assert "collector offline" in demo.node_red.status(STATUS_FN)
            # Deployed again meanwhile, the flow gets every retained sample: none of them live.
            replay = await demo.node_red.deploy(example_flow(demo.broker_port))
            replayed = await eventually(lambda: {o.msg["topic"]: o.msg["payload"] for o in (
                demo.node_red.outputs(DASHBOARD, replay)) if o.index > notice_index(demo, start)})
            assert set(replayed) == set(demo.ids()), replayed
            assert {r["stale_reason"] for r in replayed.values()} == {"collector offline"}, replayed
            await demo.start_collector()
            # The new collector finds the miner offline again and says so: "still so".
            async with asyncio.timeout(15):
                async for message in watcher.messages:
                    if not message.retain and b'"offline"' in bytes(message.payload):
                        break
    finally:
        if demo.collector is None or demo.collector.returncode is not None:
            await demo.start_collector()  # the later tests need it, even after a failure
    again = len(demo.node_red.frames)
    # A poll of the others later, the repeat has been through the flow: no second notice.
    await eventually(lambda: live_miners(demo, again) == set(demo.ids()) - {dead_id})
    assert notifications(demo, start) == [notice]
    assert demo.node_red.status(STATUS_FN).endswith("collector online")


async def test_a_restarted_node_red_shows_the_offline_miner_stale_and_stays_quiet(
        demo: Demo) -> None:
    dead = demo.fleet.by_name("cgminer-1")
    dead_id = miner_id(dead)
    assert dead.fault is Fault.TIMEOUT, "the previous test left it offline"
    assert await demo.node_red.stop() == 0, demo.node_red.log_text()
    await demo.node_red.start()  # a fresh user directory: the flow remembers nothing
    start = await demo.node_red.deploy(example_flow(demo.broker_port))
    try:
        # The broker replays the retained offline status and the dead miner's last sample.
        await eventually(lambda: "1 offline" in demo.node_red.status(STATUS_FN), timeout=20)
        replayed = await eventually(lambda: [
            o.msg for o in demo.node_red.outputs(DASHBOARD, start) if o.msg["topic"] == dead_id])
        assert replayed[0]["payload"]["live"] is False, replayed
        assert replayed[0]["payload"]["stale_reason"] == "miner offline", replayed
        # Two polls of the others later: the old offline state was not announced again.
        live_start = len(demo.node_red.frames)
        await eventually(lambda: live_miners(demo, live_start) == set(demo.ids()) - {dead_id})
        await asyncio.sleep(2 * POLL_S)
        assert not notifications(demo, start), notifications(demo, start)
        assert all(not o.msg["payload"]["live"] for o in demo.node_red.outputs(DASHBOARD, start)
                   if o.msg["topic"] == dead_id)
    finally:
        await dead.set_fault(Fault.NONE)


@pytest.mark.parametrize("datatype", [None, "auto"], ids=["no-datatype", "auto"])
async def test_a_flow_from_older_node_red_gets_strings_and_is_told_the_fix(
        demo: Demo, datatype: str | None) -> None:
    """Older flows have no output setting (the runtime then defaults to a string) or the
    legacy "auto" (string or buffer): the sample node warns instead of passing strings on."""
    flow = copy.deepcopy(example_flow(demo.broker_port))
    samples_in = next(node for node in flow if node["id"] == SAMPLES_IN)
    if datatype is None:
        del samples_in["datatype"]
    else:
        samples_in["datatype"] = datatype
    start = await demo.node_red.deploy(flow)
    # Every miner's sample is refused with a warning naming the fix.
    warnings = await eventually(lambda: len({
        w.msg.split(":")[0] for w in demo.node_red.outputs(SAMPLE_FN, start)}) == len(
            demo.ids()) and demo.node_red.outputs(SAMPLE_FN, start), timeout=10)
    for warning in warnings:
        assert warning.level == 30, warning
        assert "is a string, not an object" in warning.msg, warning
        assert "auto-detect" in warning.msg, warning
    # Nothing reached the dashboard since the new flow ran (before it, the old flow's
    # messages may still be on their way over the comms connection).
    assert not demo.node_red.outputs(DASHBOARD, warnings[0].index)


async def test_a_sample_older_than_three_polls_is_not_live(demo: Demo) -> None:
    """A miner the collector says is online, whose last sample is a minute old (a stuck
    poll): shown, marked stale, and kept off the chart."""
    start = await demo.node_red.deploy(example_flow(demo.broker_port))
    await eventually(lambda: live_dashboard(demo, start), timeout=10)
    ts = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 60))
    async with aiomqtt.Client("127.0.0.1", demo.broker_port) as client:
        # Not retained: the other tests' fleet stays the fleet.
        await client.publish("minerwatch/miners/stuck-1/status", json.dumps(
            {"state": "online", "reason": None, "since": ts, "last_seen": ts, "failures": 0}),
            qos=1)
        await client.publish("minerwatch/miners/stuck-1/sample", json.dumps(
            {"schema": 1, "miner_id": "stuck-1", "ts": ts, "hashrate_ths": 1.2}), qos=1)
    shown = await eventually(lambda: [o.msg["payload"] for o in demo.node_red.outputs(
        DASHBOARD, start) if o.msg["topic"] == "stuck-1"])
    assert shown[0]["live"] is False and shown[0]["hashrate_ths"] == 1.2, shown
    assert re.fullmatch(r"sample 6\d s old", shown[0]["stale_reason"]), shown
    assert not [o for o in demo.node_red.outputs(CHART, start) if o.msg["topic"] == "stuck-1"]
