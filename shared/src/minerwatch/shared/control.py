"""What may be written to a miner: the per-model safe ranges and the one check of a change.

AxeOS range-checks frequency and voltage only as 1-65535, so minerwatch holds its own
bounds, taken from the option lists of ESP-Miner's ``device_config.h``. Where the firmware
lists its own options (``GET /api/system/asic``, v2.9 and later) they win when narrower.
``[control] allow_overclock = true`` widens to ``OVERCLOCK``, a second bound per chip,
and never beyond it. Anything outside is refused before a byte goes to the miner.

Pure functions: the collector checks every command with ``check_change`` and the api
shows ``limits_for`` beside a miner's settings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from minerwatch.shared.schemas import MinerSettings, Range, SettingsLimits


@dataclass(frozen=True, slots=True)
class ModelRange:
    """Frequency (MHz) and core voltage (mV) bounds of one chip or board."""

    name: str
    frequency_mhz: tuple[int, int]
    core_voltage_mv: tuple[int, int]


#: Safe ranges by ASIC (from ESP-Miner's device_config.h option lists).
BY_ASIC: dict[str, ModelRange] = {
    "BM1397": ModelRange("BM1397 (Max)", (400, 600), (1100, 1500)),
    "BM1366": ModelRange("BM1366 (Ultra, Hex)", (400, 575), (1100, 1300)),
    "BM1368": ModelRange("BM1368 (Supra, SupraHex)", (400, 575), (1100, 1300)),
    "BM1370": ModelRange("BM1370 (Gamma, GammaTurbo)", (400, 625), (1000, 1250)),
}
#: Boards whose range differs from their chip's, by device model as the firmware names it
#: (compared without case, spaces or dashes).
BY_BOARD: dict[str, ModelRange] = {
    "gammaduo": ModelRange("BM1370 GammaDuo", (350, 410), (1000, 1250)),
    "nerdqaxe++": ModelRange("NerdQAxe++", (500, 600), (1120, 1200)),
}
#: With ``allow_overclock``: the absolute bound per chip, which nothing widens.
OVERCLOCK: dict[str, ModelRange] = {
    "BM1397": ModelRange("BM1397 overclock bound", (400, 800), (1100, 1500)),
    "BM1366": ModelRange("BM1366 overclock bound", (400, 800), (1100, 1400)),
    "BM1368": ModelRange("BM1368 overclock bound", (400, 800), (1100, 1400)),
    "BM1370": ModelRange("BM1370 overclock bound", (350, 1000), (1000, 1400)),
}
FAN_PERCENT = Range(min=0, max=100)
#: The temperature AxeOS's automatic fan aims for (the firmware's own bounds).
TEMP_TARGET_C = Range(min=35, max=66)

_BOARD_DROP = re.compile(r"[\s_-]+")


def board_key(device_model: str | None) -> str:
    return _BOARD_DROP.sub("", (device_model or "").lower())


def model_range(asic: str | None, device_model: str | None) -> ModelRange | None:
    """The safe range of a miner by its device model, else its ASIC; None if unknown."""
    board = BY_BOARD.get(board_key(device_model))
    if board is not None:
        return board
    return BY_ASIC.get((asic or "").strip().upper())


def _narrowed(bounds: tuple[int, int], options: Sequence[int] | None) -> tuple[int, int]:
    """The bounds, narrowed to the firmware's options where those are narrower."""
    usable = [value for value in options or () if isinstance(value, int) and value > 0]
    if not usable:
        return bounds
    low, high = max(bounds[0], min(usable)), min(bounds[1], max(usable))
    return (low, high) if low <= high else bounds


def limits_for(asic: str | None, device_model: str | None, *,
               frequency_options: Sequence[int] | None = None,
               voltage_options: Sequence[int] | None = None,
               allow_overclock: bool = False, tunable: bool = True,
               fan: bool = True) -> SettingsLimits:
    """The ranges a change to this miner is checked against. ``tunable`` False (a
    firmware that cannot set frequency or voltage) and an unknown model leave those
    ranges null: nothing may be written to them."""
    fan_percent = FAN_PERCENT if fan else None
    temp_target = TEMP_TARGET_C if fan else None
    found = model_range(asic, device_model)
    if not tunable:
        return SettingsLimits(fan_percent=fan_percent, temp_target_c=temp_target,
                              source="this firmware sets no frequency or voltage")
    if found is None:
        known = device_model or asic or "this model"
        return SettingsLimits(fan_percent=fan_percent, temp_target_c=temp_target,
                              source=f"no safe range is known for {known}")
    if allow_overclock:
        bound = OVERCLOCK.get((asic or "").strip().upper())
        if bound is not None:
            return SettingsLimits(
                frequency_mhz=Range(min=bound.frequency_mhz[0], max=bound.frequency_mhz[1]),
                core_voltage_mv=Range(min=bound.core_voltage_mv[0],
                                      max=bound.core_voltage_mv[1]),
                fan_percent=fan_percent, temp_target_c=temp_target, source=bound.name,
                overclock=True)
    frequency = _narrowed(found.frequency_mhz, frequency_options)
    voltage = _narrowed(found.core_voltage_mv, voltage_options)
    source = found.name
    if (frequency, voltage) != (found.frequency_mhz, found.core_voltage_mv):
        source += ", narrowed by the firmware's options"
    return SettingsLimits(
        frequency_mhz=Range(min=frequency[0], max=frequency[1]),
        core_voltage_mv=Range(min=voltage[0], max=voltage[1]),
        fan_percent=fan_percent, temp_target_c=temp_target, source=source)


_UNITS = {"frequency_mhz": "MHz", "core_voltage_mv": "mV", "fan_percent": "%",
          "temp_target_c": "°C"}


def check_change(change: MinerSettings, limits: SettingsLimits) -> list[str]:
    """Why ``change`` may not be written, one reason per field; empty when it may."""
    problems: list[str] = []
    for name, unit in _UNITS.items():
        value = getattr(change, name)
        if value is None:
            continue
        allowed: Range | None = getattr(limits, name)
        if allowed is None:
            problems.append(f"{name} cannot be set on this miner ({limits.source})")
        elif not allowed.min <= value <= allowed.max:
            problems.append(f"{name} {value} is outside {allowed.min}-{allowed.max} {unit} "
                            f"({limits.source})")
    if change.fan_percent is not None and change.fan_mode == "auto":
        problems.append("fan_percent needs fan_mode manual")
    pools = change.pools
    if pools is not None:
        for role in ("primary", "fallback"):
            pool = getattr(pools, role)
            if pool is not None and pool_address(pool.url) is None:
                problems.append(f"pools.{role}.url {pool.url!r} is not host:port or "
                                "stratum+tcp://host:port")
    return problems


def is_empty(change: MinerSettings) -> bool:
    """Whether ``change`` names no setting at all (``pools`` with neither pool is none)."""
    pools = change.pools
    if pools is not None and (pools.primary is not None or pools.fallback is not None):
        return False
    return all(getattr(change, name) is None
               for name in change.__struct_fields__ if name != "pools")


_POOL_URL = re.compile(
    r"^(?:(?P<scheme>stratum\+(?:tcp|ssl|tls)|stratum2\+tcp)://)?(?P<host>[A-Za-z0-9.-]{1,253})"
    r":(?P<port>\d{1,5})/?$")


def pool_address(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a stratum URL, or None when it is not one."""
    found = _POOL_URL.match(url.strip())
    if found is None:
        return None
    port = int(found["port"])
    if not 1 <= port <= 65535:
        return None
    return found["scheme"] or "stratum+tcp", found["host"], port
