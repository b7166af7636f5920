"""CGMiner RPC (Antminer bmminer first): JSON over TCP 4028, one command per connection.

The pure part repairs the JSON real units send and reads ``summary``, ``stats``, ``pools``
and ``version`` replies (shared/PROTOCOLS.md); ``CgminerDriver`` does the I/O with asyncio
streams, one connection per command, the commands of a poll running concurrently.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from minerwatch.collector.drivers.reading import (
    PollError,
    Reading,
    decode_json,
    timeout_reason,
)
from minerwatch.collector.drivers.values import (
    TEMP_MAX_C,
    count,
    dashed_numbers,
    non_negative,
    number,
    positive,
    si_number,
    temperature,
    text,
    tidy,
)

log = logging.getLogger("minerwatch.collector.cgminer")

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

#: Hashrate keys carry their unit and window: "GHS 5s", "MHS 30s", "GHS 30m".
_RATE_KEY = re.compile(r"^(THS|GHS|MHS|KHS) (\d+)([sm])$")
_RATE_DIVISORS = {"THS": 1.0, "GHS": 1e3, "MHS": 1e6, "KHS": 1e9}
_UNIT_DIVISORS = {"TH": 1.0, "GH": 1e3, "MH": 1e6, "KH": 1e9, "H": 1e12}
_CHIP_TEMP_KEY = re.compile(r"^(?:temp2_\d+|temp_chip\d+)$")
_BOARD_TEMP_KEY = re.compile(r"^(?:temp\d+|temp_pcb\d+)$")
_FAN_KEY = re.compile(r"^fan(\d+)$")
_FIRMWARE_KEYS = ("BMMiner", "CGMiner", "BOSminer", "BTMiner", "LUXminer", "bmminer", "cgminer")


# --- reply decoding (pure) ------------------------------------------------------------


def repair_json(reply: str) -> str:
    for pattern, replacement in _REPAIRS:
        reply = pattern.sub(replacement, reply)
    return reply


def decode_reply(raw: bytes) -> dict[str, Any]:
    """Raw bytes from the socket -> the reply object, repaired when needed.

    Raises PollError for empty, unrepairable or error (STATUS E/F) replies."""
    reply = raw.decode("utf-8", errors="replace").replace("\x00", "").strip()
    if not reply:
        raise PollError("bad reply: empty")
    try:
        data = json.loads(reply, strict=False)
    except (json.JSONDecodeError, RecursionError):
        data = decode_json(repair_json(reply))
    if not isinstance(data, dict):
        raise PollError("bad reply: not a JSON object")
    check_status(data)
    return data


def check_status(reply: Mapping[str, Any]) -> None:
    """STATUS E (error) or F (fatal) -> PollError naming the firmware's message."""
    status = reply.get("STATUS")
    message: object = None
    if isinstance(status, list) and status and isinstance(status[0], Mapping):
        code, message = status[0].get("STATUS"), status[0].get("Msg")
    elif isinstance(status, str):  # some Whatsminer replies
        code, message = status, reply.get("Msg")
    else:
        return
    if code in ("E", "F"):
        if not isinstance(message, str):
            message = json.dumps(message) if message is not None else "no message"
        raise PollError(f"bad reply: STATUS {code}: {' '.join(message.split())[:100]}")


def section(reply: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    """The objects of one section ("SUMMARY", "STATS"...), whatever its case."""
    value = reply.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in reply.items() if k.lower() == wanted), None)
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, Mapping)]
    return []


# --- reply parsing (pure) -------------------------------------------------------------


def hashrate_ths(block: Mapping[str, Any]) -> float | None:
    """The shortest-window hashrate in a block, in TH/s (GHS 5s, MHS 5s, MHS 30s...),
    else the lifetime average; 0.0 when the keys exist but hold nothing readable;
    None when the block reports no hashrate at all."""
    windows: list[tuple[int, str, float]] = []
    for key in block:
        match = _RATE_KEY.match(key)
        if match:
            seconds = int(match.group(2)) * (60 if match.group(3) == "m" else 1)
            windows.append((seconds, key, _RATE_DIVISORS[match.group(1)]))
    windows.sort()
    averages = [(f"{unit} av", divisor) for unit, divisor in _RATE_DIVISORS.items()]
    candidates = [(key, divisor) for _, key, divisor in windows]
    candidates += [(key, divisor) for key, divisor in averages if key in block]
    for key, divisor in candidates:
        value = non_negative(block[key])
        if value is not None:
            return tidy(value / divisor)
    return 0.0 if candidates else None


@dataclass(frozen=True, slots=True)
class Summary:
    hashrate_ths: float | None = None
    shares_accepted: int | None = None
    shares_rejected: int | None = None
    best_diff: float | None = None
    uptime_s: int | None = None
    power_w: float | None = None


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
    )


@dataclass(frozen=True, slots=True)
class Stats:
    hashrate_ths: float | None = None
    expected_hashrate_ths: float | None = None
    temp_c: float | None = None
    fan_rpm: list[int] = field(default_factory=list)
    miner_type: str | None = None


def _temperatures(value: object) -> Iterator[float]:
    """Chip/board temperatures from a number, a list, or a dash-joined string."""
    if isinstance(value, list):
        for item in value:
            yield from _temperatures(item)
        return
    if isinstance(value, str) and "-" in value.strip()[1:]:
        candidates: list[float | None] = list(dashed_numbers(value))
    else:
        candidates = [number(value)]
    for reading in candidates:
        # Unpopulated chains read 0 (or -1, -64): only positive, plausible values count.
        if reading is not None and 0 < reading < TEMP_MAX_C:
            yield reading


def parse_stats(reply: Mapping[str, Any]) -> Stats:
    """Antminer ``stats``: STATS[0] is a version block, STATS[1] the data (fans, temps)."""
    blocks = section(reply, "STATS")
    chip: list[float] = []
    board: list[float] = []
    fans: list[tuple[int, int]] = []
    rate: float | None = None
    expected: float | None = None
    miner_type: str | None = None
    for block in blocks:
        miner_type = miner_type or text(block.get("Type"))
        if rate is None:
            rate = hashrate_ths(block)
        ideal = positive(block.get("total_rateideal"))
        if ideal is not None and expected is None:
            unit = (text(block.get("rate_unit")) or "GH").upper().removesuffix("/S")
            if unit in _UNIT_DIVISORS:
                expected = tidy(ideal / _UNIT_DIVISORS[unit])
        for key, value in block.items():
            if _CHIP_TEMP_KEY.match(key):
                chip.extend(_temperatures(value))
            elif _BOARD_TEMP_KEY.match(key):
                board.extend(_temperatures(value))
            elif fan := _FAN_KEY.match(key):
                rpm = count(value)
                if rpm:  # fan slots that are not fitted read 0
                    fans.append((int(fan.group(1)), rpm))
        # Newer stock firmware with new_api: STATS[0].chain[] of per-board lists.
        for chain in block.get("chain") or []:
            if isinstance(chain, Mapping):
                chip.extend(_temperatures(chain.get("temp_chip")))
                board.extend(_temperatures(chain.get("temp_pcb")))
    temps = chip or board  # the hottest chip; boards only when no chip is reported
    return Stats(
        hashrate_ths=rate,
        expected_hashrate_ths=expected,
        temp_c=max(temps) if temps else None,
        fan_rpm=[rpm for _, rpm in sorted(fans)],
        miner_type=miner_type,
    )


def _is_true(value: object) -> bool:
    return value is True or value == 1 or (isinstance(value, str) and value.lower() == "true")


def _normalize_pool_url(url: str) -> str:
    url = url.strip()
    return url if "://" in url else f"stratum+tcp://{url}"


def parse_pools(reply: Mapping[str, Any]) -> str | None:
    """The active pool's URL: ``Stratum Active``, else the alive pool of lowest Priority."""
    pools = [p for p in section(reply, "POOLS") if text(p.get("URL"))]
    active = [p for p in pools if _is_true(p.get("Stratum Active"))]
    if not active:
        alive = [p for p in pools if str(p.get("Status", "")).lower() == "alive"]

        def priority(pool: Mapping[str, Any]) -> float:
            value = number(pool.get("Priority"))
            return value if value is not None else float("inf")

        active = sorted(alive, key=priority)
    url = text(active[0].get("URL")) if active else None
    return _normalize_pool_url(url) if url else None


@dataclass(frozen=True, slots=True)
class Identity:
    make: str | None = None
    model: str | None = None
    firmware: str | None = None


def identity_from_type(miner_type: str | None) -> Identity:
    if not miner_type:
        return Identity()
    if miner_type.lower().startswith("antminer"):
        return Identity(make="Antminer", model=miner_type[len("antminer") :].strip() or None)
    return Identity(model=miner_type)


def parse_version(reply: Mapping[str, Any]) -> Identity:
    """Antminer ``{"BMMiner","CompileTime","Type":"Antminer S19 Pro"}``; Avalon ``PROD``."""
    blocks = section(reply, "VERSION")
    block = blocks[0] if blocks else {}
    identity = identity_from_type(text(block.get("Type")))
    product = text(block.get("PROD"))
    if identity.model is None and product:
        make = "Avalon" if product.lower().startswith("avalon") else None
        identity = Identity(make=make, model=text(block.get("MODEL")) or product)
    firmware = None
    for key in _FIRMWARE_KEYS:
        version = text(block.get(key))
        if version:
            firmware = f"{key} {version}"
            break
    firmware = firmware or text(block.get("LVERSION")) or text(block.get("Firmware Version"))
    compiled = text(block.get("CompileTime"))
    if firmware and compiled:
        firmware = f"{firmware} ({compiled})"
    return Identity(identity.make, identity.model, firmware)


def build_reading(
    summary: Summary,
    stats: Stats | None = None,
    pool_url: str | None = None,
    identity: Identity | None = None,
) -> Reading:
    """Combine the parsed replies of one poll; only ``summary`` is required."""
    stats = stats or Stats()
    rate = summary.hashrate_ths if summary.hashrate_ths is not None else stats.hashrate_ths
    if rate is None:
        raise PollError("bad reply: no hashrate in summary")
    if identity is None or identity.model is None:
        fallback = identity_from_type(stats.miner_type)
        firmware = identity.firmware if identity else None
        identity = Identity(fallback.make, fallback.model, firmware)
    return Reading(
        hashrate_ths=rate,
        expected_hashrate_ths=stats.expected_hashrate_ths,
        power_w=summary.power_w,
        temp_c=temperature(stats.temp_c),
        fan_rpm=list(stats.fan_rpm),
        shares_accepted=summary.shares_accepted,
        shares_rejected=summary.shares_rejected,
        best_diff=summary.best_diff,
        uptime_s=summary.uptime_s,
        pool_url=pool_url,
        is_mining=rate > 0,
        make=identity.make,
        model=identity.model,
        firmware=identity.firmware,
    )


# --- I/O ------------------------------------------------------------------------------


async def request(
    host: str, port: int, command: str, timeout_s: float, parameter: str | None = None
) -> dict[str, Any]:
    """Send one command, read until the peer closes (or a NUL), decode the reply.

    Bounded in time (``timeout_s`` for the whole exchange) and in size (1 MiB)."""
    payload: dict[str, str] = {"command": command}
    if parameter is not None:
        payload["parameter"] = parameter
    received = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
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
                return decode_reply(bytes(received))
        raise PollError(timeout_reason(timeout_s)) from None
    except ConnectionRefusedError:
        raise PollError("connection refused") from None
    except ConnectionResetError:
        if not received:
            raise PollError("connection reset without a reply") from None
    except OSError as exc:
        raise PollError(f"connection failed: {exc.strerror or exc}") from None
    return decode_reply(bytes(received))


class CgminerDriver:
    """Polls one CGMiner-API miner: summary, stats and pools each poll, version once."""

    name = "cgminer"

    def __init__(self, host: str, port: int, timeout_s: float, keepalive_s: float = 30.0):
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._identity: Identity | None = None
        self._identity_stale = False
        self._uptime_s: int | None = None
        self._aux_errors: dict[str, str] = {}

    async def _command(self, command: str) -> dict[str, Any]:
        return await request(self.host, self.port, command, self.timeout_s)

    async def fetch(self) -> Reading:
        commands = ["summary", "stats", "pools"]
        if self._identity is None or self._identity_stale:
            commands.append("version")
        replies = await asyncio.gather(
            *(self._command(c) for c in commands), return_exceptions=True
        )
        results = dict(zip(commands, replies, strict=True))
        summary_reply = results.pop("summary")
        if isinstance(summary_reply, BaseException):
            raise summary_reply
        summary = parse_summary(summary_reply)
        # A miner that restarted may have new firmware: ask for its version again next poll.
        previous, self._uptime_s = self._uptime_s, summary.uptime_s
        if previous is not None and summary.uptime_s is not None and summary.uptime_s < previous:
            self._identity_stale = True

        parsed: dict[str, Any] = {}
        parsers = {"stats": parse_stats, "pools": parse_pools, "version": parse_version}
        for command, reply in results.items():
            try:
                if isinstance(reply, BaseException):
                    raise reply
                parsed[command] = parsers[command](reply)
            except Exception as exc:  # a side reply never fails the poll: summary answered
                reason = exc.reason if isinstance(exc, PollError) else f"internal error: {exc!r}"
                self._note_aux_error(command, reason)
            else:
                self._aux_errors.pop(command, None)
        if "version" in parsed:
            self._identity, self._identity_stale = parsed["version"], False
        return build_reading(summary, parsed.get("stats"), parsed.get("pools"), self._identity)

    def _note_aux_error(self, command: str, reason: str) -> None:
        # The poll still counts (summary answered); say so once per new reason, not per poll.
        if self._aux_errors.get(command) != reason:
            self._aux_errors[command] = reason
            log.warning("%s:%d: %s failed (%s); its fields stay null",
                        self.host, self.port, command, reason)

    async def aclose(self) -> None:
        """Nothing held between polls: one connection per command."""
