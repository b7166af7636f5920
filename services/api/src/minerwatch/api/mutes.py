"""Mutes as the api makes and reads them: a checked ``Mute`` from a client's request, and
whether an alert is muted now.

A mute covers the alerts of its ``miner_id`` (null: every miner) and ``rule`` (null: every
rule) until ``until``; the alerts service clears it once expired, and until then the api
lists only the active ones.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from minerwatch.api.history import BadParameter
from minerwatch.api.models import MuteRequest
from minerwatch.shared.db import ts_to_ms
from minerwatch.shared.schemas import Mute, format_ts, parse_ts
from minerwatch.shared.topics import is_miner_id

#: The longest a mute may last: a year.
MAX_MUTE_S = 365 * 86400
MAX_REASON_CHARS = 200
_RULE_RE = re.compile(r"^[^/#+\x00-\x1f]{1,128}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def new_mute_id() -> str:
    """A fresh random id, one topic level of ``[a-z0-9]``."""
    return secrets.token_hex(6)


def _until(request: MuteRequest, now: datetime) -> datetime:
    if (request.until is None) == (request.for_s is None):
        raise BadParameter("until: give exactly one of until (a time) and for_s (seconds)")
    latest = now + timedelta(seconds=MAX_MUTE_S)
    if request.for_s is not None:
        if not 0 < request.for_s <= MAX_MUTE_S:
            raise BadParameter(f"for_s: must be more than 0 and at most {MAX_MUTE_S} "
                               f"(a year), got {request.for_s:g}")
        return now + timedelta(seconds=request.for_s)
    assert request.until is not None
    try:
        until = parse_ts(request.until)
    except ValueError:
        raise BadParameter(f"until: {request.until[:80]!r} is not an ISO 8601 timestamp "
                           "(e.g. 2026-11-22T10:00:00Z)") from None
    except OverflowError:
        raise BadParameter(f"until: {request.until[:80]!r} is out of range") from None
    if until <= now:
        raise BadParameter(f"until: {request.until[:80]!r} is not in the future")
    if until > latest:
        raise BadParameter(f"until: {request.until[:80]!r} is more than a year ahead")
    return until


def _reason(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    reason = text.strip()
    if len(reason) > MAX_REASON_CHARS or _CONTROL_RE.search(reason):
        raise BadParameter(f"reason: at most {MAX_REASON_CHARS} characters on one line")
    return reason


def new_mute(request: MuteRequest, *, now: datetime, mute_id: str) -> Mute:
    """The Mute a request asks for; BadParameter (one line naming the field) if it is wrong."""
    if request.miner_id is None and request.rule is None:
        raise BadParameter("miner_id: a mute needs a miner_id, a rule, or both")
    if request.miner_id is not None and not is_miner_id(request.miner_id):
        raise BadParameter(f"miner_id: {request.miner_id[:80]!r} is not a miner id "
                           "(1-64 characters of a-z, 0-9, _ and -)")
    if request.rule is not None and not _RULE_RE.match(request.rule):
        raise BadParameter(f"rule: {request.rule[:80]!r} is not a rule name (1-128 "
                           "characters, no /, # or +)")
    until = _until(request, now)
    return Mute(id=mute_id, miner_id=request.miner_id, rule=request.rule,
                until=format_ts(until), created=format_ts(now), reason=_reason(request.reason))


def is_active(mute: Mute, now_ms: int) -> bool:
    return ts_to_ms(mute.until) > now_ms


def covers(mute: Mute, miner_id: str, rule: str) -> bool:
    return mute.miner_id in (None, miner_id) and mute.rule in (None, rule)


def is_muted(mutes: Iterable[Mute], miner_id: str, rule: str, now_ms: int) -> bool:
    """Whether an active mute covers this miner's rule now."""
    return any(is_active(mute, now_ms) and covers(mute, miner_id, rule) for mute in mutes)


def active(mutes: Iterable[Mute], now_ms: int) -> list[Mute]:
    """The mutes still running, soonest to end first."""
    return sorted((mute for mute in mutes if is_active(mute, now_ms)),
                  key=lambda mute: (mute.until, mute.id))
