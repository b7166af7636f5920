"""The parts of CGMiner-API replies every firmware family shares (pure functions).

Sections (``SUMMARY``, ``STATS``, ``POOLS``...), the hashrate keys that carry their unit and
window (``GHS 5s``, ``MHS 30s``), the summary and pool fields, and ``build_reading``, which
merges what a family's parsers found into one Reading. The family modules (``antminer``,
``whatsminer``, ``avalon``) read their own replies into ``Details``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from minerwatch.collector.drivers.reading import PollError, Reading
from minerwatch.collector.drivers.values import (
    count,
    non_negative,
    number,
    positive,
    si_number,
    temperature,
    text,
    tidy,
)

#: Hashrate keys carry their unit and window: "GHS 5s", "MHS 30s", "GHS 30m".
_RATE_KEY = re.compile(r"^(THS|GHS|MHS|KHS) (\d+)([sm])$")
RATE_DIVISORS = {"THS": 1.0, "GHS": 1e3, "MHS": 1e6, "KHS": 1e9}
#: ``rate_unit`` values ("GH", "GH/s", "MH/s") -> divisor to TH/s.
UNIT_DIVISORS = {"TH": 1.0, "GH": 1e3, "MH": 1e6, "KH": 1e9, "H": 1e12}


def section(reply: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    """The objects of one section ("SUMMARY", "STATS"...), whatever its case.

    Whatsminer's newer API sends ``{"STATUS":"S","Msg":{...the section...}}``: with no
    section of that name, an object ``Msg`` is the section."""
    value = reply.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in reply.items() if k.lower() == wanted), None)
    if value is None and isinstance(reply.get("Msg"), Mapping):
        value = reply["Msg"]
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, Mapping)]
    return []


def first_block(reply: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    blocks = section(reply, name)
    return blocks[0] if blocks else {}


def rate_divisor(unit: object, default: str = "GH") -> float | None:
    """``"GH"``, ``"GH/s"``, ``"MH/s"`` -> the divisor to TH/s; None when unknown."""
    name = (text(unit) or default).upper().removesuffix("/S")
    return UNIT_DIVISORS.get(name)


def hashrate_ths(block: Mapping[str, Any]) -> float | None:
    """The shortest-window hashrate in a block, in TH/s (GHS 5s, MHS 5s, MHS 30s...),
    else the lifetime average; 0.0 when the keys exist but hold nothing readable;
    None when the block reports no hashrate at all."""
    windows: list[tuple[int, str, float]] = []
    for key in block:
        match = _RATE_KEY.match(key)
        if match:
            seconds = int(match.group(2)) * (60 if match.group(3) == "m" else 1)
            windows.append((seconds, key, RATE_DIVISORS[match.group(1)]))
    windows.sort()
    candidates = [(key, divisor) for _, key, divisor in windows]
    candidates += [(f"{unit} av", divisor) for unit, divisor in RATE_DIVISORS.items()
                   if f"{unit} av" in block]
    for key, divisor in candidates:
        value = non_negative(block[key])
        if value is not None:
            return tidy(value / divisor)
    return 0.0 if candidates else None


@dataclass(frozen=True, slots=True)
class Summary:
    """The fields of a ``summary`` reply every cgminer-family firmware sends."""

    hashrate_ths: float | None = None
    shares_accepted: int | None = None
    shares_rejected: int | None = None
    best_diff: float | None = None
    uptime_s: int | None = None
    power_w: float | None = None
    blocks_found: int | None = None


def parse_summary(reply: Mapping[str, Any]) -> Summary:
    blocks = section(reply, "SUMMARY")
    if not blocks:
        raise PollError("bad reply: no SUMMARY section")
    block = blocks[0]
    return Summary(
        hashrate_ths=hashrate_ths(block),
        shares_accepted=count(block.get("Accepted")),
        shares_rejected=count(block.get("Rejected")),
        best_diff=si_number(block.get("Best Share")),
        uptime_s=count(block.get("Elapsed")),
        # Only firmwares that measure power send it (Whatsminer); stock Antminer: none.
        power_w=positive(block.get("Power")),
        blocks_found=count(block.get("Found Blocks")),
    )


def is_true(value: object) -> bool:
    return value is True or value == 1 or (isinstance(value, str) and value.lower() == "true")


def _normalize_pool_url(url: str) -> str:
    url = url.strip()
    return url if "://" in url else f"stratum+tcp://{url}"


@dataclass(frozen=True, slots=True)
class Pools:
    """What a ``pools`` reply says about the pool in use: its URL, whether it is a fallback
    (not the first by Priority) and whether it is up (``Status`` Alive). None: not said."""

    url: str | None = None
    fallback: bool | None = None
    connected: bool | None = None


def _priority(pool: Mapping[str, Any]) -> float:
    value = number(pool.get("Priority"))
    return value if value is not None else float("inf")


def _alive(pool: Mapping[str, Any]) -> bool:
    return str(pool.get("Status", "")).lower() == "alive"


def parse_pools(reply: Mapping[str, Any]) -> Pools:
    """The pool in use: ``Stratum Active``, else the alive pool of lowest Priority. It is
    a fallback when a pool of lower Priority is configured; connected when Alive. With no
    pool configured nothing is said; with none in use, the connection is down."""
    pools = [p for p in section(reply, "POOLS") if text(p.get("URL"))]
    if not pools:
        return Pools()
    active = [p for p in pools if is_true(p.get("Stratum Active"))]
    in_use = active[0] if active else min(
        (p for p in pools if _alive(p)), key=_priority, default=None)
    if in_use is None:
        return Pools(connected=False)
    first = min(_priority(p) for p in pools)
    mine = _priority(in_use)
    url = text(in_use.get("URL"))
    return Pools(
        url=_normalize_pool_url(url) if url else None,
        fallback=None if mine == float("inf") else mine > first,
        connected=_alive(in_use),
    )


@dataclass(frozen=True, slots=True)
class Identity:
    make: str | None = None
    model: str | None = None
    firmware: str | None = None
    mac: str | None = None

    def over(self, other: Identity | None) -> Identity:
        """This identity, its gaps filled from ``other``."""
        if other is None:
            return self
        return Identity(*(getattr(self, f.name) or getattr(other, f.name)
                          for f in fields(Identity)))


@dataclass(frozen=True, slots=True)
class Details:
    """What one side reply (stats, estats, devdetails, a family's summary fields) adds."""

    hashrate_ths: float | None = None  # used only when the summary has none
    expected_hashrate_ths: float | None = None
    power_w: float | None = None
    temp_c: float | None = None
    fan_rpm: list[int] | None = None  # None: not reported here
    paused: bool = False  # the firmware says it is not hashing (standby, sleep)
    identity: Identity = field(default_factory=Identity)

    def with_identity(self, identity: Identity) -> Details:
        return replace(self, identity=identity)


def _first(values: Iterable[Any]) -> Any:
    return next((v for v in values if v is not None), None)


def build_reading(
    summary: Summary,
    details: Sequence[Details] = (),
    pools: Pools | None = None,
    identity: Identity | None = None,
) -> Reading:
    """Combine the parsed replies of one poll; only ``summary`` is required.

    The summary's own fields win; each other field comes from the first ``details`` that
    has it. ``identity`` (from ``version``) wins over what side replies say."""
    rate = summary.hashrate_ths
    if rate is None:
        rate = _first(d.hashrate_ths for d in details)
    if rate is None:
        raise PollError("bad reply: no hashrate in summary")
    merged = identity or Identity()
    for item in details:
        merged = merged.over(item.identity)
    paused = any(d.paused for d in details)
    pools = pools or Pools()
    return Reading(
        hashrate_ths=rate,
        expected_hashrate_ths=_first(d.expected_hashrate_ths for d in details),
        power_w=summary.power_w if summary.power_w is not None
        else _first(d.power_w for d in details),
        temp_c=temperature(_first(d.temp_c for d in details)),
        fan_rpm=list(_first(d.fan_rpm for d in details) or []),
        shares_accepted=summary.shares_accepted,
        shares_rejected=summary.shares_rejected,
        best_diff=summary.best_diff,
        uptime_s=summary.uptime_s,
        pool_url=pools.url,
        is_mining=rate > 0 and not paused,
        pool_fallback=pools.fallback,
        pool_connected=pools.connected,
        blocks_found=summary.blocks_found,
        make=merged.make,
        model=merged.model,
        firmware=merged.firmware,
        mac=merged.mac,
    )
