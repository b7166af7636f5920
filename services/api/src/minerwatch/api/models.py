"""Response bodies of the HTTP API, as msgspec Structs so the OpenAPI schema documents them.

Samples, infos and statuses reuse the schema-1 payload Structs from the shared package, so an
HTTP response carries exactly what the MQTT topics carry.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from minerwatch.api.presence import PresenceState
from minerwatch.api.relay import ServiceStateName
from minerwatch.shared.schemas import (
    AlertEvent,
    CommandResult,
    MinerInfo,
    MinerStatus,
    Sample,
    SettingsLimits,
)

Up = Literal["up", "down"]


class MinerEntry(msgspec.Struct, kw_only=True):
    """One known miner: what to show (label, state since when, when live data last came),
    its identity, status and latest sample as published (each null when unknown), and its
    firing alerts (``muted`` as currently muted).

    ``state`` is ``stale`` when the collector is not online, or when the latest sample is
    older than 3 poll intervals while the status says online or idle: the numbers are not
    live (``state_since`` is then its ``last_seen``). ``last_seen`` is the latest of the
    status's ``last_seen`` and the sample's ``ts``."""

    miner_id: str
    label: str
    state: PresenceState
    state_since: str | None
    last_seen: str | None
    info: MinerInfo | None
    status: MinerStatus | None
    sample: Sample | None
    alerts: list[AlertEvent]


class ServiceHealth(msgspec.Struct, kw_only=True):
    """A minerwatch service as the api sees it on ``{base}/services/{name}/status``, and
    since when the api saw that (null: never seen)."""

    state: ServiceStateName
    since: str | None


class Health(msgspec.Struct, kw_only=True):
    """``degraded`` when the broker or the database is down, or the collector, store or
    alerts service is not online; HTTP 503 only when the api's own broker link or
    database is down."""

    status: Literal["ok", "degraded"]
    broker: Up
    database: Up
    services: dict[str, ServiceHealth]


class ClientConfig(msgspec.Struct, kw_only=True):
    """What the dashboard needs to know about this installation: the MQTT base topic, the
    collector's poll interval and after how long a sample is no longer live."""

    base_topic: str
    poll_interval_s: float
    stale_after_s: float


class LabelChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``PATCH /api/miners/{miner_id}``: the display name (1-100 printable characters,
    surrounding spaces dropped), or null to remove the one set through the api."""

    label: str | None


class LabelSet(msgspec.Struct, kw_only=True):
    """The label published for the miner (the collector folds it into its info)."""

    miner_id: str
    label: str | None


class Forgotten(msgspec.Struct, kw_only=True):
    """A forgotten miner: the retained topics cleared, and whether its history went too."""

    miner_id: str
    cleared: list[str]
    purged: bool


class MuteRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/alerts/mute``: a miner id and/or a rule, and exactly one of ``until`` (a
    time in the coming year) or ``for_s`` (seconds from now, at most a year)."""

    miner_id: str | None = None
    rule: str | None = None
    until: str | None = None
    for_s: float | None = None
    reason: str | None = None


class ErrorBody(msgspec.Struct, kw_only=True):
    """An error answer: the HTTP status again and one line saying what went wrong (for a
    400, it starts with the name of the parameter)."""

    status_code: int
    detail: str


class SignIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/session``: a token (``minerwatch-api token create``)."""

    token: str


class SessionInfo(msgspec.Struct, kw_only=True):
    """Who is signed in: the token's name and role, ``via`` (``session``: the cookie;
    ``token``: a bearer token), the CSRF token state-changing requests authenticated by
    the cookie must carry as ``X-CSRF-Token`` (null for a bearer token, which needs none),
    and the installation's ``[api] auth`` mode."""

    name: str
    role: Literal["viewer", "operator", "admin"]
    via: Literal["session", "token"]
    csrf: str | None
    auth: Literal["token", "lan"]


class SignedOut(msgspec.Struct, kw_only=True):
    """The answer when nobody is signed in (HTTP 401), with the ``[api] auth`` mode: in
    ``lan`` the dashboard reads without signing in."""

    status_code: int
    detail: str
    auth: Literal["token", "lan"]


class CommandFailure(msgspec.Struct, kw_only=True):
    """A command that did not succeed: the HTTP status, the collector's one line, the
    whole result (the audit record) and, for ``refused``, the ranges that are allowed."""

    status_code: int
    detail: str
    result: CommandResult
    limits: SettingsLimits | None = None
