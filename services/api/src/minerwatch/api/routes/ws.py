"""``WS /ws``: live MQTT messages for the topic filters a client subscribes to.

Client to server: ``{"subscribe": "<filter>"}`` or ``{"unsubscribe": "<filter>"}``.
Server to client: ``{"topic": "...", "payload": <JSON value or text>}`` per message (the
current state of matching topics first), ``{"subscribed": "<filter>"}`` /
``{"unsubscribed": "<filter>"}`` acknowledging a command, and ``{"error": "<one line>"}``
for a command that cannot be done (the connection stays open).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

import msgspec
from litestar import WebSocket, websocket
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect

from minerwatch.api.relay import FilterError, Relay, Subscriber, notice_frame

MAX_COMMAND_BYTES = 4096

Action = Literal["subscribe", "unsubscribe"]


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
    except msgspec.DecodeError:
        raise CommandError(f"not JSON: {_USAGE}") from None
    if (command.subscribe is None) == (command.unsubscribe is None):
        raise CommandError(f"one command per message: {_USAGE}")
    if command.subscribe is not None:
        return "subscribe", command.subscribe
    return "unsubscribe", command.unsubscribe  # type: ignore[return-value]


async def _send_frames(socket: WebSocket, subscriber: Subscriber) -> None:
    while True:
        await socket.send_text(await subscriber.next_frame())


async def _handle_commands(socket: WebSocket, relay: Relay, subscriber: Subscriber) -> None:
    while True:
        message = await socket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("text")
        if data is None:
            data = message.get("bytes") or b""
        try:
            action, text = parse_command(data)
            if action == "subscribe":
                relay.subscribe(subscriber, text)
            else:
                relay.unsubscribe(subscriber, text)
        except (CommandError, FilterError) as exc:
            subscriber.push(notice_frame("error", str(exc)), droppable=False)


@websocket("/ws", name="live")
async def live(socket: WebSocket, relay: NamedDependency[Relay]) -> None:
    await socket.accept()
    subscriber = relay.attach()
    sender = asyncio.create_task(_send_frames(socket, subscriber))
    try:
        await _handle_commands(socket, relay, subscriber)
    except WebSocketDisconnect:
        pass
    finally:
        relay.detach(subscriber)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, OSError):
            await sender
