"""CGMiner RPC (Antminer, Whatsminer, Avalon, any cgminer): JSON over TCP 4028.

This module is the transport (one command per connection, read until the miner closes,
bounded in time and size), the envelope (NUL, STATUS, joined ``a+b`` replies), the repair of
the JSON real units send, and the family dispatch: ``version`` says which family a miner
is, and each family's module (``antminer``, ``whatsminer``, ``avalon``) reads its replies.

A poll asks every command at once as one joined command (``summary+stats+pools``); a
firmware that refuses joined commands (or never answers them) is asked them one per
connection, and the driver remembers which of the two works for that miner. The same goes
for richer requests: an Antminer whose ``stats`` has no sensors is asked
``{"command":"stats","new_api":true}`` once, and keeps being asked it only if that has them.
Everything a poll does shares one deadline: the poll timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from minerwatch.collector.drivers import antminer, avalon, whatsminer
from minerwatch.collector.drivers.antminer import parse_stats
from minerwatch.collector.drivers.cgminer_fields import (
    Details,
    Identity,
    Summary,
    build_reading,
    first_block,
    hashrate_ths,
    parse_pools,
    parse_summary,
    section,
)
from minerwatch.collector.drivers.reading import (
    PollError,
    Reading,
    decode_json,
    timeout_reason,
)
from minerwatch.collector.drivers.values import text

log = logging.getLogger("minerwatch.collector.cgminer")

MAX_REPLY_BYTES = 1 << 20
#: After this many polls in a row with a summary but no ``version`` answer, stop asking it.
MAX_VERSION_FAILURES = 3
#: After this many joined commands in a row without any reply (before one ever worked),
#: ask one command per connection.
MAX_JOINED_SILENCES = 2

#: Known malformations of real firmwares, applied only when a reply does not parse as is.
_REPAIRS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\}\s*\{"), "},{"),  # bmminer stats: objects with no comma between them
    (re.compile(r",\s*([}\]])"), r"\1"),  # trailing commas: ",}" and ",]"
    (re.compile(r"\[\s*,"), "["),  # "[,{"
    (re.compile(r'""(?=[A-Za-z_][\w ]*":)'), '"'),  # btminer: ""temp0":
    # bare inf / nan values (JSON has no such literals; no sensor means null)
    (re.compile(r"(:\s*)[-+]?(?:inf(?:inity)?|nan)(?=\s*[,}\]])", re.IGNORECASE), r"\1null"),
)

__all__ = [
    "CgminerDriver",
    "Details",
    "Family",
    "Identity",
    "StatusError",
    "Summary",
    "build_reading",
    "check_status",
    "decode_reply",
    "family_of",
    "hashrate_ths",
    "parse_pools",
    "parse_stats",
    "parse_summary",
    "parse_version",
    "repair_json",
    "request",
    "section",
    "split_joined",
]


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


# --- families (pure) ------------------------------------------------------------------


Parser = Callable[[Mapping[str, Any]], Details]


@dataclass(frozen=True)
class Family:
    """One kind of cgminer-API firmware: what to ask each poll and how to read it."""

    name: str
    #: Commands asked every poll besides ``summary``.
    commands: tuple[str, ...]
    #: Commands asked only while the identity is unknown (after start and restarts).
    identity_commands: tuple[str, ...] = ()
    #: Per command, the family's reader of that reply (``summary`` too: extra fields).
    parsers: Mapping[str, Parser] = field(default_factory=dict)
    #: The identity in this family's ``version`` reply.
    version: Callable[[Mapping[str, Any]], Identity] = lambda _: Identity()
    #: Request options to try for a command whose plain reply has no temperatures and no
    #: fans (newer Antminer firmware keeps them in ``stats`` with ``new_api``).
    richer: Mapping[str, Mapping[str, object]] = field(default_factory=dict)


def _generic_version(reply: Mapping[str, Any]) -> Identity:
    block = first_block(reply, "VERSION")
    for key in antminer.FIRMWARE_KEYS:
        version = text(block.get(key))
        if version:
            return Identity(firmware=f"{key} {version}")
    return Identity()


ANTMINER = Family("antminer", ("stats", "pools"), parsers={"stats": parse_stats},
                  version=antminer.parse_version, richer={"stats": {"new_api": True}})
WHATSMINER = Family(
    "whatsminer", ("pools",), identity_commands=("devdetails",),
    parsers={"summary": whatsminer.parse_summary, "devdetails": whatsminer.parse_devdetails},
    version=lambda _: Identity(make=whatsminer.MAKE),
)
AVALON = Family("avalon", ("estats", "pools"), parsers={"estats": avalon.parse_estats},
                version=avalon.parse_version)
#: Any other cgminer: the legacy stats keys (tempN, fanN) are cgminer conventions.
GENERIC = Family("cgminer", ("stats", "pools"), parsers={"stats": parse_stats},
                 version=_generic_version)
FAMILIES = {family.name: family for family in (ANTMINER, WHATSMINER, AVALON, GENERIC)}


def _description(reply: Mapping[str, Any]) -> str:
    status = reply.get("STATUS")
    if isinstance(status, list) and status and isinstance(status[0], Mapping):
        status = status[0]
    source = status if isinstance(status, Mapping) else reply
    return str(source.get("Description") or "").lower()


def family_of(version: Mapping[str, Any]) -> Family:
    """Which family answered ``version`` (the reply, or the error reply it gave)."""
    description = _description(version)
    if "whatsminer" in description or "btminer" in description:
        return WHATSMINER
    block = first_block(version, "VERSION")
    if "BTMiner" in block:
        return WHATSMINER
    miner_type = (text(block.get("Type")) or "").lower()
    if miner_type.startswith("antminer") or "BMMiner" in block:
        return ANTMINER
    if avalon.is_avalon_version(block):
        return AVALON
    return GENERIC


def family_of_summary(reply: Mapping[str, Any]) -> Family | None:
    """A second opinion from ``summary`` when ``version`` said nothing useful."""
    if "whatsminer" in _description(reply):
        return WHATSMINER
    if whatsminer.is_whatsminer_summary(first_block(reply, "SUMMARY")):
        return WHATSMINER
    return None


def parse_version(reply: Mapping[str, Any]) -> Identity:
    """make, model and firmware from a ``version`` reply, whatever the family."""
    return family_of(reply).version(reply)


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
        raise PollError("connection refused") from None
    except ConnectionResetError:
        if not received:
            raise PollError("connection reset without a reply") from None
    except OSError as exc:
        raise PollError(f"connection failed: {exc.strerror or exc}") from None
    return decode_reply(bytes(received), check=check)


def _is_transport_failure(error: PollError) -> bool:
    """Failures that say nothing about the firmware (the miner is away or slow)."""
    return not error.reason.startswith("bad reply")


class CgminerDriver:
    """Polls one CGMiner-API miner: the family's commands each poll, ``version`` (and the
    family's identity commands) once, and again after the miner restarted."""

    name = "cgminer"

    def __init__(self, host: str, port: int, timeout_s: float, keepalive_s: float = 30.0):
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.family: Family | None = None
        #: Does this firmware answer joined commands (None: not known yet)?
        self.joined: bool | None = None
        self._identity: Identity | None = None
        self._identity_stale = False
        self._uptime_s: int | None = None
        self._version_failures = 0  # polls in a row where summary answered, version not
        self._joined_silences = 0
        #: Commands asked with options (alone: a joined command carries none), and the
        #: commands whose richer form was tried already (for good or not).
        self._options: dict[str, Mapping[str, object]] = {}
        self._richer_tried: set[str] = set()
        self._aux_errors: dict[str, str] = {}

    async def fetch(self) -> Reading:
        # One deadline for the whole poll, every step and fallback included.
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        identify = self._identity is None or self._identity_stale
        summary_reply, results, identified = await self._first_step(deadline, identify)
        summary = parse_summary(summary_reply)
        family = self._settle_family(summary_reply)
        wanted = [*family.commands, *(family.identity_commands if identify else ())]
        missing = [command for command in wanted if command not in results]
        if missing:  # the family became known during this poll: its own commands now
            results.update(await self._ask(missing, deadline))
        self._notice_restart(summary)

        details: list[Details] = []
        if summary_parser := family.parsers.get("summary"):
            details.append(summary_parser(summary_reply))
        pool_url: str | None = None
        for command in wanted:
            reply = results.get(command)
            try:
                if isinstance(reply, PollError):
                    raise reply
                if reply is None:
                    continue
                if command == "pools":
                    pool_url = parse_pools(reply)
                elif parser := family.parsers.get(command):
                    details.append(parser(reply))
                    self._consider_richer(family, command, details[-1])
            except Exception as exc:  # a side reply never fails the poll: summary answered
                reason = exc.reason if isinstance(exc, PollError) else f"internal error: {exc!r}"
                self._note_aux_error(command, reason)
                self._options.pop(command, None)  # a richer form that fails: plain again
            else:
                self._aux_errors.pop(command, None)
        if identified:  # what the identity commands found joins the version's identity
            for item in details:
                self._identity = (self._identity or Identity()).over(item.identity)
        return build_reading(summary, details, pool_url, self._identity)

    async def _first_step(
        self, deadline: float, identify: bool
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any] | PollError], bool]:
        """The summary (PollError when it fails) and the other replies of the family's
        commands, with ``version`` alongside when the family or identity is unknown: not
        before, so a firmware whose version hangs is still polled within the timeout."""
        known = self.family
        version: asyncio.Task[bool] | None = None
        if (known is None or identify) and self._version_failures < MAX_VERSION_FAILURES:
            version = asyncio.ensure_future(self._identify(deadline))
        try:
            if known is None:  # what every family answers; the rest once version tells
                first = ["summary", "pools"]
            else:
                first = ["summary", *known.commands]
                if identify:
                    first += known.identity_commands
            results = await self._ask(first, deadline)
            identified = await version if version is not None else False
        finally:
            if version is not None and not version.done():
                version.cancel()
        summary_reply = results.pop("summary")
        if isinstance(summary_reply, PollError):
            raise summary_reply
        if version is not None:  # the miner answers; does its version?
            self._version_failures = 0 if identified else self._version_failures + 1
        return summary_reply, results, identified

    def _settle_family(self, summary_reply: Mapping[str, Any]) -> Family:
        if self.family in (None, GENERIC) and (guess := family_of_summary(summary_reply)):
            self.family = guess  # btminer firmwares whose version reply says nothing
        elif self.family is None and self._version_failures >= MAX_VERSION_FAILURES:
            log.warning("%s:%d: no version reply in %d polls; polling it as a plain cgminer",
                        self.host, self.port, self._version_failures)
            self.family = GENERIC
        return self.family or GENERIC

    async def _identify(self, deadline: float) -> bool:
        """Ask ``version``: it names the family and the model. An error reply is an
        answer too (btminer's names itself); no answer leaves the family unknown."""
        try:
            reply = await request(self.host, self.port, "version", self.timeout_s,
                                  deadline=deadline, check=False)
        except PollError as exc:
            self._note_aux_error("version", exc.reason)
            return False
        self._aux_errors.pop("version", None)
        family = family_of(reply)
        if self.family is not None and family is not self.family:
            log.info("%s:%d: now answers as %s (was %s)", self.host, self.port,
                     family.name, self.family.name)
            self._forget_firmware()
        self.family = family
        self._identity = family.version(reply)
        self._identity_stale = False
        return True

    async def _ask(
        self, commands: Sequence[str], deadline: float
    ) -> dict[str, dict[str, Any] | PollError]:
        """Every command's reply (or its error). Those with request options go alone (a
        joined command carries none), beside the others."""
        alone = [command for command in commands if command in self._options]
        together = [command for command in commands if command not in self._options]
        joined, *singles = await asyncio.gather(
            self._together(together, deadline),
            *(self._single(command, deadline) for command in alone),
        )
        return {**joined, **dict(zip(alone, singles, strict=True))}

    async def _together(
        self, commands: Sequence[str], deadline: float
    ) -> dict[str, dict[str, Any] | PollError]:
        """Joined into one command when the firmware takes that, else one per connection."""
        if len(commands) > 1 and self.joined is not False:
            try:
                reply = await request(self.host, self.port, "+".join(commands),
                                      self.timeout_s, deadline=deadline)
                results = split_joined(reply, commands)
            except PollError as exc:
                if _is_transport_failure(exc):  # no answer: singles would fare no better
                    self._joined_no_answer(exc)
                    return dict.fromkeys(commands, exc)
                if self.joined is None:
                    log.info("%s:%d: joined commands refused (%s): asking one at a time",
                             self.host, self.port, exc.reason)
                    self.joined = False
            else:
                self.joined = True
                self._joined_silences = 0
                return results
        replies = await asyncio.gather(
            *(self._single(command, deadline) for command in commands)
        )
        return dict(zip(commands, replies, strict=True))

    def _joined_no_answer(self, error: PollError) -> None:
        # A firmware may choke on a joined command instead of refusing it (no reply at
        # all). Until a join has worked once, a few silences in a row mean "do not join".
        if self.joined is None and error.reason != "connection refused":
            self._joined_silences += 1
            if self._joined_silences >= MAX_JOINED_SILENCES:
                log.info("%s:%d: no reply to joined commands %d times: asking one at a time",
                         self.host, self.port, self._joined_silences)
                self.joined = False

    async def _single(self, command: str, deadline: float) -> dict[str, Any] | PollError:
        try:
            return await request(self.host, self.port, command, self.timeout_s,
                                 options=self._options.get(command), deadline=deadline)
        except PollError as exc:
            return exc

    def _consider_richer(self, family: Family, command: str, found: Details) -> None:
        """A plain reply without sensors: try the family's richer form of the command once,
        and keep it only if it has them."""
        if command not in family.richer or (found.temp_c is not None or found.fan_rpm):
            return
        if command in self._options:  # the richer form had nothing either: back to plain
            del self._options[command]
        elif command not in self._richer_tried:
            self._richer_tried.add(command)
            self._options[command] = family.richer[command]
            log.info("%s:%d: %s has no temperatures or fans; trying %s", self.host,
                     self.port, command, json.dumps(family.richer[command]))

    def _notice_restart(self, summary: Summary) -> None:
        # A miner that restarted may have new firmware: ask for its identity next poll.
        previous, self._uptime_s = self._uptime_s, summary.uptime_s
        if previous is not None and summary.uptime_s is not None and summary.uptime_s < previous:
            self._identity_stale = True
            self._version_failures = 0
            self._forget_firmware()

    def _forget_firmware(self) -> None:
        """New firmware may take joined commands and richer requests differently."""
        self.joined = None
        self._joined_silences = 0
        self._options.clear()
        self._richer_tried.clear()

    def _note_aux_error(self, command: str, reason: str) -> None:
        # The poll still counts (summary answered); say so once per new reason, not per poll.
        if self._aux_errors.get(command) != reason:
            self._aux_errors[command] = reason
            log.warning("%s:%d: %s failed (%s); its fields stay null",
                        self.host, self.port, command, reason)

    async def aclose(self) -> None:
        """Nothing held between polls: one connection per command."""
