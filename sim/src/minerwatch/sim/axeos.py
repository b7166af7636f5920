"""A simulated Bitaxe Gamma (BM1370, board 601) running AxeOS v2.11: ``GET /api/system/info``.

Field names, types and units follow the firmware (see PROTOCOLS.md): hashRate GH/s, power W,
voltage/current mV/mA, temperatures °C, fanspeed percent, bestDiff as a number (v2.11).

A miner given a v2.14+ ``version`` also serves ``WS /api/ws/live`` as the firmware does:
``{"event":"update","data":{...}}`` with the whole info object on connect, then every
``live_interval_s`` only the fields that changed (nested objects diffed field by field,
lists sent whole; nothing when nothing changed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from minerwatch.sim.h11server import (
    Reply,
    Request,
    Upgrade,
    WebSocketChannel,
    protocol_factory,
    wants_websocket,
)
from minerwatch.sim.miner import Clock, SimMiner
from minerwatch.sim.model import BITAXE_GAMMA, Fault, MinerModel, hash_unit

INFO_PATH = "/api/system/info"
LIVE_PATH = "/api/ws/live"
DEFAULT_VERSION = "v2.11.0"
#: The first firmware with the live WebSocket.
LIVE_SINCE = (2, 14)
LIVE_INTERVAL_S = 0.5
FREQUENCY_MHZ = 600
CORE_VOLTAGE_MV = 1150
SMALL_CORES = 2040
POOL_HOST = "pool.minerwatch.test"
POOL_PORT = 3333
FALLBACK_HOST = "backup.minerwatch.test"
FALLBACK_PORT = 3334


def mac_address(index: int) -> str:
    """A locally administered MAC (02:...) that encodes the miner's index: 02:4D:57 is 'MW'."""
    return f"02:4D:57:{(index >> 16) & 255:02X}:{(index >> 8) & 255:02X}:{index & 255:02X}"


def fan_percent(temp_c: float) -> int:
    """AxeOS auto-fan: a ramp from about 45 °C to full speed by about 65 °C."""
    return max(25, min(100, round(35 + (temp_c - 45.0) * 3.5)))


def system_info(miner: AxeOSMiner, now: float) -> dict[str, Any]:
    model = miner.model
    temp = model.temp_c(now)
    temp2 = temp - (1.2 + 0.4 * model.noise(now, 70, 11.0))  # second sensor, a bit cooler
    vr_temp = model.natural_temp_c(now) - 4.0 + 1.5 * model.noise(now, 71, 30.0)
    power = model.power(now)
    voltage = 5100.0 + 25.0 * model.noise(now, 72, 13.0)
    fan_pct = fan_percent(temp)
    fan_rpm = max(0, round(fan_pct * 52 + 90 * model.noise(now, 77, 6.0)))
    accepted, rejected = model.shares(now)
    condition = model.condition
    return {
        "power": round(power, 4),
        "voltage": round(voltage, 2),
        "current": round(power * 1e6 / voltage, 2),
        "temp": round(temp, 3),
        "temp2": round(temp2, 3),
        "vrTemp": round(vr_temp),
        "maxPower": 40,
        "nominalVoltage": 5,
        "hashRate": model.hashrate_ghs(now),
        "expectedHashrate": FREQUENCY_MHZ * SMALL_CORES / 1000,
        "bestDiff": int(model.best_ever(now)),
        "bestSessionDiff": int(model.session_best(now)),
        # blocks found since boot (a 0/1 flag in v2.11-2.12, a count since v2.13)
        "blockFound": model.blocks_found,
        "poolDifficulty": 1000,
        "isUsingFallbackStratum": 1 if condition is Fault.FALLBACK_POOL else 0,
        "isPSRAMAvailable": 1,
        "freeHeap": 8_200_000 + int(40_000 * model.noise(now, 73, 60.0)),
        "coreVoltage": CORE_VOLTAGE_MV,
        "coreVoltageActual": CORE_VOLTAGE_MV - 6 + round(4 * model.noise(now, 74, 9.0)),
        "frequency": FREQUENCY_MHZ,
        "ssid": "minerwatch-sim",
        "macAddr": miner.mac,
        "hostname": miner.hostname,
        "wifiStatus": "Connected!",
        "wifiRSSI": -55 + round(6 * model.noise(now, 75, 17.0)),
        "apEnabled": 0,
        "sharesAccepted": accepted,
        "sharesRejected": rejected,
        "sharesRejectedReasons": [{"message": "Above target", "count": rejected}]
        if rejected
        else [],
        "uptimeSeconds": model.uptime_s(now),
        "smallCoreCount": SMALL_CORES,
        "ASICModel": "BM1370",
        "stratumURL": POOL_HOST,
        "stratumPort": POOL_PORT,
        "stratumUser": miner.stratum_user,
        "stratumSuggestedDifficulty": 1000,
        "stratumExtranonceSubscribe": 0,
        "fallbackStratumURL": FALLBACK_HOST,
        "fallbackStratumPort": FALLBACK_PORT,
        "fallbackStratumUser": miner.stratum_user,
        "fallbackStratumSuggestedDifficulty": 1000,
        "fallbackStratumExtranonceSubscribe": 0,
        "responseTime": round(35.0 + 10.0 * model.noise(now, 76, 5.0), 2),
        "version": miner.version,
        "axeOSVersion": miner.version,
        "idfVersion": "v5.4.1",
        "boardVersion": "601",
        "runningPartition": "factory",
        "overheat_mode": 0,
        "display": "SSD1306 (128x32)",
        "rotation": 0,
        "invertscreen": 0,
        "displayTimeout": -1,
        "autofanspeed": 1,
        "fanspeed": fan_pct,
        "temptarget": 60,
        "fanrpm": 0 if condition is Fault.FAN_STOPPED else fan_rpm,
        "fan2rpm": 0,  # not fitted on a Gamma
        "statsFrequency": 0,
        "miningPaused": model.paused,
    }


def normalize(info: dict[str, Any]) -> dict[str, Any]:
    """The Sample-unit view of one info object (what a collector should publish)."""
    hashrate_ths = info["hashRate"] / 1000.0
    power_w = float(info["power"])
    # the first fan is always fitted, so its 0 is a stopped fan; fan2rpm 0 is "no fan 2"
    fans = [info["fanrpm"]] + ([info["fan2rpm"]] if info["fan2rpm"] > 0 else [])
    fallback = info["isUsingFallbackStratum"] == 1
    host, port = (
        (info["fallbackStratumURL"], info["fallbackStratumPort"])
        if fallback
        else (info["stratumURL"], info["stratumPort"])
    )
    return {
        "hashrate_ths": hashrate_ths,
        "expected_hashrate_ths": info["expectedHashrate"] / 1000.0,
        "power_w": power_w,
        "efficiency_jth": power_w / hashrate_ths if hashrate_ths else None,
        "temp_c": max(info["temp"], info["temp2"]),
        "vr_temp_c": float(info["vrTemp"]),
        "fan_rpm": fans,
        "shares_accepted": info["sharesAccepted"],
        "shares_rejected": info["sharesRejected"],
        "best_diff": float(info["bestDiff"]),
        "uptime_s": info["uptimeSeconds"],
        "pool_url": f"stratum+tcp://{host}:{port}",
        "is_mining": not info["miningPaused"] and hashrate_ths > 0,
        "pool_fallback": fallback,
        "pool_connected": None,  # AxeOS has no field that says so
        "blocks_found": info["blockFound"],
    }


def origin_allowed(origin: str | None) -> bool:
    """AxeOS answers 401 to a browser Origin outside private ranges (CSRF guard)."""
    if origin is None:
        return True
    try:
        return ipaddress.ip_address(urlsplit(origin).hostname or "").is_private
    except ValueError:
        return False


def garbage_body(info_json: bytes, number: int, key: int) -> bytes:
    """Broken replies seen from sick devices: JSON cut short, or plain noise."""
    if number % 2:
        return info_json[: max(1, len(info_json) // 2)]
    noise = bytes(int((hash_unit(key, number * 64 + i) + 1.0) * 128) & 255 for i in range(48))
    return b"\xff\xfe" + noise  # never valid UTF-8, let alone JSON


def version_numbers(version: str) -> tuple[int, ...]:
    """``v2.14.0`` -> (2, 14, 0); () when it does not start with a version number."""
    match = re.match(r"v?(\d+(?:\.\d+)*)", version.strip())
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What the firmware pushes: keys new or changed in ``new``, nested objects recursed."""
    diff: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if key in old and before == value:
            continue
        if isinstance(value, dict) and isinstance(before, dict):
            value = changed_fields(before, value)
        diff[key] = value
    return diff


def update_message(data: dict[str, Any]) -> str:
    return json.dumps({"event": "update", "data": data}, separators=(",", ":"))


class LivePush:
    """One ``/api/ws/live`` client: the whole object on connect, then changes on a timer
    (a ``call_later`` chain, no task). TIMEOUT makes it hang: nothing sent, pings unanswered."""

    def __init__(self, miner: AxeOSMiner) -> None:
        self.miner = miner
        self.channel: WebSocketChannel | None = None
        self.sent: dict[str, Any] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def responsive(self) -> bool:
        return self.miner.fault is not Fault.TIMEOUT

    def opened(self, channel: WebSocketChannel) -> None:
        self.channel = channel
        self.miner.live_sessions.add(self)
        self.sent = self.miner.report(self.miner.clock())
        channel.send_text(update_message(self.sent))
        self._schedule()

    def closed(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.channel = None
        self.miner.live_sessions.discard(self)

    def drop(self) -> None:
        if self.channel is not None:
            self.channel.drop()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.miner.live_interval_s, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.channel is None or not self.channel.is_open:
            return
        fault = self.miner.fault
        if fault is Fault.GARBAGE:
            self.channel.send_text("\ufffd\ufffd not an update")
        elif fault is not Fault.TIMEOUT:
            current = self.miner.report(self.miner.clock())
            diff = changed_fields(self.sent, current)
            if diff:
                self.channel.send_text(update_message(diff))
                self.miner.live_updates += 1
            self.sent = current
        self._schedule()


class AxeOSMiner(SimMiner):
    kind = "axeos"
    scheme = "axeos"

    def __init__(
        self,
        index: int,
        host: str,
        port: int,
        clock: Clock,
        seed: int,
        t0: float,
        version: str = DEFAULT_VERSION,
    ) -> None:
        model = MinerModel.create(seed, "axeos", index, BITAXE_GAMMA, t0)
        super().__init__(f"axeos-{index}", index, host, port, model, clock, seed)
        self.mac = mac_address(index)
        self.hostname = f"bitaxe-{index}"
        self.stratum_user = f"bc1qminerwatchsim{seed % 10_000:04d}.{self.hostname}"
        self.version = version
        self.live_interval_s = LIVE_INTERVAL_S
        self.live_sessions: set[LivePush] = set()
        # what was asked and pushed, for tests
        self.info_requests = 0
        self.live_requests = 0
        self.live_updates = 0

    @property
    def has_live(self) -> bool:
        return version_numbers(self.version) >= LIVE_SINCE

    def drop_live(self) -> None:
        """Drop every open live WebSocket (clients may connect again)."""
        for session in list(self.live_sessions):
            session.drop()

    async def set_fault(self, fault: Fault | str) -> None:
        await super().set_fault(fault)
        if self.fault is Fault.NO_LIVE:
            self.drop_live()

    def report(self, now: float) -> dict[str, Any]:
        return system_info(self, now)

    def normalize(self, report: dict[str, Any]) -> dict[str, Any]:
        return normalize(report)

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        return protocol_factory(self.handle, self._connections)

    def handle(self, request: Request) -> Reply | Upgrade | None:
        if self.fault is Fault.TIMEOUT:
            return None
        if not origin_allowed(request.headers.get("origin")):
            return Reply(401, b"Unauthorized", "text/plain")
        path = request.target.split("?", 1)[0]
        if path == LIVE_PATH:
            self.live_requests += 1
            if self.has_live:
                return self._live(request)
        if path != INFO_PATH:
            return Reply(404, b"Nothing matches the given URI", "text/plain")
        if request.method not in ("GET", "HEAD"):
            return Reply(405, b"Method not allowed", "text/plain")
        self.info_requests += 1
        body = json.dumps(self.report(self.clock()), separators=(",", ":")).encode()
        if self.fault is Fault.GARBAGE:
            body = garbage_body(body, self.next_reply_number(), self.model.key)
        return Reply(200, body)

    def _live(self, request: Request) -> Reply | Upgrade:
        if self.fault is Fault.NO_LIVE:
            return Reply(503, b"Live updates unavailable", "text/plain")
        if request.method != "GET" or not wants_websocket(request):
            return Reply(400, b"WebSocket only", "text/plain")
        return Upgrade(LivePush(self))
