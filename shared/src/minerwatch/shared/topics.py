"""Every topic of schema 1, once: the registry ``TOPICS`` and the one topic-filter matcher.

Each ``TopicSpec`` says what a topic is: its template under the base topic, the filter
that subscribes to all of its instances, the payload type, whether it is retained, its
QoS and who publishes it. Publishers build topic names from it, consumers subscribe with
its filters and route what arrives with ``match_topic``, and ``messages.decode_message``
decodes every payload by the type it names.

A miner id is one topic level of ``[a-z0-9_-]`` (at most 64 characters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

MINER_ID_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
_SLUG_DROP = re.compile(r"[^a-z0-9]+")
#: A rule or service name: one topic level of printable text without wildcards.
_NAME_RE = re.compile(r"^[^/#+\x00-\x1f]{1,128}$")

TopicName = Literal["sample", "status", "info", "label", "alert", "mute", "service", "stats",
                    "command", "command_result", "reply", "tune"]
MinerTopicKind = Literal["sample", "status", "info", "label"]
MINER_TOPIC_KINDS: tuple[MinerTopicKind, ...] = ("sample", "status", "info", "label")
#: The payload a TopicSpec carries, by name; ``messages`` maps these to types.
PayloadName = Literal["Sample", "MinerStatus", "MinerInfo", "MinerLabel", "AlertEvent",
                      "Mute", "ServiceState", "ServiceStats", "Command", "CommandResult",
                      "TuneProgress"]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic of the contract. ``template`` levels in braces are parameters:
    ``miner_id`` (a miner id), ``mute_id`` (a mute id, same pattern), ``rule``,
    ``service`` and ``requester`` (a name)."""

    name: TopicName
    template: str
    payload: PayloadName
    publisher: str
    description: str
    retained: bool = True
    qos: int = 1
    #: The template's levels after ``{base}``, split once (routing reads them per message).
    levels: tuple[str, ...] = field(init=False, repr=False, compare=False)

    #: (position, literal) and (position, parameter) of the levels, for ``parse``.
    _literals: tuple[tuple[int, str], ...] = field(init=False, repr=False, compare=False)
    _params: tuple[tuple[int, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        levels = tuple(self.template.split("/")[1:])
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "_literals", tuple(
            (i, level) for i, level in enumerate(levels) if not level.startswith("{")))
        object.__setattr__(self, "_params", tuple(
            (i, level[1:-1]) for i, level in enumerate(levels) if level.startswith("{")))

    def topic(self, base: str, **params: str) -> str:
        """The topic of one instance: ``SAMPLE.topic("minerwatch", miner_id="s19")``."""
        return self.template.format(base=base, **params)

    def filter(self, base: str) -> str:
        """The MQTT filter every instance matches: ``{base}/miners/+/sample``."""
        parts = ["+" if level.startswith("{") else level for level in self.levels]
        return "/".join((base, *parts))

    def parse(self, levels: list[str]) -> dict[str, str] | None:
        """The parameters of a topic's levels (after the base), or None if they do not fit."""
        if len(levels) != len(self.levels):
            return None
        for index, literal in self._literals:
            if levels[index] != literal:
                return None
        params: dict[str, str] = {}
        for index, key in self._params:
            got = levels[index]
            pattern = MINER_ID_RE if key in ("miner_id", "mute_id") else _NAME_RE
            if pattern.match(got) is None:
                return None
            params[key] = got
        return params


SAMPLE = TopicSpec(
    "sample", "{base}/miners/{miner_id}/sample", "Sample", "collector",
    "one Sample per successful poll")
STATUS = TopicSpec(
    "status", "{base}/miners/{miner_id}/status", "MinerStatus", "collector",
    "the miner's state (online, offline, idle), on change and on every connect")
INFO = TopicSpec(
    "info", "{base}/miners/{miner_id}/info", "MinerInfo", "collector",
    "the miner's identity and label, on change and on every connect")
LABEL = TopicSpec(
    "label", "{base}/miners/{miner_id}/label", "MinerLabel", "api",
    "a label set through the api; the collector folds it into the miner's info")
ALERT = TopicSpec(
    "alert", "{base}/alerts/{miner_id}/{rule}", "AlertEvent", "alerts",
    "a rule firing or resolving for one miner, or a one-off event")
MUTE = TopicSpec(
    "mute", "{base}/mutes/{mute_id}", "Mute", "api",
    "a mute of notifications until a time; empty when lifted (the alerts service "
    "clears expired ones)")
SERVICE = TopicSpec(
    "service", "{base}/services/{service}/status", "ServiceState", "every service",
    "online, or offline (also the service's Last Will)")
STATS = TopicSpec(
    "stats", "{base}/services/{service}/stats", "ServiceStats", "collector, store, alerts",
    "the service's own health (shared.metrics), every metrics.stats_interval_s",
    retained=False, qos=0)
COMMAND = TopicSpec(
    "command", "{base}/miners/{miner_id}/command", "Command", "api, alerts, admin",
    "a command for the collector to carry out (only the accounts the broker's ACL names "
    "may publish it); MQTT v5 requesters give a response topic under {base}/replies/",
    retained=False)
COMMAND_RESULT = TopicSpec(
    "command_result", "{base}/miners/{miner_id}/command/result", "CommandResult",
    "collector", "how every command ended: the audit record the store keeps",
    retained=False)
REPLY = TopicSpec(
    "reply", "{base}/replies/{requester}", "CommandResult", "collector",
    "a command's result again, on the response topic its requester gave (with its "
    "correlation data)", retained=False)
TUNE = TopicSpec(
    "tune", "{base}/miners/{miner_id}/tune", "TuneProgress", "collector",
    "an autotune run's progress and steps, after every change")

#: The registry: every topic minerwatch publishes.
TOPICS: tuple[TopicSpec, ...] = (SAMPLE, STATUS, INFO, LABEL, ALERT, MUTE, SERVICE, STATS,
                                 COMMAND, COMMAND_RESULT, REPLY, TUNE)
#: The retained topics of one miner (what forgetting it clears, besides its alerts).
MINER_TOPICS: tuple[TopicSpec, ...] = (SAMPLE, STATUS, INFO, LABEL, TUNE)
BY_NAME: dict[str, TopicSpec] = {spec.name: spec for spec in TOPICS}
#: Specs by (first level, number of levels): routing looks at one or two, not all.
_BY_SHAPE: dict[tuple[str, int], tuple[TopicSpec, ...]] = {}
for _spec in TOPICS:
    _shape = (_spec.levels[0], len(_spec.levels))
    _BY_SHAPE[_shape] = (*_BY_SHAPE.get(_shape, ()), _spec)


def is_miner_id(text: str) -> bool:
    return bool(MINER_ID_RE.match(text))


def slugify(text: str) -> str:
    """A valid miner id from free text: ``10.0.0.5:4028`` becomes ``10-0-0-5-4028``."""
    slug = _SLUG_DROP.sub("-", text.lower()).strip("-")[:64]
    return slug or "miner"


def mac_miner_id(mac: str) -> str | None:
    """``AA:BB:CC:DD:EE:FF`` becomes ``aabbccddeeff``; None when it is not a MAC address."""
    digits = re.sub(r"[^0-9a-f]", "", mac.lower())
    if len(digits) != 12 or digits == "000000000000":
        return None
    return digits


def miner_topic(base: str, miner_id: str, kind: MinerTopicKind) -> str:
    return f"{base}/miners/{miner_id}/{kind}"


def sample_topic(base: str, miner_id: str) -> str:
    return SAMPLE.topic(base, miner_id=miner_id)


def status_topic(base: str, miner_id: str) -> str:
    return STATUS.topic(base, miner_id=miner_id)


def info_topic(base: str, miner_id: str) -> str:
    return INFO.topic(base, miner_id=miner_id)


def label_topic(base: str, miner_id: str) -> str:
    return LABEL.topic(base, miner_id=miner_id)


def mute_topic(base: str, mute_id: str) -> str:
    return MUTE.topic(base, mute_id=mute_id)


def alert_topic(base: str, miner_id: str, rule: str) -> str:
    return ALERT.topic(base, miner_id=miner_id, rule=rule)


def service_status_topic(base: str, service: str) -> str:
    return SERVICE.topic(base, service=service)


def command_topic(base: str, miner_id: str) -> str:
    return COMMAND.topic(base, miner_id=miner_id)


def command_result_topic(base: str, miner_id: str) -> str:
    return COMMAND_RESULT.topic(base, miner_id=miner_id)


def reply_topic(base: str, requester: str) -> str:
    return REPLY.topic(base, requester=requester)


def tune_topic(base: str, miner_id: str) -> str:
    return TUNE.topic(base, miner_id=miner_id)


def is_reply_topic(base: str, topic: str) -> bool:
    """Whether a requester's response topic is one the collector may answer on: one
    level under ``{base}/replies/`` (anything else could make it publish elsewhere)."""
    found = match_topic(base, topic)
    return found is not None and found[0] is REPLY


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """What a topic under ``{base}`` names. ``name`` is the rule, service or mute id,
    else None."""

    kind: TopicName
    miner_id: str | None
    name: str | None = None

    @property
    def spec(self) -> TopicSpec:
        return BY_NAME[self.kind]


def match_topic(base: str, topic: str) -> tuple[TopicSpec, str | None, str | None] | None:
    """(spec, miner id, rule, service or mute id) of a topic of ours, else None: the routing
    step of every message, so it returns a plain tuple."""
    start = len(base) + 1
    if not topic.startswith(base) or topic[start - 1:start] != "/":
        return None
    levels = topic[start:].split("/")
    for spec in _BY_SHAPE.get((levels[0], len(levels)), ()):
        params = spec.parse(levels)
        if params is not None:
            return spec, params.get("miner_id"), (
                params.get("rule") or params.get("service") or params.get("mute_id")
                or params.get("requester"))
    return None


def parse_topic(base: str, topic: str) -> ParsedTopic | None:
    """The meaning of a topic, or None when it is not one of ours (or malformed)."""
    found = match_topic(base, topic)
    if found is None:
        return None
    spec, miner_id, name = found
    return ParsedTopic(spec.name, miner_id, name)


def topic_label(base: str, topic: str) -> str:
    """A short name for counting and rate-limiting, even for a topic that does not parse:
    the registry name when the levels look like one, else ``topic``."""
    levels = topic.removeprefix(base + "/").split("/")
    for spec in TOPICS:
        if len(levels) == len(spec.levels) and all(
                want.startswith("{") or want == got
                for want, got in zip(spec.levels, levels, strict=True)):
            return spec.name
    return "topic"


# --- topic filters --------------------------------------------------------------------


class FilterError(ValueError):
    """Not a valid MQTT topic filter; ``str()`` is the one-line reason."""


def check_filter(text: str) -> list[str]:
    """The levels of a valid MQTT topic filter (MQTT 5.0 section 4.7), else FilterError."""
    if not isinstance(text, str) or not text:
        raise FilterError("the topic filter must be a non-empty string")
    if len(text.encode("utf-8", errors="replace")) > 65535 or "\x00" in text:
        raise FilterError("the topic filter is too long or holds a NUL character")
    levels = text.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise FilterError(f"{text!r}: '#' must be a whole level, and the last one")
        if "+" in level and level != "+":
            raise FilterError(f"{text!r}: '+' must be a whole level")
    return levels


def filter_matches(filter_levels: list[str] | tuple[str, ...], topic: str) -> bool:
    """Whether ``topic`` matches a filter (given as its levels), with MQTT's rules: ``+``
    is one level, ``#`` this level and all below (the parent too), and topics starting
    with ``$`` never match a filter that starts with a wildcard."""
    levels = topic.split("/")
    if topic.startswith("$") and filter_levels and filter_levels[0] in ("+", "#"):
        return False
    for index, want in enumerate(filter_levels):
        if want == "#":
            return True
        if index >= len(levels):
            return False
        if want != "+" and want != levels[index]:
            return False
    return len(levels) == len(filter_levels)


def matches(topic_filter: str, topic: str) -> bool:
    """``filter_matches`` for a filter given as text (checked)."""
    return filter_matches(check_filter(topic_filter), topic)
