"""A small HTTP/1.1 server protocol on h11, shared by the AxeOS miners and the control API.

An ``asyncio.Protocol`` rather than streams: no task per connection, nothing at all per idle
miner. HTTP/1.1 connections persist (pipelined requests are answered in order); HTTP/1.0
and ``Connection: close`` close after the reply, as h11 decides.

A handler may answer a request with ``Upgrade(session)``: the connection then becomes a
WebSocket (the handshake and the frames are websockets' sans-I/O protocol) and the session
gets a ``WebSocketChannel`` to send text on. Pings are answered while the session says it
is ``responsive``; a session that is not (a hung device) ignores everything it receives.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import h11
from websockets.datastructures import Headers
from websockets.http11 import Request as WsRequest
from websockets.protocol import OPEN, State
from websockets.server import ServerProtocol

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()  # more headers (a WWW-Authenticate challenge)


class WebSocketSession(Protocol):
    """What runs on an upgraded connection (the AxeOS live push)."""

    @property
    def responsive(self) -> bool: ...

    def opened(self, channel: WebSocketChannel) -> None: ...

    def closed(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Upgrade:
    """Switch the connection to a WebSocket served by ``session``."""

    session: WebSocketSession


#: A handler answers a request with a Reply, an Upgrade, or None to never answer (a hung
#: device).
Handler = Callable[[Request], "Reply | Upgrade | Awaitable[Reply | None] | None"]


def wants_websocket(request: Request) -> bool:
    return "websocket" in request.headers.get("upgrade", "").lower()


class WebSocketChannel:
    """The sending side of one upgraded connection."""

    def __init__(self, protocol: HttpProtocol) -> None:
        self._protocol = protocol

    @property
    def is_open(self) -> bool:
        ws = self._protocol._ws
        transport = self._protocol._transport
        return (ws is not None and ws.state is OPEN and transport is not None
                and not transport.is_closing())

    def send_text(self, text: str) -> None:
        ws = self._protocol._ws
        if ws is not None and self.is_open:
            ws.send_text(text.encode())
            self._protocol._flush_ws()

    def drop(self) -> None:
        """Go away without a closing handshake, as a device that lost power does."""
        if self._protocol._transport is not None:
            self._protocol._transport.abort()


class HttpProtocol(asyncio.Protocol):
    def __init__(self, handler: Handler, connections: set[asyncio.BaseTransport]) -> None:
        self._handler = handler
        self._connections = connections
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        self._transport: asyncio.Transport | None = None
        self._request: h11.Request | None = None
        self._body = bytearray()
        self._busy = False  # a reply is being computed; later data waits in h11's buffer
        self._stalled = False  # the handler chose never to answer
        self._task: asyncio.Task[None] | None = None
        self._ws: ServerProtocol | None = None  # set once upgraded to a WebSocket
        self._session: WebSocketSession | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.add(transport)

    def data_received(self, data: bytes) -> None:
        if self._ws is not None:
            self._ws_received(data)
            return
        if self._stalled:
            return
        try:
            self._conn.receive_data(data)
        except h11.RemoteProtocolError:
            self._close()
            return
        self._process()

    def eof_received(self) -> bool:
        if self._ws is not None:
            self._ws.receive_eof()
            self._flush_ws()
            return False
        if self._stalled:
            return False  # the client gave up on a hung request: let the transport close
        try:
            self._conn.receive_data(b"")
        except h11.RemoteProtocolError:
            self._close()
            return True
        self._process()
        # keep the write side open: a reply still being computed goes out, then we close
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._connections.discard(self._transport)
        if self._task is not None and not self._task.done():
            self._task.cancel()
        session, self._session = self._session, None
        if session is not None:
            session.closed()

    # -- request handling ---------------------------------------------------------------

    def _process(self) -> None:
        while (not self._busy and not self._stalled and self._ws is None
               and self._transport is not None):
            if self._transport.is_closing():
                return
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._send_error(exc.error_status_hint)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.ConnectionClosed):
                self._close()
                return
            if isinstance(event, h11.Request):
                self._request = event
                self._body.clear()
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > MAX_BODY:
                    self._send_error(413)
                    return
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()

    def _dispatch(self) -> None:
        assert self._request is not None
        request = Request(
            method=self._request.method.decode("ascii", "replace"),
            target=self._request.target.decode("ascii", "replace"),
            headers={
                name.decode("latin-1"): value.decode("latin-1")
                for name, value in self._request.headers
            },
            body=bytes(self._body),
        )
        self._busy = True
        try:
            result = self._handler(request)
        except Exception:
            log.exception("handler failed on %s %s", request.method, request.target)
            result = Reply(500, b'{"error":"internal error"}')
        if isinstance(result, Upgrade):
            self._upgrade(request, result.session)
        elif inspect.isawaitable(result):
            self._task = asyncio.ensure_future(self._await_reply(result))
        else:
            self._respond(result)

    async def _await_reply(self, pending: Awaitable[Reply | None]) -> None:
        try:
            reply = await pending
        except Exception:
            log.exception("handler failed")
            reply = Reply(500, b'{"error":"internal error"}')
        self._respond(reply)

    def _respond(self, reply: Reply | None) -> None:
        if reply is None:
            self._stalled = True
            return
        if self._transport is None or self._transport.is_closing():
            return
        head = self._request is not None and self._request.method == b"HEAD"
        headers = [
            ("Content-Type", reply.content_type),
            ("Content-Length", str(len(reply.body))),
            # h11 swaps this for "close" whenever the connection will not persist
            ("Connection", "keep-alive"),
            *reply.headers,
        ]
        try:
            out = self._conn.send(h11.Response(status_code=reply.status, headers=headers))
            if not head and reply.body:
                out += self._conn.send(h11.Data(data=reply.body))
            out += self._conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            log.warning("cannot reply on this connection: %s", exc)
            self._close()
            return
        self._transport.write(out)
        self._busy = False
        if self._conn.our_state is h11.MUST_CLOSE or self._conn.their_state is h11.MUST_CLOSE:
            self._close()
            return
        try:
            self._conn.start_next_cycle()
        except h11.LocalProtocolError:
            self._close()
            return
        self._process()  # a pipelined request may already be buffered

    # -- WebSocket ----------------------------------------------------------------------

    def _upgrade(self, request: Request, session: WebSocketSession) -> None:
        """Answer the handshake h11 has parsed; from here on the bytes are WebSocket frames."""
        assert self._transport is not None
        handshake = ServerProtocol()
        response = handshake.accept(
            WsRequest(request.target, Headers(list(request.headers.items()))))
        handshake.send_response(response)
        self._transport.write(b"".join(handshake.data_to_send()))
        if response.status_code != 101:
            self._close()
            return
        self._ws = ServerProtocol(state=State.OPEN)
        self._session = session
        trailing, _ = self._conn.trailing_data
        session.opened(WebSocketChannel(self))
        if trailing:
            self._ws_received(bytes(trailing))

    def _ws_received(self, data: bytes) -> None:
        assert self._ws is not None
        if self._session is not None and not self._session.responsive:
            return  # hung: no pongs, no close handshake
        self._ws.receive_data(data)
        self._ws.events_received()  # what a client says is not listened to
        self._flush_ws()

    def _flush_ws(self) -> None:
        if self._ws is None or self._transport is None or self._transport.is_closing():
            return
        for chunk in self._ws.data_to_send():
            if chunk:
                self._transport.write(chunk)
            else:  # end of stream: the closing handshake is done
                self._close()
                return
        if self._ws.close_expected():
            self._close()

    def _send_error(self, status: int) -> None:
        if self._transport is None:
            return
        if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = f'{{"error":"bad request ({status})"}}'.encode()
            try:
                out = self._conn.send(
                    h11.Response(
                        status_code=status,
                        headers=[
                            ("Content-Type", "application/json"),
                            ("Content-Length", str(len(body))),
                            ("Connection", "close"),
                        ],
                    )
                )
                out += self._conn.send(h11.Data(data=body))
                out += self._conn.send(h11.EndOfMessage())
                self._transport.write(out)
            except h11.LocalProtocolError:
                pass
        self._close()

    def _close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


def protocol_factory(
    handler: Handler, connections: set[asyncio.BaseTransport]
) -> Callable[[], HttpProtocol]:
    return lambda: HttpProtocol(handler, connections)
