"""Sign-in and the miner page's Control section in a real browser (Debian's chromium
through Playwright), against the real api app, a real broker and SQLite.

The collector is the one thing not running: at its edge, a small responder on the real
broker (``Edge``) takes every Command from ``{base}/miners/+/command`` and answers with a
CommandResult, as the collector does: on the MQTT v5 response topic with the command's
correlation data, and on ``command/result``. It checks changes with ``shared.control``'s
``check_change``, as the collector does, and keeps the Commands it got for the test to
look at. Autotune progress is published on the real retained tune topic.

Covered: sign-in (a bad token's message, the name once signed in, signing out), token
mode asking for it before anything is shown; as an operator, a restart sent with the
session's CSRF header that reaches the command topic and lands in the events list, the
settings form with its ranges, an out-of-range value refused with the range named, and
only the changed field sent; as a viewer, every control disabled with the reason; the
audit entries the api keeps in the events list; autotune started, its live progress and
steps, a run whose collector went away marked not live, aborted, and the past runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec
import pytest
import uvicorn
from playwright.async_api import Browser, Page, Request, expect

from minerwatch.api.app import create_app
from minerwatch.api.relay import Relay
from minerwatch.api.tokens import add_token, create_table
from minerwatch.shared.config import (
    ApiConfig,
    CollectorConfig,
    Config,
    ControlConfig,
    DatabaseConfig,
    MqttConfig,
)
from minerwatch.shared.control import check_change, limits_for
from minerwatch.shared.db import (
    command_events,
    create_engine,
    create_schema,
    info_row,
    miners,
    tune_runs,
    tune_steps,
)
from minerwatch.shared.messages import Rejected, decode_message
from minerwatch.shared.mqtt.client import Client as MqttClient
from minerwatch.shared.schemas import (
    Command,
    CommandResult,
    MinerInfo,
    MinerSettings,
    MinerStatus,
    Pool,
    Pools,
    Sample,
    TuneProgress,
    TuneStep,
    encode,
    format_ts,
    now_ts,
)
from minerwatch.shared.topics import command_result_topic, tune_topic

MINER = "bitaxe-1"
#: A Bitaxe Gamma: BM1370, 400-625 MHz and 1000-1250 mV in shared.control.
LIMITS = limits_for("BM1370", "Gamma 601")
OPERATOR, VIEWER = "alice", "victor"
DASH = "\u2013"  # the en dash of the ranges the page shows (400\u2013625)


@dataclass
class Api:
    url: str
    base: str


async def seed(db_url: str, *, commands: Sequence[dict[str, Any]] = (),
               runs: Sequence[dict[str, Any]] = (),
               steps: Sequence[dict[str, Any]] = ()) -> dict[str, str]:
    """The miner's row, audit rows and past autotune runs as the store writes them, and a
    token of each role; the tokens by name."""
    engine = create_engine(db_url)
    try:
        await create_schema(engine)
        await create_table(engine)
        info = MinerInfo(miner_id=MINER, driver="axeos", host="10.0.0.5", port=80,
                         make="Bitaxe", model="Gamma 601", firmware="v2.9.0",
                         label="Garage Bitaxe")
        async with engine.begin() as conn:
            await conn.execute(miners.insert(), [info_row(info)])
            for table, rows in ((command_events, commands), (tune_runs, runs),
                                (tune_steps, steps)):
                if rows:
                    await conn.execute(table.insert(), list(rows))
            now_ms = int(time.time() * 1000)
            return {name: await add_token(conn, name, role, now_ms)
                    for name, role in ((OPERATOR, "operator"), (VIEWER, "viewer"))}
    finally:
        await engine.dispose()


@pytest.fixture
def serve(broker: Any, base_topic: str, db_url: str) -> Callable[..., Any]:
    """``async with serve(auth="lan") as api:`` the real app under uvicorn on a free
    loopback port, with control on."""

    @asynccontextmanager
    async def start(auth: Literal["token", "lan"] = "lan") -> AsyncIterator[Api]:
        mqtt = MqttConfig(url=broker.url, base_topic=base_topic, reconnect_min_s=0.1,
                          reconnect_max_s=0.5)
        config = Config(mqtt=mqtt, database=DatabaseConfig(url=db_url),
                        collector=CollectorConfig(poll_interval_s=10.0),
                        api=ApiConfig(auth=auth, command_timeout_s=5.0),
                        control=ControlConfig(enabled=True))
        relay = Relay(mqtt)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(create_app(config, relay=relay),
                                               log_config=None, lifespan="on"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            async with asyncio.timeout(10):
                while not (server.started and relay.listening):
                    assert not task.done(), "the api did not start"
                    await asyncio.sleep(0.02)
            yield Api(url=f"http://127.0.0.1:{sock.getsockname()[1]}", base=base_topic)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)
            sock.close()

    return start


# ---- the collector's edge ---------------------------------------------------------------------


def answer(command: Command, settings: MinerSettings) -> tuple[CommandResult, MinerSettings]:
    """What the collector would answer, and the miner's settings afterwards."""
    base: dict[str, Any] = {"id": command.id, "miner_id": command.miner_id,
                            "action": command.action, "by": command.by,
                            "requested": command.ts, "ts": now_ts()}
    if command.action == "settings":
        return CommandResult(**base, status="ok", message="read", settings=settings,
                             limits=LIMITS), settings
    if command.action == "configure":
        change = command.settings or MinerSettings()
        problems = check_change(change, LIMITS)
        if problems:
            return CommandResult(**base, status="refused", message="; ".join(problems),
                                 limits=LIMITS), settings
        values = {name: getattr(change, name) for name in change.__struct_fields__
                  if getattr(change, name) is not None}
        changed = [name for name, v in values.items() if getattr(settings, name) != v]
        after = msgspec.structs.replace(settings, **values)
        return CommandResult(**base, status="ok", message="written and read back",
                             changed=changed, before=settings, after=after,
                             limits=LIMITS), after
    messages = {"restart": "restarted: answering again after 41 s",
                "tune": "autotune started", "tune_abort": "autotune aborted"}
    return CommandResult(**base, status="ok", message=messages.get(command.action, "done")
                         ), settings


@dataclass
class Edge:
    """The collector's side of the command topic, on the real broker."""

    client: MqttClient
    base: str
    settings: MinerSettings
    commands: list[Command] = field(default_factory=list)
    #: Called with each command after it is answered (a tune run's progress, say).
    then: Callable[[Command], Any] | None = None

    async def serve(self) -> None:
        await self.client.subscribe([f"{self.base}/miners/+/command"])
        async for message in self.client.messages:
            self.client.ack(message)
            decoded = decode_message(self.base, message.topic, message.payload)
            if isinstance(decoded, Rejected) or not isinstance(decoded.message, Command):
                continue
            command = decoded.message
            self.commands.append(command)
            result, self.settings = answer(command, self.settings)
            payload = encode(result)
            reply_to = message.properties.get("response_topic")
            if isinstance(reply_to, str):
                await self.client.publish(reply_to, payload, properties={
                    "correlation_data": message.properties.get("correlation_data", b"")})
            await self.client.publish(command_result_topic(self.base, command.miner_id),
                                      payload)
            if self.then is not None:
                await self.then(command)

    def got(self, action: str) -> list[Command]:
        return [c for c in self.commands if c.action == action]


@asynccontextmanager
async def edge(broker: Any, base: str) -> AsyncIterator[Edge]:
    settings = MinerSettings(
        frequency_mhz=525, core_voltage_mv=1150, fan_mode="auto", fan_percent=60,
        temp_target_c=60, pools=Pools(primary=Pool(url="stratum+tcp://pool.example:3333",
                                                   user="bc1q.garage"),
                                      fallback=None))
    async with MqttClient(broker.host, broker.port) as client:
        responder = Edge(client, base, settings)
        task = asyncio.create_task(responder.serve())
        try:
            yield responder
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"not true within {timeout} s"
        await asyncio.sleep(0.02)
    return result


# ---- the browser ------------------------------------------------------------------------------


@dataclass
class Watch:
    """Script errors, requests to other origins, and the headers of every change sent."""

    origin: str
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    changes: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def saw(self, request: Request) -> None:
        target = urlsplit(request.url)
        if f"{target.scheme}://{target.netloc}" != self.origin and target.scheme != "data":
            self.foreign.append(request.url)
        if request.method in ("POST", "PATCH", "DELETE"):
            self.changes.append((request.method, target.path, request.headers))


async def open_page(browser: Browser, api: Api, path: str) -> tuple[Page, Watch]:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    watch = Watch(api.url)
    page.on("pageerror", lambda exc: watch.errors.append(str(exc)))
    page.on("console", lambda msg: watch.errors.append(msg.text)
            if msg.type == "error" and "Content Security Policy" in msg.text else None)
    page.on("request", watch.saw)
    await page.goto(api.url + path)
    return page, watch


async def sign_in(page: Page, token: str) -> None:
    form = page.locator("#signin")
    if not await form.is_visible():
        await page.locator("#session").get_by_role("button", name="Sign in").click()
    await form.get_by_label("Access token").fill(token)
    await form.get_by_role("button", name="Sign in").click()
    await expect(form).to_be_hidden()


async def publish_state(publish: Callable[..., Any], base: str) -> None:
    """The collector online and the miner live, as the collector publishes them."""
    ts = format_ts(datetime.now(UTC))
    await publish(f"{base}/services/collector/status", "online", retain=True)
    await publish(f"{base}/miners/{MINER}/status",
                  encode(MinerStatus(state="online", since=ts, last_seen=ts)), retain=True)
    await publish(f"{base}/miners/{MINER}/sample",
                  encode(Sample(miner_id=MINER, ts=ts, hashrate_ths=1.2, power_w=18.0,
                                temp_c=60.0)), retain=True)


# ---- tests ------------------------------------------------------------------------------------


async def test_token_mode_asks_for_a_sign_in_first_and_signs_out(
    serve: Callable[..., Any], publish: Callable[..., Any], browser: Browser, db_url: str,
    base_topic: str,
) -> None:
    tokens = await seed(db_url)
    await publish_state(publish, base_topic)
    async with serve(auth="token") as api:
        page, watch = await open_page(browser, api, "/")
        form = page.locator("#signin")
        # Nothing but the form until someone signs in: no fleet, no cancel.
        await expect(form).to_be_visible()
        await expect(form.get_by_label("Access token")).to_be_focused()
        await expect(page.locator("#fleet")).to_be_hidden()
        await expect(page.locator("#signin-cancel")).to_be_hidden()

        await form.get_by_label("Access token").fill("mw_" + "x" * 43)
        await form.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#signin-error")).to_have_text(
            re.compile(r"Not signed in: the token is not valid"))
        await expect(form).to_be_visible()

        await form.get_by_label("Access token").fill(tokens[OPERATOR])
        await form.get_by_role("button", name="Sign in").click()
        session = page.locator("#session")
        await expect(session).to_contain_text(f"Signed in as {OPERATOR} (operator)")
        await expect(form).to_be_hidden()
        # The page goes on without a reload: config, the fleet, the WebSocket.
        await expect(page.locator("#link")).to_have_text("live")
        await expect(page.locator(f'#miner-rows tr[data-miner="{MINER}"]')).to_have_count(1)

        # A reload keeps the session (the cookie), and the CSRF token comes back with it.
        await page.reload()
        await expect(session).to_contain_text(f"Signed in as {OPERATOR} (operator)")
        await expect(page.locator("#link")).to_have_text("live")

        await session.get_by_role("button", name="Sign out").click()
        await expect(form).to_be_visible()
        await expect(session.get_by_role("button", name="Sign in")).to_be_visible()
        await expect(page.locator("#fleet")).to_be_hidden()
        gone = await page.request.get(api.url + "/api/miners")
        assert gone.status == 401
        signed_out = [h for method, path, h in watch.changes
                      if method == "DELETE" and path == "/api/session"]
        assert len(signed_out) == 1 and signed_out[0].get("x-csrf-token")
    assert watch.errors == [] and watch.foreign == []


async def test_an_operator_restarts_and_changes_settings_within_the_range(
    serve: Callable[..., Any], publish: Callable[..., Any], browser: Browser, broker: Any,
    db_url: str, base_topic: str,
) -> None:
    tokens = await seed(db_url)
    await publish_state(publish, base_topic)
    async with serve(auth="lan") as api, edge(broker, base_topic) as unit:
        page, watch = await open_page(browser, api, f"/miners/{MINER}")
        await expect(page.locator("#link")).to_have_text("live")
        control = page.locator("#control")
        restart = control.get_by_role("button", name="Restart…")
        # LAN mode: the page shows, the controls wait for a sign-in and say so.
        await expect(page.locator("#control-access")).to_contain_text(
            "Sign in as an operator or admin")
        await expect(restart).to_be_disabled()

        await sign_in(page, tokens[OPERATOR])
        await expect(page.locator("#control-access")).to_contain_text(
            f"As {OPERATOR} (operator) you can control this miner")
        csrf = (await (await page.request.get(api.url + "/api/session")).json())["csrf"]

        # The settings as the miner has them, each range beside its field.
        frequency = page.get_by_label("Frequency (MHz)")
        await expect(frequency).to_have_value("525")
        await expect(frequency).to_have_attribute("min", "400")
        await expect(frequency).to_have_attribute("max", "625")
        await expect(page.locator("#range-frequency_mhz")).to_have_text(
            f"allowed 400{DASH}625 MHz · BM1370 (Gamma, GammaTurbo)")
        voltage = page.get_by_label("Core voltage (mV)")
        await expect(voltage).to_have_value("1150")
        await expect(voltage).to_have_attribute("min", "1000")
        await expect(voltage).to_have_attribute("max", "1250")
        await expect(page.locator("#range-core_voltage_mv")).to_contain_text(
            f"allowed 1000{DASH}1250 mV")
        await expect(page.locator("#set-primary-url")).to_have_value(
            "stratum+tcp://pool.example:3333")
        await expect(page.locator("#settings-note")).to_contain_text("Read from the miner at")

        # Restart asks first; then the command goes out with the session's CSRF token.
        await restart.click()
        await expect(page.locator("#restart-confirm")).to_be_visible()
        await page.get_by_role("button", name="Restart now").click()
        await expect(page.locator("#action-result")).to_have_text(
            "Restart: Done. restarted: answering again after 41 s")
        [command] = await eventually(lambda: unit.got("restart"))
        assert command.miner_id == MINER and command.by == f"session:{OPERATOR}"
        sent = [h for method, path, h in watch.changes
                if (method, path) == ("POST", f"/api/miners/{MINER}/actions/restart")]
        assert [h.get("x-csrf-token") for h in sent] == [csrf]
        # ...and the events list has who did it and how it ended, once.
        audit = page.locator('#event-list li[data-type="command"]')
        await expect(audit).to_have_count(1)
        await expect(audit).to_contain_text(
            f"Restart by session:{OPERATOR}: ok — restarted: answering again after 41 s")

        # Out of range: marked at once, and the collector's refusal names the range.
        await frequency.fill("2000")
        await expect(frequency).to_have_attribute("aria-invalid", "true")
        await page.get_by_role("button", name="Apply changes").click()
        result = page.locator("#settings-result")
        await expect(result).to_have_attribute("data-status", "refused")
        await expect(result).to_contain_text(
            "frequency_mhz 2000 is outside 400-625 MHz (BM1370 (Gamma, GammaTurbo))")
        assert unit.settings.frequency_mhz == 525

        # Within it: only the field that changed is sent, and the form shows the new value.
        await frequency.fill("550")
        await expect(frequency).to_have_attribute("aria-invalid", "false")
        await page.get_by_role("button", name="Apply changes").click()
        await expect(result).to_have_attribute("data-status", "ok")
        await expect(result).to_contain_text("Changed: frequency 525 → 550 MHz")
        configure = unit.got("configure")[-1]
        assert configure.settings == MinerSettings(frequency_mhz=550)
        await expect(frequency).to_have_value("550")
        patches = [h for method, path, h in watch.changes if method == "PATCH"]
        assert patches and all(h.get("x-csrf-token") == csrf for h in patches)
        # Both changes are in the audit: the refused one too.
        changes = audit.filter(has_text="Settings change")
        await expect(changes).to_have_count(2)
        await expect(changes.nth(0)).to_contain_text(": ok — written and read back")
        await expect(changes.nth(0)).to_contain_text("frequency 525 → 550 MHz")
        await expect(changes.nth(1)).to_contain_text(": refused — frequency_mhz 2000 is outside")
    assert watch.errors == [] and watch.foreign == []


async def test_a_viewer_sees_the_controls_disabled_and_the_audit(
    serve: Callable[..., Any], publish: Callable[..., Any], browser: Browser, broker: Any,
    db_url: str, base_topic: str,
) -> None:
    ended = datetime.now(UTC) - timedelta(minutes=5)
    ms = int(ended.timestamp() * 1000)
    tokens = await seed(db_url, commands=[{
        "id": "cmd-1", "miner_id": MINER, "ts_ms": ms, "requested_ms": ms - 2000,
        "action": "configure", "by": "token:bob", "status": "ok",
        "message": "written and read back", "changed": ["core_voltage_mv"],
        "before": {"core_voltage_mv": 1150}, "after": {"core_voltage_mv": 1200}}, {
        "id": "cmd-2", "miner_id": MINER, "ts_ms": ms + 1000, "requested_ms": ms,
        "action": "restart", "by": "alerts", "status": "failed",
        "message": "no answer within 180 s", "changed": [], "before": None, "after": None}])
    await publish_state(publish, base_topic)
    async with serve(auth="lan") as api, edge(broker, base_topic) as unit:
        page, watch = await open_page(browser, api, f"/miners/{MINER}")
        await expect(page.locator("#link")).to_have_text("live")
        await sign_in(page, tokens[VIEWER])
        await expect(page.locator("#control-access")).to_have_text(
            f"Signed in as {VIEWER} (viewer): only operators and admins can control miners.")
        for name in ("Restart…", "Pause", "Resume", "Identify", "Apply changes", "Start",
                     "Abort"):
            await expect(page.locator("#control").get_by_role(
                "button", name=name, exact=True)).to_be_disabled()
        await expect(page.get_by_label("Frequency (MHz)")).to_be_disabled()
        await expect(page.locator("#settings-note")).to_have_text(
            "Operators and admins see the miner's settings here.")

        # The audit the api keeps: who did what, and how it ended.
        audit = page.locator('#event-list li[data-type="command"]')
        await expect(audit).to_have_count(2)
        await expect(audit.nth(1)).to_contain_text(
            "Settings change by token:bob: ok — written and read back")
        await expect(audit.nth(1)).to_contain_text("core voltage 1150 → 1200 mV")
        await expect(audit.nth(0)).to_contain_text(
            "Restart by alerts: failed — no answer within 180 s")
        await expect(audit.nth(0).locator(".outcome")).to_have_class(
            re.compile("outcome-not-ok"))
    assert unit.commands == []
    assert watch.errors == [] and watch.foreign == []


def step(index: int, mhz: int, mv: int, rate: float, stable: bool, **extra: Any) -> TuneStep:
    return TuneStep(index=index, frequency_mhz=mhz, core_voltage_mv=mv, ts=now_ts(),
                    stable=stable, hashrate_ths=rate, expected_ths=mhz * 0.00236,
                    power_w=18.0, efficiency_jth=18.0 / rate, temp_c=61.0, vr_temp_c=55.0,
                    reject_ratio=0.002, **extra)


async def test_autotune_runs_live_aborts_and_lists_past_runs(
    serve: Callable[..., Any], publish: Callable[..., Any], browser: Browser, broker: Any,
    db_url: str, base_topic: str,
) -> None:
    started = datetime.now(UTC) - timedelta(days=1)
    ms = int(started.timestamp() * 1000)
    past = {"run_id": "run-old", "miner_id": MINER, "objective": "efficiency",
            "state": "done", "by": "token:bob", "started_ms": ms, "ts_ms": ms + 600_000,
            "best": 1, "original": {"frequency_mhz": 525, "core_voltage_mv": 1150},
            "applied": {"frequency_mhz": 500, "core_voltage_mv": 1100},
            "message": "kept 500 MHz at 1100 mV"}
    past_steps = [{"run_id": "run-old", "index": i, "miner_id": MINER, "ts_ms": ms + i,
                   "frequency_mhz": mhz, "core_voltage_mv": mv, "hashrate_ths": rate,
                   "expected_ths": None, "power_w": 17.0, "efficiency_jth": eff,
                   "temp_c": 60.0, "vr_temp_c": None, "reject_ratio": 0.0,
                   "stable": True, "reason": None}
                  for i, (mhz, mv, rate, eff) in enumerate(((525, 1150, 1.2, 14.9),
                                                            (500, 1100, 1.16, 14.2)))]
    tokens = await seed(db_url, runs=[past], steps=past_steps)
    await publish_state(publish, base_topic)
    topic = tune_topic(base_topic, MINER)

    def progress(run: Command, state: str, phase: str, share: float, steps: list[TuneStep],
                 best: int | None, **extra: Any) -> bytes:
        assert run.tune is not None
        return encode(TuneProgress(run_id=run.id, miner_id=MINER, objective=run.tune.objective,
                                   state=state, phase=phase, by=run.by, started=run.ts,  # type: ignore[arg-type]
                                   ts=now_ts(), progress=share, steps=steps, best=best,
                                   **extra))

    async with serve(auth="lan") as api, edge(broker, base_topic) as unit:
        page, watch = await open_page(browser, api, f"/miners/{MINER}")
        await expect(page.locator("#link")).to_have_text("live")
        runs = page.locator("#tune-runs li")
        await expect(runs).to_have_count(1)
        await expect(runs).to_contain_text("best 500 MHz · 1100 mV · 14.2 J/TH")
        await sign_in(page, tokens[OPERATOR])

        # Start: the command carries the objective; the run's progress comes live.
        await page.get_by_label("Objective").select_option("hashrate")
        start, abort = page.locator("#tune-start"), page.locator("#tune-abort")
        await expect(abort).to_be_disabled()
        await start.click()
        await expect(page.locator("#tune-result")).to_have_text("Autotune: Done. autotune started")
        [run] = await eventually(lambda: unit.got("tune"))
        assert run.tune is not None and run.tune.objective == "hashrate"
        first = [step(0, 525, 1150, 1.21, True), step(1, 575, 1200, 1.05, False,
                                                     reason="hashrate 78 % of expected")]
        await publish(topic, progress(run, "running", "settling 40/90 s at 550 MHz 1150 mV",
                                      0.25, first, 0), retain=True)
        live = page.locator("#tune-live")
        await expect(page.locator("#tune-state")).to_contain_text(
            "settling 40/90 s at 550 MHz 1150 mV")
        await expect(page.locator("#tune-progress")).to_have_attribute("value", "25")
        await expect(page.locator("#tune-percent")).to_have_text("25 %")
        rows = page.locator("#tune-steps tbody tr")
        await expect(rows).to_have_count(2)
        await expect(rows.nth(0)).to_have_attribute("data-stable", "true")
        await expect(rows.nth(0)).to_have_class(re.compile(r"\bbest\b"))
        await expect(rows.nth(0)).to_contain_text("★ best")
        await expect(rows.nth(1)).to_contain_text("unstable")
        await expect(rows.nth(1)).to_contain_text("hashrate 78 % of expected")
        await expect(start).to_be_disabled()
        await expect(abort).to_be_enabled()

        # The next step, and a new best, without a reload.
        second = [*first, step(2, 550, 1150, 1.3, True)]
        await publish(topic, progress(run, "running", "measuring 550 MHz 1150 mV", 0.6,
                                      second, 2), retain=True)
        await expect(rows).to_have_count(3)
        await expect(rows.nth(2)).to_have_class(re.compile(r"\bbest\b"))
        await expect(rows.nth(0)).not_to_have_class(re.compile(r"\bbest\b"))
        await expect(page.locator("#tune-progress")).to_have_attribute("value", "60")

        # The collector goes away: the run still says running, but not as live.
        await publish(f"{base_topic}/services/collector/status", "offline", retain=True)
        await expect(live).to_have_class(re.compile(r"\bnot-live\b"))
        await expect(page.locator("#tune-state")).to_contain_text(
            "Not live: last heard at")
        await publish(f"{base_topic}/services/collector/status", "online", retain=True)
        await expect(live).not_to_have_class(re.compile(r"\bnot-live\b"))

        # Abort: the collector ends the run and gives the old settings back.
        async def ended(command: Command) -> None:
            if command.action == "tune_abort":
                await publish(topic, progress(
                    run, "aborted", "aborted", 0.6, second, 2,
                    applied=MinerSettings(frequency_mhz=525, core_voltage_mv=1150),
                    message="aborted by session:alice: back to 525 MHz at 1150 mV"),
                    retain=True)

        unit.then = ended
        await abort.click()
        await expect(page.locator("#tune-result")).to_have_text("Abort: Done. autotune aborted")
        await expect(page.locator("#tune-state .tune-badge")).to_have_text("Aborted")
        await expect(page.locator("#tune-state")).to_contain_text("Applied: 525 MHz · 1150 mV")
        await expect(start).to_be_enabled()
        await expect(abort).to_be_disabled()
        await expect(runs).to_have_count(2)
        await expect(runs.first).to_have_attribute("data-run", run.id)
        await expect(runs.first).to_contain_text("Aborted")
        assert [c.action for c in unit.commands if c.action != "settings"] == [
            "tune", "tune_abort"]
        audit = page.locator('#event-list li[data-type="command"]')
        await expect(audit.filter(has_text="Autotune abort")).to_have_count(1)
    assert watch.errors == [] and watch.foreign == []
