"""Topic names of schema 1, built and parsed in one place.

``{base}/miners/{miner_id}/sample|status|info``, ``{base}/alerts/{miner_id}/{rule}`` and
``{base}/services/{service}/status``. A miner id is one topic level of ``[a-z0-9_-]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

MINER_ID_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
_SLUG_DROP = re.compile(r"[^a-z0-9]+")

MinerTopicKind = Literal["sample", "status", "info"]
MINER_TOPIC_KINDS: tuple[MinerTopicKind, ...] = ("sample", "status", "info")


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
    return miner_topic(base, miner_id, "sample")


def status_topic(base: str, miner_id: str) -> str:
    return miner_topic(base, miner_id, "status")


def info_topic(base: str, miner_id: str) -> str:
    return miner_topic(base, miner_id, "info")


def alert_topic(base: str, miner_id: str, rule: str) -> str:
    return f"{base}/alerts/{miner_id}/{rule}"


def service_status_topic(base: str, service: str) -> str:
    return f"{base}/services/{service}/status"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """What a topic under ``{base}`` names. ``name`` is the rule or service, else None."""

    kind: Literal["sample", "status", "info", "alert", "service"]
    miner_id: str | None
    name: str | None = None


def parse_topic(base: str, topic: str) -> ParsedTopic | None:
    """The meaning of a topic, or None when it is not one of ours (or malformed)."""
    prefix = base + "/"
    if not topic.startswith(prefix):
        return None
    parts = topic[len(prefix) :].split("/")
    match parts:
        case ["miners", miner_id, ("sample" | "status" | "info") as kind] if is_miner_id(
            miner_id
        ):
            return ParsedTopic(kind, miner_id)
        case ["alerts", miner_id, rule] if is_miner_id(miner_id) and rule:
            return ParsedTopic("alert", miner_id, rule)
        case ["services", service, "status"] if service:
            return ParsedTopic("service", None, service)
    return None
