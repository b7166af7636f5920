"""The alerts engine: samples per second judged with the default rules.

A fleet of ``MINERS`` miners (Bitaxes with a label, so the per-model limits and labels are
in play) sends 10-second samples with every field a rule reads (hashrate and expected
hashrate, temperatures, fans, share counters, best difficulty, pool flags, blocks); some
miners run hot, stall, reject shares or lose a fan, so rules hold, fire and resolve as
they would in a real fleet. Measured in-process, on one core:

- ``Evaluator.on_sample`` alone, with the default ``[alerts]`` config (every built-in rule
  on, no free rules): the engine's own cost;
- the service's path per sample: ``decode_message`` of the MQTT payload, then the engine;
- ``Evaluator.tick`` over the whole fleet (what the service runs once a second).

Each figure is the median of ``RUNS`` runs, each on a fresh engine.

The real service: ``minerwatch-alerts`` as a process of its own (the default ``[alerts]``
config, no notify targets, a fresh base topic each run) on a private mosquitto. A
publisher (the lean client, ``publish_nowait`` pipelined, retained as the collector
publishes) sends the fleet's info, then the same samples as fast as the broker takes
them; the last sample is the first block of the last miner, so its ``block_found`` event
on ``{base}/alerts/+/+`` (watched by a client of its own) says every sample before it was
judged. Measured from the first publish to that event; a probe miner's samples, sent
before, make sure the service has subscribed. Also recorded: the service's peak resident
memory and CPU share, when the publisher had every sample settled by the broker, and
the events the service published. For comparison, a bare subscriber process (the lean
client with the service's Receive Maximum of 100, acknowledging each message on receipt,
judging nothing) drains the same stream: what flow control alone allows. Each figure is
the median of ``SERVICE_RUNS`` runs.

Run: ``.venv/bin/python bench/alerts.py`` (the ``alerts`` section of docs/benchmarks.md).
Needs mosquitto; never uses the shared broker on 1883.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from minerwatch.alerts.engine import Evaluator
from minerwatch.shared.config import AlertsConfig
from minerwatch.shared.messages import Received, decode_message
from minerwatch.shared.mqtt.client import Client, Delivery, Message, Subscription
from minerwatch.shared.schemas import MinerInfo, MinerStatus, Sample, encode, format_ts
from minerwatch.shared.topics import (
    ALERT,
    SAMPLE,
    alert_topic,
    info_topic,
    sample_topic,
    service_status_topic,
)

MINERS = 1000
ROUNDS = 100  # samples per miner: 100,000 samples a run
RUNS = 5
BASE = "minerwatch"
T0 = 1_800_000_000.0
TARGET = 20_000
SERVICE_RUNS = 3
SERVICE_BIN = Path(sys.executable).parent / "minerwatch-alerts"
#: The publisher may have 1,000 publishes unsettled (Mosquitto's default Receive Maximum
#: of 20 would measure the broker's setting); the broker queues without limit for a
#: subscriber that falls behind (its default, 1,000 queued, drops the rest of a flood).
BROKER_SETTINGS = "max_inflight_messages 1000\nmax_queued_messages 0\nmax_queued_bytes 0\n"
#: The service's own Receive Maximum (``alerts.__main__.RECEIVE_MAXIMUM``).
SERVICE_RECEIVE_MAXIMUM = 100
#: The bare subscriber's second run: a window wide enough not to limit anything.
WIDE_RECEIVE_MAXIMUM = 10_000
PROBE = "bench-probe"


def miner_id(index: int) -> str:
    return f"bitaxe-{index:05d}"


def fleet_samples(miners: int, rounds: int, t0: float = T0) -> list[Sample]:
    """Samples in arrival order: every miner once per 10 s round. The very last one is
    the last miner's first block (its ``block_found`` event marks the end of the run)."""
    samples = []
    for r in range(rounds):
        at = format_ts(datetime.fromtimestamp(t0 + r * 10, UTC))
        for i in range(miners):
            kind = i % 10
            hot = kind == 1 and r > 20
            stalled = kind == 2 and r > 30
            samples.append(Sample(
                miner_id=miner_id(i), ts=at,
                hashrate_ths=1.2 if stalled else 1.1 + ((r * 7 + i) % 13) / 100,
                expected_hashrate_ths=1.2,
                power_w=18.0, temp_c=72.0 if hot else 58.0 + (r % 5),
                vr_temp_c=60.0, fan_rpm=[0 if kind == 3 and r > 40 else 4200],
                shares_accepted=(30 if stalled else r) * 10,
                shares_rejected=r * (3 if kind == 4 else 0),
                best_diff=float(1000 + i + ((r // 10) * 100 if kind == 6 else 0)),
                uptime_s=r * 10,
                pool_url="stratum+tcp://pool.example:3333",
                pool_fallback=kind == 5 and r > 50, pool_connected=True, blocks_found=0))
    samples[-1].blocks_found = 1
    return samples


def miner_info(miner: str, label: str) -> MinerInfo:
    return MinerInfo(miner_id=miner, driver="axeos", host="10.0.0.1", port=80,
                     make="Bitaxe", model="Gamma BM1370", label=label)


def fresh_engine(miners: int) -> Evaluator:
    engine = Evaluator(AlertsConfig())
    for i in range(miners):
        engine.on_info(miner_info(miner_id(i), f"Bitaxe {i}"))
    return engine


def judge_rate(samples: list[Sample], miners: int) -> tuple[float, int]:
    engine = fresh_engine(miners)
    gc.collect()
    start = time.perf_counter()
    events = 0
    for sample in samples:
        events += len(engine.on_sample(sample))
    return len(samples) / (time.perf_counter() - start), events


def service_path_rate(payloads: list[tuple[str, bytes]], miners: int) -> float:
    engine = fresh_engine(miners)
    gc.collect()
    start = time.perf_counter()
    for topic, payload in payloads:
        decoded = decode_message(BASE, topic, payload)
        if isinstance(decoded, Received) and isinstance(decoded.message, Sample):
            engine.on_sample(decoded.message)
    return len(payloads) / (time.perf_counter() - start)


def tick_ms(samples: list[Sample], miners: int) -> float:
    engine = fresh_engine(miners)
    for sample in samples:
        engine.on_sample(sample)
    since = format_ts(datetime.fromtimestamp(T0, UTC))
    for i in range(miners):  # every miner online: the most ``tick`` looks at
        engine.on_status(miner_id(i), MinerStatus(state="online", since=since), T0)
    now = T0 + ROUNDS * 10
    start = time.perf_counter()
    for _ in range(10):
        engine.tick(now)
    return (time.perf_counter() - start) / 10 * 1000



# --- the real service ------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceRun:
    """One run of 100,000 samples through the broker to a consumer process."""

    rate: float  # samples per second, first publish to the end marker
    published_s: float  # first publish to the broker's last PUBACK
    peak_mib: float = 0.0  # the consumer's peak resident memory
    cpu_share: float = 0.0  # the consumer's CPU seconds per second of the run
    events: int = 0  # events the consumer published during the run
    broker_cpu: float = 0.0  # mosquitto's CPU seconds per second of the run


class Watcher:
    """An independent client on ``{base}/alerts/+/+`` (and the bench's own topics):
    counts events, and wakes who waits for a topic."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events = 0
        self.seen: dict[str, asyncio.Event] = {}

    def wait(self, topic: str) -> Awaitable[bool]:
        return self.seen.setdefault(topic, asyncio.Event()).wait()

    async def run(self) -> None:
        async for message in self.client.messages:
            self.client.ack(message)
            if message.topic.split("/")[1] == "alerts" and message.payload:
                self.events += 1
            self.seen.setdefault(message.topic, asyncio.Event()).set()


async def publish_all(client: Client, messages: list[tuple[str, bytes]]) -> None:
    """Every message retained at QoS 1, pipelined: as many unsettled as the broker's
    Receive Maximum lets; back when the broker has acknowledged the last one."""
    room = asyncio.Event()
    pending: set[int] = set()

    def settled(delivery: Delivery) -> None:
        pending.discard(delivery.packet_id)
        room.set()

    client.on_settled = settled
    for topic, payload in messages:
        while client.send_quota == 0:
            room.clear()
            await room.wait()
        pending.add(client.publish_nowait(topic, payload, retain=True).packet_id)
    while pending:
        room.clear()
        await room.wait()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """The high-water mark of a running process's resident memory (Linux ``VmHWM``:
    psutil reports the current RSS only, not its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def broker_pid() -> int:
    """Our mosquitto: the child process of this one by that name."""
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            if Path(f"/proc/{pid}/comm").read_text().strip() == "mosquitto":
                return int(pid)
    raise RuntimeError("the bench's mosquitto is not running")


def service_env(port: int, base: str, workdir: Path) -> dict[str, str]:
    settings = workdir / "alerts.toml"
    settings.write_text("[alerts]\n")  # the defaults: every built-in rule, no targets
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINERWATCH_")}
    # No history to seed baselines from: a file that does not exist (one warning line).
    env.update(MINERWATCH_MQTT_URL=f"mqtt://127.0.0.1:{port}", MINERWATCH_BASE_TOPIC=base,
               MINERWATCH_DB_URL=f"sqlite:///{workdir / 'no-history.db'}",
               MINERWATCH_CONFIG=str(settings), MINERWATCH_LOG_LEVEL="ERROR")
    return env


def probe_sample(n: int, t0: float) -> Sample:
    return Sample(miner_id=PROBE, ts=format_ts(datetime.fromtimestamp(t0 - 600 + n, UTC)),
                  hashrate_ths=1.2, expected_hashrate_ths=1.2, temp_c=55.0,
                  fan_rpm=[4200], blocks_found=n)


async def service_run(port: int, workdir: Path, miners: int, rounds: int,
                      bare: int = 0) -> ServiceRun:
    """One run through ``minerwatch-alerts`` (or, ``bare`` > 0, the bare subscriber with
    that Receive Maximum)."""
    base = f"benchalerts-{uuid.uuid4().hex[:8]}"
    t0 = time.time() - rounds * 10 - 60  # the past: the service refuses future samples
    samples = fleet_samples(miners, rounds, t0)
    infos = [(info_topic(base, miner_id(i)), encode(miner_info(miner_id(i), f"Bitaxe {i}")))
             for i in range(miners)] + [(info_topic(base, PROBE),
                                         encode(miner_info(PROBE, "probe")))]
    payloads = [(sample_topic(base, s.miner_id), encode(s)) for s in samples]
    end = (f"{base}/bench/done" if bare else
           alert_topic(base, samples[-1].miner_id, "block_found"))
    if bare:
        command = [sys.executable, __file__, "--bare", str(port), base, str(len(payloads)),
                   str(bare)]
    else:
        command = [str(SERVICE_BIN)]
    async with (Client("127.0.0.1", port, receive_maximum=10_000) as watch_client,
                Client("127.0.0.1", port) as publisher):
        await watch_client.subscribe([Subscription(ALERT.filter(base), qos=1),
                                      Subscription(f"{base}/bench/+", qos=1),
                                      service_status_topic(base, "alerts")])
        watcher = Watcher(watch_client)
        watching = asyncio.create_task(watcher.run())
        proc = await asyncio.create_subprocess_exec(*command, cwd=workdir,
                                                    env=service_env(port, base, workdir))
        try:
            async with asyncio.timeout(60):
                if bare:
                    await watcher.wait(f"{base}/bench/ready")
                else:
                    await watcher.wait(service_status_topic(base, "alerts"))
                    await publish_all(publisher, infos)
                    # Subscriptions are in place once a probe sample was judged.
                    probed = alert_topic(base, PROBE, "block_found")
                    judged = asyncio.ensure_future(watcher.wait(probed))
                    n = 0
                    while not judged.done():
                        await publisher.publish(sample_topic(base, PROBE),
                                                encode(probe_sample(n, t0)))
                        await asyncio.wait([judged], timeout=0.05)
                        n += 1
            gc.collect()
            events_before = watcher.events
            cpu_before = cpu_seconds(proc.pid)
            broker_before = cpu_seconds(broker_pid())
            start = time.perf_counter()
            async with asyncio.timeout(300):
                await publish_all(publisher, payloads)
                published = time.perf_counter() - start
                await watcher.wait(end)
            elapsed = time.perf_counter() - start
            cpu = cpu_seconds(proc.pid) - cpu_before
            broker_cpu = cpu_seconds(broker_pid()) - broker_before
            peak = peak_rss_mib(proc.pid)
            events = watcher.events - events_before
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await proc.wait()
            watching.cancel()
    return ServiceRun(len(payloads) / elapsed, published, peak, cpu / elapsed, events,
                      broker_cpu / elapsed)


async def bare_subscriber(port: int, base: str, count: int, receive_maximum: int) -> None:
    """The ``--bare`` process: receive ``count`` samples, acknowledge each on receipt,
    then say so on ``{base}/bench/done``."""
    received = 0
    async with Client("127.0.0.1", port, receive_maximum=receive_maximum,
                      max_queued=max(4096, receive_maximum)) as client:
        await client.subscribe([Subscription(SAMPLE.filter(base), qos=1)])
        await client.publish(f"{base}/bench/ready", b"1")
        message: Message
        async for message in client.messages:
            client.ack(message)
            received += 1
            if received == count:
                break
        await client.publish(f"{base}/bench/done", b"1")
        await asyncio.Event().wait()  # until SIGTERM: the bench reads our CPU time first


async def service_runs(miners: int, rounds: int
                       ) -> tuple[list[ServiceRun], list[ServiceRun], list[ServiceRun]]:
    sys.path.insert(0, str(Path(__file__).parent))
    from broker import private_broker

    service: list[ServiceRun] = []
    bare: list[ServiceRun] = []
    wide: list[ServiceRun] = []
    with (tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp,
          private_broker(Path(tmp), BROKER_SETTINGS) as port):
        for run in range(SERVICE_RUNS):
            service.append(await service_run(port, Path(tmp), miners, rounds))
            bare.append(await service_run(port, Path(tmp), miners, rounds,
                                          bare=SERVICE_RECEIVE_MAXIMUM))
            wide.append(await service_run(port, Path(tmp), miners, rounds,
                                          bare=WIDE_RECEIVE_MAXIMUM))
            s, b, w = service[-1], bare[-1], wide[-1]
            print(f"service run {run + 1}: {s.rate:,.0f} samples/s (all published in"
                  f" {s.published_s:.2f} s), peak RSS {s.peak_mib:.0f} MiB, CPU"
                  f" {s.cpu_share:.0%} (broker {s.broker_cpu:.0%}), {s.events} events;"
                  f" bare subscriber {b.rate:,.0f}/s (CPU {b.cpu_share:.0%}, broker"
                  f" {b.broker_cpu:.0%}); with Receive Maximum {WIDE_RECEIVE_MAXIMUM:,}"
                  f" {w.rate:,.0f}/s (CPU {w.cpu_share:.0%}, broker {w.broker_cpu:.0%})",
                  flush=True)
    return service, bare, wide

def report(judged: list[float], events: int, path: list[float], ticks: list[float],
           miners: int, count: int,
           service: tuple[list[ServiceRun], list[ServiceRun], list[ServiceRun]]) -> str:
    def runs(values: list[float]) -> str:
        return ", ".join(f"{v:,.0f}" for v in values)

    engine = statistics.median(judged)
    lines = [
        "## Alerts: samples judged per second",
        "",
        f"{miners:,} labelled Bitaxes, {count:,} samples a run (every field a rule reads;"
        f" a tenth of the fleet each runs hot, stalls, loses a fan, rejects shares, works"
        f" on a fallback pool or finds new best difficulties, so rules fire and resolve:"
        f" {events:,} events a run),"
        " the default `[alerts]` config (every built-in rule on). In-process, one core;"
        f" median of {RUNS} runs (each run in brackets).",
        "",
        "| what | per second |",
        "|---|---|",
        f"| `Evaluator.on_sample` (the engine alone) | {engine:,.0f} samples"
        f" ({runs(judged)}) |",
        f"| decode the MQTT payload, then judge (the service's path) |"
        f" {statistics.median(path):,.0f} samples ({runs(path)}) |",
        "",
        f"One `tick` (the time-driven rules, run once a second) over {miners:,} online"
        f" miners: {statistics.median(ticks):.2f} ms.",
        "",
        f"Target: at least {TARGET:,} samples/s judged with the default rules;"
        f" the engine does {engine / TARGET:.1f} times that"
        f" ({1e6 / engine:.0f} µs a sample).",
    ]
    if service[0]:
        lines += service_report(*service, count, events)
    return "\n".join(lines)


def service_report(service: list[ServiceRun], bare: list[ServiceRun],
                   wide: list[ServiceRun], count: int, events: int) -> list[str]:
    def med(runs: list[ServiceRun], key: str) -> float:
        return float(statistics.median(getattr(r, key) for r in runs))

    def each(runs: list[ServiceRun]) -> str:
        return ", ".join(f"{r.rate:,.0f}" for r in runs)

    rate = med(service, "rate")
    return [
        "",
        "### The service: `minerwatch-alerts` behind the broker",
        "",
        f"The same {count:,} samples (plus the fleet's info) published retained at QoS 1"
        " through a private mosquitto (the publisher pipelines up to 1,000 unsettled) to"
        " `minerwatch-alerts` running as its own process with the default `[alerts]`"
        " config and no notify targets; timed from the first publish until the service's"
        " `block_found` event for the last sample arrives on `{base}/alerts/+/+` at a"
        " client of its own. The bare subscriber is a process with the same client and"
        f" Receive Maximum ({SERVICE_RECEIVE_MAXIMUM}) that acknowledges each sample on"
        f" receipt and judges nothing. Median of {SERVICE_RUNS} runs (each in brackets).",
        "",
        "| consumer | samples per second | all published after | CPU of the consumer |"
        " CPU of mosquitto | peak RSS |",
        "|---|---|---|---|---|---|",
        f"| `minerwatch-alerts` (decode, judge, publish events, ack) | {rate:,.0f}"
        f" ({each(service)}) | {med(service, 'published_s'):.2f} s |"
        f" {med(service, 'cpu_share'):.0%} | {med(service, 'broker_cpu'):.0%} |"
        f" {med(service, 'peak_mib'):.0f} MiB |",
        *(f"| bare subscriber, Receive Maximum {window:,} | {med(runs, 'rate'):,.0f}"
          f" ({each(runs)}) | {med(runs, 'published_s'):.2f} s |"
          f" {med(runs, 'cpu_share'):.0%} | {med(runs, 'broker_cpu'):.0%} |"
          f" {med(runs, 'peak_mib'):.0f} MiB |"
          for window, runs in ((SERVICE_RECEIVE_MAXIMUM, bare),
                               (WIDE_RECEIVE_MAXIMUM, wide))),
        "",
        f"The service published {int(med(service, 'events')):,} events a run (the"
        f" engine alone: {events:,}). Target: at least {TARGET:,} samples/s;"
        f" the service does {rate / TARGET:.1f} times that.",
    ]


def main(miners: int, rounds: int, with_service: bool = True) -> None:
    samples = fleet_samples(miners, rounds)
    payloads = [(sample_topic(BASE, s.miner_id), encode(s)) for s in samples]
    judged, path, ticks = [], [], []
    events = 0
    for run in range(RUNS):
        rate, events = judge_rate(samples, miners)
        judged.append(rate)
        path.append(service_path_rate(payloads, miners))
        ticks.append(tick_ms(samples, miners))
        print(f"run {run + 1}: {rate:,.0f} samples/s judged, {path[-1]:,.0f}/s with"
              f" decoding, tick {ticks[-1]:.2f} ms, {events} events", flush=True)
    service, bare, wide = (asyncio.run(service_runs(miners, rounds)) if with_service
                           else ([], [], []))
    markdown = report(judged, events, path, ticks, miners, len(samples),
                      (service, bare, wide))
    print(markdown)
    sys.path.insert(0, str(Path(__file__).parent))
    from report import write_section

    write_section("alerts", markdown)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--miners", type=int, default=MINERS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--no-service", action="store_true",
                        help="the in-process figures only")
    parser.add_argument("--bare", nargs=4, metavar=("PORT", "BASE", "COUNT", "RECEIVE_MAX"),
                        help="internal: run the bare subscriber")
    args = parser.parse_args()
    if args.bare:
        asyncio.run(bare_subscriber(int(args.bare[0]), args.bare[1], int(args.bare[2]),
                                    int(args.bare[3])))
    else:
        main(args.miners, args.rounds, not args.no_service)
