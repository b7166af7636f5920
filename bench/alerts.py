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

Run: ``.venv/bin/python bench/alerts.py`` (the ``alerts`` section of docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from minerwatch.alerts.engine import Evaluator
from minerwatch.shared.config import AlertsConfig
from minerwatch.shared.messages import Received, decode_message
from minerwatch.shared.schemas import MinerInfo, MinerStatus, Sample, encode, format_ts
from minerwatch.shared.topics import sample_topic

MINERS = 1000
ROUNDS = 100  # samples per miner: 100,000 samples a run
RUNS = 5
BASE = "minerwatch"
T0 = 1_800_000_000.0
TARGET = 20_000


def miner_id(index: int) -> str:
    return f"bitaxe-{index:05d}"


def fleet_samples(miners: int, rounds: int) -> list[Sample]:
    """Samples in arrival order: every miner once per 10 s round."""
    samples = []
    for r in range(rounds):
        at = format_ts(datetime.fromtimestamp(T0 + r * 10, UTC))
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
    return samples


def fresh_engine(miners: int) -> Evaluator:
    engine = Evaluator(AlertsConfig())
    for i in range(miners):
        engine.on_info(MinerInfo(miner_id=miner_id(i), driver="axeos", host="10.0.0.1",
                                 port=80, make="Bitaxe", model="Gamma BM1370",
                                 label=f"Bitaxe {i}"))
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


def report(judged: list[float], events: int, path: list[float], ticks: list[float],
           miners: int, count: int) -> str:
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
    return "\n".join(lines)


def main(miners: int, rounds: int) -> None:
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
    markdown = report(judged, events, path, ticks, miners, len(samples))
    print(markdown)
    sys.path.insert(0, str(Path(__file__).parent))
    from report import write_section

    write_section("alerts", markdown)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--miners", type=int, default=MINERS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    main(args.miners, args.rounds)
