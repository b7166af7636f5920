"""Commands to the collector over MQTT v5 request/response, and waiting for their result.

Each command goes out on ``{base}/miners/{miner_id}/command`` (QoS 1, not retained) with
the response topic ``{base}/replies/api-<random per process>`` and the command's id as
correlation data. The collector answers there (and on ``command/result``, for the
audit); the relay, which hears all of ``{base}/#``, hands what arrives on our response
topic to ``receive``, which wakes the request waiting for that correlation data.

Bounded: at most ``max_pending`` commands wait at once (more: ``TooManyCommands``), each
at most ``timeout_s`` (then ``CommandTimeout``); a result nobody waits for (late, or
forged) is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from minerwatch.api.relay import Relay
from minerwatch.shared.messages import Rejected, decode_message
from minerwatch.shared.schemas import (
    Action,
    Command,
    CommandResult,
    MinerSettings,
    TuneRequest,
    encode,
    now_ts,
)
from minerwatch.shared.topics import command_topic, reply_topic

log = logging.getLogger("minerwatch.api.commands")

#: Commands waiting for their result at once, at most.
MAX_PENDING = 256


class TooManyCommands(Exception):
    """More commands are waiting than the api lets wait; one line for the client."""


class CommandTimeout(Exception):
    """The collector did not answer in time; one line for the client."""


def new_command_id() -> str:
    """16 random bytes, urlsafe: fits ``CommandId`` (``[A-Za-z0-9_-]{1,64}``)."""
    return secrets.token_urlsafe(16)


class Commander:
    """Sends commands through the relay's MQTT session and matches their results."""

    def __init__(self, relay: Relay, timeout_s: float, *, max_pending: int = MAX_PENDING
                 ) -> None:
        self.relay = relay
        self.timeout_s = timeout_s
        self.max_pending = max(max_pending, 1)
        self.requester = f"api-{secrets.token_hex(6)}"
        self.reply_topic = reply_topic(relay.base, self.requester)
        self._pending: dict[bytes, asyncio.Future[CommandResult]] = {}
        #: Results that came for no waiting command (late or forged), since start.
        self.unexpected = 0
        relay.reply_handlers[self.reply_topic] = self.receive

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def send(self, miner_id: str, action: Action, by: str, *,
                   settings: MinerSettings | None = None, tune: TuneRequest | None = None
                   ) -> CommandResult:
        """Publish the command and wait for its result. BrokerUnavailable when it cannot
        be published, TooManyCommands, CommandTimeout."""
        if len(self._pending) >= self.max_pending:
            raise TooManyCommands(f"{len(self._pending)} commands are waiting for the "
                                  "collector already: try again shortly")
        command = Command(id=new_command_id(), miner_id=miner_id, action=action, by=by,
                          ts=now_ts(), settings=settings, tune=tune)
        key = command.id.encode()
        waiter: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._pending[key] = waiter
        try:
            await self.relay.publish(
                command_topic(self.relay.base, miner_id), encode(command), retain=False,
                properties={"response_topic": self.reply_topic, "correlation_data": key})
            async with asyncio.timeout(self.timeout_s):
                return await waiter
        except TimeoutError:
            raise CommandTimeout(
                f"the collector did not answer the {action} command for {miner_id} within "
                f"{self.timeout_s:g} s (is minerwatch-collector running and connected?)"
            ) from None
        finally:
            self._pending.pop(key, None)

    def receive(self, payload: bytes, properties: dict[str, Any]) -> None:
        """A message on our response topic: the result of the command its correlation
        data names, if one is waiting."""
        correlation = properties.get("correlation_data")
        waiter = self._pending.get(correlation) if isinstance(correlation, bytes) else None
        if waiter is None or waiter.done():
            self.unexpected += 1
            log.debug("a result for no waiting command on %s, dropped", self.reply_topic)
            return
        decoded = decode_message(self.relay.base, self.reply_topic, payload)
        if isinstance(decoded, Rejected) or not isinstance(decoded.message, CommandResult):
            log.warning("the result on %s does not decode, dropped: %s", self.reply_topic,
                        decoded if isinstance(decoded, Rejected) else "empty payload")
            return
        if decoded.message.id.encode() != correlation:
            log.warning("the result on %s names command %r, not its correlation data: "
                        "dropped", self.reply_topic, decoded.message.id)
            return
        waiter.set_result(decoded.message)
