"""``minerwatch-sim``: serve a fleet of simulated miners on loopback until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from minerwatch.sim.axeos import DEFAULT_VERSION, check_otp_secret
from minerwatch.sim.cgminer import REBOOT_PATH
from minerwatch.sim.control import ControlApi
from minerwatch.sim.fleet import Fleet, check_counts, check_host, fleet_urls

log = logging.getLogger("minerwatch.sim")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="minerwatch-sim",
        description="Simulated AxeOS (HTTP) and CGMiner (TCP) miners on 127.0.0.1.",
    )
    parser.add_argument("--axeos", type=int, default=3, help="AxeOS miners (default 3)")
    parser.add_argument("--cgminer", type=int, default=3, help="CGMiner miners (default 3)")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument(
        "--base-port",
        type=int,
        default=14000,
        help="AxeOS miner i on base+i, CGMiner miner j on base+axeos+j; 0: ephemeral ports",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated values")
    parser.add_argument(
        "--first-index",
        type=int,
        default=0,
        help="number the miners from here (names, MACs): fleets on other hosts stay apart",
    )
    parser.add_argument(
        "--axeos-version",
        default=DEFAULT_VERSION,
        help=f"AxeOS firmware the miners report (default {DEFAULT_VERSION}; "
        "v2.14.0 or later also serves the live WebSocket /api/ws/live)",
    )
    parser.add_argument(
        "--control-port", type=int, default=0, help="control API port on 127.0.0.1 (0: off)"
    )
    parser.add_argument(
        "--otp-secret",
        default=None,
        help="base32 TOTP secret: AxeOS writes then need an X-TOTP header (NerdQAxe)",
    )
    parser.add_argument(
        "--web",
        action="store_true",
        help="CGMiner miners also serve the Antminer web CGI (/cgi-bin/reboot.cgi, digest "
        "auth root/root) on an ephemeral port each",
    )
    parser.add_argument(
        "--print-urls",
        action="store_true",
        help="print the comma-separated miner URLs and exit (binds nothing)",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    fleet = Fleet(
        axeos=args.axeos,
        cgminer=args.cgminer,
        host=args.host,
        base_port=args.base_port,
        seed=args.seed,
        axeos_version=args.axeos_version,
        first_index=args.first_index,
        otp_secret=args.otp_secret,
        web=args.web,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    control: ControlApi | None = None
    await fleet.start()
    try:
        for miner in fleet.miners:
            log.info("%s %s", miner.name, miner.url)
        for cg in fleet.cgminer_miners:
            if cg.web_url is not None:
                log.info("%s web CGI %s%s", cg.name, cg.web_url, REBOOT_PATH)
        if args.control_port:
            control = ControlApi(fleet, args.control_port)
            await control.start()
            log.info("control API http://127.0.0.1:%d/miners", control.port)
        log.info("serving %d simulated miners (seed %d)", len(fleet.miners), args.seed)
        await stop.wait()
        log.info("stopping")
    finally:
        if control is not None:
            await control.stop()
        await fleet.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_host(args.host)
        check_counts(args.axeos, args.cgminer, args.base_port)
        if args.first_index < 0:
            raise ValueError("first index cannot be negative")
        if not 0 <= args.control_port <= 65535:
            raise ValueError(f"control port {args.control_port} is not a TCP port")
        if args.otp_secret is not None:
            check_otp_secret(args.otp_secret)
        if args.print_urls:
            print(",".join(fleet_urls(args.axeos, args.cgminer, args.host, args.base_port)))
            return 0
    except ValueError as exc:
        print(f"minerwatch-sim: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        print(f"minerwatch-sim: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
