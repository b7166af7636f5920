"""The CGMiner RPC transport: JSON over TCP 4028, one command per connection.

``request`` sends one command (or a joined ``a+b`` command), reads until the miner closes
or sends a NUL, bounded in time (one deadline for the whole exchange) and size (1 MiB),
and decodes the reply. The envelope (NUL, STATUS E/F, joined replies) and the repair of
the JSON real units send are pure functions here too.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import Any

from minerwatch.collector.drivers.reading import (
    PollError,
    decode_json,
    refused_reason,
    timeout_reason,
)

MAX_REPLY_BYTES = 1 << 20

#: Known malformations of real firmwares, applied only when a reply does not parse as is.
_REPAIRS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\}\s*\{"), "},{"),  # bmminer stats: objects with no comma between them
    (re.compile(r",\s*([}\]])"), r"\1"),  # trailing commas: ",}" and ",]"
    (re.compile(r"\[\s*,"), "["),  # "[,{"
    (re.compile(r'""(?=[A-Za-z_][\w ]*":)'), '"'),  # btminer: ""temp0":
    # bare inf / nan values (JSON has no such literals; no sensor means null)
    (re.compile(r"(:\s*)[-+]?(?:inf(?:inity)?|nan)(?=\s*[,}\]])", re.IGNORECASE), r"\1null"),
)


# --- envelope and repair (pure) -------------------------------------------------------


class StatusError(PollError):
    """A reply whose STATUS is E (error) or F (fatal). ``reply`` is kept: even an error
    says who answered (Whatsminer's ``version`` error names the firmware)."""

    def __init__(self, reason: str, reply: Mapping[str, Any]) -> None:
        super().__init__(reason)
        self.reply = reply


def repair_json(reply: str) -> str:
    for pattern, replacement in _REPAIRS:
        reply = pattern.sub(replacement, reply)
    return reply


def decode_reply(raw: bytes, *, check: bool = True) -> dict[str, Any]:
    """Raw bytes from the socket -> the reply object, repaired when needed.

    The reply ends at the first NUL. Raises PollError for empty, unrepairable and (with
    ``check``) error replies (STATUS E/F, as StatusError)."""
    body, nul, _ = raw.partition(b"\x00")
    if nul and not body.strip():  # a stray NUL before the reply
        body = raw.replace(b"\x00", b"")
    reply = body.decode("utf-8", errors="replace").strip()
    if not reply:
        raise PollError("bad reply: empty")
    try:
        data = json.loads(reply, strict=False)
    except (json.JSONDecodeError, RecursionError):
        data = decode_json(repair_json(reply))
    if not isinstance(data, dict):
        raise PollError("bad reply: not a JSON object")
    if check:
        check_status(data)
    return data


def check_status(reply: Mapping[str, Any]) -> None:
    """STATUS E (error) or F (fatal) -> StatusError naming the firmware's message."""
    status = reply.get("STATUS")
    message: object = None
    if isinstance(status, list) and status and isinstance(status[0], Mapping):
        code, message = status[0].get("STATUS"), status[0].get("Msg")
    elif isinstance(status, Mapping):  # new_api replies: one object
        code, message = status.get("STATUS"), status.get("Msg")
    elif isinstance(status, str):  # some Whatsminer replies
        code, message = status, reply.get("Msg")
    else:
        return
    if code in ("E", "F"):
        if not isinstance(message, str):
            message = json.dumps(message) if message is not None else "no message"
        reason = f"bad reply: STATUS {code}: {' '.join(message.split())[:100]}"
        raise StatusError(reason, reply)


def split_joined(
    reply: Mapping[str, Any], commands: Sequence[str]
) -> dict[str, dict[str, Any] | PollError]:
    """A joined reply ``{"summary":[{...}],"stats":[{...}]}`` -> each command's reply.

    Raises PollError when it is not a joined reply (the firmware refused the join); a
    part that is itself an error reply comes back as its StatusError."""
    results: dict[str, dict[str, Any] | PollError] = {}
    for command in commands:
        part = reply.get(command)
        if isinstance(part, list) and part:
            part = part[0]
        if not isinstance(part, dict):
            raise PollError(f"bad reply: no {command!r} in the joined reply")
        try:
            check_status(part)
        except StatusError as exc:
            results[command] = exc
        else:
            results[command] = part
    return results


def is_transport_failure(error: PollError) -> bool:
    """Failures that say nothing about the firmware (the miner is away or slow)."""
    return not error.reason.startswith("bad reply")


# --- I/O ------------------------------------------------------------------------------


async def request(
    host: str,
    port: int,
    command: str,
    timeout_s: float,
    parameter: str | None = None,
    *,
    options: Mapping[str, object] | None = None,
    deadline: float | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """Send one command, read until the peer closes (or a NUL), decode the reply.

    Bounded in time (``timeout_s`` for the whole exchange, or until ``deadline`` on the
    loop's clock when given: a slow trickle of bytes does not extend it) and in size
    (1 MiB). ``options`` are extra request keys (``{"new_api": True}``)."""
    payload: dict[str, object] = {"command": command}
    if parameter is not None:
        payload["parameter"] = parameter
    payload.update(options or {})
    if deadline is None:
        deadline = asyncio.get_running_loop().time() + timeout_s
    received = bytearray()
    try:
        async with asyncio.timeout_at(deadline):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(json.dumps(payload).encode())
                await writer.drain()
                while chunk := await reader.read(65536):
                    received += chunk
                    if len(received) > MAX_REPLY_BYTES:
                        raise PollError(f"bad reply: larger than {MAX_REPLY_BYTES} bytes")
                    if b"\x00" in chunk:  # the reply is complete
                        break
            finally:
                writer.close()
                with suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        if received:  # a firmware that forgets to close after a complete reply
            with suppress(PollError):
                return decode_reply(bytes(received), check=check)
        raise PollError(timeout_reason(timeout_s)) from None
    except ConnectionRefusedError:
        raise PollError(refused_reason(port)) from None
    except ConnectionResetError:
        if not received:
            raise PollError("reset without a reply") from None
    except OSError as exc:
        raise PollError(f"unreachable: {exc.strerror or exc}") from None
    return decode_reply(bytes(received), check=check)
