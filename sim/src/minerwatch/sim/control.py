"""A small HTTP API to inspect the fleet and switch faults while it runs (demo, manual tests).

``GET /miners``, ``GET /miners/{name}``, ``POST /miners/{name}/fault`` with
``{"fault": "timeout"}``, ``POST /miners/{name}/temp`` with ``{"temp_c": 85}`` or null.
Listens on 127.0.0.1 only.

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
from typing import Any

import msgspec

from minerwatch.sim.fleet import Fleet
from minerwatch.sim.h11server import Reply, Request, protocol_factory
from minerwatch.sim.miner import SimMiner
from minerwatch.sim.model import Fault

log = logging.getLogger(__name__)


class FaultBody(msgspec.Struct, forbid_unknown_fields=True):
    fault: Fault


class TempBody(msgspec.Struct, forbid_unknown_fields=True):
    temp_c: float | None


def miner_state(miner: SimMiner) -> dict[str, Any]:
    return {
        "name": miner.name,
        "kind": miner.kind,
        "url": miner.url,
        "fault": str(miner.fault),
        "temp_override": miner.temp_override,
    }


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
            return _json(200, miner_state(miner) | {"snapshot": miner.snapshot()})
        if request.method != "POST":
            return _error(405, "use POST")
        if parts[2] == "fault":
            return await self._set_fault(miner, request.body)
        if parts[2] == "temp":
            return self._set_temp(miner, request.body)
        return _error(404, f"no such path: {request.target}")

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
