"""The CGMiner driver: one poll of one miner, and what it learns about its firmware.

A poll asks every command at once as one joined command (``summary+stats+pools``); a
firmware that refuses joined commands (or never answers them) is asked them one per
connection. The same goes for richer requests: an Antminer whose ``stats`` has no sensors
is asked ``{"command":"stats","new_api":true}`` once, and keeps being asked it only if that
has them. What the driver learned about one miner's firmware is in its ``Quirks``, and is
forgotten when the miner restarts (it may have new firmware). Everything a poll does
shares one deadline: the poll timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from minerwatch.collector.drivers.cgminer.families import (
    GENERIC,
    Family,
    family_of,
    family_of_summary,
)
from minerwatch.collector.drivers.cgminer.replies import (
    Details,
    Identity,
    Pools,
    build_reading,
    parse_pools,
    parse_summary,
)
from minerwatch.collector.drivers.cgminer.transport import (
    is_transport_failure,
    request,
    split_joined,
)
from minerwatch.collector.drivers.reading import PollError, Reading

log = logging.getLogger(__name__)

#: After this many polls in a row with a summary but no ``version`` answer, stop asking it.
MAX_VERSION_FAILURES = 3
#: After this many joined commands in a row without any reply (before one ever worked),
#: ask one command per connection.
MAX_JOINED_SILENCES = 2

Replies = dict[str, dict[str, Any] | PollError]


@dataclass(slots=True)
class Quirks:
    """What polling taught the driver about one miner's firmware."""

    #: The firmware family, once ``version`` (or ``summary``) told.
    family: Family | None = None
    #: make, model, firmware and MAC from ``version`` and the identity commands.
    identity: Identity | None = None
    #: The miner restarted since the identity was asked: ask again.
    identity_stale: bool = False
    #: Polls in a row where ``summary`` answered and ``version`` did not.
    version_failures: int = 0
    #: Does the firmware answer joined commands? None: not known yet.
    joined: bool | None = None
    #: Joined commands in a row that got no reply at all, before one ever worked.
    joined_silences: int = 0
    #: Commands asked with request options (their richer form, alone: a joined command
    #: carries none), and the commands whose richer form was tried already.
    options: dict[str, Mapping[str, object]] = field(default_factory=dict)
    richer_tried: set[str] = field(default_factory=set)
    #: The uptime of the last summary: a smaller one means the miner restarted.
    uptime_s: int | None = None

    @property
    def identify(self) -> bool:
        """Whether this poll asks for the identity."""
        return self.identity is None or self.identity_stale

    @property
    def ask_version(self) -> bool:
        return ((self.family is None or self.identify)
                and self.version_failures < MAX_VERSION_FAILURES)

    def answered_as(self, family: Family, identity: Identity) -> bool:
        """``version`` answered; True when the miner now answers as another family (what
        was learned about its old firmware is forgotten then)."""
        changed = self.family is not None and family is not self.family
        if changed:
            self.forget_firmware()
        self.family, self.identity, self.identity_stale = family, identity, False
        return changed

    def joined_silent(self, error: PollError) -> bool:
        """A joined command got no reply. A firmware may choke on one instead of refusing
        it: until a join has worked once, a few silences in a row mean "do not join".
        True when that was just decided."""
        if self.joined is not None or error.reason.startswith("refused"):
            return False
        self.joined_silences += 1
        if self.joined_silences < MAX_JOINED_SILENCES:
            return False
        self.joined = False
        return True

    def try_richer(self, family: Family, command: str, found: Details
                   ) -> Mapping[str, object] | None:
        """After a plain reply without sensors: the family's richer form of the command to
        try once (returned, and used from now on), or None. A richer form that had nothing
        either goes back to plain."""
        if command not in family.richer or found.temp_c is not None or found.fan_rpm:
            return None
        if command in self.options:
            del self.options[command]
        elif command not in self.richer_tried:
            self.richer_tried.add(command)
            self.options[command] = family.richer[command]
            return self.options[command]
        return None

    def noticed_uptime(self, uptime_s: int | None) -> bool:
        """True when the uptime went down: the miner restarted, maybe on new firmware, so
        its identity is asked again and its joined and richer answers learned anew."""
        previous, self.uptime_s = self.uptime_s, uptime_s
        if previous is None or uptime_s is None or uptime_s >= previous:
            return False
        self.identity_stale = True
        self.version_failures = 0
        self.forget_firmware()
        return True

    def forget_firmware(self) -> None:
        """New firmware may take joined commands and richer requests differently."""
        self.joined = None
        self.joined_silences = 0
        self.options.clear()
        self.richer_tried.clear()


class CgminerDriver:
    """Polls one CGMiner-API miner: the family's commands each poll, ``version`` (and the
    family's identity commands) once, and again after the miner restarted."""

    name = "cgminer"

    def __init__(self, host: str, port: int, timeout_s: float, keepalive_s: float = 30.0):
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.quirks = Quirks()
        self._aux_errors: dict[str, str] = {}  # the last reason logged per side command

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    async def fetch(self) -> Reading:
        # One deadline for the whole poll, every step and fallback included.
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        quirks = self.quirks
        identify = quirks.identify
        summary_reply, results, identified = await self._first_step(deadline, identify)
        summary = parse_summary(summary_reply)
        family = self._settle_family(summary_reply)
        wanted = [*family.commands, *(family.identity_commands if identify else ())]
        missing = [command for command in wanted if command not in results]
        if missing:  # the family became known during this poll: its own commands now
            results.update(await self._ask(missing, deadline))
        if quirks.noticed_uptime(summary.uptime_s):
            log.debug("%s: restarted: asking its identity again", self._where)

        details: list[Details] = []
        if summary_parser := family.parsers.get("summary"):
            details.append(summary_parser(summary_reply))
        pools: Pools | None = None
        for command in wanted:
            reply = results.get(command)
            try:
                if isinstance(reply, PollError):
                    raise reply
                if reply is None:
                    continue
                if command == "pools":
                    pools = parse_pools(reply)
                elif parser := family.parsers.get(command):
                    details.append(parser(reply))
                    self._consider_richer(family, command, details[-1])
            except Exception as exc:  # a side reply never fails the poll: summary answered
                reason = exc.reason if isinstance(exc, PollError) else f"internal error: {exc!r}"
                self._note_aux_error(command, reason)
                quirks.options.pop(command, None)  # a richer form that fails: plain again
            else:
                self._aux_errors.pop(command, None)
        if identified:  # what the identity commands found joins the version's identity
            for item in details:
                quirks.identity = (quirks.identity or Identity()).over(item.identity)
        return build_reading(summary, details, pools, quirks.identity)

    async def _first_step(
        self, deadline: float, identify: bool
    ) -> tuple[dict[str, Any], Replies, bool]:
        """The summary (PollError when it fails) and the other replies of the family's
        commands, with ``version`` alongside when the family or identity is unknown: not
        before, so a firmware whose version hangs is still polled within the timeout."""
        quirks = self.quirks
        known = quirks.family
        version: asyncio.Task[bool] | None = None
        if quirks.ask_version:
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
            quirks.version_failures = 0 if identified else quirks.version_failures + 1
        return summary_reply, results, identified

    def _settle_family(self, summary_reply: Mapping[str, Any]) -> Family:
        quirks = self.quirks
        if quirks.family in (None, GENERIC) and (guess := family_of_summary(summary_reply)):
            quirks.family = guess  # btminer firmwares whose version reply says nothing
        elif quirks.family is None and quirks.version_failures >= MAX_VERSION_FAILURES:
            log.warning("%s: no version reply in %d polls; polling it as a plain cgminer",
                        self._where, quirks.version_failures)
            quirks.family = GENERIC
        return quirks.family or GENERIC

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
        was = self.quirks.family
        if self.quirks.answered_as(family, family.version(reply)) and was is not None:
            log.info("%s: now answers as %s (was %s)", self._where, family.name, was.name)
        return True

    async def _ask(self, commands: Sequence[str], deadline: float) -> Replies:
        """Every command's reply (or its error). Those with request options go alone (a
        joined command carries none), beside the others."""
        options = self.quirks.options
        alone = [command for command in commands if command in options]
        together = [command for command in commands if command not in options]
        joined, *singles = await asyncio.gather(
            self._together(together, deadline),
            *(self._single(command, deadline) for command in alone),
        )
        return {**joined, **dict(zip(alone, singles, strict=True))}

    async def _together(self, commands: Sequence[str], deadline: float) -> Replies:
        """Joined into one command when the firmware takes that, else one per connection."""
        quirks = self.quirks
        if len(commands) > 1 and quirks.joined is not False:
            try:
                reply = await request(self.host, self.port, "+".join(commands),
                                      self.timeout_s, deadline=deadline)
                results = split_joined(reply, commands)
            except PollError as exc:
                if is_transport_failure(exc):  # no answer: singles would fare no better
                    if quirks.joined_silent(exc):
                        log.info("%s: no reply to joined commands %d times: asking one at "
                                 "a time", self._where, quirks.joined_silences)
                    return dict.fromkeys(commands, exc)
                if quirks.joined is None:
                    log.info("%s: joined commands refused (%s): asking one at a time",
                             self._where, exc.reason)
                    quirks.joined = False
            else:
                quirks.joined = True
                quirks.joined_silences = 0
                return results
        replies = await asyncio.gather(
            *(self._single(command, deadline) for command in commands)
        )
        return dict(zip(commands, replies, strict=True))

    async def _single(self, command: str, deadline: float) -> dict[str, Any] | PollError:
        try:
            return await request(self.host, self.port, command, self.timeout_s,
                                 options=self.quirks.options.get(command), deadline=deadline)
        except PollError as exc:
            return exc

    def _consider_richer(self, family: Family, command: str, found: Details) -> None:
        richer = self.quirks.try_richer(family, command, found)
        if richer is not None:
            log.info("%s: %s has no temperatures or fans; trying %s", self._where, command,
                     json.dumps(richer))

    def _note_aux_error(self, command: str, reason: str) -> None:
        # The poll still counts (summary answered); say so once per new reason, not per poll.
        if self._aux_errors.get(command) != reason:
            self._aux_errors[command] = reason
            log.warning("%s: %s failed (%s); its fields stay null", self._where, command,
                        reason)

    async def aclose(self) -> None:
        """Nothing held between polls: one connection per command."""
