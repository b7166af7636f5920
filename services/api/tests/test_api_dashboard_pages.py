"""The miner page and the fleet page in a real browser (Debian's chromium through
Playwright), against the real api app, a real broker and SQLite with history put in the
database: every chart drawn from raw samples and rollups, ranges switched, a live sample
appended without a reload, a gap drawn as a gap; the fleet's totals saying what they
cover, stale and offline miners apart, sort, filter and search, the fleet chart and the
energy table; no horizontal scroll on a phone or a wide screen. Every request the pages
make must go to the api's own origin: route interception refuses and records any other.

Screenshots of both pages at 1,400 x 900 (dark) and 390 x 844 (light) are taken into a
temporary folder; ``MINERWATCH_SCREENSHOTS=docs/screenshots`` retakes the README's (a run of
the suite leaves the tracked files alone)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import uvicorn
from playwright.async_api import Browser, Page, Route, WebSocketRoute, expect

from minerwatch.api.app import create_app
from minerwatch.api.relay import Relay
from minerwatch.shared.config import ApiConfig, CollectorConfig, Config, DatabaseConfig, MqttConfig
from minerwatch.shared.db import (
    alert_events,
    alert_row,
    create_engine,
    create_schema,
    info_row,
    miners,
    rollups_1h,
    rollups_1m,
    sample_row,
    samples,
    status_events,
    status_row,
)
from minerwatch.shared.schemas import AlertEvent, MinerInfo, MinerStatus, Sample, encode, format_ts
from minerwatch.store.fleet import FleetRollups
from minerwatch.store.routing import InfoRow, SampleRow, StatusRow
from minerwatch.store.writer import write_rows

from .conftest import make_token

Publish = Callable[..., Any]

SHOTS = Path(os.environ.get("MINERWATCH_SCREENSHOTS")
             or Path(tempfile.gettempdir()) / "minerwatch-screenshots")
POLL_S = 10.0  # the collector's poll interval in the api's config: stale after 30 s
MINUTE_MS, HOUR_MS = 60_000, 3_600_000
CHARTS = ("hashrate_ths", "temp_c", "power_w", "efficiency_jth", "fan_rpm", "share_rate")
DRAWN = re.compile(r"^[1-9][0-9]*$")


def miner_page(url: str, miner_id: str, **query: str) -> str:
    """The miner page's address, as the fleet page links to it."""
    return f"{url}/miners/{miner_id}" + (f"?{urlencode(query)}" if query else "")


@dataclass
class Api:
    url: str
    base: str
    #: An operator token, which the pages sign in with.
    token: str


@pytest.fixture
def serve(broker: Any, base_topic: str, db_url: str) -> Callable[..., Any]:
    """``async with serve(price=0.25, currency="EUR") as api:`` the real app under uvicorn
    on a free loopback port, with ``POLL_S`` as the collector's poll interval."""

    @asynccontextmanager
    async def start(price: float | None = None, currency: str = "") -> AsyncIterator[Api]:
        mqtt = MqttConfig(url=broker.url, base_topic=base_topic, reconnect_min_s=0.1,
                          reconnect_max_s=0.5)
        config = Config(mqtt=mqtt, database=DatabaseConfig(url=db_url),
                        collector=CollectorConfig(poll_interval_s=POLL_S),
                        # No collector answers commands here: the miner page's
                        # settings request ends (504) before the server stops.
                        api=ApiConfig(auth="lan", energy_price_per_kwh=price,
                                      currency=currency, command_timeout_s=1.0))
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

    return start


@dataclass
class Guard:
    """Every request a page made to another origin (refused), and its script errors."""

    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def open_page(browser: Browser, api: Api, url: str, guard: Guard, *, width: int,
                    height: int, dark: bool = True) -> Page:
    page = await browser.new_page(viewport={"width": width, "height": height},
                                  color_scheme="dark" if dark else "light")
    origin = urlsplit(api.url)

    async def only_own(route: Route) -> None:
        target = urlsplit(route.request.url)
        if (target.scheme, target.netloc) == (origin.scheme, origin.netloc):
            await route.continue_()
        else:
            guard.foreign.append(route.request.url)
            await route.abort()

    async def only_own_socket(ws: WebSocketRoute) -> None:
        if urlsplit(ws.url).netloc == origin.netloc:
            ws.connect_to_server()
        else:
            guard.foreign.append(ws.url)
            await ws.close()

    await page.route("**/*", only_own)
    await page.route_web_socket(re.compile(".*"), only_own_socket)
    page.on("pageerror", lambda exc: guard.errors.append(str(exc)))
    # Signed in as an operator (the api runs with auth = "lan"): the page may change things.
    await page.request.post(f"{api.url}/api/session", data={"token": api.token})
    await page.goto(url)
    await expect(page.locator("#link")).to_have_text("live")
    return page


async def no_sideways_scroll(page: Page) -> None:
    widths = await page.evaluate(
        "() => [document.scrollingElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways: {widths[0]} > {widths[1]} px"


async def shot(page: Page, name: str) -> None:
    await asyncio.to_thread(SHOTS.mkdir, parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / name), full_page=True, animations="disabled")


def stats(name: str, values: list[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    return {f"{name}_sum": float(sum(present)), f"{name}_n": len(present),
            f"{name}_min": min(present, default=None), f"{name}_max": max(present, default=None)}


def rollup(miner_id: str, bucket_ms: int, step_ms: int, i: int) -> dict[str, Any]:
    """A rollup row as the store keeps it for a bucket of three samples of a Bitaxe."""
    rate = 1.2 + 0.1 * ((i % 7) - 3) / 3
    return {"miner_id": miner_id, "bucket_ms": bucket_ms, "samples": 3,
            "last_ts_ms": bucket_ms + step_ms - 1000,
            **stats("hashrate_ths", [rate - 0.05, rate, rate + 0.05]),
            **stats("power_w", [17.5, 18.0, 18.5]),
            **stats("temp_c", [58.0, 60.0 + (i % 5), 62.0 + (i % 5)]),
            **stats("vr_temp_c", [50.0, 52.0, 54.0]),
            "expected_hashrate_ths": 1.2, "fan_rpm": [4000 + (i % 9) * 10, 3900],
            "shares_accepted": 10 * i, "shares_rejected": i // 20, "best_diff": 5e6,
            "uptime_s": 600 + i, "pool_url": "stratum+tcp://pool:3333", "is_mining": True}


async def put_rows(db_url: str, table_rows: Iterable[tuple[Any, list[dict[str, Any]]]]) -> None:
    engine = create_engine(db_url)
    try:
        await create_schema(engine)
        async with engine.begin() as conn:
            for table, rows in table_rows:
                if rows:
                    await conn.execute(table.insert(), rows)
    finally:
        await engine.dispose()


def bitaxe(miner_id: str, ts: str, i: int = 0, **values: Any) -> Sample:
    fields: dict[str, Any] = {
        "hashrate_ths": 1.2 + 0.02 * (i % 5), "expected_hashrate_ths": 1.2, "power_w": 18.0,
        "efficiency_jth": 15.0, "temp_c": 60.0 + (i % 4), "vr_temp_c": 52.0,
        "fan_rpm": [4100, 3900], "shares_accepted": 1000 + 3 * i,
        "shares_rejected": 2 + i // 50, "uptime_s": 3600 + 10 * i,
        "pool_url": "stratum+tcp://pool.example:3333"}
    fields.update(values)
    return Sample(miner_id=miner_id, ts=ts, **fields)


async def test_the_miner_page_draws_its_history_switches_ranges_and_grows_live(
    serve: Callable[..., Any], publish: Publish, browser: Browser, db_url: str, base_topic: str,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    now_ms = int(now.timestamp() * 1000)

    def ago(seconds: float) -> str:
        return format_ts(now - timedelta(seconds=seconds))

    # Raw samples every 10 s over the last 50 minutes, none from 30 to 20 minutes ago (the
    # miner was offline), and some from before the hour (so an hour reads raw samples);
    # 1-minute rollups for 26 hours; 1-hour rollups for 31 days but none for 10 hours five
    # days ago.
    older = [bitaxe("bitaxe-1", ago(s), 0) for s in range(4200, 3650, -10)]
    raw = [bitaxe("bitaxe-1", ago(s), i) for i, s in enumerate(range(3000, 0, -10))
           if not 1200 <= s <= 1800]
    minute0 = now_ms - now_ms % MINUTE_MS
    minutes = [rollup("bitaxe-1", minute0 - k * MINUTE_MS, MINUTE_MS, k) for k in range(1, 26 * 60)]
    hour0 = now_ms - now_ms % HOUR_MS
    hole = range(5 * 24, 5 * 24 + 10)
    hours = [rollup("bitaxe-1", hour0 - k * HOUR_MS, HOUR_MS, k) for k in range(1, 31 * 24)
             if k not in hole]
    info = MinerInfo(miner_id="bitaxe-1", driver="axeos", host="10.0.0.5", port=80,
                     make="Bitaxe", model="Gamma 601", firmware="v2.4.2", hostname="bitaxe",
                     mac="aa:bb:cc:dd:ee:ff", label="Garage Bitaxe")
    went_down = MinerStatus(state="offline", reason="timeout after 5.0 s", since=ago(1800),
                            last_seen=ago(1810), failures=3)
    back = MinerStatus(state="online", since=ago(1190), last_seen=ago(10))
    alert = AlertEvent(miner_id="bitaxe-1", rule="temp_high", state="firing",
                       severity="warning", value=71.0, threshold=68,
                       message="temp_c 71.0 > 68 for 60 s", ts=ago(300), since=ago(300),
                       label="Garage Bitaxe")
    await put_rows(db_url, [
        (samples, [sample_row(s) for s in older + raw]),
        (rollups_1m, minutes),
        (rollups_1h, hours),
        (miners, [{**info_row(info), **status_row("bitaxe-1", back)}]),
        (status_events, [status_row("bitaxe-1", MinerStatus(state="online", since=ago(7200),
                                                            last_seen=ago(1810))),
                         status_row("bitaxe-1", went_down), status_row("bitaxe-1", back)]),
        (alert_events, [alert_row(alert)]),
    ])
    await publish(f"{base_topic}/services/collector/status", "online", retain=True)
    await publish(f"{base_topic}/miners/bitaxe-1/info", encode(info), retain=True)
    await publish(f"{base_topic}/alerts/bitaxe-1/temp_high", encode(alert), retain=True)
    guard = Guard()
    async with serve() as api:
        page = await open_page(browser, api, miner_page(api.url, "bitaxe-1", range="1h"),
                               guard, width=1400, height=900)
        charts = {name: page.locator(f'[data-chart="{name}"]') for name in CHARTS}
        # An hour of raw samples: every one drawn, the offline half hour a gap; no share
        # rate for the first sample nor across the gap (it needs the one before).
        await expect(page.locator("#resolution")).to_contain_text("raw samples")
        for name in ("hashrate_ths", "temp_c", "power_w", "efficiency_jth", "fan_rpm"):
            await expect(charts[name]).to_have_attribute("data-points", str(len(raw)))
            await expect(charts[name]).to_have_attribute("data-gaps", "1")
        await expect(charts["share_rate"]).to_have_attribute("data-points", str(len(raw) - 2))

        # Who it is, whether it is live, what happened to it.
        await expect(page.locator("#miner-name")).to_have_text("Garage Bitaxe")
        await expect(page.locator("#miner-id")).to_have_text("bitaxe-1")
        for name, text in (("make", "Bitaxe"), ("model", "Gamma 601"), ("firmware", "v2.4.2"),
                           ("mac", "aa:bb:cc:dd:ee:ff")):
            await expect(page.locator(f'[data-fact="{name}"]')).to_have_text(text)
        address = page.locator('[data-fact="address"] a')
        await expect(address).to_have_text("10.0.0.5:80")
        await expect(address).to_have_attribute("href", "http://10.0.0.5/")
        timeline = page.locator("#event-list li")
        await expect(timeline).to_have_count(4)
        await expect(timeline.filter(has_text="Offline: timeout after 5.0 s")).to_have_count(1)
        await expect(timeline.filter(has_text="temp_high firing")).to_have_count(1)
        item = page.locator('#alert-list li[data-rule="temp_high"]')
        await expect(item).to_contain_text("temp_c 71.0 > 68 for 60 s")
        await item.get_by_role("button", name="Mute 1 h").click()
        await expect(item).to_have_class("muted")

        # A live sample: drawn at once, no reload.
        await page.evaluate("() => { window.stillThisPage = true; }")
        fresh = bitaxe("bitaxe-1", format_ts(datetime.now(UTC)), 7, hashrate_ths=1.37)
        await publish(f"{api.base}/miners/bitaxe-1/sample", encode(fresh), retain=True)
        for name in ("hashrate_ths", "power_w", "fan_rpm"):
            await expect(charts[name]).to_have_attribute("data-points", str(len(raw) + 1))
        await expect(page.locator("#now-hashrate")).to_have_text("1.37TH/s")
        await expect(page.locator("#miner-state .state")).to_have_text("Online")
        await expect(page.locator("#miner-state")).to_contain_text("since")
        assert await page.evaluate("() => window.stillThisPage === true")

        # A day reads the 1-minute rollups, min and max shaded; a month and a year the
        # hourly ones, the missing ten hours a gap.
        await page.locator('button[data-range="24h"]').click()
        await expect(page.locator("#resolution")).to_contain_text("1-minute averages")
        for name in CHARTS:
            await expect(charts[name]).to_have_attribute("data-points", DRAWN)
        drawn = int(await charts["hashrate_ths"].get_attribute("data-points") or 0)
        assert 24 * 60 - 2 <= drawn <= 24 * 60 + 1
        await expect(page.locator('button[data-range="24h"]')).to_have_attribute(
            "aria-pressed", "true")
        await shot(page, "miner-1400.png")
        await no_sideways_scroll(page)

        await page.locator('button[data-range="30d"]').click()
        await expect(page.locator("#resolution")).to_contain_text("1-hour averages")
        await expect(charts["hashrate_ths"]).to_have_attribute("data-gaps", "1")
        drawn = int(await charts["hashrate_ths"].get_attribute("data-points") or 0)
        assert 30 * 24 - 10 - 2 <= drawn <= 30 * 24 - 10
        await page.locator('button[data-range="1y"]').click()
        await expect(charts["temp_c"]).to_have_attribute("data-points", str(len(hours)))
        for name in CHARTS:
            await expect(charts[name]).to_have_attribute("data-points", DRAWN)

        # Back to an hour: the raw samples again, the live one included (it is retained,
        # not stored: the store does not run here), still without a reload.
        await page.locator('button[data-range="1h"]').click()
        await expect(charts["hashrate_ths"]).to_have_attribute("data-points", str(len(raw)))
        assert await page.evaluate("() => window.stillThisPage === true")

        phone = await open_page(browser, api, miner_page(api.url, "bitaxe-1", range="6h"),
                                guard, width=390, height=844, dark=False)
        await expect(phone.locator('[data-chart="hashrate_ths"]')).to_have_attribute(
            "data-points", DRAWN)
        await no_sideways_scroll(phone)
        await shot(phone, "miner-390.png")
    assert guard.foreign == []
    assert guard.errors == []


async def store_history(db_url: str, rows: list[SampleRow | InfoRow | StatusRow]) -> None:
    """Rows written by the store's own writer, then its fleet rollups pass."""
    engine = create_engine(db_url)
    try:
        await create_schema(engine)
        async with engine.begin() as conn:
            await write_rows(conn, rows)
        await FleetRollups(engine).run_once()
    finally:
        await engine.dispose()


async def test_the_fleet_page_says_what_its_totals_cover_and_fits_a_phone(
    serve: Callable[..., Any], publish: Publish, browser: Browser, db_url: str, base_topic: str,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)

    def ago(seconds: float) -> str:
        return format_ts(now - timedelta(seconds=seconds))

    # Three Bitaxes that report power, three S19s on stock firmware that do not, one
    # offline miner with a long reason, one whose last sample is an hour old.
    watts = {"bitaxe-1": 17.0, "bitaxe-2": 18.0, "bitaxe-3": 19.0}
    s19s = ("s19-1", "s19-2", "s19-3")

    def reading(miner_id: str, ts: str, i: int = 0) -> Sample:
        if miner_id in watts:
            return bitaxe(miner_id, ts, i, hashrate_ths=1.2, power_w=watts[miner_id],
                          efficiency_jth=watts[miner_id] / 1.2)
        return Sample(miner_id=miner_id, ts=ts, hashrate_ths=110.0, expected_hashrate_ths=110.0,
                      temp_c=71.0, fan_rpm=[5400, 5460, 5520, 5380], shares_accepted=90210 + i,
                      shares_rejected=0)

    infos = [MinerInfo(miner_id=m, driver="axeos", host=f"10.0.0.{n}", port=80, make="Bitaxe",
                       model="Gamma 601", hostname=m, label="Garage Bitaxe" if n == 1 else None)
             for n, m in enumerate(watts, 1)]
    infos += [MinerInfo(miner_id=m, driver="cgminer", host=f"10.0.1.{n}", port=4028,
                        make="Antminer", model="S19 Pro", label=f"Rack {n} · S19")
              for n, m in enumerate(s19s, 1)]
    infos += [MinerInfo(miner_id="nerd-9", driver="axeos", host="10.0.0.9", port=80,
                        make="NerdQAxe", model="NerdQAxe++"),
              MinerInfo(miner_id="quiet-8", driver="axeos", host="10.0.0.8", port=80,
                        make="Bitaxe", model="Supra")]
    history: list[SampleRow | InfoRow | StatusRow] = [
        SampleRow(sample_row(reading(m, ago(60 * k), k)))
        for m in (*watts, *s19s) for k in range(180, 0, -1)]
    history += [SampleRow(sample_row(bitaxe("quiet-8", ago(3600))))]
    history += [InfoRow(info_row(i)) for i in infos]
    await store_history(db_url, history)

    await publish(f"{base_topic}/services/collector/status", "online", retain=True)
    for info in infos:
        await publish(f"{base_topic}/miners/{info.miner_id}/info", encode(info), retain=True)
    offline = MinerStatus(state="offline", since=ago(900), last_seen=ago(960), failures=5,
                          reason="unreachable: no route to host 10.0.0.9 (the switch port "
                                 "it hangs off has been down since the storm last night)")
    await publish(f"{base_topic}/miners/nerd-9/status", encode(offline), retain=True)
    await publish(f"{base_topic}/miners/quiet-8/status",
                  encode(MinerStatus(state="online", since=ago(7200), last_seen=ago(3600))),
                  retain=True)
    await publish(f"{base_topic}/miners/quiet-8/sample", encode(bitaxe("quiet-8", ago(3600))),
                  retain=True)
    for miner_id in (*watts, *s19s):
        await publish(f"{base_topic}/miners/{miner_id}/status",
                      encode(MinerStatus(state="online", since=ago(7200), last_seen=ago(0))),
                      retain=True)
        await publish(f"{base_topic}/miners/{miner_id}/sample",
                      encode(reading(miner_id, format_ts(datetime.now(UTC)))), retain=True)
    alert = AlertEvent(miner_id="s19-2", rule="temp_high", state="firing", severity="warning",
                       value=77.5, threshold=75, message="temp_c 77.5 > 75 for 60 s",
                       ts=ago(120), since=ago(120), label="Rack 2 · S19")
    await publish(f"{base_topic}/alerts/s19-2/temp_high", encode(alert), retain=True)

    guard = Guard()
    async with serve(price=0.25, currency="EUR") as api:
        page = await open_page(browser, api, api.url + "/", guard, width=1400, height=900)
        live_rows = page.locator("#miner-rows tr[data-miner]")
        await expect(live_rows).to_have_count(6)
        # The totals count the live miners only, and say so; power is 3 of them.
        await expect(page.locator("#total-online")).to_have_text("6 / 8 online · 1 stale")
        await expect(page.locator("#cover-miners")).to_have_text("1 offline")
        await expect(page.locator("#total-hashrate")).to_have_text("333.6TH/s")
        await expect(page.locator("#cover-hashrate")).to_have_text(
            "from 6 live miners; 2 not live left out")
        await expect(page.locator("#total-power")).to_have_text("54W")
        await expect(page.locator("#cover-power")).to_have_text("3 of 6 live miners report it")
        await expect(page.locator("#total-efficiency")).to_have_text("15.0J/TH")
        await expect(page.locator("#cover-efficiency")).to_have_text(
            "over the 3 miners that report power")
        # Stale and offline apart, below the live ones; labels first; rows link to pages.
        down = page.locator("#down-rows tr[data-miner]")
        await expect(down).to_have_count(2)
        await expect(page.locator("#down-title")).to_contain_text("Not live: 2")
        await expect(page.locator('tr[data-miner="nerd-9"]')).to_have_attribute("data-state",
                                                                               "offline")
        await expect(page.locator('tr[data-miner="quiet-8"]')).to_have_attribute("data-state",
                                                                                "stale")
        names = ["bitaxe-2", "bitaxe-3", "Garage Bitaxe", "Rack 1 · S19", "Rack 2 · S19",
                 "Rack 3 · S19"]
        await expect(live_rows.locator("a.name")).to_have_text(names)
        await expect(page.locator('tr[data-miner="s19-2"] a.name')).to_have_attribute(
            "href", "/miners/s19-2")
        await expect(page.locator("#alert-list li")).to_have_count(1)

        # The fleet's history and its energy, at the configured price.
        for name in ("hashrate_ths", "power_w"):
            await expect(page.locator(f'[data-chart="{name}"]')).to_have_attribute(
                "data-points", DRAWN)
        await expect(page.locator("#energy-days tbody tr")).to_have_count(7)
        await expect(page.locator("#energy-note")).to_contain_text("0.2500 EUR per kWh")
        energy_rows = page.locator("#energy-miners tbody tr")
        await expect(energy_rows).to_have_count(4)  # the Bitaxes that report power
        await expect(page.locator('#energy-miners tr[data-energy-miner="s19-1"]')).to_have_count(0)
        await expect(page.locator("#energy-days tbody tr").first).to_contain_text("EUR")

        await no_sideways_scroll(page)
        await shot(page, "fleet-1400.png")

        # Search, filter, sort.
        await page.locator("#search").fill("s19")
        await expect(page.locator("tr[data-miner]:visible")).to_have_count(3)
        await page.locator("#search").fill("")
        await page.locator("#filter").select_option("down")
        await expect(page.locator("tr[data-miner]:visible")).to_have_count(2)
        await page.locator("#filter").select_option("alerts")
        await expect(page.locator("tr[data-miner]:visible")).to_have_count(1)
        await expect(page.locator("tr[data-miner]:visible")).to_have_attribute("data-miner",
                                                                               "s19-2")
        await page.locator("#filter").select_option("all")
        await page.locator("#sort").select_option("power")
        await expect(live_rows.first).to_have_attribute("data-miner", "bitaxe-3")
        await page.locator("#sort").select_option("hashrate")
        await expect(live_rows.first).to_have_attribute("data-miner", re.compile("^s19-"))

        phone = await open_page(browser, api, api.url + "/", guard, width=390, height=844,
                                dark=False)
        await expect(phone.locator("#miner-rows tr[data-miner]")).to_have_count(6)
        await expect(phone.locator("#cover-power")).to_have_text("3 of 6 live miners report it")
        await expect(phone.locator('[data-chart="power_w"]')).to_have_attribute("data-points",
                                                                               DRAWN)
        await no_sideways_scroll(phone)
        await shot(phone, "fleet-390.png")
    assert guard.foreign == []
    assert guard.errors == []
