"""The dashboard in a real browser (Debian's chromium driven by Playwright): the fleet from
the database, then live updates from the broker without a reload. The truth of what it
shows (stale, the banner, labels, forget, mute) is in ``test_api_dashboard_truth``."""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.async_api import Browser, Page, expect

from minerwatch.shared.schemas import AlertEvent, MinerInfo, MinerStatus, Sample, encode, format_ts

StartApi = Callable[..., Any]
Publish = Callable[..., Awaitable[None]]

SCREENSHOT = "/tmp/dashboard.png"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def row(page: Page, miner_id: str, field: str) -> Any:
    return page.locator(f'tr[data-miner="{miner_id}"] td[data-field="{field}"]')


async def test_dashboard_shows_the_fleet_and_updates_live(
    start_api: StartApi,
    publish: Publish,
    browser: Browser,
    db_url: str,
    seed: Callable[..., Awaitable[None]],
    make_sample: Callable[..., Sample],
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)

    def ago(seconds: float) -> str:
        return format_ts(now - timedelta(seconds=seconds))

    await seed(
        db_url,
        sample_rows=[
            make_sample("bitaxe-1", ago(20), hashrate_ths=1.05, power_w=16.2, efficiency_jth=15.4,
                        temp_c=58.5, vr_temp_c=61.0, fan_rpm=[4080]),
            make_sample("bitaxe-1", ago(8), hashrate_ths=1.21, power_w=17.9, efficiency_jth=14.8,
                        temp_c=59.0, vr_temp_c=62.0, fan_rpm=[4120],
                        shares_accepted=18234, shares_rejected=12),
            make_sample("s19-rack2", ago(6), hashrate_ths=96.4, power_w=3250.0,
                        efficiency_jth=33.7, temp_c=71.0, fan_rpm=[5400, 5460, 5520, 5380],
                        shares_accepted=90210, shares_rejected=0),
            make_sample("nerdq-3", ago(900), hashrate_ths=4.6, power_w=76.0, efficiency_jth=16.5,
                        temp_c=64.0, fan_rpm=[3300], shares_accepted=5123, shares_rejected=4),
        ],
        infos=[
            MinerInfo(miner_id="bitaxe-1", driver="axeos", host="10.0.0.5", port=80,
                      make="Bitaxe", model="Gamma 601", firmware="v2.4.2", hostname="bitaxe"),
            MinerInfo(miner_id="s19-rack2", driver="cgminer", host="10.0.0.20", port=4028,
                      make="Antminer", model="S19j Pro", firmware="2023.05", hostname="s19",
                      label="Rack 2 · S19"),
            MinerInfo(miner_id="nerdq-3", driver="axeos", host="10.0.0.7", port=80,
                      make="NerdQAxe", model="NerdQAxe++", hostname="nerdqaxe"),
        ],
        statuses=[
            ("bitaxe-1", MinerStatus(state="online", since=ago(3600), last_seen=ago(8))),
            ("s19-rack2", MinerStatus(state="online", since=ago(7200), last_seen=ago(6))),
            ("nerdq-3", MinerStatus(state="offline", reason="connection refused",
                                    since=ago(800), last_seen=ago(900), failures=3)),
        ],
    )
    async with start_api() as api:
        base = api.base
        # The collector runs: what it published last is live.
        await publish(f"{base}/services/collector/status", "online", retain=True)
        page = await browser.new_page(viewport={"width": 1360, "height": 620})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(api.url + "/")

        # The fleet from the database.
        await expect(page.locator("tr[data-miner]")).to_have_count(3)
        # No label: the id is the name, the host beside it; a label comes first, the id small.
        await expect(row(page, "bitaxe-1", "name").locator(".name")).to_have_text("bitaxe-1")
        await expect(row(page, "bitaxe-1", "name")).to_contain_text("bitaxe · 10.0.0.5:80")
        await expect(row(page, "s19-rack2", "name").locator(".name")).to_have_text("Rack 2 · S19")
        await expect(row(page, "s19-rack2", "name").locator(".id")).to_have_text("s19-rack2")
        await expect(row(page, "bitaxe-1", "model")).to_contain_text("Bitaxe Gamma 601")
        # A model that names its make already is not prefixed with it again.
        await expect(row(page, "nerdq-3", "model")).to_contain_text("NerdQAxe++")
        await expect(row(page, "nerdq-3", "model")).not_to_contain_text("NerdQAxe NerdQAxe")
        await expect(row(page, "bitaxe-1", "hashrate")).to_have_text("1.21TH/s")
        await expect(row(page, "bitaxe-1", "efficiency")).to_have_text("14.8J/TH")
        await expect(row(page, "s19-rack2", "fans")).to_contain_text("5,400 · 5,460")
        await expect(row(page, "nerdq-3", "state")).to_contain_text("Offline")
        await expect(row(page, "nerdq-3", "state")).to_contain_text("connection refused")
        await expect(page.locator("#total-online")).to_have_text("2 / 3 online")
        await expect(page.locator("#banner")).to_be_hidden()
        await expect(page.locator("#link")).to_have_text("live")

        # A new sample on the broker changes the hashrate cell, no reload.
        live = make_sample("bitaxe-1", format_ts(datetime.now(UTC)), hashrate_ths=1.37,
                           power_w=18.1, efficiency_jth=13.2, temp_c=60.5, vr_temp_c=63.0,
                           fan_rpm=[4200], shares_accepted=18240, shares_rejected=12)
        await publish(f"{base}/miners/bitaxe-1/sample", encode(live), retain=True)
        await expect(row(page, "bitaxe-1", "hashrate")).to_have_text("1.37TH/s")
        await expect(row(page, "bitaxe-1", "updated")).to_contain_text("s ago")
        await expect(page.locator("#total-hashrate")).to_have_text("97.77TH/s")

        # An offline status changes the state; the totals follow.
        offline = MinerStatus(state="offline", reason="timeout", since=format_ts(datetime.now(UTC)),
                              last_seen=live.ts, failures=3)
        await publish(f"{base}/miners/s19-rack2/status", encode(offline), retain=True)
        await expect(row(page, "s19-rack2", "state")).to_contain_text("Offline")
        await expect(page.locator('tr[data-miner="s19-rack2"]')).to_have_class("not-live")
        await expect(page.locator("#total-online")).to_have_text("1 / 3 online")
        await expect(page.locator("#total-hashrate")).to_have_text("1.37TH/s")
        # ... and back online for the screenshot, with a firing alert to show.
        online = MinerStatus(state="online", since=format_ts(datetime.now(UTC)), last_seen=live.ts)
        await publish(f"{base}/miners/s19-rack2/status", encode(online), retain=True)
        alert = AlertEvent(miner_id="s19-rack2", rule="overheat", state="firing",
                           severity="warning", value=77.5, threshold=75,
                           message="temp_c 77.5 > 75 for 60 s", ts=format_ts(datetime.now(UTC)))
        await publish(f"{base}/alerts/s19-rack2/overheat", encode(alert), retain=True)
        await expect(page.locator("#alert-list li")).to_have_count(1)
        await expect(page.locator("#alert-list li")).to_contain_text("temp_c 77.5 > 75")
        await expect(page.locator("#alert-list li strong")).to_have_text("Rack 2 · S19")
        await expect(page.locator("#total-alerts")).to_have_text("1")
        await expect(page.locator("#total-online")).to_have_text("2 / 3 online")
        await page.screenshot(path=SCREENSHOT, full_page=True)

        # A resolved alert leaves the list.
        resolved = json.loads(encode(alert))
        resolved["state"] = "resolved"
        await publish(f"{base}/alerts/s19-rack2/overheat", json.dumps(resolved), retain=True)
        await expect(page.locator("#alert-list li")).to_have_count(0)
        await expect(page.locator("#alerts")).to_be_hidden()
        assert errors == []


async def test_dashboard_reconnects_after_an_api_restart(
    start_api: StartApi,
    publish: Publish,
    browser: Browser,
    db_url: str,
    seed: Callable[..., Awaitable[None]],
    make_sample: Callable[..., Sample],
) -> None:
    await seed(db_url, sample_rows=[make_sample("bitaxe-1", format_ts(datetime.now(UTC)), 1.1)])
    port = free_port()
    page = await browser.new_page()
    async with start_api(port=port) as api:
        await page.goto(api.url + "/")
        await expect(page.locator("#link")).to_have_text("live")
        await expect(row(page, "bitaxe-1", "hashrate")).to_have_text("1.10TH/s")
    await expect(page.locator("#link")).to_have_text("reconnecting…")
    api_line = page.locator('#banner p[data-service="api"]')
    await expect(api_line).to_contain_text("The connection to the api is down since")
    await expect(api_line).to_contain_text("the numbers below are not live")

    async with start_api(port=port) as api:
        await expect(page.locator("#link")).to_have_text("live", timeout=10000)
        await expect(api_line).to_have_count(0)
        sample = make_sample("bitaxe-1", format_ts(datetime.now(UTC)), 2.2)
        await publish(f"{api.base}/miners/bitaxe-1/sample", encode(sample))
        await expect(row(page, "bitaxe-1", "hashrate")).to_have_text("2.20TH/s")
