"""AxeOS / ESP-Miner (Bitaxe) and NerdQAxe: their HTTP write API.

Read: ``GET /api/system/info`` and, once, ``GET /api/system/asic`` (v2.9+: the chip's own
frequency and voltage options; a 404 from older firmware is fine). Write: ``PATCH
/api/system`` with only the fields that change (200: accepted; 400 "Wrong API input").
Act: ``POST /api/system/restart``, ``/identify``, and ``/pause`` / ``/resume`` (ESP-Miner
v2.14+ only). NerdQAxe with OTP on wants ``X-TOTP`` on every write: sent when an
``otp_secret`` is configured.

The mapping between the firmware's JSON and ``MinerSettings`` is pure (``settings_of``,
``facts_of``, ``patch_body``), so it is tested without a miner.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import msgspec
import pyotp

from minerwatch.collector.control.driver import ControlError, MinerAction, MinerFacts, ReadBack
from minerwatch.collector.control.web import http_client, reply_text, send
from minerwatch.collector.drivers.axeos import decode_body, is_nerdqaxe, stratum_url
from minerwatch.collector.drivers.reading import PollError, http_reason
from minerwatch.collector.drivers.values import count, flag, number, positive, text
from minerwatch.shared.control import pool_address
from minerwatch.shared.schemas import FanMode, MinerSettings, Pool, Pools

INFO_PATH = "/api/system/info"
ASIC_PATH = "/api/system/asic"
SYSTEM_PATH = "/api/system"
ACTION_PATHS: dict[str, str] = {
    "restart": "/api/system/restart", "identify": "/api/system/identify",
    "pause": "/api/system/pause", "resume": "/api/system/resume",
}
#: ESP-Miner's first firmware with ``/api/system/pause`` and ``/resume``.
PAUSE_SINCE = (2, 14)
#: ESP-Miner's first firmware whose manual fan speed is ``manualFanSpeed`` (``fanspeed``
#: is the speed now, then).
MANUAL_FAN_SINCE = (2, 11)
SETTABLE = frozenset({"frequency_mhz", "core_voltage_mv", "fan_mode", "fan_percent",
                      "temp_target_c", "pools"})
#: After a failed ``/api/system/asic``, how long reads go without asking it again.
ASIC_RETRY_S = 60.0
#: How AxeOS says "authenticate first" (NerdQAxe with OTP on).
OTP_HINT = "otp"

#: Firmware field names of each pool role.
POOL_FIELDS: dict[str, tuple[str, str, str, str, str]] = {
    "primary": ("stratumURL", "stratumPort", "stratumUser", "stratumPassword", "stratumTLS"),
    "fallback": ("fallbackStratumURL", "fallbackStratumPort", "fallbackStratumUser",
                 "fallbackStratumPassword", "fallbackStratumTLS"),
}


# --- mapping (pure) ------------------------------------------------------------------


def firmware_version(version: object) -> tuple[int, ...]:
    """``v2.14.0`` -> (2, 14, 0); () when it does not start with a version number."""
    found = re.match(r"\s*v?(\d+(?:\.\d+)*)", text(version) or "")
    return tuple(int(part) for part in found.group(1).split(".")) if found else ()


def is_esp_miner(info: Mapping[str, Any]) -> bool:
    """ESP-Miner (Bitaxe) rather than the NerdQAxe fork (NerdQAxe+, NerdOCTAXE...), which
    numbers its versions on its own (v1.0.x) and has no pause."""
    return not is_nerdqaxe(info.get("deviceModel"))


def pauses(info: Mapping[str, Any]) -> bool:
    return is_esp_miner(info) and firmware_version(info.get("version")) >= PAUSE_SINCE


def manual_fan_key(info: Mapping[str, Any]) -> str:
    """Where the manual fan speed is written and read: ``manualFanSpeed`` where the
    firmware has it (ESP-Miner v2.11+), else ``fanspeed``."""
    if "manualFanSpeed" in info or (
            is_esp_miner(info) and firmware_version(info.get("version")) >= MANUAL_FAN_SINCE):
        return "manualFanSpeed"
    return "fanspeed"


def _rounded(value: object) -> int | None:
    result = number(value)
    return round(result) if result is not None and result >= 0 else None


def _pool(info: Mapping[str, Any], role: str) -> Pool | None:
    url_key, port_key, user_key, _, tls_key = POOL_FIELDS[role]
    url = stratum_url(info.get(url_key), info.get(port_key), info.get(tls_key))
    if url is None:
        return None
    try:  # the contract's bounds: a miner's odd strings must not spoil the whole result
        return msgspec.convert({"url": url, "user": text(info.get(user_key)) or ""}, Pool)
    except msgspec.ValidationError:
        return None


def settings_of(info: Mapping[str, Any]) -> MinerSettings:
    """The settings in one ``/api/system/info`` object (pool passwords are never in it)."""
    raw = info.get("autofanspeed")  # 0/1, a boolean, or NerdQAxe's 2 (its PID mode)
    auto = float(raw) if isinstance(raw, bool) else number(raw)
    fan_mode: FanMode | None = None if auto is None else "auto" if auto != 0 else "manual"
    primary, fallback = _pool(info, "primary"), _pool(info, "fallback")
    return MinerSettings(
        frequency_mhz=_rounded(info.get("frequency")),
        core_voltage_mv=_rounded(info.get("coreVoltage")),
        fan_mode=fan_mode,
        fan_percent=_rounded(info.get(manual_fan_key(info), info.get("fanspeed"))),
        temp_target_c=_rounded(info.get("temptarget")),
        pools=Pools(primary=primary, fallback=fallback) if primary or fallback else None,
    )


def _options(asic: Mapping[str, Any], key: str) -> tuple[int, ...]:
    values = asic.get(key)
    if not isinstance(values, list):
        return ()
    return tuple(sorted({v for v in (_rounded(item) for item in values[:64]) if v}))


def facts_of(info: Mapping[str, Any], asic: Mapping[str, Any]) -> MinerFacts:
    """What the safe ranges depend on: the chip, the board, the firmware's own options,
    and the cores and chips the expected hashrate is counted from."""
    small_cores = count(info.get("smallCoreCount")) or count(asic.get("smallCoreCount"))
    asic_count = count(info.get("asicCount")) or count(asic.get("asicCount"))
    if not asic_count and small_cores:  # ESP-Miner: expectedHashrate = MHz x cores x chips
        frequency, expected = positive(info.get("frequency")), positive(
            info.get("expectedHashrate"))
        if frequency and expected:
            asic_count = round(expected * 1000 / (frequency * small_cores)) or None
    return MinerFacts(
        asic=text(info.get("ASICModel")) or text(asic.get("ASICModel")),
        device_model=text(info.get("deviceModel")) or text(asic.get("deviceModel")),
        firmware=text(info.get("version")),
        frequency_options=_options(asic, "frequencyOptions"),
        voltage_options=_options(asic, "voltageOptions"),
        small_cores=small_cores or None,
        asic_count=asic_count or None,
    )


def read_back_of(info: Mapping[str, Any], asic: Mapping[str, Any]) -> ReadBack:
    paused = flag(info.get("miningPaused")) if "miningPaused" in info else None
    if paused is None and "shutdown" in info:  # NerdQAxe
        paused = flag(info.get("shutdown"))
    return ReadBack(settings=settings_of(info), facts=facts_of(info, asic),
                    uptime_s=count(info.get("uptimeSeconds")), paused=paused)


def _pool_patch(role: str, pool: Pool, info: Mapping[str, Any]) -> dict[str, Any]:
    url_key, port_key, user_key, password_key, tls_key = POOL_FIELDS[role]
    address = pool_address(pool.url)
    if address is None:
        raise ControlError(f"pools.{role}.url {pool.url!r} is not host:port")
    scheme, host, port = address
    body: dict[str, Any] = {url_key: host, port_key: port, user_key: pool.user}
    if pool.password is not None:
        body[password_key] = pool.password
    tls = scheme in ("stratum+ssl", "stratum+tls")
    if scheme == "stratum2+tcp":
        raise ControlError("Stratum V2 pools are not set this way on AxeOS", unsupported=True)
    if tls_key in info:
        body[tls_key] = 1 if tls else 0
    elif tls:
        raise ControlError(f"this firmware ({text(info.get('version')) or 'unknown'}) has no "
                           "TLS pools (ESP-Miner v2.13+)", unsupported=True)
    return body


def patch_body(change: MinerSettings, info: Mapping[str, Any]) -> dict[str, Any]:
    """The ``PATCH /api/system`` body for the non-null fields of ``change``, in this
    firmware's names (``info``: what it last said, for its version and field names)."""
    body: dict[str, Any] = {}
    if change.frequency_mhz is not None:
        body["frequency"] = change.frequency_mhz
    if change.core_voltage_mv is not None:
        body["coreVoltage"] = change.core_voltage_mv
    if change.fan_mode is not None:
        body["autofanspeed"] = 1 if change.fan_mode == "auto" else 0
    if change.fan_percent is not None:
        body[manual_fan_key(info)] = change.fan_percent
    if change.temp_target_c is not None:
        body["temptarget"] = change.temp_target_c
    if change.pools is not None:
        for role in ("primary", "fallback"):
            pool = getattr(change.pools, role)
            if pool is not None:
                body.update(_pool_patch(role, pool, info))
    return body


# --- I/O ------------------------------------------------------------------------------


class AxeosControl:
    """One AxeOS miner's write API; ``otp_secret`` (base32) makes the ``X-TOTP`` header."""

    name = "axeos"

    def __init__(self, host: str, port: int, timeout_s: float,
                 otp_secret: str | None = None) -> None:
        self.host = host
        self.port = port
        self._otp = pyotp.TOTP(otp_secret.replace(" ", "").upper()) if otp_secret else None
        self._http = http_client(host, port, timeout_s)
        #: What the firmware said last (version, field names), and its ASIC reply once.
        self._info: Mapping[str, Any] | None = None
        self._asic: Mapping[str, Any] | None = None
        self._asic_retry_at = 0.0

    def supports(self, action: str) -> bool:
        # pause/resume depend on the version: ``act`` says so, naming it, before sending
        return action in ("restart", "identify", "pause", "resume", "configure", "tune")

    def settable(self) -> frozenset[str]:
        return SETTABLE

    async def read(self) -> ReadBack:
        status, body = await send(self._http, "GET", INFO_PATH)
        if status != 200:
            raise ControlError(f"reading {INFO_PATH}: {http_reason(status)}")
        try:
            info = decode_body(body)
        except PollError as exc:
            raise ControlError(exc.reason) from None
        if not isinstance(info, Mapping) or "hashRate" not in info:
            raise ControlError(f"bad reply: {INFO_PATH} is not AxeOS's system info")
        self._info = info
        return read_back_of(info, await self._asic_options())

    async def _asic_options(self) -> Mapping[str, Any]:
        """``/api/system/asic``, asked once: its options do not change while it runs. A
        404 (before v2.9) is remembered as nothing; another failure is asked again, but
        not before ``ASIC_RETRY_S`` (a miner that hangs there must not double every read)."""
        if self._asic is not None:
            return self._asic
        now = time.monotonic()
        if now < self._asic_retry_at:
            return {}
        try:
            status, body = await send(self._http, "GET", ASIC_PATH)
        except ControlError:
            self._asic_retry_at = now + ASIC_RETRY_S
            return {}
        if status == 404:
            self._asic = {}
        elif status == 200:
            try:
                asic = decode_body(body)
            except PollError:
                asic = {}
            self._asic = asic if isinstance(asic, Mapping) else {}
        else:
            self._asic_retry_at = now + ASIC_RETRY_S
        return self._asic or {}

    async def write(self, change: MinerSettings) -> None:
        if self._info is None:
            await self.read()
        assert self._info is not None
        body = patch_body(change, self._info)
        if body:
            await self._call("PATCH", SYSTEM_PATH, body)

    async def act(self, action: MinerAction) -> None:
        if action in ("pause", "resume"):
            if self._info is None:
                await self.read()
            assert self._info is not None
            if not pauses(self._info):
                version = text(self._info.get("version")) or "unknown"
                raise ControlError(f"{action} needs ESP-Miner v2.14 or later (this miner runs "
                                   f"{version})", unsupported=True)
        await self._call("POST", ACTION_PATHS[action], None, restart=action == "restart")

    async def _call(self, method: str, path: str, body: dict[str, Any] | None, *,
                    restart: bool = False) -> None:
        headers = {"X-TOTP": self._otp.now()} if self._otp is not None else None
        status, reply = await send(self._http, method, path, json=body, headers=headers,
                                   closed_ok=restart)
        if status in (0, 200, 204):  # 0: closed at once by a restart
            return
        said = reply_text(reply)
        if status == 401 and (OTP_HINT in said.lower() or self._otp is not None):
            if self._otp is None:
                raise ControlError("the miner asks for an OTP: set otp_secret for it "
                                   "([[collector.miners]] otp_secret or [control] otp_secret)")
            raise ControlError(f"the miner refused the OTP ({said}): check otp_secret and "
                               "the clocks of both")
        if status == 404:
            raise ControlError(f"this firmware has no {method} {path}", unsupported=True)
        if status == 400:
            raise ControlError(f"the miner refused the change: {said}")
        raise ControlError(f"{method} {path}: {http_reason(status)}: {said}")

    async def aclose(self) -> None:
        await self._http.aclose()
