"""The one decode path: (topic, payload bytes) to a typed message, or a one-line reason.

``decode_message`` is what every service calls on every message it receives. It never
raises: whatever arrives (invalid UTF-8, nesting deep enough to exhaust a recursive
decoder, numbers no sensor produces, wrong types, a wrong ``schema``, a payload naming
another miner than its topic) comes back as ``Rejected`` with a reason fit for one log
line. What it accepts is a ``Received``: the topic's registry entry, its parameters and
the payload as its schema-1 Struct, with impossible readings set to ``null`` by the rule
in ``fields`` (``sanitize``), and of a ``ServiceStats`` only the metrics the registry
in ``metrics`` admits for its service.

An empty payload is the deletion of a retained message: ``Received`` with ``message`` None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeAlias

import msgspec

from minerwatch.shared import fields, metrics, topics
from minerwatch.shared.errors import one_line
from minerwatch.shared.schemas import (
    SCHEMA_VERSION,
    AlertEvent,
    Command,
    CommandResult,
    MinerInfo,
    MinerLabel,
    MinerStatus,
    Mute,
    Sample,
    ServiceStats,
    TuneProgress,
)

#: A service's state on ``{base}/services/{service}/status`` (plain text, not JSON).
ServiceState: TypeAlias = Literal["online", "offline"]
SERVICE_STATES: tuple[ServiceState, ...] = ("online", "offline")

Payload: TypeAlias = (Sample | MinerStatus | MinerInfo | MinerLabel | AlertEvent | Mute
                      | ServiceStats | Command | CommandResult | TuneProgress | str)

#: Brackets deeper than this are refused before any decoder sees them. Our payloads
#: nest two levels; a recursive decoder would fail somewhere near a thousand.
MAX_DEPTH = 32
#: Larger payloads are refused unread (ours are a few hundred bytes; the store's broker
#: link already refuses packets over 1 MiB).
MAX_PAYLOAD = 64 * 1024

PAYLOAD_TYPES: dict[str, type[msgspec.Struct]] = {
    "Sample": Sample, "MinerStatus": MinerStatus, "MinerInfo": MinerInfo,
    "MinerLabel": MinerLabel, "AlertEvent": AlertEvent, "Mute": Mute,
    "ServiceStats": ServiceStats, "Command": Command, "CommandResult": CommandResult,
    "TuneProgress": TuneProgress,
}
_DECODERS = {name: msgspec.json.Decoder(kind) for name, kind in PAYLOAD_TYPES.items()}


@dataclass(slots=True)  # not frozen: one is built per message, and frozen costs a microsecond
class Received:
    """A message that decoded. ``miner_id`` and ``name`` (the rule or the service) come
    from the topic; ``message`` is None for an empty payload (a retained message deleted)."""

    topic: str
    spec: topics.TopicSpec
    miner_id: str | None
    name: str | None
    message: Payload | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that did not decode; ``kind`` is the topic's registry name (or
    ``topic`` when the topic itself is not ours), ``reason`` one line."""

    topic: str
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.topic[:200]}: {self.reason}"


Decoded: TypeAlias = Received | Rejected


class _Refused(ValueError):
    """Raised inside the decoder only; becomes a Rejected."""


def nesting_depth_exceeds(payload: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON ``payload`` nests arrays or objects deeper than ``limit``, read without
    recursion. Brackets inside strings do not count."""
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return False  # the common case, answered by two C-speed counts
    depth = 0
    in_string = False
    escaped = False
    for byte in payload:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


#: (name, low, high, is a list, required) of every bounded field, for ``sanitize``.
_BOUNDS = tuple(
    (f.name, -math.inf if f.minimum is None else f.minimum,
     math.inf if f.maximum is None else f.maximum, f.type == "list[int]", f.required)
    for f in fields.BOUNDED)


def sanitize(sample: Sample) -> Sample:
    """The sample with impossible readings removed, by the rule in ``fields``: optional
    values out of range (NaN and infinities included) become None, out-of-range fan
    speeds are dropped; a required value out of range raises ValueError."""
    for name, low, high, is_list, required in _BOUNDS:
        value = getattr(sample, name)
        if value is None:
            continue
        if is_list:
            if not all(low <= item <= high for item in value):
                setattr(sample, name, [item for item in value if low <= item <= high])
        elif not low <= value <= high:  # also False for NaN
            if required:
                raise _Refused(f"{name} {value!r} is not a possible reading "
                               f"({low:g} to {high:g})")
            setattr(sample, name, None)
    return sample


def _finite(name: str, value: float | None, *, required: bool) -> float | None:
    if value is None or value - value == 0:  # NaN and infinities fail the difference
        return value
    if required:
        raise _Refused(f"{name} {value!r} is not a finite number")
    return None


def _check_ts(name: str, value: str | None) -> None:
    """The pattern of a Timestamp does not rule out ``2026-13-45``: parse it."""
    if value is None:
        return
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise _Refused(f"{name} {value!r} is not a real moment") from None


def _same(name: str, in_payload: str, in_topic: str | None) -> None:
    if in_payload != in_topic:
        raise _Refused(f"payload {name} {in_payload[:80]!r} does not match the topic's "
                       f"{in_topic!r}")


def _checked(message: Any, miner_id: str | None, name: str | None) -> Payload:
    """Checks no type can express, per payload type."""
    if isinstance(message, Sample):
        if message.schema != SCHEMA_VERSION:
            raise _Refused(f"schema {message.schema!r} is not supported (expected "
                           f"{SCHEMA_VERSION})")
        _same("miner_id", message.miner_id, miner_id)
        _check_ts("ts", message.ts)
        return sanitize(message)
    if isinstance(message, MinerStatus):
        _check_ts("since", message.since)
        _check_ts("last_seen", message.last_seen)
        if not 0 <= message.failures <= 2**31 - 1:
            raise _Refused(f"failures {message.failures} is out of range")
        return message
    if isinstance(message, MinerInfo):
        _same("miner_id", message.miner_id, miner_id)
        if not 0 <= message.port <= 65535:
            raise _Refused(f"port {message.port} is not a TCP port")
        return message
    if isinstance(message, MinerLabel):
        _check_ts("ts", message.ts)
        return message
    if isinstance(message, Mute):
        _same("id", message.id, name)
        _check_ts("until", message.until)
        _check_ts("created", message.created)
        return message
    if isinstance(message, AlertEvent):
        _same("miner_id", message.miner_id, miner_id)
        _same("rule", message.rule, name)
        _check_ts("ts", message.ts)
        _check_ts("since", message.since)
        message.threshold = _finite("threshold", message.threshold, required=True) or 0.0
        message.value = _finite("value", message.value, required=False)
        return message
    if isinstance(message, ServiceStats):
        _same("service", message.service, name)
        _check_ts("ts", message.ts)
        # Only what the registry gives this service, so a publisher bounds nothing itself.
        message.metrics = metrics.admitted(message.service, message.metrics)
        return message
    if isinstance(message, Command):
        _same("miner_id", message.miner_id, miner_id)
        _check_ts("ts", message.ts)
        if (message.action == "configure") != (message.settings is not None):
            raise _Refused("settings come with the configure action, and only with it")
        return message
    if isinstance(message, CommandResult):
        if miner_id is not None:  # a reply topic names the requester, not the miner
            _same("miner_id", message.miner_id, miner_id)
        _check_ts("requested", message.requested)
        _check_ts("ts", message.ts)
        return message
    if isinstance(message, TuneProgress):
        _same("miner_id", message.miner_id, miner_id)
        _check_ts("started", message.started)
        _check_ts("ts", message.ts)
        for step in message.steps:
            _check_ts("ts", step.ts)
        return message
    raise _Refused(f"unexpected payload type {type(message).__name__}")


def decode_payload(spec: topics.TopicSpec, payload: bytes, *, miner_id: str | None = None,
                   name: str | None = None) -> Payload:
    """The payload of one message of ``spec`` as its type; ValueError (one line) if not."""
    if len(payload) > MAX_PAYLOAD:
        raise _Refused(f"payload of {len(payload)} bytes, over {MAX_PAYLOAD}")
    if spec.payload == "ServiceState":
        text = payload.decode("utf-8")  # UnicodeDecodeError is a ValueError
        if text not in SERVICE_STATES:
            raise _Refused(f"{text[:40]!r} is not online or offline")
        return text
    if nesting_depth_exceeds(payload):
        raise _Refused(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        message = _DECODERS[spec.payload].decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _Refused(f"not a {spec.payload}: {one_line(exc)}") from None
    return _checked(message, miner_id, name)


def decode_message(base: str, topic: str, payload: bytes | bytearray | memoryview | str
                   ) -> Decoded:
    """A typed message or the reason it is not one; never raises."""
    try:
        found = topics.match_topic(base, topic)
        if found is None:
            return Rejected(topic, topics.topic_label(base, topic),
                            "not a schema 1 topic (bad miner id, name or level)")
        spec, miner_id, name = found
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        elif not isinstance(payload, bytes):
            payload = bytes(payload)
        if not payload:
            return Received(topic, spec, miner_id, name, None)
        return Received(topic, spec, miner_id, name,
                        decode_payload(spec, payload, miner_id=miner_id, name=name))
    except (ValueError, RecursionError, MemoryError) as exc:
        return Rejected(topic, topics.topic_label(base, topic), one_line(exc))
    except Exception as exc:  # a case nobody foresaw: still one line, never a crash
        return Rejected(topic, topics.topic_label(base, topic),
                        f"undecodable ({type(exc).__name__}: {one_line(exc)})")
