"""A small HTTP API to inspect the fleet and switch faults while it runs (demo, manual tests).

``GET /miners``, ``GET /miners/{name}``, ``POST /miners/{name}/fault`` with
``{"fault": "timeout"}``, ``POST /miners/{name}/temp`` with ``{"temp_c": 85}`` or null,
``POST /miners/{name}/limit`` with ``{"base_limit_mhz": 560, "mhz_per_mv": 0.5}`` (the
hidden stability limit), ``POST /miners/{name}/quirks`` with any of the ``QuirksBody``
fields. Listens on 127.0.0.1 only.

``GET /miners/{name}`` also carries what control changed: ``settings``, ``writes``,
``last_patch``, ``identified_at``, ``restarts``, the quirks, ``hidden_limit_mhz`` (at the
current voltage) and ``web_port``.

Faults (one at a time; ``none`` clears), for AxeOS and CGMiner miners alike unless said:

- ``timeout``: connections accepted, never answered. ``refuse``: the port stops listening.
- ``garbage``: replies that are not JSON. ``paused``: reachable, hashrate 0, shares still.
- ``nolive``: AxeOS v2.14+ only: the live WebSocket drops and new ones get 503.
- ``stalled``: still answering and claiming to mine, but the hashrate reading is frozen at
  its value when the fault began and the share counters stop rising.
- ``fan_stopped``: one fan reads 0 rpm (AxeOS ``fanrpm``, CGMiner ``fan2``).
- ``rejects``: a burst of rejects: 20 % of the shares found meanwhile are rejected.
- ``fallback_pool``: mining on the fallback pool (AxeOS ``isUsingFallbackStratum: 1``;
  CGMiner pool 0 ``Dead``, pool 1 the active one).
- ``pool_down``: no pool connection: share counters stop; CGMiner lists every pool ``Dead``
  (AxeOS has no field for it).
- ``block`` and ``best_diff`` are one-shots: the found-blocks counter rises by one, or a new
  all-time best difficulty appears; the miner then reads back ``none``.

The reply is the miner's state, whose ``fault`` is the one now in force.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Annotated, Any

import msgspec

from minerwatch.sim.axeos import CHIPS, AxeOSMiner, check_otp_secret
from minerwatch.sim.fleet import Fleet
from minerwatch.sim.h11server import Reply, Request, protocol_factory
from minerwatch.sim.miner import SimMiner
from minerwatch.sim.model import Fault

log = logging.getLogger(__name__)


class FaultBody(msgspec.Struct, forbid_unknown_fields=True):
    fault: Fault


class TempBody(msgspec.Struct, forbid_unknown_fields=True):
    temp_c: float | None


Mhz = Annotated[float, msgspec.Meta(ge=1, le=65535)]
Options = Annotated[list[Annotated[int, msgspec.Meta(ge=1, le=65535)]],
                    msgspec.Meta(min_length=1, max_length=64)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=600)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class LimitBody(msgspec.Struct, forbid_unknown_fields=True):
    base_limit_mhz: Mhz
    mhz_per_mv: Annotated[float, msgspec.Meta(ge=0, le=10)] | None = None


class QuirksBody(msgspec.Struct, forbid_unknown_fields=True):
    """Quirks to switch; absent fields stay. Which kind of miner each one is for:"""

    restart_s: Seconds | msgspec.UnsetType = msgspec.UNSET  # both
    restart_delay_s: Seconds | msgspec.UnsetType = msgspec.UNSET  # both
    ignore_writes: bool | msgspec.UnsetType = msgspec.UNSET  # AxeOS
    otp_secret: str | msgspec.UnsetType | None = msgspec.UNSET  # AxeOS; null: no OTP
    frequency_options: Options | msgspec.UnsetType | None = msgspec.UNSET  # AxeOS; null: chip's
    voltage_options: Options | msgspec.UnsetType | None = msgspec.UNSET  # AxeOS
    device_model: Text | msgspec.UnsetType = msgspec.UNSET  # AxeOS
    asic_model: Text | msgspec.UnsetType = msgspec.UNSET  # AxeOS
    asic_count: Annotated[int, msgspec.Meta(ge=1, le=256)] | msgspec.UnsetType = msgspec.UNSET
    version: Text | msgspec.UnsetType = msgspec.UNSET  # AxeOS firmware version
    privileged: bool | msgspec.UnsetType = msgspec.UNSET  # CGMiner
    web_user: Text | msgspec.UnsetType = msgspec.UNSET  # CGMiner web CGI
    web_password: Text | msgspec.UnsetType = msgspec.UNSET  # CGMiner web CGI


AXEOS_QUIRKS = frozenset({
    "ignore_writes", "otp_secret", "frequency_options", "voltage_options", "device_model",
    "asic_model", "asic_count", "version",
})
CGMINER_QUIRKS = frozenset({"privileged", "web_user", "web_password"})


def given_quirks(body: QuirksBody) -> dict[str, Any]:
    return {
        name: getattr(body, name)
        for name in body.__struct_fields__
        if getattr(body, name) is not msgspec.UNSET
    }


def check_quirks(miner: SimMiner, given: dict[str, Any]) -> str | None:
    """Why ``given`` cannot be applied to ``miner``; None when it can."""
    foreign = set(given) - (AXEOS_QUIRKS if isinstance(miner, AxeOSMiner) else CGMINER_QUIRKS)
    foreign -= {"restart_s", "restart_delay_s"}
    if foreign:
        return f"{', '.join(sorted(foreign))}: not for a {miner.kind} miner"
    secret = given.get("otp_secret")
    if secret is not None:
        try:
            check_otp_secret(secret)
        except ValueError as exc:
            return str(exc)
    asic = given.get("asic_model")
    if asic is not None and asic not in CHIPS:
        return f"unknown asic_model {asic!r} (known: {', '.join(CHIPS)})"
    return None


def apply_quirks(miner: SimMiner, given: dict[str, Any]) -> None:
    """Switch the checked quirks ``given`` on ``miner``."""
    quirks = miner.quirks
    for name in ("restart_s", "restart_delay_s", "ignore_writes", "otp_secret", "privileged",
                 "web_user", "web_password"):
        if name in given:
            setattr(quirks, name, given[name])
    for name in ("frequency_options", "voltage_options"):
        if name in given:
            value = given[name]
            setattr(quirks, name, None if value is None else tuple(value))
    if isinstance(miner, AxeOSMiner):
        if "version" in given:
            miner.version = given["version"]
        if {"device_model", "asic_model", "asic_count"} & set(given):
            miner.set_device(given.get("device_model"), given.get("asic_model"),
                             given.get("asic_count"))


def miner_state(miner: SimMiner) -> dict[str, Any]:
    return {
        "name": miner.name,
        "kind": miner.kind,
        "url": miner.url,
        "fault": str(miner.fault),
        "temp_override": miner.temp_override,
    }


def miner_detail(miner: SimMiner) -> dict[str, Any]:
    """One miner in full: its state, what it reports now, and what control changed."""
    return miner_state(miner) | {"snapshot": miner.snapshot()} | miner.control_state()


def _json(status: int, payload: Any) -> Reply:
    return Reply(status, msgspec.json.encode(payload))


def _error(status: int, message: str) -> Reply:
    return _json(status, {"error": message})


def _decode(body: bytes, kind: type[msgspec.Struct]) -> Any:
    """The decoded body, or a 400 Reply naming what is wrong."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as exc:
        return _error(400, f"bad body: {exc}")


class ControlApi:
    def __init__(self, fleet: Fleet, port: int, host: str = "127.0.0.1") -> None:
        self.fleet = fleet
        self.host = host
        self.port = port
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.BaseTransport] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            protocol_factory(self.handle, self._connections), self.host, self.port
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for transport in list(self._connections):
            transport.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def handle(self, request: Request) -> Reply:
        parts = [part for part in request.target.split("?", 1)[0].split("/") if part]
        if not parts or parts[0] != "miners" or len(parts) > 3:
            return _error(404, f"no such path: {request.target}")
        if len(parts) == 1:
            if request.method != "GET":
                return _error(405, "use GET /miners")
            return _json(200, [miner_state(miner) for miner in self.fleet.miners])
        try:
            miner = self.fleet.by_name(parts[1])
        except KeyError:
            return _error(404, f"no miner named {parts[1]!r}")
        if len(parts) == 2:
            if request.method != "GET":
                return _error(405, f"use GET /miners/{miner.name}")
            return _json(200, miner_detail(miner))
        if request.method != "POST":
            return _error(405, "use POST")
        if parts[2] == "fault":
            return await self._set_fault(miner, request.body)
        if parts[2] == "temp":
            return self._set_temp(miner, request.body)
        if parts[2] == "limit":
            return self._set_limit(miner, request.body)
        if parts[2] == "quirks":
            return self._set_quirks(miner, request.body)
        return _error(404, f"no such path: {request.target}")

    def _set_limit(self, miner: SimMiner, body: bytes) -> Reply:
        decoded = _decode(body, LimitBody)
        if isinstance(decoded, Reply):
            return decoded
        miner.set_limit(decoded.base_limit_mhz, decoded.mhz_per_mv)
        log.info("%s: stability limit %.1f MHz", miner.name, miner.model.limit_mhz())
        return _json(200, miner_detail(miner))

    def _set_quirks(self, miner: SimMiner, body: bytes) -> Reply:
        decoded = _decode(body, QuirksBody)
        if isinstance(decoded, Reply):
            return decoded
        given = given_quirks(decoded)
        problem = check_quirks(miner, given)
        if problem is not None:
            return _error(400, problem)
        apply_quirks(miner, given)
        log.info("%s: quirks %s", miner.name, ", ".join(sorted(given)) or "unchanged")
        return _json(200, miner_detail(miner))

    async def _set_fault(self, miner: SimMiner, body: bytes) -> Reply:
        decoded = _decode(body, FaultBody)
        if isinstance(decoded, Reply):
            return decoded
        try:
            await miner.set_fault(decoded.fault)
        except OSError as exc:
            return _error(409, str(exc))
        log.info("%s: fault %s", miner.name, miner.fault)
        return _json(200, miner_state(miner))

    def _set_temp(self, miner: SimMiner, body: bytes) -> Reply:
        decoded = _decode(body, TempBody)
        if isinstance(decoded, Reply):
            return decoded
        temp = decoded.temp_c
        if temp is not None and (not math.isfinite(temp) or not -40.0 <= temp <= 150.0):
            return _error(400, "temp_c must be null or between -40 and 150")
        miner.temp_override = temp
        log.info("%s: temperature override %s", miner.name, temp)
        return _json(200, miner_state(miner))
