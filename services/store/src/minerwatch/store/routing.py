"""From one MQTT message to one database row: pure, no I/O.

``route`` hands the message to the one decode path (``shared.messages.decode_message``),
which knows the topics and the payloads, and turns what it accepts into the row for the
writer. Its own checks are the database's: a value longer than its column, a NUL
character, an integer outside its column's range (``misfit``), and a sample older than
the raw retention (``Horizon``), whose rollups are already gone. Whatever is refused
comes back as a ``Rejected`` with a one-line reason; ``route`` raises only on what nobody
foresaw, which the consumer's last-resort guard catches.

An empty ``info`` payload is a miner being forgotten (its retained topics cleared): it
becomes a ``ForgetRow`` that stamps ``miners.forgotten_ms`` with the time it arrived,
keeping the miner's history. The miner's ``label`` and the ``mute`` topics are not
history: the store does not subscribe to them (the label reaches it inside the info).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeAlias

from sqlalchemy import BigInteger, Integer, String, Table
from sqlalchemy.types import TypeEngine

from minerwatch.shared import db, topics
from minerwatch.shared.messages import Rejected, decode_message
from minerwatch.shared.schemas import AlertEvent, MinerInfo, MinerStatus, Sample
from minerwatch.store.retention import Horizon

Values = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SampleRow:
    values: Values


@dataclass(frozen=True, slots=True)
class InfoRow:
    values: Values


@dataclass(frozen=True, slots=True)
class StatusRow:
    values: Values


@dataclass(frozen=True, slots=True)
class AlertRow:
    values: Values


@dataclass(frozen=True, slots=True)
class ForgetRow:
    """A miner forgotten: ``miner_id`` and ``forgotten_ms``, when the store learnt it."""

    values: Values


Row: TypeAlias = SampleRow | InfoRow | StatusRow | AlertRow | ForgetRow
#: What one message comes to: a row, a reason it was refused, or nothing to store.
Routed: TypeAlias = Row | Rejected | None

#: The topics that are history (service status, label and mute topics are not).
HISTORY_TOPICS = (topics.SAMPLE, topics.STATUS, topics.INFO, topics.ALERT)


def subscriptions(base: str) -> list[str]:
    """Every topic filter the store reads."""
    return [spec.filter(base) for spec in HISTORY_TOPICS]


_INT_RANGES: dict[type[TypeEngine[Any]], tuple[int, int]] = {
    Integer: (-(2**31), 2**31 - 1), BigInteger: (-(2**63), 2**63 - 1)}

#: Per table: its text columns with their length limit (None: none), and its integer
#: columns with their range. Other columns cannot misfit once a payload has decoded.
Limits: TypeAlias = tuple[tuple[tuple[str, int | None], ...], tuple[tuple[str, int, int], ...]]


@lru_cache(maxsize=16)
def _limits(table: Table) -> Limits:
    texts = tuple((c.name, c.type.length) for c in table.columns if isinstance(c.type, String))
    ints = tuple((c.name, *_INT_RANGES[type(c.type)]) for c in table.columns
                 if type(c.type) in _INT_RANGES)
    return texts, ints


def misfit(table: Table, values: Values) -> str | None:
    """Why a row cannot be stored in ``table`` on both engines, or None when it fits.

    Checked here so that one bad value is rejected alone instead of failing the
    transaction it would share with good rows.
    """
    texts, ints = _limits(table)
    for name, length in texts:
        value = values.get(name)
        if value is None:
            continue
        if length is not None and len(value) > length:
            return f"{name} is longer than {length} characters"
        if "\x00" in value:
            return f"{name} contains a NUL character"
    for name, low, high in ints:
        value = values.get(name)
        if value is not None and not low <= value <= high:
            return f"{name} {value} is out of range"
    return None


def now_ms() -> int:
    return int(time.time() * 1000)


def route(base: str, topic: str, payload: bytes | bytearray | memoryview | str, *,
          horizon: Horizon | None = None, clock: Callable[[], int] = now_ms) -> Routed:
    """The row one message stands for; a Rejected (one line, naming the topic) for a
    message the store cannot take; None for one with nothing to store (a service's
    status, an empty payload that deletes a retained message other than an info).
    ``clock`` (milliseconds) dates a forgotten miner."""
    decoded = decode_message(base, topic, payload)
    if isinstance(decoded, Rejected):
        return decoded
    message = decoded.message
    if message is None:
        if decoded.spec.name == topics.INFO.name and decoded.miner_id is not None:
            return ForgetRow({"miner_id": decoded.miner_id, "forgotten_ms": clock()})
        return None
    row: Row
    table: Table
    if isinstance(message, Sample):
        values = db.sample_row(message)
        if horizon is not None and horizon.too_old(values["ts_ms"]):
            return Rejected(topic, decoded.spec.name, "older than the raw retention "
                            f"({horizon.keep_raw_days:g} days)")
        row, table = SampleRow(values), db.samples
    elif isinstance(message, MinerStatus):
        assert decoded.miner_id is not None  # the registry: status topics name a miner
        row, table = StatusRow(db.status_row(decoded.miner_id, message)), db.miners
    elif isinstance(message, MinerInfo):
        row, table = InfoRow(db.info_row(message)), db.miners
    elif isinstance(message, AlertEvent):
        row, table = AlertRow(db.alert_row(message)), db.alert_events
    else:
        return None  # deleted (empty), or a service's state
    problem = misfit(table, row.values)
    if problem is not None:
        return Rejected(topic, decoded.spec.name, problem)
    return row
