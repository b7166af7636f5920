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

Control is audited: a ``CommandResult`` on ``command/result`` becomes a ``CommandRow``
(none for the read-only actions, ``schemas.READ_ONLY_ACTIONS``), a ``TuneProgress`` on
``tune`` a ``TuneRow``: the run and every step so far. Pool passwords never reach a row
(the collector leaves them out; the store makes sure), and a step's non-finite reading
is null.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeAlias, cast

import msgspec
from sqlalchemy import BigInteger, Integer, String, Table
from sqlalchemy.types import TypeEngine

from minerwatch.shared import db, topics
from minerwatch.shared.messages import Rejected, decode_message
from minerwatch.shared.schemas import (
    READ_ONLY_ACTIONS,
    AlertEvent,
    CommandResult,
    MinerInfo,
    MinerSettings,
    MinerStatus,
    Sample,
    TuneProgress,
    finite,
)
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


@dataclass(frozen=True, slots=True)
class CommandRow:
    """A command's result: its ``command_events`` row."""

    values: Values


@dataclass(frozen=True, slots=True)
class TuneRow:
    """An autotune run's progress: its ``tune_runs`` row in ``values``, its steps'
    ``tune_steps`` rows in ``steps``."""

    values: Values
    steps: tuple[Values, ...]


Row: TypeAlias = (SampleRow | InfoRow | StatusRow | AlertRow | ForgetRow | CommandRow
                  | TuneRow)
#: What one message comes to: a row, a reason it was refused, or nothing to store.
Routed: TypeAlias = Row | Rejected | None

#: The topics that are history (service status, label and mute topics are not; nor
#: commands: their results are the audit).
HISTORY_TOPICS = (topics.SAMPLE, topics.STATUS, topics.INFO, topics.ALERT,
                  topics.COMMAND_RESULT, topics.TUNE)


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


def settings_json(settings: MinerSettings | None) -> Values | None:
    """Settings as their JSON column holds them: every field, pool passwords removed."""
    if settings is None:
        return None
    values = msgspec.to_builtins(settings)
    for pool in (values.get("pools") or {}).values():
        if pool is not None:
            pool["password"] = None
    return cast(Values, values)


def command_row(result: CommandResult) -> Values:
    return {
        "id": result.id, "miner_id": result.miner_id, "ts_ms": db.ts_to_ms(result.ts),
        "requested_ms": db.ts_to_ms(result.requested), "action": result.action,
        "by": result.by, "status": result.status, "message": result.message,
        "changed": list(result.changed), "before": settings_json(result.before),
        "after": settings_json(result.after),
    }


_STEP_READINGS = ("hashrate_ths", "expected_ths", "power_w", "efficiency_jth", "temp_c",
                  "vr_temp_c", "reject_ratio")


def tune_rows(progress: TuneProgress) -> TuneRow:
    run = {
        "run_id": progress.run_id, "miner_id": progress.miner_id,
        "objective": progress.objective, "state": progress.state, "by": progress.by,
        "started_ms": db.ts_to_ms(progress.started), "ts_ms": db.ts_to_ms(progress.ts),
        "best": progress.best, "original": settings_json(progress.original),
        "applied": settings_json(progress.applied), "message": progress.message,
    }
    steps = []
    for step in progress.steps:
        values = msgspec.structs.asdict(step)
        values["ts_ms"] = db.ts_to_ms(values.pop("ts"))
        for name in _STEP_READINGS:
            values[name] = finite(values[name])
        values["run_id"], values["miner_id"] = progress.run_id, progress.miner_id
        steps.append(values)
    return TuneRow(run, tuple(steps))


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
    elif isinstance(message, CommandResult):
        if message.action in READ_ONLY_ACTIONS:
            return None  # it changed nothing: not audited
        row, table = CommandRow(command_row(message)), db.command_events
    elif isinstance(message, TuneProgress):
        tune = tune_rows(message)
        problem = next((p for p in (misfit(db.tune_steps, step) for step in tune.steps)
                        if p is not None), None)
        if problem is not None:
            return Rejected(topic, decoded.spec.name, f"a step's {problem}")
        row, table = tune, db.tune_runs
    else:
        return None  # deleted (empty), or a service's state
    problem = misfit(table, row.values)
    if problem is not None:
        return Rejected(topic, decoded.spec.name, problem)
    return row
