"""``minerwatch-api``: serve the api with uvicorn on ``config.api.listen``;
``minerwatch-api token ...`` manages its tokens (see ``cli``).

``run_service`` gives the api the config errors, logging and exit codes every service has;
SIGTERM stops uvicorn gracefully (open requests finish, the lifespan says ``offline`` on MQTT).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import uvicorn

from minerwatch.shared.config import Config, host_port
from minerwatch.shared.db import async_url
from minerwatch.shared.service import fail, run_service

#: Client commands are tiny; this bounds what one WebSocket message may cost the server.
WS_MAX_MESSAGE_BYTES = 64 * 1024
#: How long a stop waits for open requests and WebSocket clients before closing them.
GRACEFUL_SHUTDOWN_S = 5


async def serve(config: Config) -> None:
    # Imported here: ``minerwatch-api token`` does without the web framework (seconds).
    from minerwatch.api.app import create_app

    host, port = host_port(config.api.listen)
    # A bad URL is a config error: stop now (exit 2). An unusable SQLite path is not:
    # /healthz reports it while the api keeps serving.
    with contextlib.suppress(OSError):
        async_url(config.database.url)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=host,
            port=port,
            log_config=None,  # keep the logging run_service set up
            ws_max_size=WS_MAX_MESSAGE_BYTES,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
    )
    serving = asyncio.ensure_future(server.serve())
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        # run_service cancels us on SIGTERM/SIGINT. uvicorn sees the same signal; either
        # way, shut down gracefully (close connections, run the lifespan's cleanup that says
        # "offline" on MQTT) instead of letting the cancellation cut through the lifespan.
        server.should_exit = True
        await serving
        raise
    if not server.started:
        fail("minerwatch-api", "the api could not start (see the log above)", 1)


def main() -> None:
    if sys.argv[1:2] == ["token"]:
        from minerwatch.api import cli

        raise SystemExit(cli.main(sys.argv[2:]))
    run_service("api", serve)


if __name__ == "__main__":
    main()
