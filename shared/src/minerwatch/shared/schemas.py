"""Message payloads of schema 1: the public MQTT contract (docs/contract.md).

Every payload is a msgspec Struct. Encoding always writes every field (missing values
are ``null``, never absent); decoding ignores unknown fields so later schema additions
do not break older consumers.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar, cast

import msgspec

SCHEMA_VERSION = 1

#: ISO 8601 UTC with milliseconds, as every timestamp in the contract is written.
TS_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
Timestamp = Annotated[str, msgspec.Meta(pattern=TS_PATTERN)]
MinerId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_-]+$", max_length=64)]

#: A display name: any printable text (spaces and accents welcome), at most 100 characters.
Label = Annotated[str, msgspec.Meta(pattern=r"^[^\x00-\x1f\x7f]{1,100}$")]
#: A mute's id: one topic level of ``[a-z0-9_-]``.
MuteId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_-]{1,64}$")]
#: A rule name as it appears in a topic level (``config.RuleName``).
RuleName = Annotated[str, msgspec.Meta(pattern=r"^[^/#+\x00-\x1f]{1,128}$")]

MinerState = Literal["online", "offline", "idle"]
#: ``firing`` and ``resolved`` for conditions; ``event`` for a one-off that never resolves
#: (a new best difficulty, a block found).
AlertState = Literal["firing", "resolved", "event"]
Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")


def format_ts(moment: datetime) -> str:
    """``2026-11-22T10:00:00.123Z`` from an aware datetime (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_ts(text: str) -> datetime:
    """An aware UTC datetime from an ISO 8601 string; naive input means UTC.

    Raises ValueError with a readable message on anything else.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise ValueError(f"not an ISO 8601 timestamp: {text!r}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def now_ts() -> str:
    return format_ts(datetime.now(UTC))


class Sample(msgspec.Struct, kw_only=True):
    """One successful poll of one miner, normalized. Field names carry their units."""

    schema: int = SCHEMA_VERSION
    miner_id: MinerId
    ts: Timestamp
    hashrate_ths: float
    expected_hashrate_ths: float | None = None
    power_w: float | None = None
    efficiency_jth: float | None = None
    temp_c: float | None = None
    vr_temp_c: float | None = None
    fan_rpm: list[int] = msgspec.field(default_factory=list)
    shares_accepted: int | None = None
    shares_rejected: int | None = None
    best_diff: float | None = None
    uptime_s: int | None = None
    pool_url: str | None = None
    is_mining: bool = True
    pool_fallback: bool | None = None
    pool_connected: bool | None = None
    blocks_found: int | None = None


class MinerStatus(msgspec.Struct, kw_only=True):
    """Published retained on ``{base}/miners/{id}/status`` when the state changes, on every
    connect, and again while the miner answers so ``last_seen`` stays true."""

    state: MinerState
    reason: str | None = None
    since: Timestamp
    last_seen: Timestamp | None = None
    failures: int = 0


class MinerInfo(msgspec.Struct, kw_only=True):
    """Identity of a miner, retained on ``{base}/miners/{id}/info``."""

    miner_id: MinerId
    driver: str
    host: str
    port: int
    make: str | None = None
    model: str | None = None
    firmware: str | None = None
    hostname: str | None = None
    mac: str | None = None
    #: The display name (from the config's ``label``, or set through the api); null: none.
    label: Label | None = None


class MinerLabel(msgspec.Struct, kw_only=True):
    """A label set through the api, retained on ``{base}/miners/{id}/label``; the collector
    folds it into the miner's info (it wins over the config's). ``label`` null removes it."""

    label: Label | None
    ts: Timestamp


class Mute(msgspec.Struct, kw_only=True):
    """Silence notifications, retained on ``{base}/mutes/{id}`` until ``until``: alerts of
    ``miner_id`` (null: every miner) and ``rule`` (null: every rule) are still published and
    stored, with ``muted`` true, but nobody is notified. An empty payload lifts it."""

    id: MuteId
    miner_id: MinerId | None = None
    rule: RuleName | None = None
    until: Timestamp
    created: Timestamp
    reason: str | None = None


class AlertEvent(msgspec.Struct, kw_only=True):
    """A rule changing state, retained on ``{base}/alerts/{id}/{rule}``.

    ``value`` is what the rule measured and ``threshold`` what it compared it with (see the
    alert table in docs/contract.md for each built-in rule's meaning). The fields after
    ``ts`` were added within schema 1 (older consumers ignore them): ``label`` the miner's
    display name at the time, ``since`` when the condition began, ``muted`` whether a mute
    held its notification back.
    """

    miner_id: MinerId
    rule: str
    state: AlertState
    severity: Severity
    value: float | None
    threshold: float
    message: str
    ts: Timestamp
    label: str | None = None
    since: Timestamp | None = None
    muted: bool = False


#: A Prometheus metric or label name; a label value (bounded: hostile input stays small).
MetricName = Annotated[str, msgspec.Meta(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$", max_length=128)]
LabelName = Annotated[str, msgspec.Meta(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=64)]
LabelValue = Annotated[str, msgspec.Meta(max_length=128)]
#: A service's name as its topic level has it (``topics.SERVICE``).
ServiceName = Annotated[str, msgspec.Meta(pattern=r"^[^/#+\x00-\x1f]{1,128}$")]
#: The most metrics one ServiceStats may carry (each service publishes a few dozen at most).
MAX_SERVICE_METRICS = 256


class ServiceMetric(msgspec.Struct, kw_only=True):
    """One value of a service's own health (``shared.metrics`` names them). A summary
    carries the sum of its observations in ``value`` and how many there were in ``count``."""

    name: MetricName
    value: float
    labels: Annotated[dict[LabelName, LabelValue], msgspec.Meta(max_length=8)] = (
        msgspec.field(default_factory=dict))
    count: Annotated[int, msgspec.Meta(ge=0)] | None = None


class ServiceStats(msgspec.Struct, kw_only=True):
    """A service's own health, on ``{base}/services/{service}/stats`` every
    ``metrics.stats_interval_s`` (QoS 0, not retained); counters count since it started."""

    service: ServiceName
    ts: Timestamp
    metrics: Annotated[list[ServiceMetric], msgspec.Meta(max_length=MAX_SERVICE_METRICS)]


def efficiency(power_w: float | None, hashrate_ths: float | None) -> float | None:
    """J/TH, or None when either side is missing or the hashrate is zero."""
    if power_w is None or not hashrate_ths:
        return None
    return power_w / hashrate_ths


def finite(value: float | None) -> float | None:
    """None for NaN and infinities, which JSON cannot carry and no sensor means."""
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return value


T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[type, msgspec.json.Decoder[Any]] = {}


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def decode(payload: bytes | str, kind: type[T]) -> T:
    """Decode and validate a payload; raises msgspec.DecodeError (a ValueError) on bad input."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    return cast(T, decoder.decode(payload))


# --- control: commands, their results, autotune ----------------------------------------

#: What a command asks of a miner. ``settings`` reads the current settings and their
#: allowed ranges; ``configure`` changes settings; ``tune`` starts an autotune run and
#: ``tune_abort`` stops one (the miner gets back the settings it had).
Action = Literal["restart", "pause", "resume", "identify", "settings", "configure", "tune",
                 "tune_abort"]
ACTIONS: tuple[Action, ...] = ("restart", "pause", "resume", "identify", "settings",
                               "configure", "tune", "tune_abort")
#: The actions that change nothing and are not audited.
READ_ONLY_ACTIONS: frozenset[str] = frozenset({"settings"})
#: How a command ended. ``ok``: done and verified; ``refused``: not sent (out of range or
#: invalid: ``limits`` says what is allowed); ``disabled``: ``[control] enabled`` is off;
#: ``busy``: an autotune run holds the miner; ``unknown``: the collector polls no such
#: miner; ``unsupported``: this firmware cannot; ``failed``: the miner did not do it or
#: did not answer; ``unverified``: sent and acknowledged, but reading back did not show it.
CommandStatus = Literal["ok", "refused", "disabled", "busy", "unknown", "unsupported",
                        "failed", "unverified"]
#: A command's id: the MQTT correlation data and the audit record's key.
CommandId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
#: Who asked: ``token:<name>``, ``alerts``, ``cli``... (free text, bounded).
Requester = Annotated[str, msgspec.Meta(pattern=r"^[^\x00-\x1f\x7f]{1,100}$")]
FanMode = Literal["auto", "manual"]
Objective = Literal["efficiency", "hashrate"]
#: A stratum URL as a person writes it: ``stratum+tcp://pool.example:3333``.
PoolUrl = Annotated[str, msgspec.Meta(pattern=r"^[^\x00-\x20\x7f]{1,255}$")]
PoolText = Annotated[str, msgspec.Meta(pattern=r"^[^\x00-\x1f\x7f]{0,255}$")]


class Pool(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A stratum pool. ``password`` is only ever written, never read back or audited."""

    url: PoolUrl
    user: PoolText
    password: PoolText | None = None


class Pools(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    primary: Pool | None = None
    fallback: Pool | None = None


class MinerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A miner's settings: what ``configure`` changes (null: leave as it is) and what
    ``settings`` reads (null: this firmware does not say)."""

    frequency_mhz: int | None = None
    core_voltage_mv: int | None = None
    fan_mode: FanMode | None = None
    fan_percent: int | None = None
    temp_target_c: int | None = None
    pools: Pools | None = None


class Range(msgspec.Struct, kw_only=True):
    min: int
    max: int


class SettingsLimits(msgspec.Struct, kw_only=True):
    """What may be written: ``source`` says where the frequency and voltage bounds come
    from (``BM1370 (Gamma)``, narrowed by the firmware's own options, or the overclock
    bound); a null range means this setting cannot be changed on this miner."""

    frequency_mhz: Range | None = None
    core_voltage_mv: Range | None = None
    fan_percent: Range | None = None
    temp_target_c: Range | None = None
    source: str
    overclock: bool = False


class TuneRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    objective: Objective = "efficiency"
    #: Limits of this run; null: the ``[control.tune]`` defaults.
    chip_temp_max_c: Annotated[float, msgspec.Meta(gt=0, le=120)] | None = None
    vr_temp_max_c: Annotated[float, msgspec.Meta(gt=0, le=150)] | None = None


class Command(msgspec.Struct, kw_only=True):
    """A command, on ``{base}/miners/{miner_id}/command`` (QoS 1, not retained). MQTT v5
    requesters put a response topic under ``{base}/replies/`` and correlation data on it;
    the result goes there and always to ``{base}/miners/{miner_id}/command/result``."""

    id: CommandId
    miner_id: MinerId
    action: Action
    by: Requester
    ts: Timestamp
    settings: MinerSettings | None = None
    tune: TuneRequest | None = None


class CommandResult(msgspec.Struct, kw_only=True):
    """How a command ended, from the collector: the audit record. ``before`` and
    ``after`` are the settings read before and after a change (never pool passwords);
    ``changed`` the fields written (only those that differed); ``limits`` the ranges
    checked; ``settings`` what a ``settings`` command read."""

    id: CommandId
    miner_id: MinerId
    action: Action
    by: Requester
    status: CommandStatus
    message: str
    requested: Timestamp
    ts: Timestamp
    changed: list[str] = msgspec.field(default_factory=list)
    before: MinerSettings | None = None
    after: MinerSettings | None = None
    settings: MinerSettings | None = None
    limits: SettingsLimits | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


TuneState = Literal["running", "done", "aborted", "failed"]
#: The most steps one run records (the payload stays a few KB).
MAX_TUNE_STEPS = 200


class TuneStep(msgspec.Struct, kw_only=True):
    """One measured step of an autotune run. ``stable``: the step is kept (hashrate at
    least ``min_hashrate_ratio`` of what the frequency should give, temperatures under
    the limits, rejects under ``max_reject_ratio``); ``reason`` says why not."""

    index: int
    frequency_mhz: int
    core_voltage_mv: int
    ts: Timestamp
    stable: bool
    hashrate_ths: float | None = None
    expected_ths: float | None = None
    power_w: float | None = None
    efficiency_jth: float | None = None
    temp_c: float | None = None
    vr_temp_c: float | None = None
    reject_ratio: float | None = None
    reason: str | None = None


class TuneProgress(msgspec.Struct, kw_only=True):
    """An autotune run, retained on ``{base}/miners/{miner_id}/tune`` after every change:
    every step so far, the best (an index into ``steps``) and, at the end, what was
    applied (the best step, or ``original`` again on abort or failure)."""

    run_id: CommandId
    miner_id: MinerId
    objective: Objective
    state: TuneState
    #: What it is doing now, for people: ``settling 40/90 s at 550 MHz 1150 mV``.
    phase: str
    by: Requester
    started: Timestamp
    ts: Timestamp
    #: 0..1, an estimate.
    progress: float = 0.0
    original: MinerSettings | None = None
    steps: Annotated[list[TuneStep], msgspec.Meta(max_length=MAX_TUNE_STEPS)] = (
        msgspec.field(default_factory=list))
    best: int | None = None
    applied: MinerSettings | None = None
    message: str | None = None
