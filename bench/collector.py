"""The collector against simulated Bitaxes, beside pyasic_rs and pyasic on the same fleet.

For 1,000, 5,000 and 10,000 simulated AxeOS miners (one loopback address each,
127.77.x.y port 80: the comparators only know port 80), each client runs in a process of
its own, apart from the fleet's processes, and measures its own CPU time (all threads):

- first pass: until every miner was polled once (connections, first replies; pyasic_rs
  sets each miner up on its first poll). Its CPU per poll is the "first poll" column.
- throughput: every miner polled again as soon as its poll ends; ``WINDOWS`` windows of
  ``WINDOW_S`` per client, the clients taking turns (the others paused with SIGSTOP), so
  that other load on the machine falls on all of them alike; the median window counts.
  For the collector a poll counts once the broker acknowledged its sample: polled,
  normalized and published.
- cadence: every miner every ``INTERVAL_S`` at the collector's default concurrency (256);
  lateness is how long after its due time a poll started, measured once every miner was
  polled once (connections made). A comparator with no headroom (less than
  1.1 times the polls per second the cadence needs) is not run at it.

Run: ``.venv/bin/python bench/collector.py`` (the ``collector`` section of
docs/benchmarks.md; ``--sizes 1000`` for a quick look). It needs the ``bench`` dependency
group (pyasic, pyasic-rs, psutil), mosquitto, and binding port 80 on loopback (root, or
``sysctl net.ipv4.ip_unprivileged_port_start=80``); without port 80 only the collector
runs. The fleet serves AxeOS's web page title at ``/``, which is how pyasic and pyasic_rs
recognise AxeOS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from broker import private_broker

SIZES = (1000, 5000, 10000)
INTERVAL_S = 10.0
WINDOWS = 3
WINDOW_S = 4.0
#: Polls at once in the throughput runs. pyasic does best at fewer: each of its polls is
#: several requests on new connections, and a thousand at once only come back in waves.
CONCURRENCY = {"collector": 1000, "pyasic_rs": 1000, "pyasic": 256}
CADENCE_CONCURRENCY = 256  # the collector's default
#: Longest first pass; pyasic keeps nothing per miner, so a short one says all.
FIRST_PASS_S = {"collector": 120.0, "pyasic_rs": 240.0, "pyasic": 8.0}
#: Polling before each window, after the client was paused while the others were measured.
SETTLE_S = 2.0
#: Measured at the cadence once every miner was polled once: the collector, the others.
CADENCE_WINDOW_S = {1000: 10.0, 5000: 10.0, 10000: 30.0}
COMPARATOR_CADENCE_WINDOW_S = 5.0
#: pyasic polls the first ones only: building 10,000 of its miner objects takes ~40 s, and
#: at its ~150 polls/s it could not poll more than ~1,500 miners every 10 s anyway.
PYASIC_MINERS = 2000
NET = "127.77"  # miner i at 127.77.(i // 250).(i % 250 + 1)
#: Each simulated miner holds a listener and the connections of three clients (pyasic_rs
#: keeps two): 2,500 per process stay well under this machine's 20,000 open files.
MINERS_PER_FLEET = 2500
PORT = 80
FALLBACK_PORT = 18080
#: The collector keeps no more QoS 1 publishes unacknowledged than the broker's Receive
#: Maximum (Mosquitto's ``max_inflight_messages``, 20 by default). Flat out, a busy event
#: loop turns a few times a second and each turn settles one window: 20 would measure
#: the broker's setting, not the collector. Large fleets want a larger one too.
BROKER_SETTINGS = "max_inflight_messages 1000\n"
AXEOS_PAGE = b"<!doctype html><html><head><title>AxeOS</title></head><body></body></html>"
CLIENTS = ("collector", "pyasic_rs", "pyasic")

Poll = Callable[[Any], Awaitable[Any]]


def address(index: int) -> str:
    return f"{NET}.{index // 250}.{index % 250 + 1}"


def cpu_seconds() -> float:
    """This process, all its threads (pyasic_rs polls from Rust threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def say(event: str, **fields: Any) -> None:
    """One JSON line to the parent process."""
    print(json.dumps({"event": event, **fields}), flush=True)


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- the fleet (a child process) ------------------------------------------------------


class FirstFew(logging.Filter):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.left = limit

    def filter(self, record: logging.LogRecord) -> bool:
        self.left -= 1
        return self.left >= 0


async def serve_fleet(first: int, count: int, port: int) -> None:
    from minerwatch.sim.axeos import AxeOSMiner
    from minerwatch.sim.h11server import Reply, Request

    class Bitaxe(AxeOSMiner):
        def handle(self, request: Request) -> Any:
            if request.target == "/":
                return Reply(200, AXEOS_PAGE, "text/html")
            return super().handle(request)

    raise_open_files()
    # Out of open files, asyncio logs every failed accept: say it a few times, not millions.
    logging.getLogger("asyncio").addFilter(FirstFew(5))
    t0 = time.time()
    miners = [Bitaxe(i, address(i), port, time.time, 0, t0) for i in range(first, first + count)]
    for start in range(0, count, 500):
        await asyncio.gather(*(miner.start() for miner in miners[start:start + 500]))
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    say("ready")
    await stop.wait()
    await asyncio.gather(*(miner.stop() for miner in miners), return_exceptions=True)


# --- the clients (one child process each) ---------------------------------------------


class Client:
    """One way of polling the fleet, in a process of its own, driven by the parent.

    ``polls`` counts what a poll produced (for the collector: samples the broker
    acknowledged), ``completed`` every poll that ended, failed ones too."""

    kind = ""
    size = 0
    setup_s = 0.0

    def polls(self) -> int:
        raise NotImplementedError

    def completed(self) -> int:
        raise NotImplementedError

    def failures(self) -> int:
        raise NotImplementedError

    async def start(self) -> None:
        """Poll every miner again as soon as its poll ends, until ``stop``."""

    async def stop(self) -> None: ...

    async def cadence(self, window_s: float) -> dict[str, Any]:
        """Every miner every INTERVAL_S: the first cycle, then ``window_s`` measured."""
        raise NotImplementedError


class CollectorClient(Client):
    kind = "collector"

    def __init__(self, miners: int, port: int, broker: str) -> None:
        from minerwatch.collector.service import Collector
        from minerwatch.shared.config import CollectorConfig, Config, MinerConfig, MqttConfig

        urls = [MinerConfig(url=f"axeos://{address(i)}:{port}") for i in range(miners)]

        def collector(**settings: Any) -> Collector:
            return Collector(Config(mqtt=MqttConfig(url=broker, base_topic="bench"),
                                    collector=CollectorConfig(miners=urls, **settings)))

        self.size = miners
        self.make = collector
        # Flat out, every poll is "late" and "skips" ticks: the scheduler would say so.
        self.scheduler_log = logging.getLogger("minerwatch.collector.scheduler")
        self.scheduler_log.setLevel(logging.ERROR)
        # A due time always passed: a miner is polled again as soon as its poll ends. The
        # long timeout keeps its connections alive (interval + timeout) while it is paused.
        self.collector = collector(poll_interval_s=0.001, timeout_s=30.0,
                                   concurrency=CONCURRENCY["collector"])
        self.task: asyncio.Task[None] | None = None

    def polls(self) -> int:
        return self.collector.publisher.published

    def completed(self) -> int:
        return self.collector.scheduler.stats.completed

    def failures(self) -> int:
        return self.collector.scheduler.stats.failed

    async def start(self) -> None:
        self.task = asyncio.create_task(self.collector.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def cadence(self, window_s: float) -> dict[str, Any]:
        self.scheduler_log.setLevel(logging.NOTSET)
        self.collector = self.make(poll_interval_s=INTERVAL_S)
        await self.start()
        stats = self.collector.scheduler.stats
        first = await first_pass(self.completed, self.size, 6 * INTERVAL_S)
        stats.lateness.clear()
        say("window", phase="start")
        started, cpu, skipped, t0 = stats.started, cpu_seconds(), stats.skipped, time.monotonic()
        await asyncio.sleep(window_s)
        result = {"polls": stats.started - started, "cpu_s": cpu_seconds() - cpu,
                  "seconds": time.monotonic() - t0, "skipped": stats.skipped - skipped,
                  "p50": stats.percentile(0.5), "p99": stats.percentile(0.99),
                  "max": max(stats.lateness, default=None), "first": first}
        say("window", phase="end")
        await self.stop()
        return result


class ComparatorClient(Client):
    """pyasic_rs or pyasic, used the way their documentation shows."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.handles: list[Any] = []
        self.fetch: Poll = lambda miner: miner.get_data()
        self.done = 0
        self.failed = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def setup(self, miners: int) -> None:
        started = time.monotonic()
        if self.kind == "pyasic_rs":
            from pyasic_rs import MinerFactory

            factory = MinerFactory()
            limit = asyncio.Semaphore(200)

            async def identify(ip: str) -> Any:
                async with limit:
                    return await factory.get_miner(ip)

            found = await asyncio.gather(*(identify(address(i)) for i in range(miners)))
            self.handles = [miner for miner in found if miner is not None]
        else:
            from pyasic.miners.bitaxe import BitAxeGamma  # what pyasic.get_miner finds

            self.handles = [BitAxeGamma(address(i)) for i in range(min(miners, PYASIC_MINERS))]
        self.size = len(self.handles)
        self.setup_s = time.monotonic() - started

    def polls(self) -> int:
        return self.done

    def completed(self) -> int:
        return self.done + self.failed

    def failures(self) -> int:
        return self.failed

    async def poll(self, miner: Any) -> None:
        try:
            await self.fetch(miner)
            self.done += 1
        except Exception:
            self.failed += 1

    async def start(self) -> None:
        limit = asyncio.Semaphore(CONCURRENCY[self.kind])

        async def flat_out(miner: Any) -> None:
            while True:
                async with limit:  # first come, first served: the first pass is one each
                    await self.poll(miner)

        self.tasks = [asyncio.create_task(flat_out(miner)) for miner in self.handles]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []

    async def cadence(self, window_s: float) -> dict[str, Any]:
        # As one would write it: a loop per miner, fixed phase, missed ticks skipped.
        loop = asyncio.get_running_loop()
        start = loop.time()
        lateness: list[float] = []
        skipped = 0
        measuring = False
        limit = asyncio.Semaphore(CADENCE_CONCURRENCY)

        async def on_cadence(miner: Any, due: float) -> None:
            nonlocal skipped
            while True:
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                async with limit:
                    if measuring:
                        lateness.append(loop.time() - due)
                    await self.poll(miner)
                due += INTERVAL_S
                now = loop.time()
                if due <= now:
                    missed = int((now - due) // INTERVAL_S) + 1
                    skipped += missed if measuring else 0
                    due += missed * INTERVAL_S

        self.tasks = [asyncio.create_task(on_cadence(miner, start + INTERVAL_S * i / self.size))
                      for i, miner in enumerate(self.handles)]
        before = self.completed()
        first = await first_pass(lambda: self.completed() - before, self.size, 6 * INTERVAL_S)
        measuring = True
        say("window", phase="start")
        cpu, t0 = cpu_seconds(), time.monotonic()
        await asyncio.sleep(window_s)
        result = {"polls": len(lateness), "cpu_s": cpu_seconds() - cpu,
                  "seconds": time.monotonic() - t0, "skipped": skipped,
                  "p50": percentile(lateness, 0.5), "p99": percentile(lateness, 0.99),
                  "max": max(lateness, default=None), "first": first}
        say("window", phase="end")
        await self.stop()
        return result


async def first_pass(done: Callable[[], int], miners: int, limit_s: float) -> dict[str, float]:
    """Until every miner was polled once (or ``limit_s``)."""
    cpu, t0 = cpu_seconds(), time.monotonic()
    while done() < miners and time.monotonic() - t0 < limit_s:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return {"polls": done(), "cpu_s": cpu_seconds() - cpu, "seconds": time.monotonic() - t0}


async def window(client: Client) -> dict[str, float]:
    """One throughput window, after the client got going again (it was paused)."""
    await asyncio.sleep(SETTLE_S)
    say("window", phase="start")
    polls, cpu, t0 = client.polls(), cpu_seconds(), time.monotonic()
    await asyncio.sleep(WINDOW_S)
    result = {"polls": client.polls() - polls, "cpu_s": cpu_seconds() - cpu,
              "seconds": time.monotonic() - t0}
    say("window", phase="end")
    return result


async def commands() -> AsyncIterator[str]:
    """Lines from the parent on stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield line.decode().strip()


async def run_client(args: argparse.Namespace) -> None:
    """Set up, first pass, then windows and finally the cadence, as the parent says."""
    # pyasic warns about every 404 it probes; the collector's warnings are news.
    logging.basicConfig(level=logging.WARNING if args.kind == "collector" else logging.ERROR)
    raise_open_files()
    client: Client
    if args.kind == "collector":
        client = CollectorClient(args.miners, args.port, args.broker)
    else:
        client = ComparatorClient(args.kind)
        await client.setup(args.miners)
    await client.start()
    first = await first_pass(client.completed, client.size, FIRST_PASS_S[args.kind])
    say("warm", first=first, found=client.size, setup_s=client.setup_s, rss_mib=peak_rss_mib())
    async for command in commands():
        if command == "window":
            say("measured", **await window(client), rss_mib=peak_rss_mib())
        elif command.startswith("cadence"):
            await client.stop()
            cadence = await client.cadence(float(command.split()[1]))
            say("cadence", cadence=cadence, rss_mib=peak_rss_mib(), failures=client.failures())
            return


# --- the parent: fleet, broker, clients, report ---------------------------------------


def can_bind_port_80() -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((address(0), PORT))
        except PermissionError:
            return False
        except OSError:
            return True  # in use: not a permission problem
    return True


async def child(*args: str, commands: bool = False) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, *args, stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.PIPE if commands else None)


async def lines(proc: asyncio.subprocess.Process) -> AsyncIterator[dict[str, Any]]:
    assert proc.stdout is not None
    async for raw in proc.stdout:
        with contextlib.suppress(ValueError):
            yield json.loads(raw)


@contextlib.asynccontextmanager
async def fleet(miners: int, port: int) -> AsyncIterator[list[int]]:
    procs = []
    try:
        for first in range(0, miners, MINERS_PER_FLEET):
            count = min(MINERS_PER_FLEET, miners - first)
            procs.append(await child("fleet", str(first), str(count), str(port)))
        for proc in procs:
            async for line in lines(proc):
                if line.get("event") == "ready":
                    break
            else:
                raise RuntimeError("the simulated fleet did not start")
        yield [proc.pid for proc in procs]
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in procs:
            await proc.wait()


class Running:
    """A client process, paused (SIGSTOP) whenever another one is being measured; the
    fleet's CPU is sampled over its windows."""

    def __init__(self, kind: str, proc: asyncio.subprocess.Process, sims: list[Any]) -> None:
        self.kind, self.proc, self.sims = kind, proc, sims
        self.events = lines(proc)
        self.sim_cores: list[float] = []
        self._mark = (0.0, 0.0)

    def _sim_cpu(self) -> float:
        return sum(p.cpu_times().user + p.cpu_times().system for p in self.sims)

    async def until(self, event: str) -> dict[str, Any]:
        async for line in self.events:
            if line.get("event") == "window":
                if line["phase"] == "start":
                    self._mark = (self._sim_cpu(), time.monotonic())
                else:
                    cpu, since = self._mark
                    self.sim_cores.append((self._sim_cpu() - cpu) / (time.monotonic() - since))
            elif line.get("event") == event:
                return line
        raise RuntimeError(f"{self.kind} ended before {event!r}")

    async def ask(self, command: str, event: str) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGCONT)
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        answer = await self.until(event)
        with contextlib.suppress(ProcessLookupError):  # gone already after its last answer
            self.proc.send_signal(signal.SIGSTOP)
        return answer

    async def end(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
        await self.proc.wait()


async def measure(miners: int, clients: list[str], port: int, url: str, fleet_pids: list[int]
                  ) -> dict[str, dict[str, Any]]:
    """Each client's first pass alone; then the throughput windows in turns (collector,
    pyasic_rs, pyasic, again...) so that whatever else loads the machine meanwhile falls
    on all of them alike; then each one's cadence run, alone."""
    import psutil

    sims = [psutil.Process(pid) for pid in fleet_pids]
    running: dict[str, Running] = {}
    results: dict[str, dict[str, Any]] = {}
    try:
        for kind in clients:
            proc = await child("client", kind, str(miners), str(port), url, commands=True)
            running[kind] = client = Running(kind, proc, sims)
            warm = await client.until("warm")
            proc.send_signal(signal.SIGSTOP)
            results[kind] = {"first": warm["first"], "found": warm["found"],
                             "setup_s": warm["setup_s"], "windows": []}
        for _ in range(WINDOWS):
            for kind, client in running.items():
                results[kind]["windows"].append(await client.ask("window", "measured"))
        for kind, client in running.items():
            result = results[kind]
            result["sim_cores"] = client.sim_cores[:]
            result["needed"] = result["found"] / INTERVAL_S
            result["rss_mib"] = max(w.pop("rss_mib") for w in result["windows"])
            if kind != "collector" and rate(median_window(result)) < 1.1 * result["needed"]:
                result["cadence"] = None  # it cannot keep the cadence at all
            else:
                window_s = (CADENCE_WINDOW_S.get(miners, 30.0) if kind == "collector"
                            else COMPARATOR_CADENCE_WINDOW_S)
                answer = await client.ask(f"cadence {window_s}", "cadence")
                result.update(cadence=answer["cadence"], failures=answer["failures"],
                              rss_mib=max(result["rss_mib"], answer["rss_mib"]))
            await client.end()
    finally:
        for client in running.values():
            await client.end()
    return results


def rate(window: dict[str, float]) -> float:
    return window["polls"] / window["seconds"]


def per_poll_ms(part: dict[str, Any]) -> float:
    return 1000 * part["cpu_s"] / max(1, part["polls"])


def median_window(result: dict[str, Any]) -> dict[str, float]:
    ordered = sorted(result["windows"], key=rate)
    return ordered[len(ordered) // 2]


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


Results = dict[int, dict[str, dict[str, Any]]]


def throughput_table(results: Results) -> str:
    rows = ["| miners | client | polls/s | CPU per poll | first poll of each miner | "
            "peak RSS | simulator meanwhile |",
            "|---:|---|---:|---:|---:|---:|---:|"]
    for miners, by_client in results.items():
        for kind, result in by_client.items():
            middle = median_window(result)
            first = result["first"]
            cold = f"{per_poll_ms(first):.2f} ms CPU"
            if first["polls"] < result.get("found", miners):
                cold += f" ({first['polls']:,} polled in {first['seconds']:.0f} s)"
            sims = result["sim_cores"][:WINDOWS]
            sim = f"{statistics.median(sims):.2f} cores" if sims else "-"
            polled = result.get("found", miners)
            who = kind if polled == miners else f"{kind} ({polled:,} of them)"
            rows.append(f"| {miners:,} | {who} | {rate(middle):,.0f} | "
                        f"{per_poll_ms(middle):.2f} ms | {cold} | {result['rss_mib']:.0f} MiB | "
                        f"{sim} |")
    return "\n".join(rows)


def cadence_table(results: Results) -> str:
    rows = ["| miners | client | lateness p50 | p99 | max | skipped | CPU per poll | "
            "CPU used |",
            "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for miners, by_client in results.items():
        for kind, result in by_client.items():
            cadence = result["cadence"]
            if cadence is None:
                best = rate(median_window(result))
                rows.append(f"| {miners:,} | {kind} | not run: {best:,.0f} polls/s at best, "
                            f"{result['needed']:,.0f} needed | | | | | |")
                continue
            cores = cadence["cpu_s"] / cadence["seconds"]
            rows.append(f"| {miners:,} | {kind} | {seconds(cadence['p50'])} | "
                        f"{seconds(cadence['p99'])} | {seconds(cadence['max'])} | "
                        f"{cadence['skipped']} | {per_poll_ms(cadence):.2f} ms | "
                        f"{cores:.2f} cores |")
    return "\n".join(rows)


def comparison(results: Results) -> str:
    """The targets: at least pyasic_rs's polls/s at no more CPU per poll, same run; p99
    lateness under a second for the largest fleet at the cadence."""
    out = []
    for miners, by_client in results.items():
        if "collector" not in by_client or "pyasic_rs" not in by_client:
            continue
        ours, theirs = median_window(by_client["collector"]), median_window(by_client["pyasic_rs"])
        out.append(f"- {miners:,} miners: the collector polls and publishes "
                   f"{rate(ours) / rate(theirs):.1f} times as many miners per second as "
                   f"pyasic_rs fetches, at {per_poll_ms(ours) / per_poll_ms(theirs):.2f} times "
                   f"its CPU per poll.")
    largest = max(results)
    cadence = results[largest].get("collector", {}).get("cadence")
    if cadence:
        out.append(f"- {largest:,} miners every {INTERVAL_S:g} s: p99 lateness "
                   f"{seconds(cadence['p99'])} (the target is under 1 s).")
    return "\n".join(out)


def report(results: Results, port: int, load: tuple[float, float]) -> str:
    return f"""## Collector: polling throughput and cadence

Every miner polled again as soon as its previous poll ends: the median of {WINDOWS} windows
of {WINDOW_S:g} s, the clients taking turns (the others paused), each window after a pass
over the fleet:

{throughput_table(results)}

{comparison(results)}

Every miner every {INTERVAL_S:g} s, at most {CADENCE_CONCURRENCY} polls at once:

{cadence_table(results)}

How: each client is a process of its own and measures its own CPU time (all threads); the
simulated Bitaxes (AxeOS v2.11, ~2 KB replies) run in processes of their own, one loopback
address each on port {port}. At most {CONCURRENCY["collector"]:,} polls at once
({CONCURRENCY["pyasic"]} for pyasic, which does better so; it polls the first
{PYASIC_MINERS:,} miners only, as building 10,000 of its miner objects alone takes ~40 s).
A collector poll counts when the broker (a local Mosquitto, `{BROKER_SETTINGS.strip()}`: the
collector keeps within its Receive Maximum) acknowledged the sample: fetched, normalized
and published. pyasic_rs and pyasic fetch into their own data objects
and publish nothing; pyasic_rs asks `/api/system/info` and `/api/system/asic` for each
poll and sets a miner up on its first poll, pyasic opens a new HTTP client per request.
**first poll of each miner**: CPU per poll of the first pass over the fleet (connections,
first replies, info and status published). **simulator meanwhile**: the cores the fleet
used during the windows: on this 2-core machine the simulator and the client share the
CPU, so polls/s is bounded by both. **Lateness**: how long after its due time each poll
started, measured once every miner had been polled once (its connection made);
**skipped**: due polls that never started because the previous one was still running.
The machine is shared with other work: load average (1 min) {load[0]:.1f} before the
run, {load[1]:.1f} after.
"""


async def main(sizes: list[int]) -> None:
    port = PORT if can_bind_port_80() else FALLBACK_PORT
    clients = ["collector"]
    if port == PORT:
        for name in ("pyasic_rs", "pyasic"):
            try:
                __import__(name)
                clients.append(name)
            except ImportError:
                print(f"{name} is not installed (uv sync --group bench): skipped", flush=True)
    else:
        print(f"cannot bind port {PORT} on loopback: collector only, on port {port}")
    results: Results = {}
    load_before = os.getloadavg()[0]
    with (tempfile.TemporaryDirectory() as tmp,
          private_broker(Path(tmp), BROKER_SETTINGS) as broker_port):
        url = f"mqtt://127.0.0.1:{broker_port}"
        for miners in sizes:
            started = time.monotonic()
            async with fleet(miners, port) as pids:
                results[miners] = await measure(miners, clients, port, url, pids)
            for kind, result in results[miners].items():
                cadence = result["cadence"] or {}
                middle = median_window(result)
                cold = per_poll_ms(result["first"])
                print(f"{miners:>6} {kind:<10} {rate(middle):8.0f} polls/s "
                      f"{per_poll_ms(middle):6.3f} ms/poll  first {cold:6.2f} ms  "
                      f"p99 {seconds(cadence.get('p99'))}", flush=True)
            print(f"{miners:>6} miners took {time.monotonic() - started:.0f} s", flush=True)
    sys.path.insert(0, str(Path(__file__).parent))
    from report import write_section

    write_section("collector", report(results, port, (load_before, os.getloadavg()[0])))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run")
    run.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                     default=list(SIZES))
    fleet_cmd = sub.add_parser("fleet")
    fleet_cmd.add_argument("first", type=int)
    fleet_cmd.add_argument("count", type=int)
    fleet_cmd.add_argument("port", type=int)
    client = sub.add_parser("client")
    client.add_argument("kind", choices=CLIENTS)
    client.add_argument("miners", type=int)
    client.add_argument("port", type=int)
    client.add_argument("broker")
    argv = sys.argv[1:]
    if not argv or argv[0].startswith("-"):
        argv = ["run", *argv]
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.command == "fleet":
        asyncio.run(serve_fleet(arguments.first, arguments.count, arguments.port))
    elif arguments.command == "client":
        asyncio.run(run_client(arguments))
    else:
        asyncio.run(main(arguments.sizes))
