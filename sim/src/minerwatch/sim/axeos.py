"""A simulated Bitaxe Gamma (BM1370, board 601) running AxeOS v2.11: ``GET /api/system/info``.

Field names, types and units follow the firmware (see PROTOCOLS.md): hashRate GH/s, power W,
voltage/current mV/mA, temperatures °C, fanspeed percent, bestDiff as a number (v2.11).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from minerwatch.sim.h11server import Reply, Request, protocol_factory
from minerwatch.sim.miner import Clock, SimMiner
from minerwatch.sim.model import BITAXE_GAMMA, Fault, MinerModel, hash_unit

INFO_PATH = "/api/system/info"
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
    accepted, rejected = model.shares(now)
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
        "poolDifficulty": 1000,
        "isUsingFallbackStratum": 0,
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
        "version": "v2.11.0",
        "axeOSVersion": "v2.11.0",
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
        "fanrpm": max(0, round(fan_pct * 52 + 90 * model.noise(now, 77, 6.0))),
        "fan2rpm": 0,
        "statsFrequency": 0,
        "miningPaused": model.paused,
    }


def normalize(info: dict[str, Any]) -> dict[str, Any]:
    """The Sample-unit view of one info object (what a collector should publish)."""
    hashrate_ths = info["hashRate"] / 1000.0
    power_w = float(info["power"])
    fans = [rpm for rpm in (info["fanrpm"], info["fan2rpm"]) if rpm > 0]
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
        "pool_url": f"stratum+tcp://{info['stratumURL']}:{info['stratumPort']}",
        "is_mining": not info["miningPaused"] and hashrate_ths > 0,
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


class AxeOSMiner(SimMiner):
    kind = "axeos"
    scheme = "axeos"

    def __init__(
        self, index: int, host: str, port: int, clock: Clock, seed: int, t0: float
    ) -> None:
        model = MinerModel.create(seed, "axeos", index, BITAXE_GAMMA, t0)
        super().__init__(f"axeos-{index}", index, host, port, model, clock, seed)
        self.mac = mac_address(index)
        self.hostname = f"bitaxe-{index}"
        self.stratum_user = f"bc1qminerwatchsim{seed % 10_000:04d}.{self.hostname}"

    def report(self, now: float) -> dict[str, Any]:
        return system_info(self, now)

    def normalize(self, report: dict[str, Any]) -> dict[str, Any]:
        return normalize(report)

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        return protocol_factory(self.handle, self._connections)

    def handle(self, request: Request) -> Reply | None:
        if self.fault is Fault.TIMEOUT:
            return None
        if not origin_allowed(request.headers.get("origin")):
            return Reply(401, b"Unauthorized", "text/plain")
        path = request.target.split("?", 1)[0]
        if path != INFO_PATH:
            return Reply(404, b"Nothing matches the given URI", "text/plain")
        if request.method not in ("GET", "HEAD"):
            return Reply(405, b"Method not allowed", "text/plain")
        body = json.dumps(self.report(self.clock()), separators=(",", ":")).encode()
        if self.fault is Fault.GARBAGE:
            body = garbage_body(body, self.next_reply_number(), self.model.key)
        return Reply(200, body)
