"""The drivers: what normalizing one poll costs per firmware family, and what joined CGMiner
commands (``summary+stats+pools``, one connection) save against one command per connection.

- parse: decode and normalize each fixture poll (the replies a real unit sends, repairs
  included), ``PARSE_ROUNDS`` times; microseconds per poll.
- cgminer polls: ``MINERS`` simulated Antminers (``minerwatch-sim`` in its own process, on
  127.0.0.1), polled back to back, ``CONCURRENCY`` at once, for ``WINDOW_S``; polls per
  second and this process's CPU time per poll, joined and one-per-connection.

Medians of 3 runs. Run: ``.venv/bin/python bench/drivers.py`` (the ``drivers`` section of
docs/benchmarks.md). Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from report import write_section

from minerwatch.collector.drivers.axeos import decode_body, parse_system_info
from minerwatch.collector.drivers.cgminer.driver import CgminerDriver
from minerwatch.collector.drivers.cgminer.families import (
    ANTMINER,
    AVALON,
    WHATSMINER,
    Family,
    parse_version,
)
from minerwatch.collector.drivers.cgminer.replies import build_reading, parse_pools, parse_summary
from minerwatch.collector.drivers.cgminer.transport import decode_reply

RUNS = 3
PARSE_ROUNDS = 2000
MINERS = 200
CONCURRENCY = 200
WINDOW_S = 5.0
FIXTURES = Path(__file__).resolve().parents[1] / "services/collector/tests/fixtures"
SIM = Path(sys.executable).with_name("minerwatch-sim")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cgminer_poll(family: Family, files: dict[str, str]) -> Callable[[], object]:
    raw = {command: (FIXTURES / name).read_bytes() for command, name in files.items()}

    def poll() -> object:
        replies = {command: decode_reply(body, check=command != "version")
                   for command, body in raw.items()}
        details = [parser(replies[command]) for command, parser in family.parsers.items()
                   if command in replies]
        return build_reading(parse_summary(replies["summary"]), details,
                             parse_pools(replies["pools"]), parse_version(replies["version"]))
    return poll


def parse_cases() -> dict[str, Callable[[], object]]:
    s19 = "antminer_s19pro_bmminer"
    wm = "whatsminer_m30s+_20210322"
    nano = "avalon_nano3s_25021401"
    gamma = (FIXTURES / "bitaxe_gamma_v2.15.0_system_info.json").read_bytes()
    return {
        "AxeOS (Bitaxe Gamma v2.15, /api/system/info)":
            lambda: parse_system_info(decode_body(gamma)),
        "Antminer S19 Pro (summary, stats with `}{` repaired, pools, version)": cgminer_poll(
            ANTMINER, {c: f"{s19}_{c}.json" for c in ("summary", "stats", "pools", "version")}),
        "Whatsminer M30S+ (summary, devdetails, pools, version error)": cgminer_poll(
            WHATSMINER, {c: f"{wm}_{c}.json" for c in ("summary", "devdetails", "pools",
                                                      "version")}),
        "Avalon Nano3s (summary, estats `MM ID0`, pools, version)": cgminer_poll(
            AVALON, {c: f"{nano}_{c}.json" for c in ("summary", "estats", "pools", "version")}),
    }


def time_parse(poll: Callable[[], object]) -> float:
    """Microseconds per poll, median of RUNS runs."""
    runs = []
    for _ in range(RUNS):
        started = time.perf_counter()
        for _ in range(PARSE_ROUNDS):
            poll()
        runs.append((time.perf_counter() - started) / PARSE_ROUNDS * 1e6)
    return statistics.median(runs)


def free_base_port(count: int) -> int:
    """A base port with ``count`` free ports after it (checked, not guaranteed)."""
    for base in range(21000, 60000, 1000):
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range")


async def start_sim(base: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        str(SIM), "--axeos", "0", "--cgminer", str(MINERS), "--host", "127.0.0.1",
        "--base-port", str(base), "--control-port", "0",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # ready when the last miner accepts
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", base + MINERS - 1)
            writer.close()
            return process
        await asyncio.sleep(0.2)
    process.kill()
    raise RuntimeError("the simulated fleet did not start")


async def throughput(base: int, joined: bool) -> tuple[float, float, float]:
    """(polls per second, CPU ms per poll, connections per poll) over one window."""
    drivers = [CgminerDriver("127.0.0.1", base + i, timeout_s=5.0) for i in range(MINERS)]
    for driver in drivers:  # first poll outside the window: family and join learned
        if not joined:
            driver.quirks.joined = False
    await asyncio.gather(*(driver.fetch() for driver in drivers))
    polls = 0
    stop = time.monotonic() + WINDOW_S

    async def worker(driver: CgminerDriver) -> None:
        nonlocal polls
        while time.monotonic() < stop:
            await driver.fetch()
            polls += 1

    cpu = cpu_seconds()
    started = time.monotonic()
    await asyncio.gather(*(worker(d) for d in drivers[:CONCURRENCY]))
    elapsed = time.monotonic() - started
    per_poll = 1 if joined else 3  # summary, stats, pools
    return polls / elapsed, (cpu_seconds() - cpu) / polls * 1e3, per_poll


async def cgminer_section() -> str:
    base = free_base_port(MINERS)
    sim = await start_sim(base)
    try:
        rows = []
        for joined in (True, False):
            runs = [await throughput(base, joined) for _ in range(RUNS)]
            rate = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            label = "joined `summary+stats+pools`" if joined else "one command per connection"
            rows.append(f"| {label} | {runs[0][2]} | {rate:,.0f} | {cpu:.2f} |")
    finally:
        sim.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sim.wait(), 10)
        if sim.returncode is None:
            sim.kill()
    return "\n".join([
        f"CGMiner polls against {MINERS} simulated Antminer S19 Pros (simulator in its own "
        f"process), {CONCURRENCY} at once, back to back for {WINDOW_S:g} s; medians of "
        f"{RUNS} runs; CPU is the polling process only.",
        "",
        "| commands | connections per poll | polls/s | CPU ms per poll |",
        "|---|---:|---:|---:|",
        *rows,
    ])


def main() -> None:
    lines = [f"Decode and normalize one poll's replies, {PARSE_ROUNDS} times; median of "
             f"{RUNS} runs.", "", "| firmware | µs per poll |", "|---|---:|"]
    for name, poll in parse_cases().items():
        lines.append(f"| {name} | {time_parse(poll):.0f} |")
    lines += ["", asyncio.run(cgminer_section())]
    markdown = "\n".join(lines)
    print(markdown)
    write_section("drivers", markdown)


if __name__ == "__main__":
    main()
