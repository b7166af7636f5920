"""``WS /ws``: live MQTT messages for the topic filters a client subscribes to.

Client to server: ``{"subscribe": "<filter>"}`` or ``{"unsubscribe": "<filter>"}``.
Server to client: ``{"topic": "...", "payload": <JSON value or text>}`` per message (the
current state of matching topics first), ``{"subscribed": "<filter>"}`` /
``{"unsubscribed": "<filter>"}`` acknowledging a command, and ``{"error": "<one line>"}``
for a command that cannot be done (the connection stays open).

A client that sends a command while ``MAX_UNREAD_REPLIES`` replies to its earlier commands
are still unsent (waiting in its backlog, or dropped from it) is closed with code 1008: it
keeps asking for work whose results it does not read (see ``relay``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Literal

import msgspec
from litestar import WebSocket, websocket
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect

from minerwatch.api.relay import FilterError, Relay, Subscriber, notice_frame
from minerwatch.shared.errors import one_line

log = logging.getLogger("minerwatch.api.ws")

MAX_COMMAND_BYTES = 4096
#: WebSocket close code "policy violation", for a client that does not read its replies.
CLOSE_NOT_READING = 1008

Action = Literal["subscribe", "unsubscribe"]
Socket = WebSocket[Any, Any, Any]


class CommandError(ValueError):
    """A client message that is not a command; ``str()`` is the one-line reason."""


class _Command(msgspec.Struct, forbid_unknown_fields=True):
    subscribe: str | None = None
    unsubscribe: str | None = None


_command_decoder = msgspec.json.Decoder(_Command)
_USAGE = 'send {"subscribe": "<topic filter>"} or {"unsubscribe": "<topic filter>"}'


def parse_command(data: str | bytes) -> tuple[Action, str]:
    if len(data) > MAX_COMMAND_BYTES:
        raise CommandError(f"message too long (at most {MAX_COMMAND_BYTES} bytes)")
    try:
        command = _command_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise CommandError(f"invalid command ({exc}): {_USAGE}") from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise CommandError(f"not JSON: {_USAGE}") from None
    if command.subscribe is not None and command.unsubscribe is None:
        return "subscribe", command.subscribe
    if command.unsubscribe is not None and command.subscribe is None:
        return "unsubscribe", command.unsubscribe
    raise CommandError(f"one command per message: {_USAGE}")


def command_data(message: dict[str, Any]) -> str | bytes:
    """The text or bytes of an ASGI ``websocket.receive`` event."""
    text = message.get("text")
    if isinstance(text, str):
        return text
    data = message.get("bytes")
    return data if isinstance(data, bytes) else b""


async def _send_frames(socket: Socket, subscriber: Subscriber) -> None:
    while True:
        await socket.send_text(await subscriber.next_frame())


def _handle(relay: Relay, subscriber: Subscriber, data: str | bytes) -> None:
    try:
        action, text = parse_command(data)
        if action == "subscribe":
            relay.subscribe(subscriber, text)
        else:
            relay.unsubscribe(subscriber, text)
    except (CommandError, FilterError) as exc:
        subscriber.push(notice_frame("error", str(exc)), reply=True)
    except Exception as exc:  # last resort: a command must not end the connection
        log.error("unexpected error handling a WebSocket command: %s", one_line(exc),
                  exc_info=exc)
        subscriber.push(notice_frame("error", "internal error (logged by the api)"), reply=True)


async def _handle_commands(socket: Socket, relay: Relay, subscriber: Subscriber) -> bool:
    """Serve commands until the client leaves (False) or must be closed (True)."""
    while True:
        message = await socket.receive()
        if message["type"] == "websocket.disconnect":
            return False
        if subscriber.ignores_replies:
            log.warning("closing a WebSocket client that sent another command with %d "
                        "replies to its earlier ones unread", subscriber.unread_replies)
            return True
        _handle(relay, subscriber, command_data(dict(message)))


@websocket("/ws", name="live")
async def live(socket: Socket, relay: NamedDependency[Relay]) -> None:
    await socket.accept()
    subscriber = relay.attach()
    sender = asyncio.create_task(_send_frames(socket, subscriber))
    close = False
    try:
        close = await _handle_commands(socket, relay, subscriber)
    except WebSocketDisconnect:
        pass
    finally:
        relay.detach(subscriber)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, OSError):
            await sender
    if close:
        # Already detached: from here on the client costs a coroutine and what the server
        # buffers for it. The close frame goes out once the client reads again.
        with contextlib.suppress(WebSocketDisconnect, OSError):
            await socket.close(CLOSE_NOT_READING, "too many replies left unread")
