"""The dashboard in Chromium (Playwright): the miner page drawn from 30 days of history,
and the fleet page following 1,000 miners that send 1,000 samples a second.

1. **Miner page.** One miner with ``RAW_DAYS`` days of 10-second samples, 30 days of
   1-minute and 1-hour rollups, written straight into the tables. Timed in Chromium, from
   the navigation's start until every chart's container carries ``data-points`` (all six
   drawn), for the ranges 24 h (1-minute rollups), 7 d and 30 d (1-hour rollups) and 1 h
   (raw samples); median of ``RUNS`` loads each.
2. **Fleet page, live.** ``MINERS`` miners (info, status and a sample retained, the
   collector online), then ``RATE`` samples a second for ``LIVE_S`` seconds, published at
   QoS 1 through the broker, each stamped with its publish time. The page (``?stats=1``)
   records, per sample, the time from that stamp to the animation frame that put it on the
   page (``window.minerwatchStats``). Reported: p50, p99 and max of that, samples handled,
   and the RSS of the api process (a real ``minerwatch-api`` process) meanwhile.

Run: ``.venv/bin/python bench/dashboard.py`` (the ``dashboard`` section of
docs/benchmarks.md). Needs mosquitto and chromium. ``MW_BENCH_LIVE_S`` sets the live part's
length; ``MW_BENCH_ONLY=live`` runs the live part alone and prints it (docs untouched), and
``MW_BENCH_TRACE=<file.json>`` saves a Chromium performance trace of the live part there.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from broker import private_broker
from playwright.async_api import Browser, async_playwright
from report import write_section

from minerwatch.shared import db
from minerwatch.shared.mqtt.client import Client
from minerwatch.shared.schemas import MinerInfo, MinerStatus, Sample, encode, format_ts

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
BASE = "mwbench"
RAW_DAYS = 7
DAYS = 30
RUNS = 5
MINERS = 1000
RATE = 1000  # samples a second, spread over the miners
CHUNK = 100  # miners published at a time before the live part (3 messages each)
LIVE_S = float(os.environ.get("MW_BENCH_LIVE_S", "20"))
ONLY_LIVE = os.environ.get("MW_BENCH_ONLY") == "live"
TRACE = os.environ.get("MW_BENCH_TRACE")
WARMUP_S = 3.0
MINUTE_MS, HOUR_MS = 60_000, 3_600_000
CHARTS = 6
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ts(ms: int) -> str:
    return format_ts(datetime.fromtimestamp(ms / 1000, UTC))


def sample(miner_id: str, ms: int, i: int) -> Sample:
    return Sample(miner_id=miner_id, ts=ts(ms), hashrate_ths=1.2 + 0.01 * (i % 11),
                  expected_hashrate_ths=1.2, power_w=18.0 + 0.1 * (i % 7),
                  efficiency_jth=15.0, temp_c=60.0 + (i % 5), vr_temp_c=52.0,
                  fan_rpm=[4100, 3900], shares_accepted=1000 + i, shares_rejected=i // 100)


def rollup(miner_id: str, bucket_ms: int, step_ms: int, i: int) -> dict[str, Any]:
    row: dict[str, Any] = {"miner_id": miner_id, "bucket_ms": bucket_ms, "samples": 6,
                           "last_ts_ms": bucket_ms + step_ms - 10_000}
    for metric, mean in (("hashrate_ths", 1.2), ("power_w", 18.0), ("temp_c", 60.0),
                         ("vr_temp_c", 52.0)):
        value = mean * (1 + 0.02 * ((i % 13) - 6) / 6)
        row.update({f"{metric}_sum": 6 * value, f"{metric}_n": 6,
                    f"{metric}_min": value * 0.97, f"{metric}_max": value * 1.03})
    row.update({"expected_hashrate_ths": 1.2, "fan_rpm": [4100, 3900],
                "shares_accepted": 100 * i, "shares_rejected": i // 50, "best_diff": 5e6,
                "uptime_s": 60 * i, "pool_url": "stratum+tcp://pool:3333", "is_mining": True,
                "pool_fallback": None, "pool_connected": None, "blocks_found": None})
    return row


async def seed_history(db_url: str, now_ms: int) -> None:
    engine = db.create_engine(db_url)
    try:
        await db.create_schema(engine)
        start = now_ms - RAW_DAYS * 86_400_000
        raw = [db.sample_row(sample("bench-1", ms, i))
               for i, ms in enumerate(range(start - start % 10_000, now_ms, 10_000))]
        minute0 = now_ms - now_ms % MINUTE_MS
        minutes = [rollup("bench-1", minute0 - k * MINUTE_MS, MINUTE_MS, k)
                   for k in range(1, DAYS * 1440 + 1)]
        hour0 = now_ms - now_ms % HOUR_MS
        hours = [rollup("bench-1", hour0 - k * HOUR_MS, HOUR_MS, k)
                 for k in range(0, DAYS * 24 + 1)]
        info = MinerInfo(miner_id="bench-1", driver="axeos", host="10.0.0.5", port=80,
                         make="Bitaxe", model="Gamma 601", firmware="v2.4.2")
        status = MinerStatus(state="online", since=ts(now_ms - 3_600_000), last_seen=ts(now_ms))
        async with engine.begin() as conn:
            for table, rows in ((db.samples, raw), (db.rollups_1m, minutes),
                                (db.rollups_1h, hours)):
                for at in range(0, len(rows), 5000):
                    await conn.execute(table.insert(), rows[at:at + 5000])
            await conn.execute(db.miners.insert(), [{**db.info_row(info),
                                                     **db.status_row("bench-1", status)}])
    finally:
        await engine.dispose()


def start_api(workdir: Path, broker_port: int, db_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "MINERWATCH_MQTT_URL": f"mqtt://127.0.0.1:{broker_port}",
           "MINERWATCH_BASE_TOPIC": BASE, "MINERWATCH_DB_URL": db_url,
           "MINERWATCH_API_LISTEN": f"127.0.0.1:{port}",
           "MINERWATCH_CONFIG": str(workdir / "none.toml"),
           # The pages as the demo serves them: reads open (a sign-in is the same reads).
           "MINERWATCH_API_AUTH": "lan"}
    (workdir / "none.toml").write_text("")
    log = open(workdir / "api.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "minerwatch.api"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"bench: the api did not start; see {workdir / 'api.log'}")
        time.sleep(0.1)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def publish_all(client: Client, messages: list[tuple[str, bytes]]) -> None:
    settled = asyncio.Event()
    client.on_settled = lambda _delivery: settled.set()
    for topic, payload in messages:
        while client.send_quota == 0:
            settled.clear()
            await settled.wait()
        client.publish_nowait(topic, payload, retain=True)


async def api_lists(url: str, count: int) -> None:
    """Wait until ``GET /api/miners`` lists ``count`` miners (and bench-1, the seeded one)."""
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        while len((await http.get("/api/miners")).json()) < count + 1:
            if time.monotonic() > deadline:
                sys.exit(f"bench: the api did not list {count} miners within 30 s")
            await asyncio.sleep(0.05)


async def miner_page(browser: Browser, url: str) -> dict[str, float]:
    """Median ms from navigation to every chart drawn, per range."""
    found: dict[str, float] = {}
    for range_key in ("1h", "24h", "7d", "30d"):
        times = []
        for _ in range(RUNS):
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await page.goto(f"{url}/miner.html?id=bench-1&range={range_key}")
            await page.wait_for_function(
                f"document.querySelectorAll('[data-chart][data-points]').length === {CHARTS}"
                " && [...document.querySelectorAll('[data-chart]')]"
                ".every(c => +c.dataset.points > 0)",
                timeout=60_000)
            times.append(await page.evaluate("performance.now()"))
            await page.close()
        found[range_key] = statistics.median(times)
    return found


async def live_fleet(browser: Browser, url: str, broker_port: int, api_pid: int
                     ) -> dict[str, float]:
    ids = [f"m{n:04d}" for n in range(MINERS)]
    now_ms = int(time.time() * 1000)
    async with Client("127.0.0.1", broker_port) as client:
        first: list[tuple[str, bytes]] = [(f"{BASE}/services/collector/status", b"online")]
        for n, miner_id in enumerate(ids):
            info = MinerInfo(miner_id=miner_id, driver="axeos", host=f"10.{n // 250}.{n % 250}.1",
                             port=80, make="Bitaxe", model="Gamma 601")
            status = MinerStatus(state="online", since=ts(now_ms), last_seen=ts(now_ms))
            first += [(f"{BASE}/miners/{miner_id}/info", encode(info)),
                      (f"{BASE}/miners/{miner_id}/status", encode(status)),
                      (f"{BASE}/miners/{miner_id}/sample", encode(sample(miner_id, now_ms, n)))]
        # In chunks the api takes in before the next: a burst of all 3,001 overflows the
        # broker's queue for the api (mosquitto's max_queued_messages, 1,000), which drops
        # the rest, so the api (and the page) would never hear of some miners.
        await publish_all(client, first[:1])
        for at in range(1, len(first), 3 * CHUNK):
            await publish_all(client, first[at:at + 3 * CHUNK])
            await api_lists(url, min(MINERS, (at - 1) // 3 + CHUNK))
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("pageerror", lambda error: print(f"  page error: {error}", flush=True))
        await page.goto(f"{url}/?stats=1")
        try:
            await page.wait_for_function(
                f"document.querySelectorAll('tr[data-miner]').length >= {MINERS}",
                timeout=60_000)
        except Exception:
            # Say how far the page got and what the api lists, not only that it timed out.
            rows = await page.evaluate("document.querySelectorAll('tr[data-miner]').length")
            async with httpx.AsyncClient(timeout=10) as http:
                listed = len((await http.get(f"{url}/api/miners")).json())
            sys.exit(f"bench: the page shows {rows} of {MINERS} miners after 60 s"
                     f" (GET /api/miners lists {listed} now)")
        await page.wait_for_function("document.getElementById('link').textContent === 'live'")

        rss: list[float] = []
        interval = 0.01
        per_tick = max(1, round(RATE * interval))
        sent = 0
        started = time.monotonic()
        reset = False
        measured_from = 0
        settled = asyncio.Event()
        client.on_settled = lambda _delivery: settled.set()
        while (elapsed := time.monotonic() - started) < WARMUP_S + LIVE_S:
            if not reset and elapsed >= WARMUP_S:
                await page.evaluate("() => { const s = window.minerwatchStats;"
                                    " s.latencies = []; s.samples = 0; s.frames = 0; }")
                reset = True
                measured_from = sent
                if TRACE:
                    await browser.start_tracing(page=page, path=TRACE, screenshots=False)
            for _ in range(per_tick):
                miner_id = ids[sent % MINERS]
                while client.send_quota == 0:
                    settled.clear()
                    await settled.wait()
                payload = encode(sample(miner_id, int(time.time() * 1000), sent))
                client.publish_nowait(f"{BASE}/miners/{miner_id}/sample", payload, retain=True)
                sent += 1
            if sent % RATE < per_tick:
                rss.append(rss_mib(api_pid))
            target = started + sent / RATE
            await asyncio.sleep(max(0.0, target - time.monotonic()))
        await asyncio.sleep(1)
        if TRACE:
            await browser.stop_tracing()
        result = await page.evaluate("() => window.minerwatchStats")
        await page.close()
    latencies = sorted(result["latencies"])
    published = sent - measured_from

    def pct(p: float) -> float:
        return float(latencies[min(len(latencies) - 1, int(p * len(latencies)))])

    return {"p50": pct(0.50), "p99": pct(0.99), "max": float(latencies[-1]),
            "handled": float(result["samples"]), "published": float(published),
            "frames": float(result["frames"]), "rss_max": max(rss), "rss_min": min(rss)}


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mw-bench-dash-") as tmp:
        workdir = Path(tmp)
        db_url = f"sqlite:///{workdir / 'history.db'}"
        now_ms = int(time.time() * 1000)
        print(f"seeding {RAW_DAYS} days of samples and {DAYS} days of rollups...", flush=True)
        await seed_history(db_url, now_ms)
        with private_broker(workdir) as broker_port:
            proc, url = start_api(workdir, broker_port, db_url)
            try:
                async with async_playwright() as playwright:
                    browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                               args=CHROMIUM_ARGS)
                    try:
                        drawn: dict[str, float] = {}
                        if not ONLY_LIVE:
                            print("miner page...", flush=True)
                            drawn = await miner_page(browser, url)
                            print(f"  {drawn}", flush=True)
                        print(f"fleet page, {MINERS} miners, {RATE} samples/s...", flush=True)
                        fleet = await live_fleet(browser, url, broker_port, proc.pid)
                        print(f"  {fleet}", flush=True)
                    finally:
                        await browser.close()
            finally:
                proc.terminate()
                proc.wait(timeout=15)
    if ONLY_LIVE:
        return
    ranges = ", ".join(f"{key} {ms:.0f} ms" for key, ms in drawn.items())
    table = ("| p50 | p99 | max | samples handled / published | frames | api RSS |\n"
             "|---|---|---|---|---|---|\n"
             f"| {fleet['p50']:.0f} ms | {fleet['p99']:.0f} ms | {fleet['max']:.0f} ms "
             f"| {fleet['handled']:.0f} / {fleet['published']:.0f} | {fleet['frames']:.0f} "
             f"| {fleet['rss_min']:.0f} to {fleet['rss_max']:.0f} MiB |")
    write_section("dashboard", f"""
## Dashboard (Chromium)

`bench/dashboard.py`, Debian's chromium through Playwright, against a `minerwatch-api`
process, its own mosquitto and SQLite.

**Miner page drawn** (navigation start to all six charts carrying `data-points`, median of
{RUNS} loads; one miner with {RAW_DAYS} days of 10-second samples and {DAYS} days of 1-minute
and 1-hour rollups): {ranges}. (1 h: raw samples; 24 h: 1-minute rollups; 7 d and 30 d:
1-hour rollups.)

**Fleet page live**, {MINERS} miners, {RATE} samples/s for {LIVE_S:.0f} s over the WebSocket
(after {WARMUP_S:.0f} s of warm-up), from the sample's publish time to the animation frame
that put it on the page:

{table}

Target: p99 under 50 ms. The page batches DOM updates per animation frame.
""")
    print(f"results: {ROOT / 'docs' / 'benchmarks.md'}")


if __name__ == "__main__":
    asyncio.run(main())
