"""AxeOS / ESP-Miner (Bitaxe, NerdQAxe legacy API): ``GET /api/system/info`` over HTTP.

``parse_system_info`` is pure and knows the firmware differences (shared/PROTOCOLS.md);
``AxeosDriver`` does the I/O over one kept-alive HTTP/1.1 connection per miner
(``drivers.http``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from minerwatch.collector.drivers.http import HttpClient
from minerwatch.collector.drivers.reading import PollError, Reading, decode_json, http_reason
from minerwatch.collector.drivers.values import (
    count,
    flag,
    hottest,
    mac_address,
    non_negative,
    positive,
    si_number,
    temperature,
    text,
    tidy,
)

INFO_PATH = "/api/system/info"
MAX_REPLY_BYTES = 1 << 20

#: First digit of ``boardVersion`` -> Bitaxe family.
BOARD_FAMILIES = {"1": "Max", "2": "Ultra", "3": "UltraHex", "4": "Supra", "6": "Gamma",
                  "8": "GammaTurbo"}
#: Family by ASIC, for boards whose ``boardVersion`` says nothing (old Max: "0.11").
ASIC_FAMILIES = {"BM1397": "Max", "BM1366": "Ultra", "BM1368": "Supra", "BM1370": "Gamma"}


# --- parsing (pure) -------------------------------------------------------------------


def _truthy(value: object) -> bool:
    """Flags come as booleans or as 0/1 numbers depending on the firmware version."""
    return value is True or (isinstance(value, int | float) and not isinstance(value, bool)
                             and value != 0)


def stratum_url(host: object, port: object, tls: object = 0) -> str | None:
    """``stratum+tcp://host:port`` from the firmware's pool fields (``stratum+ssl`` when
    ``stratumTLS`` is on, v2.13+). Users often paste a whole URL into the host field
    (NerdQAxe stores it that way): its scheme and port win then."""
    address = text(host)
    if address is None:
        return None
    scheme = "stratum+ssl" if _truthy(tls) else "stratum+tcp"
    if "://" in address:
        given, _, address = address.partition("://")
        if given.lower().startswith("stratum+"):
            scheme = given.lower()
    address = address.strip().rstrip("/")
    if not address:
        return None
    if re.search(r":\d+$", address) and not address.endswith("]"):
        return f"{scheme}://{address}"
    port_number = count(port)
    return f"{scheme}://{address}:{port_number}" if port_number else f"{scheme}://{address}"


def _sensor(value: object) -> float | None:
    """A chip or VR temperature; boards without that sensor send 0 or -1, not None."""
    result = temperature(value)
    return result if result is not None and result > 0 else None


def _fans(data: Mapping[str, Any]) -> list[int]:
    if "fanrpm" in data:  # v2.2+: fanrpm is RPM (fanspeed is a percentage)
        fans: list[int] = []
        first = count(data["fanrpm"])
        if first is not None:
            fans.append(first)  # kept at 0 too: a stopped fan is news
        # A second fan field exists on every v2.11+ board; 0 there usually means "not
        # fitted", unless the firmware says how many fans there are (NerdQAxe fanCount).
        declared = count(data.get("fanCount"))
        for key in ("fan2rpm", "fanrpm2"):
            rpm = count(data.get(key))
            if rpm is not None and (rpm > 0 or (declared or 0) >= 2):
                fans.append(rpm)
        return fans
    legacy = count(data.get("fanSpeed"))  # v2.0-2.1: fanSpeed is RPM
    return [legacy] if legacy is not None else []


#: ``poolConnectionInfo`` before ESP-Miner first reached a pool since boot.
NOT_CONNECTED = "Not Connected"
#: NerdQAxe ``stratum.activePoolMode``: 0 failover (primary, then fallback), 1 dual pool.
DUAL_POOL_MODE = 1


def _stratum(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """NerdQAxe v1.0.35+: the ``stratum`` object of the pool manager (else empty)."""
    stratum = data.get("stratum")
    return stratum if isinstance(stratum, Mapping) else {}


def _pool_fallback(data: Mapping[str, Any]) -> bool | None:
    """ESP-Miner and NerdQAxe before v1.0.35: ``isUsingFallbackStratum`` (0/1 or a bool);
    NerdQAxe v1.0.35+: ``stratum.usingFallback``, or no fallback at all in dual-pool mode
    (``activePoolMode`` 1: both pools work by design)."""
    if "isUsingFallbackStratum" in data:
        return flag(data["isUsingFallbackStratum"])
    stratum = _stratum(data)
    if count(stratum.get("activePoolMode")) == DUAL_POOL_MODE:
        return False
    return flag(stratum.get("usingFallback"))


def _pool_connected(data: Mapping[str, Any]) -> bool | None:
    """NerdQAxe v1.0.35+: every pool in use (``stratum.pools[].connected``) is connected.
    ESP-Miner says only that it is not: ``poolConnectionInfo`` is "Not Connected" until the
    first connection since boot, and Stratum V2 writes its failures there ("SV2: Pool
    unreachable"); "IPv4" stays after a V1 connection drops, so it proves nothing."""
    pools = _stratum(data).get("pools")
    if isinstance(pools, list) and pools:
        states = [flag(pool.get("connected")) if isinstance(pool, Mapping) else None
                  for pool in pools]
        return None if None in states else all(states)
    info = text(data.get("poolConnectionInfo"))
    if info is not None and (info == NOT_CONNECTED or info.startswith("SV2: ")):
        return False
    return None


def _blocks_found(data: Mapping[str, Any]) -> int | None:
    """NerdQAxe v1.0.33+: ``totalFoundBlocks`` (kept across restarts), else
    ``foundBlocks`` (since boot); ESP-Miner v2.11+: ``blockFound`` (0/1 until v2.12, a
    count since boot from v2.13)."""
    for key in ("totalFoundBlocks", "foundBlocks", "blockFound"):
        if key in data:
            return count(data[key])
    return None


def is_nerdqaxe(device_model: object) -> bool:
    """The NerdQAxe fork (NerdQAxe+, NerdQAxe++, NerdOCTAXE...): its boards are named
    "Nerd..."; ESP-Miner names a Bitaxe's family ("Gamma") in the same ``deviceModel``
    field of /api/system/asic, and may one day in /api/system/info too."""
    return (text(device_model) or "").lower().startswith("nerd")


def _identity(data: Mapping[str, Any]) -> tuple[str | None, str | None]:
    asic = text(data.get("ASICModel"))
    device_model = text(data.get("deviceModel"))
    model: str | None
    if device_model and is_nerdqaxe(device_model):  # "NerdQAxe++", "NerdOCTAXE-gamma"
        prefix = re.match(r"[A-Za-z]+", device_model)
        make = prefix.group() if prefix else device_model
        model = device_model
    else:
        make = "Bitaxe"
        board = text(data.get("boardVersion"))
        # The firmware's own family name where it gives one, else ours from the board.
        model = device_model or (BOARD_FAMILIES.get(board[:1]) if board else None)
        model = model or ASIC_FAMILIES.get(asic or "")
    if asic:
        model = f"{model} {asic}" if model else asic
    return make, model


def parse_system_info(data: object) -> Reading:
    """One ``/api/system/info`` object -> Reading. Raises PollError when it is not one."""
    if not isinstance(data, Mapping):
        raise PollError("bad reply: not a JSON object")
    if "hashRate" not in data:
        raise PollError("bad reply: no hashRate field")
    hashrate_ghs = non_negative(data["hashRate"])
    # The schema needs a number: an impossible hashrate reads as 0 and "not mining".
    hashrate_ths = tidy(hashrate_ghs / 1e3) if hashrate_ghs is not None else 0.0
    expected_ghs = positive(data.get("expectedHashrate"))
    # Not hashing whatever hashRate says (it keeps its last value): paused (v2.14+,
    # NerdQAxe "shutdown"), overheat mode (ASIC powered down until the user clears it),
    # or an active power fault (VCORE off).
    paused = (_truthy(data.get("miningPaused")) or _truthy(data.get("shutdown"))
              or _truthy(data.get("overheat_mode")) or text(data.get("power_fault")) is not None)

    power_w = positive(data.get("power"))
    if power_w is None:
        volts_mv, amps_ma = positive(data.get("voltage")), positive(data.get("current"))
        if volts_mv is not None and amps_ma is not None:
            power_w = tidy(positive(volts_mv * amps_ma / 1e6))

    temps = [_sensor(data.get("temp")), _sensor(data.get("temp2"))]
    chip_temps = data.get("asicTemps")  # NerdQAxe: per-chip
    if isinstance(chip_temps, list):
        temps.extend(_sensor(t) for t in chip_temps)

    fallback = _pool_fallback(data)
    if fallback:
        pool = stratum_url(data.get("fallbackStratumURL"), data.get("fallbackStratumPort"),
                           data.get("fallbackStratumTLS"))
    else:
        pool = stratum_url(data.get("stratumURL"), data.get("stratumPort"),
                           data.get("stratumTLS"))

    make, model = _identity(data)
    return Reading(
        hashrate_ths=hashrate_ths,
        expected_hashrate_ths=tidy(expected_ghs / 1e3) if expected_ghs is not None else None,
        power_w=power_w,
        temp_c=hottest(temps),
        vr_temp_c=_sensor(data.get("vrTemp")),
        fan_rpm=_fans(data),
        shares_accepted=count(data.get("sharesAccepted")),
        shares_rejected=count(data.get("sharesRejected")),
        best_diff=si_number(data.get("bestDiff")),
        uptime_s=count(data.get("uptimeSeconds")),
        pool_url=pool,
        is_mining=not paused and hashrate_ths > 0,
        pool_fallback=fallback,
        pool_connected=_pool_connected(data),
        blocks_found=_blocks_found(data),
        make=make,
        model=model,
        firmware=text(data.get("version")),
        hostname=text(data.get("hostname")),
        mac=mac_address(data.get("macAddr")),
    )


# --- I/O ------------------------------------------------------------------------------


def decode_body(body: bytes) -> object:
    """The reply as JSON, decoded once from bytes. msgspec is strict; whatever it refuses
    (raw control characters, bytes that are not UTF-8, NaN) goes through ``decode_json``,
    which is lenient where firmwares need it and words the error when it is not JSON."""
    try:
        return _json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # deep nesting too
        return decode_json(body)


_json = msgspec.json.Decoder()


class AxeosDriver:
    """Polls one AxeOS miner over one connection, built once, kept alive between polls."""

    name = "axeos"

    def __init__(self, host: str, port: int, timeout_s: float, keepalive_s: float = 30.0):
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        # No Origin header: AxeOS answers 401 to an Origin outside private ranges.
        self._http = HttpClient(host, port, timeout_s=timeout_s, keepalive_s=keepalive_s,
                                headers=[("Accept", "application/json")],
                                max_body=MAX_REPLY_BYTES)

    async def fetch(self) -> Reading:
        status, body = await self._http.get(INFO_PATH)
        if status != 200:
            raise PollError(http_reason(status))
        return parse_system_info(decode_body(body))

    async def aclose(self) -> None:
        await self._http.aclose()
