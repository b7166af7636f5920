"""Issue 8, "Done when": no message can kill a service, no death goes unseen.

Every service runs as a real process (its console script) against a private Mosquitto
with the production queue limits (started here rather than by the root fixtures, whose
broker is per session or per test and has other limits), a real SQLite file, and real
HTTP and WebSocket clients.

The flood (``flooded``, once for the module): the payloads issue 8 names and seeded random
ones (``hostile_payloads``), 100,000 in all, retained and not, on every topic the store,
alerts and api read and on junk topics under the base, with 5,000 valid samples of five
miners interleaved. The named payloads are also retained before the services start, so
each meets them at its first subscribe. Canaries before and after prove each service read
everything in between. Each test then checks one promise of the issue on what the flood
left behind, the last one stopping the stack (SIGTERM: ``offline`` at once, exit 0).

Separately, a service killed (SIGKILL) shows ``offline`` on its status topic within 1.5
keep-alives, and one frozen (SIGSTOP) once the broker's keep-alive verdict comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
import pytest_asyncio
import websockets

from minerwatch.shared.metrics import SERVICES
from minerwatch.shared.mqtt.client import Client
from minerwatch.shared.mqtt.protocol import Delivery
from minerwatch.shared.schemas import Sample, encode, format_ts

from hostile_payloads import (
    HUGE_HASHRATE,
    HUGE_MINER,
    MISMATCH_PREFIX,
    VALID_MINERS,
    Plan,
    Publication,
    build_plan,
    poison,
    ts_ms,
)
from running import BIN

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: The services that read the topics the flood is published on.
READERS = ("store", "alerts", "api")
SEED = 8
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

#: What the flood may cost the api in resident memory: its peak (VmHWM) less its RSS
#: just before the flood. Measured here (2 cores, Python 3.11): 70 MB before, 72 MB peak,
#: so about 2 MB. A relay within its own bounds holds little more for this flood: what
#: it caches is only decodable registry messages (a few valid miners here), and in flight
#: at most ``PACE_LAG`` messages (a few MB) and the 2 MiB payloads a few times over.
#: 50 MB is that twice over and then some. A relay that kept the last frame of every
#: topic it ever saw, as the api did before issue 8, would hold the flood's ~58,000
#: distinct topics: 100 MB of Python objects (tracemalloc, the old relay's frames).
API_GROWTH_BOUND_MB = 50
#: How far (in messages) the publisher may run ahead of the last valid sample the api
#: relayed back to us: keeps the api's inbound queue small without slowing a healthy api.
PACE_LAG = 4000
#: No relay progress for this long while pacing: the relay is taken for dead and the rest
#: is published at full speed (the tests then say what was not relayed).
PACE_STALL_S = 5.0
#: The flooded services' keep-alive: long enough that a service busy with the flood is
#: never taken for dead.
FLOOD_KEEPALIVE_S = 10
#: A service stopped with SIGTERM says ``offline`` "at once": the api first waits up to
#: 5 s for open requests and WebSocket clients (its graceful shutdown), the others nothing.
STOPPED_BOUND_S = 6.0
#: RejectLog's window (``shared.rejects``): the held-back counts are flushed after it.
REJECT_WINDOW_S = 30.0

TOML = """
[mqtt]
keepalive_s = {keepalive}

[store]
client_id = "{client_id}"
batch_interval_s = 0.1

[[alerts.rules]]
name = "overheat"
field = "temp_c"
op = ">"
threshold = 80
for_s = 1
hysteresis = 3
cooldown_s = 600
severity = "warning"
"""

# --- a private broker configured like production ----------------------------------------


@dataclass
class Mosquitto:
    host: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


@contextlib.contextmanager
def mosquitto(workdir: Path, port: int, port_waiter: Callable[..., None]) -> Iterator[Mosquitto]:
    """Mosquitto with the production queue and in-flight limits (mosquitto/mosquitto.conf),
    without auth or persistence, on a loopback port of its own."""
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "max_queued_messages 400000\n"
        "max_queued_bytes 0\n"
        "max_inflight_messages 100\n"
        "log_dest stderr\n"
        "log_type error\n"
        "log_type warning\n"
        f"user {getpass.getuser()}\n"
    )
    log = (workdir / "mosquitto.log").open("wb")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=log)
    try:
        port_waiter(port)
        yield Mosquitto("127.0.0.1", port, proc)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


# --- the services as processes ----------------------------------------------------------


@dataclass
class Stack:
    base: str
    workdir: Path
    db_path: Path
    api: str
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [str(BIN / f"minerwatch-{name}")], env=self.env, cwd=self.workdir, stderr=log)
        log.close()  # the child has its own copy

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        if not self.db_path.exists():
            return []
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=10)) as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise

    def dead(self, names: tuple[str, ...] = SERVICES) -> dict[str, int]:
        return {name: code for name in names
                if (code := self.procs[name].poll()) is not None}

    def stop(self) -> dict[str, int]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait(5)
        return codes


def make_stack(workdir: Path, broker: Mosquitto, api_port: int, *, keepalive: int) -> Stack:
    base = f"hostile-{api_port}"
    config = workdir / "minerwatch.toml"
    config.write_text(TOML.format(keepalive=keepalive, client_id=f"hostile-store-{api_port}"))
    env = {
        **os.environ,
        "MINERWATCH_CONFIG": str(config),
        "MINERWATCH_MQTT_URL": broker.url,
        "MINERWATCH_BASE_TOPIC": base,
        "MINERWATCH_DB_URL": f"sqlite:///{workdir / 'history.db'}",
        "MINERWATCH_API_LISTEN": f"127.0.0.1:{api_port}",
        "MINERWATCH_API_AUTH": "lan",  # reads open, as these tests read
        "MINERWATCH_MINERS": "",
    }
    return Stack(base, workdir, workdir / "history.db", f"http://127.0.0.1:{api_port}", env)


def log_tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.splitlines()[-lines:])


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a running process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int, key: str) -> int:
    """``VmRSS`` or ``VmHWM`` (peak) of a process from /proc, in kB; 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(rf"^{key}:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


# --- publishing -------------------------------------------------------------------------


class Publisher:
    """The test's one MQTT connection: minerwatch's lean client, QoS 1, pipelined up to
    the broker's Receive Maximum (paho, at about 4,000 messages a second here, would take
    most of the test's time budget)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.client = Client(broker.host, broker.port, client_id=f"hostile-{uuid.uuid4().hex}")
        self.refused: Counter[str] = Counter()
        self._room = asyncio.Event()

    async def __aenter__(self) -> Publisher:
        await self.client.connect()
        self.client.on_settled = lambda delivery: self._room.set()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.disconnect()

    async def publish_all(self, pubs: list[Publication],
                          pace: Callable[[int], Awaitable[None]] | None = None) -> None:
        """Publish in order; return once the broker has acknowledged every one."""
        client = self.client
        sent: list[tuple[Delivery, str]] = []
        for index, pub in enumerate(pubs):
            if pace is not None:
                await pace(index)
            while client.send_quota == 0:
                await self._wait_for_room()
            sent.append((client.publish_nowait(pub.topic, pub.payload, retain=pub.retain),
                         pub.label))
        while not all(delivery.settled for delivery, _ in sent[-200:]):
            await self._wait_for_room()
        for delivery, label in sent:
            if not delivery.settled:
                raise AssertionError(f"the broker never acknowledged a publish to "
                                     f"{delivery.topic!r}")
            if delivery.refused:
                self.refused[f"{label}: reason {delivery.reason:#x}"] += 1

    async def _wait_for_room(self) -> None:
        if not self.client.connected:
            raise AssertionError("the test's publisher lost its broker connection: "
                                 f"{await self.client.wait_closed()}")
        self._room.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._room.wait(), 30)


# --- the WebSocket side -----------------------------------------------------------------


@dataclass
class Relayed:
    """What came back over ``WS /ws`` subscribed to ``{base}/miners/+/sample``."""

    base: str
    plan_index: dict[tuple[str, str], int]
    valid: dict[tuple[str, str], Sample]
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    altered: list[str] = field(default_factory=list)
    canaries: set[str] = field(default_factory=set)
    frames: int = 0
    undecodable: int = 0
    #: The flood index of the latest valid sample relayed: the publisher paces on it.
    progress: int = -1
    progress_at: float = field(default_factory=time.monotonic)
    closed: str | None = None

    def take(self, text: str | bytes) -> None:
        self.frames += 1
        try:
            frame = json.loads(text)
            topic, payload = frame["topic"], frame["payload"]
            miner_id, ts = payload["miner_id"], payload["ts"]
        except (ValueError, RecursionError, KeyError, TypeError):
            self.undecodable += 1  # hostile payloads relayed as they are: not ours
            return
        if not (isinstance(miner_id, str) and isinstance(ts, str)
                and topic == f"{self.base}/miners/{miner_id}/sample"):
            return
        if miner_id.startswith("canary"):
            self.canaries.add(f"{miner_id} {ts}")
            return
        key = (miner_id, ts)
        sent = self.valid.get(key)
        if sent is None:
            return
        self.counts[key] += 1
        if payload.get("hashrate_ths") != sent.hashrate_ths:
            self.altered.append(f"{key}: {payload.get('hashrate_ths')} != {sent.hashrate_ths}")
        index = self.plan_index[key]
        if index > self.progress:
            self.progress = index
            self.progress_at = time.monotonic()


async def read_frames(ws: Any, relayed: Relayed) -> None:
    """Read every frame as it comes (a dedicated task: never a slow client)."""
    try:
        async for text in ws:
            relayed.take(text)
    except websockets.ConnectionClosed as exc:
        relayed.closed = f"closed: {exc}"
    else:
        relayed.closed = "closed by the api"


class Pacer:
    """Keeps the publisher at most ``PACE_LAG`` messages ahead of the relay; gives up,
    once, when the relay stops making progress."""

    def __init__(self, relayed: Relayed) -> None:
        self.relayed = relayed
        self.abandoned_at: int | None = None
        self.waited_s = 0.0

    async def __call__(self, index: int) -> None:
        if self.abandoned_at is not None or index - self.relayed.progress <= PACE_LAG:
            return
        began = time.monotonic()
        while index - self.relayed.progress > PACE_LAG:
            if time.monotonic() - self.relayed.progress_at > PACE_STALL_S:
                self.abandoned_at = index
                break
            await asyncio.sleep(0.005)
        self.waited_s += time.monotonic() - began


# --- waiting ----------------------------------------------------------------------------


async def eventually(check: Callable[[], Awaitable[Any] | Any], timeout: float,
                     interval: float = 0.2) -> Any:
    """``check()`` once it is truthy; its last value (falsy) when ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(interval)


def canary(base: str, miner_id: str, moment: datetime) -> Publication:
    """A hot valid sample: stored by the store, relayed by the api, and (a few in a row)
    firing the ``overheat`` rule in the alerts service, which the store then records."""
    sample = Sample(miner_id=miner_id, ts=format_ts(moment), hashrate_ths=1.0, temp_c=95.0,
                    fan_rpm=[1000])
    return Publication(f"{base}/miners/{miner_id}/sample", encode(sample), False, "canary")


@dataclass
class Passage:
    """When (seconds after the first canary) each service showed it had taken a canary,
    which proves it had read everything published before; None: it never did."""

    stored: float | None = None
    relayed: float | None = None
    alerted: float | None = None
    #: The local wall-clock time each service was seen to have taken one, by service.
    seen_at: dict[str, datetime] = field(default_factory=dict)

    def __str__(self) -> str:
        def when(seconds: float | None) -> str:
            return "never" if seconds is None else f"after {seconds:.1f} s"

        return (f"stored by the store {when(self.stored)}, relayed by the api "
                f"{when(self.relayed)}, alert from the alerts service {when(self.alerted)}")


async def send_canaries(stack: Stack, publisher: Publisher, relayed: Relayed, miner_id: str,
                        timeout: float) -> Passage:
    """Publish canaries of ``miner_id`` (one every 0.5 s of its own clock) until each
    service has shown it took one, a service it needs died, or ``timeout`` passed."""
    passage = Passage()
    moment = datetime.now(UTC)
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        await publisher.publish_all([canary(stack.base, miner_id, moment)])
        moment += timedelta(seconds=0.5)
        await asyncio.sleep(0.3)
        took, wall = time.monotonic() - began, datetime.now()
        if passage.stored is None and stack.rows(
                "SELECT 1 FROM samples WHERE miner_id = ?", miner_id):
            passage.stored, passage.seen_at["store"] = took, wall
        if passage.relayed is None and any(c.startswith(miner_id + " ")
                                           for c in relayed.canaries):
            passage.relayed, passage.seen_at["api"] = took, wall
        if passage.alerted is None and stack.rows(
                "SELECT 1 FROM alert_events WHERE miner_id = ? AND rule = 'overheat'",
                miner_id):
            passage.alerted, passage.seen_at["alerts"] = took, wall
        dead = stack.dead()
        if ((passage.stored is not None or "store" in dead)
                and (passage.relayed is not None or "api" in dead)
                and (passage.alerted is not None or "alerts" in dead or "store" in dead)):
            break
    return passage


# --- no death unseen ----------------------------------------------------------------------


KEEPALIVE_S = 2
#: A killed or stopped service: 1.5 keep-alives (its socket closes at once, so the Will
#: or its own ``offline`` needs no keep-alive verdict at all).
OFFLINE_BOUND_S = 1.5 * KEEPALIVE_S
#: A frozen one (SIGSTOP: the socket stays open): the broker's verdict after 1.5
#: keep-alives of silence. Mosquitto 2.0 counts that in whole seconds (up to 1 s more)
#: and reaches it in a sweep of all clients every 6 s (measured: the four Wills together,
#: 2.3 to 8.2 s after the stop), so up to 7 s later.
FROZEN_BOUND_S = 1.5 * KEEPALIVE_S + 7.0


class StatusWatch:
    """Every message on ``{base}/services/+/status``, with when it arrived."""

    def __init__(self, broker: Mosquitto, base: str) -> None:
        self.broker = broker
        self.base = base
        self.seen: list[tuple[float, str, str]] = []  # (monotonic, service, payload)
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def __aenter__(self) -> StatusWatch:
        self._task = asyncio.create_task(self._watch())
        await asyncio.wait_for(self._subscribed.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _watch(self) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port,
                                  protocol=aiomqtt.ProtocolVersion.V5) as client:
            await client.subscribe(f"{self.base}/services/+/status", qos=1)
            self._subscribed.set()
            async for message in client.messages:
                service = str(message.topic).split("/")[-2]
                payload = bytes(message.payload).decode(errors="replace")
                self.seen.append((time.monotonic(), service, payload))

    def state(self, service: str) -> str | None:
        states = [payload for _, name, payload in self.seen if name == service]
        return states[-1] if states else None

    def offline_since(self, service: str, moment: float) -> float | None:
        """Seconds from ``moment`` to the first ``offline`` of ``service`` after it."""
        for when, name, payload in self.seen:
            if name == service and payload == "offline" and when >= moment:
                return when - moment
        return None


async def offline_after(watch: StatusWatch, stack: Stack, phase: str, sig: signal.Signals,
                        names: list[str], bound: float) -> list[str]:
    """Send ``sig`` to each of ``names``; the problems: those not ``offline`` within
    ``bound`` seconds."""
    moment = time.monotonic()
    for name in names:
        stack.procs[name].send_signal(sig)
    await eventually(lambda: all(watch.offline_since(n, moment) is not None for n in names),
                     timeout=bound + 2)
    problems = []
    for name in names:
        took = watch.offline_since(name, moment)
        shown = "never" if took is None else f"after {took:.2f} s"
        print(f"{phase} {name}: offline {shown}")
        if took is None or took > bound:
            problems.append(f"{phase}: {name} offline {shown}, bound {bound} s")
    return problems


@pytest.mark.timeout(150)
async def test_a_killed_or_frozen_service_shows_offline_within_the_keepalive_bound(
        tmp_path: Path, port_picker: Callable[[], int], port_waiter: Callable[..., None]
) -> None:
    """SIGKILL: the socket closes, the broker publishes the Will at once. SIGSTOP: alive
    but silent, the socket open; the broker publishes the Will once 1.5 keep-alives pass
    without a packet. All four services at once, fresh processes for each. (SIGTERM is
    ``test_each_service_says_offline_when_stopped``, on the flooded stack.)"""
    problems: list[str] = []
    with mosquitto(tmp_path, port_picker(), port_waiter) as broker:
        stack = make_stack(tmp_path, broker, port_picker(), keepalive=KEEPALIVE_S)
        async with StatusWatch(broker, stack.base) as watch:

            def up(name: str) -> bool:
                return watch.state(name) == "online" and stack.procs[name].poll() is None

            async def start_all(phase: str) -> list[str]:
                """Start every service; the ones that said ``online``."""
                for name in SERVICES:
                    stack.start(name)
                await eventually(lambda: all(up(n) or stack.procs[n].poll() is not None
                                             for n in SERVICES), timeout=30)
                await asyncio.sleep(0.5)  # their sessions are under way
                for name in SERVICES:
                    if not up(name):
                        problems.append(
                            f"{phase}: {name} not online within 30 s (state "
                            f"{watch.state(name)!r}, exit code {stack.procs[name].poll()}):\n"
                            + log_tail(stack.log(name), 4))
                return [name for name in SERVICES if up(name)]

            def end_all() -> None:
                for proc in stack.procs.values():
                    if proc.poll() is None:
                        proc.kill()
                    proc.wait(10)

            try:
                problems += await offline_after(watch, stack, "SIGKILL", signal.SIGKILL,
                                                await start_all("SIGKILL"), OFFLINE_BOUND_S)
                end_all()
                problems += await offline_after(watch, stack, "SIGSTOP", signal.SIGSTOP,
                                                await start_all("SIGSTOP"), FROZEN_BOUND_S)
            finally:
                end_all()
    assert not problems, "\n".join(problems)


# --- the flood --------------------------------------------------------------------------


@dataclass
class Flood:
    stack: Stack
    plan: Plan
    relayed: Relayed
    ready: Passage
    drained: Passage
    publish_s: float
    pacing_abandoned_at: int | None
    refused: Counter[str]
    api_rss_start_mb: float
    api_rss_max_mb: float
    api_hwm_mb: float
    timings: dict[str, float]


@pytest.fixture(scope="module")
def flood_broker(tmp_path_factory: pytest.TempPathFactory, port_picker: Callable[[], int],
                 port_waiter: Callable[..., None]) -> Iterator[Mosquitto]:
    with mosquitto(tmp_path_factory.mktemp("flood-broker"), port_picker(), port_waiter) as b:
        yield b


async def sample_memory(pid: int, peak: list[float]) -> None:
    """Keep ``peak[0]`` at the highest VmRSS (MB) seen, four times a second."""
    while True:
        peak[0] = max(peak[0], memory_kb(pid, "VmRSS") / 1024)
        await asyncio.sleep(0.25)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def flooded(flood_broker: Mosquitto, port_picker: Callable[[], int],
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Flood]:
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    stack = make_stack(tmp_path_factory.mktemp("flood"), flood_broker, port_picker(),
                       keepalive=FLOOD_KEEPALIVE_S)
    now = datetime.now(UTC)
    async with contextlib.AsyncExitStack() as cleanup:
        publisher = await cleanup.enter_async_context(Publisher(flood_broker))
        # What every service meets at its first subscribe: each named payload, retained.
        await publisher.publish_all(poison(stack.base, SEED, now))
        planning = asyncio.create_task(asyncio.to_thread(build_plan, stack.base, SEED, now))
        cleanup.callback(planning.cancel)
        for name in SERVICES:
            stack.start(name)
        cleanup.callback(stack.stop)
        async with httpx.AsyncClient(base_url=stack.api, trust_env=False) as http:
            async def api_up() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return (await http.get("/healthz")).status_code == 200
                return bool(stack.dead(("api",)))

            await eventually(api_up, timeout=30)
        plan = await planning
        timings["plan and start"] = time.monotonic() - t0

        plan_index = {pub.key: i for i, pub in enumerate(plan.flood) if pub.key is not None}
        relayed = Relayed(stack.base, plan_index, plan.valid)
        with contextlib.suppress(OSError, websockets.InvalidHandshake, TimeoutError):
            # The client buffers whatever comes (max_queue None) and its reader is a task
            # of its own: the api never sees a slow client here.
            ws = await websockets.connect(
                stack.api.replace("http://", "ws://") + "/ws", max_size=None,
                max_queue=None, compression=None, proxy=None, ping_interval=None)
            cleanup.push_async_callback(ws.close)
            await ws.send(json.dumps({"subscribe": f"{stack.base}/miners/+/sample"}))
            reader = asyncio.create_task(read_frames(ws, relayed))
            cleanup.callback(reader.cancel)
        ready = await send_canaries(stack, publisher, relayed, "canary-start", timeout=30)
        timings["ready"] = time.monotonic() - t0

        api_pid = stack.procs["api"].pid
        peak = [memory_kb(api_pid, "VmRSS") / 1024]
        rss_start = peak[0]
        sampler = asyncio.create_task(sample_memory(api_pid, peak))
        cleanup.callback(sampler.cancel)
        pacer = Pacer(relayed)
        relayed.progress_at = time.monotonic()
        flood_start = time.monotonic()
        await publisher.publish_all(plan.flood, pacer)
        publish_s = time.monotonic() - flood_start
        timings["flood published"] = time.monotonic() - t0
        timings["of which paced"] = pacer.waited_s
        drained = await send_canaries(stack, publisher, relayed, "canary-end", timeout=40)
        timings["drained"] = time.monotonic() - t0
        sampler.cancel()
        hwm = memory_kb(api_pid, "VmHWM") / 1024
        cpu = {name: cpu_seconds(proc.pid) for name, proc in stack.procs.items()}
        cpu["this test"] = time.process_time()
        print("\nCPU seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
              + "; peak RSS MB: " + ", ".join(
                  f"{name} {memory_kb(proc.pid, 'VmHWM') / 1024:.0f}"
                  for name, proc in stack.procs.items()))
        yield Flood(stack, plan, relayed, ready, drained, publish_s, pacer.abandoned_at,
                    publisher.refused, rss_start, peak[0], hwm, timings)


def report(flood: Flood) -> str:
    """The context every failure message carries."""
    return (f"\n  before the flood, a canary was {flood.ready}"
            f"\n  after the flood, a canary was {flood.drained}"
            f"\n  dead processes: {flood.stack.dead() or 'none'}")


# --- the flood's promises ---------------------------------------------------------------


@pytest.mark.timeout(300)
async def test_the_flood_went_out_as_planned(flooded: Flood) -> None:
    """Not a promise of the services: that the test really did what the others rely on."""
    plan = flooded.plan
    print(f"\nflood: {plan.hostile_count} hostile + {len(plan.valid)} valid messages "
          f"({len(plan.flood)} in the flood, published in {flooded.publish_s:.1f} s); "
          f"{len(plan.retained_first)} of them retained before the services started; timings "
          + ", ".join(f"{k} {v:.1f} s" for k, v in flooded.timings.items()))
    print("hostile counts:", dict(sorted(
        Counter(label.split(":")[0] for label in plan.counts.elements()).items())))
    assert plan.hostile_count >= 100_000
    assert not flooded.refused, f"the broker refused publishes: {dict(flooded.refused)}"


async def retained_statuses(broker: Mosquitto, base: str) -> dict[str, str]:
    """The retained ``{base}/services/{name}/status`` of each service, as the broker has it
    (the hostile payloads never use the services' own names there)."""
    found: dict[str, str] = {}
    async with aiomqtt.Client(broker.host, broker.port,
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(f"{base}/services/+/status", qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                async for message in client.messages:
                    name = str(message.topic).split("/")[-2]
                    found[name] = bytes(message.payload).decode(errors="replace")
    return found


@pytest.mark.timeout(120)
async def test_every_service_is_still_running(flooded: Flood, flood_broker: Mosquitto) -> None:
    """And one that died anyway is at least seen dead: ``offline`` on its status topic."""
    stack = flooded.stack
    dead = stack.dead()
    statuses = await retained_statuses(flood_broker, stack.base) if dead else {}
    assert not dead, "processes that died: " + "; ".join(
        f"{name} (exit {code}, its status topic says {statuses.get(name)!r}"
        + (": a death unseen" if statuses.get(name) != "offline" else "")
        + f"):\n{log_tail(stack.log(name))}" for name, code in dead.items())


@pytest.mark.timeout(120)
async def test_every_valid_sample_is_stored_exactly_once(flooded: Flood) -> None:
    stack, plan = flooded.stack, flooded.plan
    marks = ",".join("?" * len(VALID_MINERS))
    rows = stack.rows(f"SELECT miner_id, ts_ms, hashrate_ths, temp_c, fan_rpm FROM samples "
                      f"WHERE miner_id IN ({marks})", *VALID_MINERS)
    sent = {(mid, ts_ms(ts)): sample for (mid, ts), sample in plan.valid.items()}
    stored = Counter((mid, ms) for mid, ms, *_ in rows)
    missing = sorted(set(sent) - set(stored))
    extra = sorted(set(stored) - set(sent))
    twice = sorted(key for key, n in stored.items() if n > 1)
    changed = [f"{mid}@{ms}: {(h, t, f)}" for mid, ms, h, t, f in rows
               if (mid, ms) in sent and (h, t, json.loads(f)) != (
                   sent[mid, ms].hashrate_ths, sent[mid, ms].temp_c, sent[mid, ms].fan_rpm)]
    mismatched = stack.rows("SELECT miner_id, ts_ms FROM samples WHERE miner_id LIKE ?",
                            MISMATCH_PREFIX + "%")
    assert not (missing or extra or twice or changed or mismatched), (
        f"{len(sent)} valid samples sent, {len(stored)} stored for their miners: "
        f"{len(missing)} missing (first {missing[:3]}), {len(extra)} not sent as valid "
        f"(hostile ones accepted: {extra[:3]}), {len(twice)} twice, {len(changed)} with "
        f"other values ({changed[:3]}), {len(mismatched)} stored under a payload miner id "
        f"that disagreed with its topic ({mismatched[:3]})" + report(flooded)
        + f"\nstore log:\n{log_tail(stack.log('store'))}")


@pytest.mark.timeout(120)
async def test_impossible_hashrates_leave_the_rollup_finite(flooded: Flood) -> None:
    """Three samples of hashrate_ths 1.7e308 in one minute of one miner: by the rule in
    ``shared.fields`` (a required field out of range rejects the message) the minute's
    rollup holds only the valid samples, its sum stays finite, and the api answers it
    with a number, as its schema says."""
    stack, plan = flooded.stack, flooded.plan
    bucket_ms = round(flooded.plan.huge_bucket.timestamp() * 1000)
    in_minute = [s for (mid, ts), s in plan.valid.items()
                 if mid == HUGE_MINER and bucket_ms <= ts_ms(ts) < bucket_ms + 60_000]
    rows = stack.rows("SELECT samples, hashrate_ths_sum, hashrate_ths_n, hashrate_ths_max "
                      "FROM rollups_1m WHERE miner_id = ? AND bucket_ms = ?",
                      HUGE_MINER, bucket_ms)
    assert rows, f"no 1-minute rollup of {HUGE_MINER} at {plan.huge_bucket}" + report(flooded)
    count, total, n, high = rows[0]
    assert math.isfinite(total) and math.isfinite(high), (
        f"rollup sum {total}, max {high} after three samples of {HUGE_HASHRATE}")
    assert (count, n) == (len(in_minute), len(in_minute)), (
        f"the rollup holds {count} samples ({n} hashrates), the minute had "
        f"{len(in_minute)} valid ones")
    expected = sum(s.hashrate_ths for s in in_minute) / len(in_minute)
    since = format_ts(plan.huge_bucket)
    until = format_ts(plan.huge_bucket + timedelta(seconds=59))
    async with httpx.AsyncClient(base_url=stack.api, trust_env=False) as http:
        answer = await http.get(f"/api/miners/{HUGE_MINER}/samples",
                                params={"since": since, "until": until, "step": "1m"})
    assert answer.status_code == 200, answer.text
    items = answer.json()
    assert [item["ts"] for item in items] == [since], items
    assert isinstance(items[0]["hashrate_ths"], float), items[0]
    assert items[0]["hashrate_ths"] == pytest.approx(expected), items[0]
    assert items[0]["hashrate_ths_max"] == max(s.hashrate_ths for s in in_minute)


@pytest.mark.timeout(120)
async def test_every_valid_sample_was_relayed_over_the_websocket(flooded: Flood) -> None:
    relayed, plan = flooded.relayed, flooded.plan
    missing = [key for key in plan.valid if relayed.counts[key] == 0]
    more = Counter(n for n in relayed.counts.values() if n > 1)
    assert not missing and not more and not relayed.altered, (
        f"{len(plan.valid)} valid samples sent, {len(plan.valid) - len(missing)} relayed "
        f"({len(missing)} never, first {missing[:3]}; relayed more than once (times: "
        f"samples): {dict(more) or 'none'}; altered: {relayed.altered[:3]}); "
        f"{relayed.frames} frames "
        f"in all; the socket {relayed.closed or 'stayed open'}; pacing "
        + (f"gave up at message {flooded.pacing_abandoned_at} (the relay stopped)"
           if flooded.pacing_abandoned_at is not None else "held")
        + report(flooded) + f"\napi log:\n{log_tail(flooded.stack.log('api'))}")


@pytest.mark.timeout(120)
async def test_the_api_memory_stays_within_its_bound(flooded: Flood) -> None:
    growth = flooded.api_hwm_mb - flooded.api_rss_start_mb
    print(f"\napi RSS: {flooded.api_rss_start_mb:.0f} MB before the flood, at most "
          f"{flooded.api_rss_max_mb:.0f} MB sampled during it, peak (VmHWM) "
          f"{flooded.api_hwm_mb:.0f} MB: +{growth:.0f} MB, bound +{API_GROWTH_BOUND_MB} MB")
    assert flooded.drained.relayed is not None, (
        "the api's relay did not get through the flood: its memory says nothing"
        + report(flooded))
    assert growth <= API_GROWTH_BOUND_MB, (
        f"the flood took the api from {flooded.api_rss_start_mb:.0f} MB to a peak of "
        f"{flooded.api_hwm_mb:.0f} MB, over the bound of +{API_GROWTH_BOUND_MB} MB"
        + report(flooded))


@pytest.mark.timeout(120)
async def test_healthz_answers_with_the_broker_connected(flooded: Flood) -> None:
    async with httpx.AsyncClient(base_url=flooded.stack.api, trust_env=False) as http:
        try:
            answer = await http.get("/healthz")
        except httpx.HTTPError as exc:
            raise AssertionError(f"/healthz: {exc!r}" + report(flooded)) from None
    assert answer.status_code == 200, answer.text
    assert answer.json()["broker"] == "up", answer.json()
    assert answer.json()["database"] == "up", answer.json()


SAMPLES = f"/api/miners/{VALID_MINERS[1]}/samples"
EVENTS = f"/api/miners/{VALID_MINERS[1]}/events"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("path", "status", "names"), [
    (f"{SAMPLES}?since=0001-01-01T00:00:00%2B14:00", 400, "since"),
    (f"{SAMPLES}?until=9999-12-31T23:59:59-14:00", 400, "until"),
    (f"{SAMPLES}?since=0001-01-01T00:00:00%2B14:00&step=1m", 400, "since"),
    (f"{SAMPLES}?since=0001-01-01T00:00:00%2B14:00&step=auto", 400, "since"),
    (f"{SAMPLES}?until=9999-12-31T23:59:59-14:00&step=auto", 400, "until"),
    (f"{EVENTS}?since=0001-01-01T00:00:00%2B14:00", 400, "since"),
    (f"{EVENTS}?until=9999-12-31T23:59:59-14:00", 400, "until"),
    ("/%00", 404, None),
    ("/app.js%00.html", 404, None),
])
async def test_what_was_a_500_is_now_a_400_or_404(flooded: Flood, path: str, status: int,
                                                  names: str | None) -> None:
    """The api's 500s of issue 8, through real HTTP: the answer names the parameter."""
    async with httpx.AsyncClient(base_url=flooded.stack.api, trust_env=False) as http:
        answer = await http.get(path)
    assert answer.status_code == status, f"{path}: {answer.status_code} {answer.text[:300]}"
    if names is not None:
        body = answer.json()
        assert body["status_code"] == status and names in body["detail"], body


REJECT_LINE = re.compile(r"bad (?P<kind>\S+) (?P<what>\S+) ignored")
FLUSH_LINE = re.compile(r"^(?P<at>\S+ \S+) .*\d+ more bad (?P<kind>\S+) \S+ ignored", re.M)
#: Registry topics each service reads, each of which got bad payloads of its own.
READS = {"store": {"sample", "status", "info", "alert"}, "alerts": {"sample", "alert"},
         "api": {"sample", "status", "info", "alert", "service"}}


def timer_flushes(text: str, after: datetime | None) -> list[str]:
    """Lines of held-back reject counts logged after ``after``: once a service has read
    the flood's last bad message, only a timer can log those."""
    if after is None:
        return []
    return [m[0] for m in FLUSH_LINE.finditer(text)
            if datetime.strptime(m["at"], "%Y-%m-%d %H:%M:%S,%f") > after]


@pytest.mark.timeout(120)
async def test_each_service_logged_its_rejects(flooded: Flood) -> None:
    """One line at the first bad message of each kind (``RejectLog``), and the counts held
    back flushed by the timer once the window ends, with no bad message to prompt it:
    after the last one. (Late in the module: this may wait for the window to end.)"""
    stack, drained = flooded.stack, flooded.drained

    def flushed() -> bool:
        return all(timer_flushes(stack.log(n), drained.seen_at.get(n)) for n in READERS)

    await eventually(flushed, timeout=max(
        [0.0] + [(moment - datetime.now()).total_seconds() + REJECT_WINDOW_S + 3
                 for moment in drained.seen_at.values()]))
    problems = []
    for name in READERS:
        text = stack.log(name)
        kinds = {m["kind"] for m in REJECT_LINE.finditer(text)}
        if not READS[name] <= kinds:
            problems.append(f"{name} logged rejects of {sorted(kinds) or 'nothing'}, not of "
                            f"{sorted(READS[name] - kinds)}")
        seen = drained.seen_at.get(name)
        if seen is None:
            problems.append(f"{name} never read the whole flood (its canary did not pass)")
        elif not timer_flushes(text, seen):
            problems.append(f"{name} logged no held-back reject counts in the "
                            f"{REJECT_WINDOW_S:g} s after it read the flood's last bad "
                            f"message (at {seen:%H:%M:%S}): the counts wait for a next one")
    assert not problems, "\n".join(problems) + report(flooded) + "".join(
        f"\n{name} log:\n{log_tail(stack.log(name), 8)}" for name in READERS)


@pytest.mark.timeout(60)
async def test_each_service_says_offline_when_stopped(flooded: Flood,
                                                     flood_broker: Mosquitto) -> None:
    """SIGTERM after the flood: each service publishes ``offline`` itself before it
    disconnects cleanly (after which the broker drops the Will: without its own message
    the topic would say nothing), at once, and exits 0. Last in this module: it stops the
    flooded stack (whose api still has our WebSocket client open)."""
    stack = flooded.stack
    alive = [name for name in SERVICES if stack.procs[name].poll() is None]
    async with StatusWatch(flood_broker, stack.base) as watch:
        problems = await offline_after(watch, stack, "SIGTERM", signal.SIGTERM, alive,
                                       STOPPED_BOUND_S)
    for name in alive:
        try:
            code = stack.procs[name].wait(15)
        except subprocess.TimeoutExpired:
            code = None
        if code != 0:
            problems.append(f"SIGTERM: {name} exit code {code}:\n{log_tail(stack.log(name), 6)}")
    dead = sorted(set(SERVICES) - set(alive))
    assert not problems and not dead, "\n".join(problems) + (
        f"\nalready dead before SIGTERM: {dead}" if dead else "")
