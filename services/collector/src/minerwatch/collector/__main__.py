"""``minerwatch-collector [run]`` runs the service; ``minerwatch-collector probe HOST[:PORT]``
polls one miner once and prints its Sample JSON (exit 0), or one line on stderr (exit 1);
``minerwatch-collector scan CIDR...`` lists the miners that answer in address ranges;
``minerwatch-collector forget MINER_ID`` clears a miner's retained topics on the broker of
the config and prints them (exit 0), or one line on stderr (exit 1);
``minerwatch-collector tune MINER_ID`` runs autotune on one miner (``tune.cli``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, TextIO

from minerwatch.collector.drivers import DRIVERS, PollError
from minerwatch.collector.probe import candidates, parse_target, probe
from minerwatch.shared import schemas
from minerwatch.shared.config import ConfigError, load_config, scan_network
from minerwatch.shared.errors import one_line
from minerwatch.shared.service import run_service

if TYPE_CHECKING:
    from minerwatch.collector.discovery import Found, ScanResult

PROGRAM = "minerwatch-collector"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 3600 seconds")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 4096:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number from 1 to 4096")
    return int(text)


def _ports(text: str) -> list[int]:
    ports = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 0 < int(part) < 65536:
            raise argparse.ArgumentTypeError(f"{part!r} is not a TCP port")
        ports.append(int(part))
    return ports


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="Poll miners and publish their samples, status and info."
    )
    commands = parser.add_subparsers(dest="command", metavar="{run,probe,scan,forget,tune}")
    commands.add_parser("run", help="run the collector service (the default)")
    probe_parser = commands.add_parser(
        "probe", help="poll one miner once and print one Sample JSON"
    )
    probe_parser.add_argument("target", metavar="HOST[:PORT]",
                              help="the miner's address, e.g. 10.0.0.5 or 10.0.0.6:4028")
    probe_parser.add_argument("--driver", choices=("auto", *DRIVERS), default="auto",
                              help="which API to speak (default: try what fits the port)")
    probe_parser.add_argument("--timeout", type=_seconds, default=5.0, metavar="S",
                              help="give up after S seconds (default 5)")
    scan_parser = commands.add_parser(
        "scan", help="probe address ranges for miners and list the ones that answer",
        description="Probe every address of the ranges (nothing outside them) and print "
        "one line per miner found: address, driver, make and model, MAC, hostname. "
        "Exit 0 when a miner was found, 1 when none was, 2 on bad arguments.")
    scan_parser.add_argument("cidrs", nargs="+", metavar="CIDR",
                             help="a range such as 192.168.1.0/24 (at most a /16)")
    scan_parser.add_argument("--timeout", type=_seconds, default=1.0, metavar="S",
                             help="seconds allowed per probe (default 1)")
    scan_parser.add_argument("--concurrency", type=_count, default=64, metavar="N",
                             help="probes at once (default 64)")
    scan_parser.add_argument("--ports", type=_ports, default=[80, 4028], metavar="P[,P...]",
                             help="ports to probe on every address (default 80,4028)")
    scan_parser.add_argument("--json", action="store_true",
                             help="one JSON object per line instead of columns")
    forget_parser = commands.add_parser(
        "forget", help="clear a miner's retained topics on the broker",
        description="Clear (an empty retained message each) the miner's retained topics "
        "and alerts on the broker of the config, and print them. The history stays in "
        "the database; a miner still polled that answers again comes back.")
    forget_parser.add_argument("miner_id", metavar="MINER_ID",
                               help="the miner's id, as in its topics (e.g. 24dcc34a1b2c)")
    tune_parser = commands.add_parser(
        "tune", help="autotune one miner: find its best stable frequency and voltage",
        description="Step the miner's frequency (and, when unstable, its core voltage) up "
        "inside its safe range, measure each step, and apply the best one; the original "
        "settings come back when nothing is stable, on Ctrl-C and on any failure. Needs "
        "[control] enabled = true; timings and limits are in [control.tune]. Exit 0 done, "
        "1 failed, 2 bad arguments or config, 130 stopped (settings restored).")
    tune_parser.add_argument("miner_id", metavar="MINER_ID",
                             help="the miner's id: its name in [[collector.miners]], or the "
                             "id a collector publishes it under")
    tune_parser.add_argument("--objective", choices=("efficiency", "hashrate"),
                             default="efficiency",
                             help="keep the lowest J/TH (default) or the highest hashrate")
    tune_parser.add_argument("--config", metavar="FILE", default=None,
                             help="the config file (default: $MINERWATCH_CONFIG, else "
                             "./minerwatch.toml)")
    tune_parser.add_argument("--chip-temp-max", type=float, default=None, metavar="C",
                             help="chip temperature limit (default [control.tune] "
                             "chip_temp_max_c)")
    tune_parser.add_argument("--vr-temp-max", type=float, default=None, metavar="C",
                             help="VR temperature limit (default [control.tune] "
                             "vr_temp_max_c)")
    return parser


def found_line(found: Found) -> str:
    """One miner as aligned columns: address, driver, make/model, MAC, hostname."""
    what = " ".join(part for part in (found.make, found.model) if part) or "-"
    return (f"{found.address:<21} {found.driver:<7} {what:<26} {found.mac or '-':<17} "
            f"{found.hostname or '-'}").rstrip()


class ScanProgress:
    """One self-rewriting line on a terminal; nothing at all when not a terminal."""

    EVERY_S = 0.1

    def __init__(self, stream: TextIO, what: str) -> None:
        self.stream = stream
        self.what = what
        self.shown = stream.isatty()
        self._last = 0.0

    def update(self, result: ScanResult, force: bool = False) -> None:
        now = time.monotonic()
        if not self.shown or (not force and now - self._last < self.EVERY_S):
            return
        self._last = now
        self.stream.write(f"\r\033[Kscanning {self.what}: {result.probed}/{result.total} "
                          f"probes, {len(result.found)} found")
        self.stream.flush()

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


def run_scan(cidrs: list[str], ports: list[int], timeout_s: float, concurrency: int,
             as_json: bool) -> int:
    from minerwatch.collector.discovery import ScanResult, count_hosts, scan  # zeroconf: slow

    logging.basicConfig(level=os.environ.get("MINERWATCH_LOG_LEVEL", "ERROR").upper(),
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        for cidr in cidrs:
            scan_network(cidr)
    except ValueError as exc:
        print(f"{PROGRAM}: scan: {exc}", file=sys.stderr)
        return 2
    progress = ScanProgress(sys.stderr, ", ".join(cidrs))

    def show(found: Found) -> None:
        progress.clear()
        line = schemas.encode(found).decode() if as_json else found_line(found)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        progress.update(result_so_far, force=True)

    result_so_far = ScanResult(total=count_hosts(cidrs) * len(ports))

    def advance(result: ScanResult) -> None:
        nonlocal result_so_far
        result_so_far = result
        progress.update(result)

    started = time.monotonic()
    try:
        result = asyncio.run(scan(cidrs, ports, concurrency=concurrency, timeout_s=timeout_s,
                                  on_found=show, on_progress=advance))
    except KeyboardInterrupt:
        progress.clear()
        return 130
    progress.clear()
    print(f"{PROGRAM}: scan: {len(result.found)} miner(s) found, {result.probed} probes "
          f"in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0 if result.found else 1


def run_probe(target: str, driver: str, timeout_s: float) -> int:
    # Quiet unless asked: a failure must be one stderr line.
    logging.basicConfig(level=os.environ.get("MINERWATCH_LOG_LEVEL", "ERROR").upper(),
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        forced, host, port = parse_target(target)
        if forced is not None and driver == "auto":
            driver = forced
        sample = asyncio.run(probe(host, candidates(driver, port), timeout_s))
    except (PollError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, PollError) else str(exc)
        print(f"{PROGRAM}: probe {target}: {' '.join(reason.split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback for a probe
        print(f"{PROGRAM}: probe {target}: internal error: {exc!r}", file=sys.stderr)
        return 1
    sys.stdout.write(schemas.encode(sample).decode() + "\n")
    return 0


def run_forget(miner_id: str) -> int:
    from minerwatch.collector.forget import forget
    from minerwatch.shared.mqtt import MqttError

    logging.basicConfig(level=os.environ.get("MINERWATCH_LOG_LEVEL", "ERROR").upper(),
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        config = load_config()
        cleared = asyncio.run(forget(config.mqtt, miner_id,
                                     discovery_prefix=config.homeassistant.prefix))
    except (ConfigError, ValueError, MqttError, OSError) as exc:
        print(f"{PROGRAM}: forget {miner_id[:80]}: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    for topic in cleared:
        sys.stdout.write(topic + "\n")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "probe":
        raise SystemExit(run_probe(args.target, args.driver, args.timeout))
    if args.command == "forget":
        raise SystemExit(run_forget(args.miner_id))
    if args.command == "tune":
        from minerwatch.collector.tune.cli import run_tune  # the control stack: only here

        raise SystemExit(run_tune(args.miner_id, args.objective, args.config,
                                  args.chip_temp_max, args.vr_temp_max))
    if args.command == "scan":
        raise SystemExit(run_scan(args.cidrs, args.ports, args.timeout, args.concurrency,
                                  args.json))
    from minerwatch.collector.service import serve  # the MQTT stack: not needed by probe

    run_service("collector", serve)


if __name__ == "__main__":
    main()
