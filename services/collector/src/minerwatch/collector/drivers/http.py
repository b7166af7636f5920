"""A small HTTP/1.1 GET client for polling: one kept-alive connection per miner, on h11.

A poll is one GET on a connection that stays open between polls, so the client needs no
pool, no per-request task and no TLS: an ``asyncio.Protocol`` feeds h11 (which does all
the HTTP parsing) and completes one future per reply. Measured against httpx on the
same fleet, this is about a tenth of the CPU per request (docs/benchmarks.md): httpx's
pool and stream layers cost far more than the request itself.

Every failure is a ``PollError`` with one short reason that starts with what happened
(``reading.PollError``): ``refused: nothing listens on port 80``, ``unreachable: ...``,
``closed without a reply``, ``bad reply: not HTTP (...)``, ``timeout after 5.0 s``. A
kept-alive connection the miner closed meanwhile is noticed and replaced (a request it
swallowed without a word is retried once, on a new connection), and a connection left in
an unknown state (timeout, cancel, bad reply) is dropped, never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from typing import NamedTuple

import h11

from minerwatch.collector.drivers.reading import PollError, refused_reason, timeout_reason

MAX_BODY_BYTES = 1 << 20
_END = h11.EndOfMessage()


class HttpReply(NamedTuple):
    status: int
    body: bytes


class _Unanswered(Exception):
    """The connection ended before any byte of a reply: on a kept-alive connection, the
    miner closed it between polls, so the request may be sent again on a new one."""


def short(message: str, limit: int = 80) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "…"


def os_error_reason(exc: OSError) -> str:
    # asyncio's own text names the address, which the status topic already says.
    return os.strerror(exc.errno) if exc.errno else short(str(exc) or type(exc).__name__)


class _Connection(asyncio.Protocol):
    """One TCP connection: h11's state and the reply being received, if any."""

    def __init__(self, max_body: int) -> None:
        self.h11 = h11.Connection(h11.CLIENT)
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[HttpReply] | None = None
        self._status = 0
        self._body = bytearray()
        self._started = False  # a byte of the current reply has arrived
        self._eof = False

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._started = True
        if self._waiter is None:  # nothing asked: a server talking out of turn
            self.abort()
            return
        try:
            self.h11.receive_data(data)
        except RuntimeError:  # data after h11 saw the end: the connection is done for
            self.abort()
            return
        self._process()

    def eof_received(self) -> bool:
        self._eof = True
        if self._waiter is not None:
            with contextlib.suppress(RuntimeError):
                self.h11.receive_data(b"")
            self._process()  # a reply delimited by the close completes here
        self.closed = True
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if not self._started:
            self._waiter.set_exception(_Unanswered())
        elif isinstance(exc, OSError):
            self._waiter.set_exception(
                PollError(f"closed mid-reply ({os_error_reason(exc)})"))
        else:
            self._waiter.set_exception(PollError("closed mid-reply"))

    # -- one exchange -------------------------------------------------------------------

    @property
    def reusable(self) -> bool:
        return (not self.closed and self.transport is not None
                and not self.transport.is_closing()
                and self.h11.our_state is h11.IDLE and self.h11.their_state is h11.IDLE)

    async def exchange(self, request: h11.Request) -> HttpReply:
        assert self.transport is not None and self._waiter is None
        data = (self.h11.send(request) or b"") + (self.h11.send(_END) or b"")
        self._waiter = asyncio.get_running_loop().create_future()
        self._started = False
        self.transport.write(data)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _process(self) -> None:
        waiter = self._waiter
        while waiter is not None and not waiter.done():
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(self._protocol_error(exc))
                return
            kind = type(event)
            if kind is h11.Data:
                self._body += event.data  # type: ignore[union-attr]
                if len(self._body) > self.max_body:
                    self._fail(PollError(f"bad reply: larger than {self.max_body} bytes"))
                    return
            elif kind is h11.Response:
                self._status = event.status_code  # type: ignore[union-attr]
            elif kind is h11.EndOfMessage:
                self._finish(waiter)
                return
            elif kind is h11.ConnectionClosed:
                self._fail(_Unanswered() if not self._body else
                           PollError("closed mid-reply"))
                return
            elif event is h11.NEED_DATA or event is h11.PAUSED:
                return
            # InformationalResponse (1xx): the real reply follows.

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> Exception:
        if self._eof:
            # Closed before the status line: maybe a stale kept-alive connection.
            return PollError("closed mid-reply") if self._status else _Unanswered()
        if self._status:  # the head was fine: the body broke off
            return PollError(f"bad reply: {short(str(exc), 60)}")
        return PollError(f"bad reply: not HTTP ({short(str(exc), 60)})")

    def _finish(self, waiter: asyncio.Future[HttpReply]) -> None:
        reply = HttpReply(self._status, bytes(self._body))
        self._status = 0
        self._body.clear()
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.idle_since = asyncio.get_running_loop().time()
        else:  # Connection: close, or HTTP/1.0
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        waiter.set_result(reply)

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self.abort()


class HttpClient:
    """GETs to one host over one kept-alive HTTP/1.1 connection, one request at a time.

    ``timeout_s`` bounds each ``get`` as a whole (connecting included); a connection idle
    for longer than ``keepalive_s`` is replaced rather than reused (small devices drop
    idle sockets without telling)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout_s: float,
        keepalive_s: float = 30.0,
        headers: Sequence[tuple[str, str]] = (),
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.keepalive_s = keepalive_s
        self.max_body = max_body
        netloc = f"[{host}]" if ":" in host else host
        self._host_header = netloc if port == 80 else f"{netloc}:{port}"
        self._headers = list(headers)
        self._requests: dict[str, h11.Request] = {}  # built once per path: h11 validates
        self._connection: _Connection | None = None
        #: Connections opened so far.
        self.connections = 0

    async def get(self, path: str) -> HttpReply:
        request = self._requests.get(path)
        if request is None:
            request = h11.Request(method="GET", target=path,
                                  headers=[("Host", self._host_header), *self._headers])
            self._requests[path] = request
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._get(request)
        except TimeoutError:
            self._drop()
            raise PollError(timeout_reason(self.timeout_s)) from None
        except BaseException:
            self._drop()  # cancelled or failed mid-exchange: its state is unknown
            raise

    async def _get(self, request: h11.Request) -> HttpReply:
        connection = self._idle_connection()
        if connection is not None:
            try:
                return await connection.exchange(request)
            except _Unanswered:
                pass  # closed by the miner while idle: once more on a new connection
        connection = await self._connect()
        try:
            return await connection.exchange(request)
        except _Unanswered:
            raise PollError("closed without a reply") from None

    def _idle_connection(self) -> _Connection | None:
        connection = self._connection
        if connection is None:
            return None
        idle = asyncio.get_running_loop().time() - connection.idle_since
        if connection.reusable and idle <= self.keepalive_s:
            return connection
        self._drop()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self.max_body), self.host, self.port)
        except ConnectionRefusedError:
            raise PollError(refused_reason(self.port)) from None
        except OSError as exc:
            raise PollError(f"unreachable: {os_error_reason(exc)}") from None
        self._connection = connection
        self.connections += 1
        return connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.abort()

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.transport is not None:
            connection.closed = True
            connection.transport.close()
