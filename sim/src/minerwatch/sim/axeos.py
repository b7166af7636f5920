"""A simulated Bitaxe Gamma (BM1370, board 601) running AxeOS v2.11: ``GET /api/system/info``.

Field names, types and units follow the firmware (see PROTOCOLS.md): hashRate GH/s, power W,
voltage/current mV/mA, temperatures °C, fanspeed percent, bestDiff as a number (v2.11).

Control as ESP-Miner does it: ``PATCH /api/system`` (settings, validated all-or-nothing),
``POST /api/system/restart``, ``/identify``, ``/pause`` and ``/resume`` (v2.14+),
``GET /api/system/asic`` (v2.9+). A miner given an OTP secret (NerdQAxe firmware) wants a
valid ``X-TOTP`` header on every write.

A miner given a v2.14+ ``version`` also serves ``WS /api/ws/live`` as the firmware does:
``{"event":"update","data":{...}}`` with the whole info object on connect, then every
``live_interval_s`` only the fields that changed (nested objects diffed field by field,
lists sent whole; nothing when nothing changed).
"""

from __future__ import annotations

import asyncio
import binascii
import dataclasses
import ipaddress
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import pyotp

from minerwatch.sim.h11server import (
    Reply,
    Request,
    Upgrade,
    WebSocketChannel,
    protocol_factory,
    wants_websocket,
)
from minerwatch.sim.miner import Clock, SimMiner
from minerwatch.sim.model import BITAXE_GAMMA, Fault, MinerModel, Pool, Settings, hash_unit

INFO_PATH = "/api/system/info"
LIVE_PATH = "/api/ws/live"
SETTINGS_PATH = "/api/system"
ASIC_PATH = "/api/system/asic"
RESTART_PATH = "/api/system/restart"
IDENTIFY_PATH = "/api/system/identify"
PAUSE_PATH = "/api/system/pause"
RESUME_PATH = "/api/system/resume"
DEFAULT_VERSION = "v2.11.0"
#: The first firmware with the live WebSocket, and with pause/resume.
LIVE_SINCE = (2, 14)
PAUSE_SINCE = (2, 14)
#: The first firmware with ``GET /api/system/asic``.
ASIC_SINCE = (2, 9)
#: The first firmware with ``manualFanSpeed`` (before it, ``fanspeed`` was the setting).
MANUAL_FAN_SINCE = (2, 11)
LIVE_INTERVAL_S = 0.5
POOL_HOST = "pool.minerwatch.test"
POOL_PORT = 3333
FALLBACK_HOST = "backup.minerwatch.test"
FALLBACK_PORT = 3334
POOL_PASSWORD = "x"
DEVICE_MODEL = "Gamma"
IDENTIFY_S = 30.0
NOT_FOUND = b"Nothing matches the given URI"
OTP_REQUIRED = b"OTP/Session required"


@dataclass(frozen=True, slots=True)
class Chip:
    """An ASIC as ESP-Miner's device config describes it."""

    name: str
    small_cores: int
    default_frequency: int
    frequency_options: tuple[int, ...]
    default_voltage: int
    voltage_options: tuple[int, ...]


CHIPS: dict[str, Chip] = {
    chip.name: chip
    for chip in (
        Chip("BM1370", 2040, 525, (400, 490, 525, 550, 600, 625),
             1150, (1000, 1060, 1100, 1150, 1200, 1250)),
        Chip("BM1368", 1276, 490, (400, 425, 450, 475, 490, 500, 525, 550, 575),
             1166, (1100, 1150, 1166, 1200, 1250, 1300)),
        Chip("BM1366", 894, 485, (400, 425, 450, 475, 485, 500, 525, 550, 575),
             1200, (1100, 1150, 1200, 1250, 1300)),
        Chip("BM1397", 672, 425, (400, 425, 450, 475, 485, 500, 525, 550, 575, 600),
             1400, (1100, 1150, 1200, 1250, 1300, 1350, 1400, 1450, 1500)),
    )
}


@dataclass(frozen=True, slots=True)
class Field:
    """A PATCH key as ESP-Miner's settings table checks it: type and min/max (a string's
    length, a number's value)."""

    kind: Literal["str", "u16", "float", "bool"]
    low: int
    high: int


_TEXT = Field("str", 0, 3999)
_PORT = Field("u16", 0, 65535)
#: The PATCH keys the simulator stores; other keys are ignored, as the firmware ignores
#: keys it does not know. The manual fan key depends on the version (``patch_fields``).
PATCH_FIELDS: dict[str, Field] = {
    "frequency": Field("float", 1, 65535),  # the firmware's only bound: 1-65535
    "coreVoltage": Field("u16", 1, 65535),
    "autofanspeed": Field("bool", 0, 1),
    "temptarget": Field("u16", 35, 66),
    "stratumURL": _TEXT,
    "stratumPort": _PORT,
    "stratumUser": _TEXT,
    "stratumPassword": _TEXT,
    "fallbackStratumURL": _TEXT,
    "fallbackStratumPort": _PORT,
    "fallbackStratumUser": _TEXT,
    "fallbackStratumPassword": _TEXT,
}
MANUAL_FAN = Field("u16", 0, 100)


def check_otp_secret(secret: str) -> str:
    """The secret, if it is base32 a TOTP can be made from; ValueError otherwise."""
    try:
        if not secret.strip():
            raise ValueError("empty")
        pyotp.TOTP(secret).now()
    except (binascii.Error, ValueError):
        raise ValueError(f"otp_secret {secret!r} is not a base32 secret") from None
    return secret


class BadPatch(ValueError):
    """A PATCH the firmware refuses; ``str()`` is its 400 body."""


def manual_fan_key(version: str) -> str:
    return "manualFanSpeed" if version_numbers(version) >= MANUAL_FAN_SINCE else "fanspeed"


def patch_fields(version: str) -> dict[str, Field]:
    return PATCH_FIELDS | {manual_fan_key(version): MANUAL_FAN}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _checked(value: Any, spec: Field) -> Any:
    """The value as the firmware stores it; BadPatch when its type or range is wrong."""
    if spec.kind == "str":
        if not isinstance(value, str) or not spec.low <= len(value.encode()) <= spec.high:
            raise BadPatch("Wrong API input")
        return value
    if isinstance(value, bool):
        if spec.kind == "bool":
            return value
        raise BadPatch("Wrong API input")
    if not isinstance(value, int | float):
        raise BadPatch("Wrong API input")
    if spec.kind == "float":
        if not spec.low <= value <= spec.high:
            raise BadPatch("Wrong API input")
        return float(value)
    whole = int(value)  # cJSON's valueint: truncated toward zero
    if not spec.low <= whole <= spec.high:
        raise BadPatch("Wrong API input")
    return whole != 0 if spec.kind == "bool" else whole


def read_patch(body: bytes, fields: dict[str, Field]) -> dict[str, Any]:
    """The known keys of a PATCH body with the values the firmware would store.

    All or nothing: one bad key refuses the whole body. Keys match without case, as
    cJSON_GetObjectItem does; a body that is JSON but no object sets nothing.
    """
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except ValueError:
        raise BadPatch("Invalid JSON") from None
    if not isinstance(data, dict):
        return {}
    given: dict[str, Any] = {}
    for name, value in data.items():
        given.setdefault(name.lower(), value)
    return {
        name: _checked(given[name.lower()], spec)
        for name, spec in fields.items()
        if name.lower() in given
    }


def patched(settings: Settings, values: dict[str, Any]) -> Settings:
    """``settings`` with the stored PATCH ``values`` applied (pools 0 and 1: stratum and
    fallback)."""
    pools = list(settings.pools)
    for number, prefix in ((0, "stratum"), (1, "fallbackStratum")):
        pool = pools[number]
        updates = {
            attribute: values[prefix + suffix]
            for suffix, attribute in (
                ("URL", "host"), ("Port", "port"), ("User", "user"), ("Password", "password")
            )
            if prefix + suffix in values
        }
        if updates:
            pools[number] = dataclasses.replace(pool, **updates)
    changes: dict[str, Any] = {"pools": tuple(pools)}
    for key, attribute in (
        ("frequency", "frequency_mhz"),
        ("coreVoltage", "core_voltage_mv"),
        ("autofanspeed", "auto_fan"),
        ("manualFanSpeed", "fan_percent"),
        ("fanspeed", "fan_percent"),
        ("temptarget", "temp_target_c"),
    ):
        if key in values:
            changes[attribute] = values[key]
    return dataclasses.replace(settings, **changes)


def mac_address(index: int) -> str:
    """A locally administered MAC (02:...) that encodes the miner's index: 02:4D:57 is 'MW'."""
    return f"02:4D:57:{(index >> 16) & 255:02X}:{(index >> 8) & 255:02X}:{index & 255:02X}"


def fan_percent(temp_c: float, target_c: float = 60.0) -> int:
    """AxeOS auto-fan: a ramp from about 15 °C below the target to full speed 5 °C above."""
    return max(25, min(100, round(35 + (temp_c - (target_c - 15.0)) * 3.5)))


def _number(value: float) -> int | float:
    """A whole number as an int, as cJSON prints it."""
    return int(value) if float(value).is_integer() else round(value, 7)


def system_info(miner: AxeOSMiner, now: float) -> dict[str, Any]:
    model = miner.model
    settings = model.settings
    stratum, fallback = settings.pools[0], settings.pools[1]
    temp = model.temp_c(now)
    temp2 = temp - (1.2 + 0.4 * model.noise(now, 70, 11.0))  # second sensor, a bit cooler
    vr_temp = model.natural_temp_c(now) - 4.0 + 1.5 * model.noise(now, 71, 30.0)
    power = model.power(now)
    voltage = 5100.0 + 25.0 * model.noise(now, 72, 13.0)
    if settings.auto_fan:
        fan_pct = fan_percent(temp, settings.temp_target_c)
    else:
        fan_pct = settings.fan_percent
    fan_rpm = max(0, round(fan_pct * 52 + 90 * model.noise(now, 77, 6.0)))
    accepted, rejected = model.shares(now)
    condition = model.condition
    chip = miner.chip
    core_voltage = settings.core_voltage_mv
    info: dict[str, Any] = {
        "power": round(power, 4),
        "voltage": round(voltage, 2),
        "current": round(power * 1e6 / voltage, 2),
        "temp": round(temp, 3),
        "temp2": round(temp2, 3),
        "vrTemp": round(vr_temp),
        "maxPower": 40,
        "nominalVoltage": 5,
        "hashRate": model.hashrate_ghs(now),
        "expectedHashrate": _number(
            settings.frequency_mhz * chip.small_cores * model.asic_count / 1000
        ),
        "bestDiff": int(model.best_ever(now)),
        "bestSessionDiff": int(model.session_best(now)),
        # blocks found since boot (a 0/1 flag in v2.11-2.12, a count since v2.13)
        "blockFound": model.blocks_found,
        "poolDifficulty": 1000,
        "isUsingFallbackStratum": 1 if condition is Fault.FALLBACK_POOL else 0,
        "isPSRAMAvailable": 1,
        "freeHeap": 8_200_000 + int(40_000 * model.noise(now, 73, 60.0)),
        "coreVoltage": core_voltage,
        "coreVoltageActual": core_voltage - 6 + round(4 * model.noise(now, 74, 9.0)),
        "frequency": _number(settings.frequency_mhz),
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
        "smallCoreCount": chip.small_cores,
        "ASICModel": chip.name,
        "asicCount": model.asic_count,
        "stratumURL": stratum.host,
        "stratumPort": stratum.port,
        "stratumUser": stratum.user,
        "stratumSuggestedDifficulty": 1000,
        "stratumExtranonceSubscribe": 0,
        "fallbackStratumURL": fallback.host,
        "fallbackStratumPort": fallback.port,
        "fallbackStratumUser": fallback.user,
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
        "autofanspeed": 1 if settings.auto_fan else 0,
        "fanspeed": fan_pct,  # before v2.11 also the manual setting: the same number then
        "temptarget": settings.temp_target_c,
        "fanrpm": 0 if condition is Fault.FAN_STOPPED else fan_rpm,
        "fan2rpm": 0,  # not fitted on a Gamma
        "statsFrequency": 0,
        "miningPaused": model.paused,
    }
    if version_numbers(miner.version) >= MANUAL_FAN_SINCE:
        info["manualFanSpeed"] = settings.fan_percent
    if is_nerd(miner.device_model):
        # the NerdQAxe fork names its board here; ESP-Miner only in /api/system/asic
        info["deviceModel"] = miner.device_model
    return info


def is_nerd(device_model: str) -> bool:
    """A NerdQAxe-family board (NerdQAxe++, NerdOCTAXE...), whose firmware is the fork."""
    return device_model.lower().startswith("nerd")


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
        model.settings = dataclasses.replace(
            model.settings,
            pools=(
                Pool(POOL_HOST, POOL_PORT, self.stratum_user, POOL_PASSWORD),
                Pool(FALLBACK_HOST, FALLBACK_PORT, self.stratum_user, POOL_PASSWORD),
            ),
            pool_priority=(0, 1),
        )
        self.version = version
        self.device_model = DEVICE_MODEL
        self.chip = CHIPS["BM1370"]
        self.live_interval_s = LIVE_INTERVAL_S
        self.live_sessions: set[LivePush] = set()
        # what was asked and pushed, for tests
        self.info_requests = 0
        self.live_requests = 0
        self.live_updates = 0
        self.patch_requests = 0  # every PATCH /api/system that came in
        self.writes = 0  # PATCHes answered 200 that carried a setting
        self.last_patch: dict[str, Any] | None = None  # the body of the last of those
        self.identified_at: float | None = None
        self.identify_until: float | None = None

    @property
    def has_live(self) -> bool:
        return version_numbers(self.version) >= LIVE_SINCE

    def has(self, since: tuple[int, ...]) -> bool:
        """Whether this firmware version is ``since`` or later."""
        return version_numbers(self.version) >= since

    def drop_live(self) -> None:
        """Drop every open live WebSocket (clients may connect again)."""
        for session in list(self.live_sessions):
            session.drop()

    async def set_fault(self, fault: Fault | str) -> None:
        await super().set_fault(fault)
        if self.fault is Fault.NO_LIVE:
            self.drop_live()

    def set_device(
        self,
        device_model: str | None = None,
        asic_model: str | None = None,
        asic_count: int | None = None,
    ) -> None:
        """Another board: e.g. ``set_device("NerdQAxe++", "BM1370", 4)``. None keeps a value;
        a ValueError names an ASIC the simulator does not know."""
        if asic_model is not None and asic_model not in CHIPS:
            raise ValueError(f"unknown ASIC {asic_model!r} (known: {', '.join(CHIPS)})")
        if asic_count is not None and not 1 <= asic_count <= 256:
            raise ValueError("asic_count must be 1-256")
        if device_model is not None:
            self.device_model = device_model
        if asic_model is not None:
            self.chip = CHIPS[asic_model]
        count = self.model.asic_count if asic_count is None else asic_count
        scale = self.chip.small_cores / CHIPS["BM1370"].small_cores
        self.model.set_chips(count, scale, self.clock())

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
        if path == INFO_PATH:
            return self._info(request)
        return self._control(path, request)

    def _info(self, request: Request) -> Reply:
        if request.method not in ("GET", "HEAD"):
            return Reply(405, b"Method not allowed", "text/plain")
        self.info_requests += 1
        body = json.dumps(self.report(self.clock()), separators=(",", ":")).encode()
        if self.fault is Fault.GARBAGE:
            body = garbage_body(body, self.next_reply_number(), self.model.key)
        return Reply(200, body)

    def _control(self, path: str, request: Request) -> Reply:
        """The write API and the ASIC options: version gate, method, OTP, then the act."""
        routes: dict[str, tuple[str, tuple[int, ...], Callable[[Request], Reply]]] = {
            SETTINGS_PATH: ("PATCH", (), self._patch),
            ASIC_PATH: ("GET", ASIC_SINCE, self._asic),
            RESTART_PATH: ("POST", (), self._restart_command),
            IDENTIFY_PATH: ("POST", (), self._identify),
            PAUSE_PATH: ("POST", PAUSE_SINCE, lambda _: self._pause(True)),
            RESUME_PATH: ("POST", PAUSE_SINCE, lambda _: self._pause(False)),
        }
        route = routes.get(path)
        if route is None or not self.has(route[1]):
            return Reply(404, NOT_FOUND, "text/plain")
        method, _, act = route
        if request.method != method and not (method == "GET" and request.method == "HEAD"):
            return Reply(405, b"Method not allowed", "text/plain")
        if method != "GET" and not self._otp_ok(request):
            return Reply(401, OTP_REQUIRED, "text/plain")
        return act(request)

    def _otp_ok(self, request: Request) -> bool:
        """NerdQAxe: a write needs the TOTP of the current 30 s step (or the one before or
        after) in ``X-TOTP``, on the wall clock as the client's authenticator app has it."""
        secret = self.quirks.otp_secret
        if secret is None:
            return True
        code = request.headers.get("x-totp", "").strip()
        if not (len(code) == 6 and code.isdigit()):
            return False
        try:
            return pyotp.TOTP(secret).verify(code, for_time=time.time(), valid_window=1)
        except (binascii.Error, ValueError):
            return False

    def _patch(self, request: Request) -> Reply:
        self.patch_requests += 1
        try:
            values = read_patch(request.body, patch_fields(self.version))
        except BadPatch as exc:
            return Reply(400, str(exc).encode(), "text/plain")
        if values:
            self.writes += 1
            body = json.loads(request.body)
            self.last_patch = body if isinstance(body, dict) else None
            if not self.quirks.ignore_writes:
                settings = patched(self.model.settings, values)
                if settings != self.model.settings:
                    self.model.apply_settings(settings, self.clock())
        return Reply(200, b"", "text/plain")

    def _asic(self, request: Request) -> Reply:
        chip, quirks = self.chip, self.quirks
        return _json_reply({
            "ASICModel": chip.name,
            "deviceModel": self.device_model,
            "asicCount": self.model.asic_count,
            "defaultFrequency": chip.default_frequency,
            "frequencyOptions": list(quirks.frequency_options or chip.frequency_options),
            "defaultVoltage": chip.default_voltage,
            "voltageOptions": list(quirks.voltage_options or chip.voltage_options),
        })

    def _restart_command(self, request: Request) -> Reply:
        self.request_restart()
        return _json_reply({"message": "System will restart shortly."})

    def _identify(self, request: Request) -> Reply:
        """ESP-Miner's identify toggles: on for 30 s, or off again when on."""
        now = self.clock()
        if self.identify_until is not None and now < self.identify_until:
            self.identify_until = None
            return _json_reply({"message": 'The device no longer says "Hi!".'})
        self.identified_at = now
        self.identify_until = now + IDENTIFY_S
        return _json_reply({"message": 'The device says "Hi!" for 30 seconds.'})

    def _pause(self, paused: bool) -> Reply:
        self.set_paused(paused)
        return _json_reply({"message": "Mining paused." if paused else "Mining resumed."})

    def _live(self, request: Request) -> Reply | Upgrade:
        if self.fault is Fault.NO_LIVE:
            return Reply(503, b"Live updates unavailable", "text/plain")
        if request.method != "GET" or not wants_websocket(request):
            return Reply(400, b"WebSocket only", "text/plain")
        return Upgrade(LivePush(self))

    def control_state(self) -> dict[str, Any]:
        now = self.clock()
        identifying = self.identify_until is not None and now < self.identify_until
        quirks = self.quirks
        return super().control_state() | {
            "version": self.version,
            "device_model": self.device_model,
            "asic_model": self.chip.name,
            "asic_count": self.model.asic_count,
            "frequency_options": list(quirks.frequency_options or self.chip.frequency_options),
            "voltage_options": list(quirks.voltage_options or self.chip.voltage_options),
            "writes": self.writes,
            "patch_requests": self.patch_requests,
            "last_patch": self.last_patch,
            "identified_at": self.identified_at,
            "identifying": identifying,
            "otp_secret": quirks.otp_secret,
            "ignore_writes": quirks.ignore_writes,
        }


def _json_reply(payload: dict[str, Any]) -> Reply:
    return Reply(200, json.dumps(payload, separators=(",", ":")).encode())
