"""AxeOS / ESP-Miner (Bitaxe, NerdQAxe legacy API): ``GET /api/system/info`` over HTTP.

``parse_system_info`` is pure and knows the firmware differences (shared/PROTOCOLS.md);
``AxeosDriver`` does the I/O with one keep-alive httpx client per miner.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import ssl
from collections.abc import Mapping
from typing import Any

import httpx

from minerwatch.collector.drivers.reading import (
    PollError,
    Reading,
    decode_json,
    timeout_reason,
)
from minerwatch.collector.drivers.values import (
    count,
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

# These clients speak plain HTTP only. A bare context is built once and shared: httpx
# would otherwise build (and load CA files into) a TLS context for every client, ~30 ms each.
_PLAIN_HTTP_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


# --- parsing (pure) -------------------------------------------------------------------


def _truthy(value: object) -> bool:
    """Flags come as booleans or as 0/1 numbers depending on the firmware version."""
    return value is True or (isinstance(value, int | float) and not isinstance(value, bool)
                             and value != 0)


def stratum_url(host: object, port: object) -> str | None:
    """``stratum+tcp://host:port`` from the firmware's pool fields. Users often paste a
    whole URL into the host field (NerdQAxe stores it that way): its port wins then."""
    address = text(host)
    if address is None:
        return None
    scheme = "stratum+tcp"
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


def _identity(data: Mapping[str, Any]) -> tuple[str | None, str | None]:
    asic = text(data.get("ASICModel"))
    device_model = text(data.get("deviceModel"))
    if device_model:  # NerdQAxe family: "NerdQAxe++", "NerdOCTAXE-gamma"
        prefix = re.match(r"[A-Za-z]+", device_model)
        make = prefix.group() if prefix else device_model
        model: str | None = device_model
    else:
        make = "Bitaxe"
        board = text(data.get("boardVersion"))
        model = BOARD_FAMILIES.get(board[:1]) if board else None
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
    paused = _truthy(data.get("miningPaused")) or _truthy(data.get("shutdown"))

    power_w = positive(data.get("power"))
    if power_w is None:
        volts_mv, amps_ma = positive(data.get("voltage")), positive(data.get("current"))
        if volts_mv is not None and amps_ma is not None:
            power_w = tidy(volts_mv * amps_ma / 1e6)

    temps = [temperature(data.get("temp")), temperature(data.get("temp2"))]
    chip_temps = data.get("asicTemps")  # NerdQAxe: per-chip
    if isinstance(chip_temps, list):
        temps.extend(temperature(t) for t in chip_temps)

    if _truthy(data.get("isUsingFallbackStratum")):
        pool = stratum_url(data.get("fallbackStratumURL"), data.get("fallbackStratumPort"))
    else:
        pool = stratum_url(data.get("stratumURL"), data.get("stratumPort"))

    make, model = _identity(data)
    return Reading(
        hashrate_ths=hashrate_ths,
        expected_hashrate_ths=tidy(expected_ghs / 1e3) if expected_ghs is not None else None,
        power_w=power_w,
        temp_c=hottest(temps),
        vr_temp_c=temperature(data.get("vrTemp")),
        fan_rpm=_fans(data),
        shares_accepted=count(data.get("sharesAccepted")),
        shares_rejected=count(data.get("sharesRejected")),
        best_diff=si_number(data.get("bestDiff")),
        uptime_s=count(data.get("uptimeSeconds")),
        pool_url=pool,
        is_mining=not paused and hashrate_ths > 0,
        make=make,
        model=model,
        firmware=text(data.get("version")),
        hostname=text(data.get("hostname")),
        mac=mac_address(data.get("macAddr")),
    )


# --- I/O ------------------------------------------------------------------------------


def _os_error(exc: BaseException) -> OSError | None:
    """The OS-level error under an httpx exception: httpx -> httpcore -> anyio's
    "All connection attempts failed" -> the OSError with an errno (refused, no route...)."""
    first: OSError | None = None
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            if seen.errno:
                return seen
            first = first or seen
        seen = seen.__cause__ or seen.__context__
    return first


def _os_error_text(exc: BaseException) -> str:
    error = _os_error(exc)
    if error is not None and error.errno:
        return os.strerror(error.errno)  # asyncio's own text names the address: noise here
    return str(error or exc) or type(exc).__name__


def _connect_reason(exc: httpx.ConnectError) -> str:
    error = _os_error(exc)
    if isinstance(error, ConnectionRefusedError) or (
        error is not None and error.errno == errno.ECONNREFUSED
    ):
        return "connection refused"
    return f"connection failed: {_short(_os_error_text(exc))}"


def _short(message: str, limit: int = 80) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "…"


class AxeosDriver:
    """Polls one AxeOS miner. One client per miner, built once, kept alive between polls."""

    name = "axeos"

    def __init__(self, host: str, port: int, timeout_s: float, keepalive_s: float = 30.0):
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        netloc = f"[{host}]" if ":" in host else host
        self._client = httpx.AsyncClient(
            base_url=f"http://{netloc}:{port}",
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(
                max_connections=2, max_keepalive_connections=1, keepalive_expiry=keepalive_s
            ),
            verify=_PLAIN_HTTP_TLS,
            trust_env=False,  # a proxy from the environment must not sit between us and a LAN miner
            follow_redirects=False,
            # No Origin header: AxeOS answers 401 to an Origin outside private ranges.
            headers={"Accept": "application/json"},
        )

    async def fetch(self) -> Reading:
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._get(INFO_PATH)
        except TimeoutError:
            raise PollError(timeout_reason(self.timeout_s)) from None
        return parse_system_info(decode_json(body))

    async def _get(self, path: str) -> bytes:
        # A kept-alive connection the miner closed meanwhile fails on reuse: retry once.
        for attempt in (1, 2):
            try:
                return await self._get_once(path)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                if attempt == 2:
                    raise PollError(self._transport_reason(exc)) from None
        raise AssertionError("unreachable")

    async def _get_once(self, path: str) -> bytes:
        try:
            async with self._client.stream("GET", path) as response:
                if response.status_code != 200:
                    raise PollError(f"HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_REPLY_BYTES:
                        raise PollError(f"bad reply: larger than {MAX_REPLY_BYTES} bytes")
                return bytes(body)
        except httpx.TimeoutException:
            raise PollError(timeout_reason(self.timeout_s)) from None
        except httpx.ConnectError as exc:
            raise PollError(_connect_reason(exc)) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            raise
        except httpx.HTTPError as exc:
            raise PollError(f"HTTP error: {_short(str(exc) or type(exc).__name__)}") from None

    @staticmethod
    def _transport_reason(exc: httpx.HTTPError) -> str:
        message = str(exc)
        if isinstance(exc, httpx.RemoteProtocolError):
            if "disconnected" in message.lower():
                return "connection closed without a reply"
            return f"bad reply: not HTTP ({_short(message, 60)})"
        return f"connection error: {_short(_os_error_text(exc))}"

    async def aclose(self) -> None:
        await self._client.aclose()
