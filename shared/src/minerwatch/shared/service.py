"""Process entry for every service: logging, config, signals, exit codes.

A bad config prints one line (``minerwatch-store: config: ...``) and exits 2; SIGTERM and
SIGINT cancel the service's main task so it can say goodbye on MQTT and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from minerwatch.shared.config import Config, ConfigError, load_config
from minerwatch.shared.errors import one_line

Main = Callable[[Config], Coroutine[Any, Any, None]]


#: Allocations between collections of the youngest generation (Python's default: 700).
#: Each poll or message leaves a few hundred short-lived objects; with the default, those
#: of the work in flight are caught alive, promoted, and drag full collections over every
#: long-lived object (a third of the collector's CPU at 10,000 miners, measured).
GC_YOUNG = 50_000


@contextlib.contextmanager
def fewer_collections(young: int = GC_YOUNG) -> Iterator[None]:
    """Collect the young generation every ``young`` allocations, and leave what exists
    now (imports, config) out of every collection, while the block runs."""
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(young, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


def setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("MINERWATCH_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def fail(program: str, message: str, code: int = 2) -> None:
    print(f"{program}: {message}", file=sys.stderr)
    raise SystemExit(code)


async def run_until_signalled(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro``; SIGTERM/SIGINT cancel it and the cancellation ends here quietly."""
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():
            raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run_service(name: str, main: Main) -> None:
    """What each service's console script calls: ``run_service("store", store_main)``."""
    setup_logging()
    program = f"minerwatch-{name}"
    try:
        config = load_config()
    except ConfigError as exc:
        fail(program, f"config: {exc}")
    logger = logging.getLogger(f"minerwatch.{name}")
    try:
        asyncio.run(run_until_signalled(main(config)))
    except ConfigError as exc:  # raised by checks that need the running service (e.g. DB URL)
        fail(program, f"config: {exc}")
    except Exception as exc:
        # A bug nothing caught: say so (traceback in the log, one line on stderr) and exit 1
        # so a supervisor restarts us; the broker already shows the service offline.
        cause = _first_cause(exc)
        logger.critical("%s stopped by an error", program, exc_info=exc)
        fail(program, f"stopped by an error: {type(cause).__name__}: {one_line(cause)}", 1)
    logger.info("%s stopped", program)


def _first_cause(error: BaseException) -> BaseException:
    """The error inside a task group's ExceptionGroup, which says nothing by itself."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error
