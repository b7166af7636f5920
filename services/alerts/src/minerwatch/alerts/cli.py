"""The ``minerwatch-alerts`` command: ``run`` (the default) runs the service;
``test-notify`` sends a test notification to every configured target.

``test-notify`` prints one line per target (the URL as scheme and host only, the config
keys that name it, then ``ok`` or why it failed) and exits 0 when every target took the
notification, 1 when one did not (or none is configured), 2 on a config error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from minerwatch.shared.config import ConfigError, load_config

PROGRAM = "minerwatch-alerts"


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(prog=PROGRAM, description="minerwatch alerts service")
    parse.add_argument("-c", "--config", help="the config file (default: $MINERWATCH_CONFIG, "
                                              "else ./minerwatch.toml)")
    commands = parse.add_subparsers(dest="command")
    commands.add_parser("run", help="run the service (the default)")
    test = commands.add_parser("test-notify",
                               help="send a test notification to every configured target")
    test.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                      help="how long each target may take (default: 10)")
    return parse


async def test_notify(timeout_s: float) -> int:
    """Test every target; print one line each; the exit code."""
    from minerwatch.alerts.notify import Notifier

    try:
        config = load_config()
        notifier = Notifier(config.alerts, public_url=config.api.public_url,
                            timeout_s=timeout_s)
    except ConfigError as exc:
        print(f"{PROGRAM}: config: {exc}", file=sys.stderr)
        return 2
    results = await notifier.test()
    if not results:
        print(f"{PROGRAM}: no notification targets configured (alerts.notify, "
              "alerts.<rule>.notify, alerts.rules[].notify)", file=sys.stderr)
        return 1
    for result in results:
        print(result.line(), flush=True)
    return 0 if all(result.ok for result in results) else 1


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.command == "test-notify" and not 0 < args.timeout < 3600:
        parser().error("--timeout must be between 0 and 3600 seconds")
    if args.config is not None:
        # Both commands load the config the usual way; the option only names the file.
        os.environ["MINERWATCH_CONFIG"] = args.config
    if args.command == "test-notify":
        raise SystemExit(asyncio.run(test_notify(args.timeout)))
    from minerwatch.alerts.__main__ import serve
    from minerwatch.shared.service import run_service

    run_service("alerts", serve)


if __name__ == "__main__":
    main()
