"""Discovery and live push: how fast a scan gets through a range, and what AxeOS live
updates cost the collector. Loopback only: simulated miners on 127.90.x.y addresses.

Run: ``.venv/bin/python bench/discovery.py`` (writes the ``discovery`` section of
docs/benchmarks.md). Medians of 3 runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import statistics
import sys
import time
from pathlib import Path

from report import write_section

from minerwatch.collector.discovery import scan
from minerwatch.collector.drivers import create_driver
from minerwatch.collector.drivers.live import LiveAxeosDriver
from minerwatch.sim.fleet import Fleet

RUNS = 3
MINERS = 20  # of each kind in the scanned /24
LIVE_MINERS = 200
LIVE_SECONDS = 10.0
SIM = Path(sys.executable).with_name("minerwatch-sim")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def scan_24() -> tuple[float, int, int]:
    """A /24 where MINERS AxeOS and MINERS CGMiner sims answer on the same two ports."""
    axeos_port, cgminer_port = free_port(), free_port()
    async with contextlib.AsyncExitStack() as stack:
        for i in range(MINERS):
            await stack.enter_async_context(Fleet(
                axeos=1, cgminer=0, host=f"127.90.0.{10 + i}", base_port=axeos_port,
                first_index=i))
            await stack.enter_async_context(Fleet(
                axeos=0, cgminer=1, host=f"127.90.0.{100 + i}", base_port=cgminer_port,
                first_index=i))
        times, found, total = [], 0, 0
        for _ in range(RUNS):
            started = time.perf_counter()
            result = await scan(["127.90.0.0/24"], [axeos_port, cgminer_port], timeout_s=2.0)
            times.append(time.perf_counter() - started)
            found, total = len(result.found), result.total
        return statistics.median(times), found, total


async def scan_empty(cidr: str) -> tuple[float, int]:
    """Nothing listens: every probe is a refused connect, the scanner's own cost."""
    port = free_port()
    times, total = [], 0
    for _ in range(RUNS):
        started = time.perf_counter()
        result = await scan([cidr], [port], timeout_s=1.0)
        times.append(time.perf_counter() - started)
        total = result.total
    return statistics.median(times), total


async def live_cpu() -> tuple[float, float]:
    """LIVE_MINERS v2.14 sims in another process push to as many live drivers here for
    LIVE_SECONDS: this process's CPU time per update, and updates per second received."""
    base = free_port()
    while base + LIVE_MINERS > 65000:
        base = free_port()
    sim = await asyncio.create_subprocess_exec(
        str(SIM), "--axeos", str(LIVE_MINERS), "--cgminer", "0", "--host", "127.90.1.1",
        "--base-port", str(base), "--axeos-version", "v2.14.0",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    drivers = [LiveAxeosDriver(create_driver("axeos", "127.90.1.1", base + i, 5.0), 30.0)
               for i in range(LIVE_MINERS)]
    try:
        for _ in range(200):  # wait for the fleet to listen
            with contextlib.suppress(OSError):
                socket.create_connection(("127.90.1.1", base + LIVE_MINERS - 1), 0.2).close()
                break
            await asyncio.sleep(0.05)
        await asyncio.gather(*(driver.fetch() for driver in drivers))
        for _ in range(200):
            if all(driver.live for driver in drivers):
                break
            await asyncio.sleep(0.05)
        per_update, rates = [], []
        for _ in range(RUNS):
            updates, cpu = sum(d.updates for d in drivers), time.process_time()
            await asyncio.sleep(LIVE_SECONDS)
            received = sum(d.updates for d in drivers) - updates
            per_update.append((time.process_time() - cpu) / received * 1e6)
            rates.append(received / LIVE_SECONDS)
        return statistics.median(per_update), statistics.median(rates)
    finally:
        for driver in drivers:
            await driver.aclose()
        with contextlib.suppress(ProcessLookupError):
            os.kill(sim.pid, signal.SIGTERM)
        await sim.wait()


async def main() -> None:
    scan_s, found, probes = await scan_24()
    empty_s, empty_probes = await scan_empty("127.91.0.0/20")
    update_us, rate = await live_cpu()
    per_probe_us = empty_s / empty_probes * 1e6
    core_share = update_us * 2 * 1000 / 1e6  # 1,000 miners at 2 updates/s
    markdown = f"""
| what | median of {RUNS} |
|---|---|
| scan a /24 on 2 ports ({probes} probes), {2 * MINERS} answer | {scan_s:.2f} s, {found} found |
| scan a /20 on 1 port, nothing listening ({empty_probes} refused connects) | {empty_s:.2f} s |
| scanner cost per probe (from the line above) | {per_probe_us:.0f} µs |
| live push, {LIVE_MINERS} miners over real WebSockets: updates received | {rate:.0f} per s |
| live push: collector CPU per update (receive, decode, merge) | {update_us:.0f} µs |

On loopback a closed port answers at once, so these are the scanner's own costs; a /16 on
2 ports (131,068 probes) at this rate is about {131068 * per_probe_us / 1e6:.0f} s of work.
On a real LAN an address where nothing answers costs the probe timeout (`timeout_s`, 1 s):
a /24 on 2 ports at concurrency 64 then takes about 508 / 64 * 1 s = 8 s, and `budget_s`
bounds any scan. At the firmware's pace of up to 2 updates per second, 1,000 live miners
would take about {core_share:.2f} of one core for live push alone (polling them every 10 s
instead costs one HTTP request each per interval).
"""
    write_section("discovery", markdown)
    print(markdown)


if __name__ == "__main__":
    asyncio.run(main())
