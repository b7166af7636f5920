"""Response bodies of the HTTP API, as msgspec Structs so the OpenAPI schema documents them.

Samples, infos and statuses reuse the schema-1 payload Structs from the shared package, so an
HTTP response carries exactly what the MQTT topics carry.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from minerwatch.shared.schemas import MinerInfo, MinerStatus, Sample

Up = Literal["up", "down"]


class MinerEntry(msgspec.Struct, kw_only=True):
    """One known miner: its identity, current status and latest sample (each null when unknown)."""

    miner_id: str
    info: MinerInfo | None
    status: MinerStatus | None
    sample: Sample | None


class Health(msgspec.Struct, kw_only=True):
    """``ok`` when every dependency answers, else ``degraded`` (still HTTP 200)."""

    status: Literal["ok", "degraded"]
    broker: Up
    database: Up


class ClientConfig(msgspec.Struct, kw_only=True):
    """What the dashboard needs to know about this installation."""

    base_topic: str


class ErrorBody(msgspec.Struct, kw_only=True):
    """An error answer: the HTTP status again and one line saying what went wrong (for a
    400, it starts with the name of the parameter)."""

    status_code: int
    detail: str
