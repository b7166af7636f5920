"""``minerwatch-collector [run]`` runs the service; ``minerwatch-collector probe HOST[:PORT]``
polls one miner once and prints its Sample JSON (exit 0), or one line on stderr (exit 1)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from minerwatch.collector.drivers import PollError
from minerwatch.collector.probe import candidates, parse_target, probe
from minerwatch.shared import schemas
from minerwatch.shared.service import run_service

PROGRAM = "minerwatch-collector"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 3600 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="Poll miners and publish their samples, status and info."
    )
    commands = parser.add_subparsers(dest="command", metavar="{run,probe}")
    commands.add_parser("run", help="run the collector service (the default)")
    probe_parser = commands.add_parser(
        "probe", help="poll one miner once and print one Sample JSON"
    )
    probe_parser.add_argument("target", metavar="HOST[:PORT]",
                              help="the miner's address, e.g. 10.0.0.5 or 10.0.0.6:4028")
    probe_parser.add_argument("--driver", choices=("auto", "axeos", "cgminer"), default="auto",
                              help="which API to speak (default: try what fits the port)")
    probe_parser.add_argument("--timeout", type=_seconds, default=5.0, metavar="S",
                              help="give up after S seconds (default 5)")
    return parser


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


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "probe":
        raise SystemExit(run_probe(args.target, args.driver, args.timeout))
    from minerwatch.collector.service import serve  # the MQTT stack: not needed by probe

    run_service("collector", serve)


if __name__ == "__main__":
    main()
