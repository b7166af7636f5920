"""The dashboard tells the truth, in a real browser (Debian's chromium through Playwright)
against the real api app, a real broker and SQLite: a miner is ``Stale`` (never "Online")
while the collector is offline or its sample is too old, stale miners leave the fleet
totals, a banner names the service that is down, labels come first, and the row menu
renames and forgets, the alert list mutes.

The api runs here with a collector poll interval of ``POLL_S`` (``stale_after_s`` = 3 x
that), so a sample ages past it within the test."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, Dialog, Page, expect

from minerwatch.api.app import create_app
from minerwatch.api.relay import Relay
from minerwatch.shared.config import (
    ApiConfig,
    CollectorConfig,
    Config,
    DatabaseConfig,
    MqttConfig,
)
from minerwatch.shared.schemas import (
    AlertEvent,
    MinerInfo,
    MinerLabel,
    MinerStatus,
    Mute,
    Sample,
    decode,
    encode,
    format_ts,
)

from .conftest import make_token

Publish = Callable[..., Awaitable[None]]
Seed = Callable[..., Awaitable[None]]
MakeSample = Callable[..., Sample]
ReadRetained = Callable[[str], Awaitable[list[tuple[str, bytes]]]]

#: The collector's poll interval in the api's config: a sample is stale after 3 x this.
POLL_S = 1.0
SCREENSHOT = "/tmp/dashboard-truth.png"


@dataclass
class Api:
    url: str
    base: str
    #: An operator token, which the page signs in with.
    token: str


@pytest.fixture
def start(broker: Any, base_topic: str, db_url: str) -> Callable[[], Any]:
    """``async with start() as api:`` the real app under uvicorn on a free loopback port,
    with ``POLL_S`` as the collector's poll interval."""

    @asynccontextmanager
    async def serve() -> AsyncIterator[Api]:
        mqtt = MqttConfig(url=broker.url, base_topic=base_topic, reconnect_min_s=0.1,
                          reconnect_max_s=0.5)
        config = Config(mqtt=mqtt, database=DatabaseConfig(url=db_url),
                        collector=CollectorConfig(poll_interval_s=POLL_S),
                        # No collector answers commands here: a page's settings
                        # request ends (504) before the server stops.
                        api=ApiConfig(auth="lan", command_timeout_s=1.0))
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
            yield Api(url=f"http://127.0.0.1:{sock.getsockname()[1]}", base=base_topic,
                      token=await make_token(db_url, "operator"))
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)
            sock.close()

    return serve


def ago(seconds: float) -> str:
    return format_ts(datetime.now(UTC) - timedelta(seconds=seconds))


def miner_row(page: Page, miner_id: str) -> Any:
    return page.locator(f'tr[data-miner="{miner_id}"]')


def field(page: Page, miner_id: str, name: str) -> Any:
    return miner_row(page, miner_id).locator(f'td[data-field="{name}"]')


def shown_name(page: Page, miner_id: str) -> Any:
    """The name a person reads in the miner's row (its label, else its id)."""
    return field(page, miner_id, "name").locator(".name")


async def clock(page: Page, ts: str) -> str:
    """What the page's clock shows for ``ts`` (the browser's time zone and locale)."""
    text: str = await page.evaluate(
        "ts => new Date(ts).toLocaleTimeString([], "
        "{hour: '2-digit', minute: '2-digit', hourCycle: 'h23'})", ts)
    return text


def info(miner_id: str, label: str | None = None) -> MinerInfo:
    return MinerInfo(miner_id=miner_id, driver="axeos", host="10.0.0.9", port=80,
                     make="Bitaxe", model="Gamma 601", hostname=miner_id, label=label)


async def open_dashboard(browser: Browser, api: Api, errors: list[str]) -> Page:
    page = await browser.new_page(viewport={"width": 1360, "height": 700})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Signed in as an operator (the api runs with auth = "lan"): the page may change things.
    await page.request.post(f"{api.url}/api/session", data={"token": api.token})
    await page.goto(api.url + "/")
    await expect(page.locator("#link")).to_have_text("live")
    return page


@asynccontextmanager
async def retained_reader(broker: Any) -> AsyncIterator[ReadRetained]:
    """``await read(filter)``: the retained messages the broker holds for ``filter`` now,
    read by a client independent of the api."""
    async with aiomqtt.Client(broker.host, broker.port) as client:

        async def read(topic_filter: str) -> list[tuple[str, bytes]]:
            # Retained messages come right after each subscription, in order: once the
            # marker of a second one is in, everything the first matches has come.
            marker = f"mwtest-marker/{id(client)}-{asyncio.get_running_loop().time()}"
            await client.publish(marker, b"end", qos=1, retain=True)
            await client.subscribe(topic_filter, qos=1)
            await client.subscribe(marker, qos=1)
            found: list[tuple[str, bytes]] = []
            async with asyncio.timeout(5):
                async for message in client.messages:
                    topic = str(message.topic)
                    if topic == marker:
                        break
                    if message.retain and isinstance(message.payload, bytes) and message.payload:
                        found.append((topic, message.payload))
            await client.unsubscribe(topic_filter)
            await client.unsubscribe(marker)
            await client.publish(marker, b"", qos=1, retain=True)
            return found

        yield read


async def test_a_miner_is_stale_while_the_collector_is_offline_and_the_banner_says_so(
    start: Callable[[], Any], publish: Publish, browser: Browser, db_url: str,
    seed: Seed, make_sample: MakeSample, base_topic: str,
) -> None:
    await seed(
        db_url,
        sample_rows=[make_sample("bitaxe-1", ago(1), hashrate_ths=1.2, power_w=18.0),
                     make_sample("bitaxe-2", ago(1), hashrate_ths=0.8, power_w=12.0)],
        infos=[info("bitaxe-1", "Garage Bitaxe"), info("bitaxe-2")],
        statuses=[("bitaxe-1", MinerStatus(state="online", since=ago(600), last_seen=ago(1))),
                  ("bitaxe-2", MinerStatus(state="online", since=ago(600), last_seen=ago(1)))],
    )
    for service in ("collector", "store", "alerts"):
        await publish(f"{base_topic}/services/{service}/status", "online", retain=True)
    errors: list[str] = []
    async with start() as api:
        page = await open_dashboard(browser, api, errors)
        # Keep the samples coming, as a running collector does, at the configured pace.
        running = asyncio.Event()
        running.set()
        last_ts: dict[str, str] = {}

        async def collector() -> None:
            while running.is_set():
                for miner_id, rate in (("bitaxe-1", 1.2), ("bitaxe-2", 0.8)):
                    sample = make_sample(miner_id, ago(0), hashrate_ths=rate, power_w=15 * rate)
                    last_ts[miner_id] = sample.ts
                    await publish(f"{api.base}/miners/{miner_id}/sample", encode(sample),
                                  retain=True)
                await asyncio.sleep(POLL_S / 2)

        feeder = asyncio.create_task(collector())
        try:
            # Live: labels first, the id small beside; everyone counts.
            await expect(shown_name(page, "bitaxe-1")).to_have_text("Garage Bitaxe")
            await expect(field(page, "bitaxe-1", "name").locator(".id")).to_have_text("bitaxe-1")
            await expect(shown_name(page, "bitaxe-2")).to_have_text("bitaxe-2")
            await expect(field(page, "bitaxe-1", "state")).to_have_text("Online")
            await expect(page.locator("#total-online")).to_have_text("2 / 2 online")
            await expect(page.locator("#total-hashrate")).to_have_text("2.00TH/s")
            await expect(page.locator("#banner")).to_be_hidden()

            # The collector goes: nothing below is live any more, however fresh it looks.
            running.clear()
            await feeder
            last_seen = last_ts["bitaxe-1"]
            await expect(field(page, "bitaxe-1", "updated")).to_have_attribute("title", last_seen)
            before = await clock(page, ago(0))
            await publish(f"{api.base}/services/collector/status", "offline", retain=True)
            after = await clock(page, ago(0))
            for miner_id in ("bitaxe-1", "bitaxe-2"):
                await expect(miner_row(page, miner_id)).to_have_attribute("data-state", "stale")
                await expect(field(page, miner_id, "state")).to_contain_text("Stale")
                await expect(field(page, miner_id, "state")).not_to_contain_text("Online")
            await expect(field(page, "bitaxe-1", "state")).to_contain_text(
                f"since {await clock(page, last_seen)}")
            banner = page.locator('#banner p[data-service="collector"]')
            await expect(banner).to_have_text(re.compile(
                f"^The collector is offline since ({before}|{after}): "
                "the numbers below are not live\\.$"))
            await expect(page.locator("#total-online")).to_have_text("0 / 2 online · 2 stale")
            await expect(page.locator("#total-hashrate")).to_have_text("0.00TH/s")
            await expect(page.locator("#total-power")).to_have_text("0W")
            await expect(page.locator("#total-efficiency")).to_have_text("\u2013")  # a dash: none
            await page.screenshot(path=SCREENSHOT, full_page=True)

            # A reload agrees: /healthz and the replay say the same.
            await page.reload()
            await expect(banner).to_contain_text("The collector is offline since")
            await expect(miner_row(page, "bitaxe-1")).to_have_attribute("data-state", "stale")

            # The store goes too: a line of its own.
            await publish(f"{api.base}/services/store/status", "offline", retain=True)
            await expect(page.locator('#banner p[data-service="store"]')).to_contain_text(
                "The store is offline since")

            # Back: live again, the banner gone.
            for service in ("collector", "store"):
                await publish(f"{api.base}/services/{service}/status", "online", retain=True)
            running.set()
            feeder = asyncio.create_task(collector())
            await expect(field(page, "bitaxe-1", "state")).to_have_text("Online")
            await expect(page.locator("#total-online")).to_have_text("2 / 2 online")
            await expect(page.locator("#banner")).to_be_hidden()
        finally:
            running.clear()
            with contextlib.suppress(Exception):
                await feeder
    assert errors == []


async def test_a_miner_whose_sample_ages_turns_stale_and_leaves_the_totals(
    start: Callable[[], Any], publish: Publish, browser: Browser, make_sample: MakeSample,
    base_topic: str,
) -> None:
    await publish(f"{base_topic}/services/collector/status", "online", retain=True)
    errors: list[str] = []
    async with start() as api:
        async with httpx.AsyncClient() as http:
            config = (await http.get(f"{api.url}/api/config")).json()
        assert config["stale_after_s"] == 3 * POLL_S
        page = await open_dashboard(browser, api, errors)
        for miner_id in ("fresh-1", "quiet-2"):
            await publish(f"{api.base}/miners/{miner_id}/info", encode(info(miner_id)), retain=True)
        # quiet-2's status says online and was refreshed after its (last) sample: last_seen
        # is the latest of the two.
        quiet_sample = make_sample("quiet-2", ago(0.5), hashrate_ths=0.5, power_w=10.0)
        quiet_status = MinerStatus(state="online", since=ago(300), last_seen=ago(0))
        await publish(f"{api.base}/miners/quiet-2/sample", encode(quiet_sample), retain=True)
        await publish(f"{api.base}/miners/quiet-2/status", encode(quiet_status), retain=True)
        await expect(field(page, "quiet-2", "updated")).to_have_attribute(
            "title", quiet_status.last_seen or "")

        running = True

        async def fresh() -> None:
            while running:
                sample = make_sample("fresh-1", ago(0), hashrate_ths=1.5, power_w=21.0)
                await publish(f"{api.base}/miners/fresh-1/sample", encode(sample), retain=True)
                await asyncio.sleep(POLL_S / 2)

        feeder = asyncio.create_task(fresh())
        try:
            await expect(page.locator("#total-online")).to_have_text("2 / 2 online")
            await expect(page.locator("#total-hashrate")).to_have_text("2.00TH/s")
            # No message about quiet-2 comes any more: the page's own clock makes it stale.
            await expect(miner_row(page, "quiet-2")).to_have_attribute("data-state", "stale",
                                                                      timeout=10000)
            await expect(field(page, "quiet-2", "state")).to_contain_text("Stale")
            await expect(field(page, "quiet-2", "state")).to_contain_text(
                f"since {await clock(page, quiet_status.last_seen or '')}")
            await expect(field(page, "quiet-2", "state")).not_to_contain_text("Online")
            await expect(miner_row(page, "fresh-1")).to_have_attribute("data-state", "online")
            await expect(page.locator("#total-online")).to_have_text("1 / 2 online · 1 stale")
            await expect(page.locator("#total-hashrate")).to_have_text("1.50TH/s")
            await expect(page.locator("#total-power")).to_have_text("21W")
            await expect(page.locator("#total-efficiency")).to_have_text("14.0J/TH")
            # The collector is fine: no banner for one quiet miner.
            await expect(page.locator("#banner")).to_be_hidden()

            # A new sample makes it live again.
            await publish(f"{api.base}/miners/quiet-2/sample",
                          encode(make_sample("quiet-2", ago(0), hashrate_ths=0.5, power_w=10.0)),
                          retain=True)
            await expect(miner_row(page, "quiet-2")).to_have_attribute("data-state", "online")
            await expect(page.locator("#total-hashrate")).to_have_text("2.00TH/s")
        finally:
            running = False
            await feeder
    assert errors == []


async def test_rename_forget_and_clear_from_the_row_menu(
    start: Callable[[], Any], publish: Publish, browser: Browser, make_sample: MakeSample,
    base_topic: str, broker: Any,
) -> None:
    await publish(f"{base_topic}/services/collector/status", "online", retain=True)
    errors: list[str] = []
    async with start() as api, retained_reader(broker) as read:
        for miner_id in ("bitaxe-1", "ghost-2", "gone-3"):
            await publish(f"{api.base}/miners/{miner_id}/info", encode(info(miner_id)), retain=True)
            await publish(f"{api.base}/miners/{miner_id}/status",
                          encode(MinerStatus(state="online", since=ago(60), last_seen=ago(0))),
                          retain=True)
            await publish(f"{api.base}/miners/{miner_id}/sample",
                          encode(make_sample(miner_id, ago(0))), retain=True)
        page = await open_dashboard(browser, api, errors)
        await expect(page.locator("tr[data-miner]")).to_have_count(3)

        # Rename: the menu, the form, Enter. The label is published retained for the
        # collector, and shown at once.
        await miner_row(page, "bitaxe-1").locator("summary").click()
        await miner_row(page, "bitaxe-1").get_by_role("button", name="Rename…").click()
        label_input = field(page, "bitaxe-1", "name").locator("input")
        await label_input.fill("Shed Bitaxe")
        await label_input.press("Enter")
        await expect(shown_name(page, "bitaxe-1")).to_have_text("Shed Bitaxe")
        await expect(field(page, "bitaxe-1", "name").locator(".id")).to_have_text("bitaxe-1")
        found = await read(f"{api.base}/miners/bitaxe-1/label")
        assert [decode(payload, MinerLabel).label for _topic, payload in found] == ["Shed Bitaxe"]
        # The collector folds it into the info: still the label.
        await publish(f"{api.base}/miners/bitaxe-1/info", encode(info("bitaxe-1", "Shed Bitaxe")),
                      retain=True)
        await expect(shown_name(page, "bitaxe-1")).to_have_text("Shed Bitaxe")
        # Rows sort by the name a person reads: "Shed Bitaxe" after "ghost-2" and "gone-3".
        await expect(page.locator("tr[data-miner]").last).to_have_attribute("data-miner",
                                                                           "bitaxe-1")

        # A label the api refuses says why, and nothing changes.
        await miner_row(page, "bitaxe-1").locator("summary").click()
        await miner_row(page, "bitaxe-1").get_by_role("button", name="Rename…").click()
        await label_input.fill("bell \u0007 label")
        await label_input.press("Enter")
        problem = field(page, "bitaxe-1", "name").locator(".error")
        await expect(problem).to_contain_text("Not renamed")
        await label_input.press("Escape")
        await expect(shown_name(page, "bitaxe-1")).to_have_text("Shed Bitaxe")

        # Forget, dismissed: nothing happens.
        async def dismiss(dialog: Dialog) -> None:
            await dialog.dismiss()

        page.once("dialog", dismiss)
        await miner_row(page, "ghost-2").locator("summary").click()
        await miner_row(page, "ghost-2").get_by_role("button", name="Forget…").click()
        await expect(page.locator("#notice")).to_be_hidden()
        await expect(miner_row(page, "ghost-2")).to_have_count(1)

        # Forget, confirmed: the row goes, its retained topics are cleared on the broker,
        # and a reload does not bring it back.
        questions: list[str] = []

        async def accept(dialog: Dialog) -> None:
            questions.append(dialog.message)
            await dialog.accept()

        page.once("dialog", accept)
        await miner_row(page, "ghost-2").locator("summary").click()
        await miner_row(page, "ghost-2").get_by_role("button", name="Forget…").click()
        await expect(miner_row(page, "ghost-2")).to_have_count(0)
        assert questions and questions[0].startswith("Forget ghost-2?")
        assert await read(f"{api.base}/miners/ghost-2/+") == []
        assert len(await read(f"{api.base}/miners/bitaxe-1/+")) >= 3  # the others stay
        await page.reload()
        await expect(page.locator("#link")).to_have_text("live")
        await expect(page.locator("tr[data-miner]")).to_have_count(2)
        await expect(miner_row(page, "ghost-2")).to_have_count(0)
        await expect(page.locator("#total-online")).to_have_text("2 / 2 online")

        # Cleared retained topics (empty payloads, as `minerwatch-collector forget` sends)
        # take a miner off the page without a reload.
        for kind in ("sample", "status", "info"):
            await publish(f"{api.base}/miners/gone-3/{kind}", b"", retain=True)
        await expect(miner_row(page, "gone-3")).to_have_count(0)
        await expect(page.locator("#total-online")).to_have_text("1 / 1 online")
    assert errors == []


async def test_firing_alerts_show_the_label_and_mute_for_an_hour(
    start: Callable[[], Any], publish: Publish, browser: Browser, make_sample: MakeSample,
    base_topic: str, broker: Any,
) -> None:
    await publish(f"{base_topic}/services/collector/status", "online", retain=True)
    errors: list[str] = []
    async with start() as api, retained_reader(broker) as read:
        await publish(f"{api.base}/miners/bitaxe-1/info", encode(info("bitaxe-1", "Garage Bitaxe")),
                      retain=True)
        await publish(f"{api.base}/miners/bitaxe-1/sample", encode(make_sample("bitaxe-1", ago(0))),
                      retain=True)
        page = await open_dashboard(browser, api, errors)
        for rule, message in (("temp_high", "temp_c 71.0 > 68 for 60 s"),
                              ("fan_failure", "fan 1 at 0 rpm while mining")):
            alert = AlertEvent(miner_id="bitaxe-1", rule=rule, state="firing", severity="warning",
                               value=71.0, threshold=68, message=message, ts=ago(0),
                               label="Garage Bitaxe", since=ago(60))
            await publish(f"{api.base}/alerts/bitaxe-1/{rule}", encode(alert), retain=True)
        item = page.locator('#alert-list li[data-rule="temp_high"]')
        await expect(page.locator("#alert-list li")).to_have_count(2)
        await expect(item.locator("strong")).to_have_text("Garage Bitaxe")
        await expect(item.locator(".id")).to_have_text("bitaxe-1")
        await expect(item).to_contain_text("temp_c 71.0 > 68 for 60 s")

        await item.get_by_role("button", name="Mute 1 h").click()
        await expect(item).to_have_class("muted")
        await expect(item).to_contain_text("muted until")
        other = page.locator('#alert-list li[data-rule="fan_failure"]')
        await expect(other).not_to_have_class("muted")
        await expect(other.get_by_role("button", name="Mute 1 h")).to_be_visible()
        await miner_row(page, "bitaxe-1").locator("summary").click()
        await page.screenshot(path="/tmp/dashboard-actions.png", full_page=True)

        # The mute is retained on the broker, for this miner and rule, an hour from now.
        found = await read(f"{api.base}/mutes/+")
        assert len(found) == 1
        mute = decode(found[0][1], Mute)
        assert (mute.miner_id, mute.rule) == ("bitaxe-1", "temp_high")
        until = datetime.fromisoformat(mute.until.replace("Z", "+00:00"))
        assert timedelta(minutes=59) < until - datetime.now(UTC) <= timedelta(hours=1)
        assert found[0][0] == f"{api.base}/mutes/{mute.id}"

        # A reload still shows it muted (the retained mute comes with the replay).
        await page.reload()
        await expect(item).to_have_class("muted")

        # Unmute lifts it: the retained mute is cleared.
        await item.get_by_role("button", name="Unmute").click()
        await expect(item).not_to_have_class("muted")
        await expect(item.get_by_role("button", name="Mute 1 h")).to_be_visible()
        assert await read(f"{api.base}/mutes/+") == []
    assert errors == []
