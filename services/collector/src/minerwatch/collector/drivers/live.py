"""AxeOS live push (firmware v2.14+): ``WS /api/ws/live`` in place of polling.

The firmware pushes ``{"event":"update","data":{...}}``: the whole ``/api/system/info``
object when a client connects, then only the fields that changed (nested objects field by
field, lists whole), at most every 500 ms. Removed fields are never announced; none that
the Sample needs ever goes away.

``LiveAxeosDriver`` wraps the HTTP driver and keeps the Driver interface, so the fleet
still asks once per interval and samples keep the poll cadence, not the push rate:

- after a good HTTP poll that reports v2.14+ firmware, it opens the socket in the
  background and merges every update into the last full object;
- while the socket is up and pushed something within the last ``fresh_s`` (2 s), ``fetch``
  answers from that object (normalized by the AxeOS driver's ``parse_system_info``) with
  no request at all;
- a quiet socket proves nothing (a live miner's uptime alone changes every second), so a
  fetch that finds it quiet polls over HTTP instead, and the second such fetch in a row
  drops the socket;
- when the socket drops or cannot be opened, polling takes over at once and the socket is
  tried again later (after ``retry_s``, doubling up to ``RETRY_MAX_S``).

So the miner's health stays truthful: with no live socket, the HTTP polls decide, and a
miner that answers neither goes offline after the usual number of failed polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from minerwatch.collector.drivers import Driver, PollError, Reading
from minerwatch.collector.drivers.axeos import MAX_REPLY_BYTES, AxeosDriver, parse_system_info
from minerwatch.collector.drivers.reading import decode_json

log = logging.getLogger(__name__)

LIVE_PATH = "/api/ws/live"
#: The first AxeOS release with the live WebSocket.
LIVE_SINCE = (2, 14)
RETRY_MAX_S = 600.0
#: A push this recent shows the miner alive (its uptime changes every second).
FRESH_S = 2.0
#: Fetches in a row that find the socket quiet, after which it is given up as dead.
QUIET_LIMIT = 2


class LiveError(Exception):
    """The socket said something that is not an update: it is dropped."""


# --- pure parts -----------------------------------------------------------------------


def version_numbers(version: str | None) -> tuple[int, ...]:
    """``v2.14.0`` -> (2, 14, 0); ``2.15.0-rc1`` -> (2, 15, 0); () when unknown."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", version or "")
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def supports_live(firmware: str | None) -> bool:
    """Whether this AxeOS firmware serves ``/api/ws/live``. Unknown versions (and the
    NerdQAxe line, v1.x) are polled, which always works."""
    return version_numbers(firmware) >= LIVE_SINCE


def update_data(message: str | bytes) -> dict[str, Any] | None:
    """The ``data`` object of an update event; None for any other event.

    Raises LiveError when the message is not a JSON event object."""
    try:
        event = decode_json(message)
    except PollError as exc:
        raise LiveError(exc.reason) from None
    if not isinstance(event, dict):
        raise LiveError("bad update: not a JSON object")
    if event.get("event") != "update":
        return None
    data = event.get("data")
    if not isinstance(data, dict):
        raise LiveError("bad update: no data object")
    return data


def merge_update(state: dict[str, Any], changes: Mapping[str, Any]) -> None:
    """Apply pushed changes to the full object, nested objects field by field."""
    for key, value in changes.items():
        current = state.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            merge_update(current, value)
        else:
            state[key] = value


def _reason(exc: BaseException) -> str:
    if isinstance(exc, LiveError):
        return str(exc)
    if isinstance(exc, websockets.InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, websockets.ConnectionClosed):
        return "closed by the miner"
    return " ".join(str(exc).split())[:80] or type(exc).__name__


# --- the driver -----------------------------------------------------------------------


class LiveAxeosDriver:
    """An AxeOS driver that prefers the live WebSocket and polls when it has none."""

    name = "axeos"

    def __init__(self, http: AxeosDriver, retry_s: float = 30.0) -> None:
        self.http = http
        self.retry_s = retry_s
        self._backoff = retry_s
        self._retry_at = 0.0  # monotonic time before which no new socket is tried
        self._task: asyncio.Task[None] | None = None
        self._socket: ClientConnection | None = None
        self.fresh_s = FRESH_S
        self._state: dict[str, Any] | None = None  # the merged info object while live
        self._heard_at = 0.0  # monotonic time of the last push
        self._quiet = 0  # fetches in a row that found the open socket quiet
        #: Fetches answered from the socket and over HTTP, updates pushed (tests, bench).
        self.live_fetches = 0
        self.http_fetches = 0
        self.updates = 0

    # The Driver interface: the endpoint is the HTTP driver's.
    @property
    def host(self) -> str:
        return self.http.host

    @property
    def port(self) -> int:
        return self.http.port

    @property
    def timeout_s(self) -> float:
        return self.http.timeout_s

    @property
    def live(self) -> bool:
        """The socket is open and has delivered the full object."""
        return self._state is not None and self._socket is not None

    async def fetch(self) -> Reading:
        if self.live:
            reading = self._live_reading()
            if reading is not None:
                self.live_fetches += 1
                return reading
        reading = await self.http.fetch()
        self.http_fetches += 1
        self._maybe_open(reading)
        return reading

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await self.http.aclose()

    def _live_reading(self) -> Reading | None:
        """The reading from the pushed object, or None to poll instead."""
        assert self._state is not None
        if time.monotonic() - self._heard_at > self.fresh_s:
            self._quiet += 1
            if self._quiet >= QUIET_LIMIT:
                self._drop(f"nothing pushed for {self.fresh_s:g} s, twice")
            return None
        self._quiet = 0
        try:
            return parse_system_info(self._state)
        except PollError as exc:
            self._drop(exc.reason)
            return None

    def _maybe_open(self, reading: Reading) -> None:
        if self._task is not None and not self._task.done():
            return
        if time.monotonic() < self._retry_at or not supports_live(reading.firmware):
            return
        self._task = asyncio.create_task(self._run(), name=f"live {self._where}")

    @property
    def _where(self) -> str:
        return f"axeos://{self.host}:{self.port}"

    def _drop(self, reason: str) -> None:
        """Stop using the socket now; the reader task ends and schedules the retry."""
        log.info("%s: live updates stopped (%s): polling", self._where, reason)
        self._state = None
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        url = f"ws://{netloc}:{self.port}{LIVE_PATH}"
        socket: ClientConnection | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                # No Origin header (AxeOS refuses public origins), no proxy from the
                # environment, no pings: the pushes themselves show the miner alive.
                socket = await connect(url, open_timeout=None, ping_interval=None,
                                       compression=None, proxy=None,
                                       max_size=MAX_REPLY_BYTES)
                first = update_data(await socket.recv())
            if first is None or "hashRate" not in first:
                raise LiveError("bad update: the first one is not the whole info object")
            parse_system_info(first)  # refuse a feed a poll could not use
        except (OSError, TimeoutError, websockets.WebSocketException, LiveError,
                PollError) as exc:
            log.debug("%s: no live updates (%s)", self._where, _reason(exc))
            self._close(socket)
            return
        except BaseException:
            self._close(socket)
            raise
        self._state, self._socket = first, socket
        self._heard_at, self._quiet = time.monotonic(), 0
        self._backoff = self.retry_s
        log.info("%s: live updates over WebSocket", self._where)
        reason = "closed by the miner"
        try:
            async for message in socket:
                changes = update_data(message)
                if changes is not None:
                    merge_update(first, changes)
                    self._heard_at = time.monotonic()
                    self.updates += 1
        except (OSError, websockets.WebSocketException, LiveError) as exc:
            reason = _reason(exc)
        except Exception as exc:  # a bug here must not leave a dead feed looking live
            log.exception("%s: live updates failed", self._where)
            reason = f"internal error: {type(exc).__name__}"
        finally:
            if self._state is not None:  # not dropped on purpose: say why it ended
                log.info("%s: live updates stopped (%s): polling", self._where, reason)
            self._close(socket)

    def _close(self, socket: ClientConnection | None) -> None:
        """Forget the socket and schedule the next try. The connection is aborted, not
        closed politely: a hung miner would hold up a closing handshake."""
        self._state, self._socket = None, None
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, RETRY_MAX_S)
        if socket is not None:
            socket.transport.abort()


def with_live_push(driver: Driver, retry_s: float) -> Driver:
    """The driver to poll through: AxeOS drivers learn to take live pushes, others stay."""
    if isinstance(driver, AxeosDriver):
        return LiveAxeosDriver(driver, retry_s)
    return driver
