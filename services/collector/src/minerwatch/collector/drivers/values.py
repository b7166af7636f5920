"""Small pure functions that turn what firmwares send into trustworthy numbers.

Firmwares send numbers as numbers, as strings ("95012.34"), with SI suffixes ("4.29G"),
or as impossible values (-273 °C, NaN, negative counters). Everything here returns None
for what cannot be true, so a bad field becomes ``null`` instead of a wrong figure.
"""

from __future__ import annotations

import math
import re
from typing import overload

from minerwatch.shared.fields import FIELDS

#: Multipliers of the suffixes ESP-Miner uses for bestDiff ("4.29G", "512M", "1.2T").
SI_SUFFIXES = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_SI_RE = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*([kKMGTPE]?)\s*$")

#: Outside this range a temperature sensor is absent or broken (-273, 0xFF...), not hot:
#: the bounds of the contract's temperature fields.
TEMP_MIN_C, TEMP_MAX_C = (float(bound) for bound in
                          (FIELDS["temp_c"].minimum, FIELDS["temp_c"].maximum) if bound is not None)


def number(value: object) -> float | None:
    """A finite float from a number or a numeric string; None for anything else."""
    if isinstance(value, bool):  # bool is an int subclass; True is not 1 °C
        return None
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return result if math.isfinite(result) else None


def non_negative(value: object) -> float | None:
    """A finite number >= 0 (hashrates, watts, counters), else None."""
    result = number(value)
    return result if result is not None and result >= 0 else None


def positive(value: object) -> float | None:
    result = number(value)
    return result if result is not None and result > 0 else None


def count(value: object) -> int | None:
    """A non-negative integer (shares, seconds, RPM), else None."""
    result = non_negative(value)
    return int(result) if result is not None else None


def temperature(value: object) -> float | None:
    """A plausible temperature in °C, else None (-273 means "no sensor")."""
    result = number(value)
    if result is None or not TEMP_MIN_C < result < TEMP_MAX_C:
        return None
    return result


def hottest(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def si_number(value: object) -> float | None:
    """``4.29G`` -> 4.29e9; plain numbers and numeric strings pass; None when unreadable."""
    if isinstance(value, str):
        match = _SI_RE.match(value)
        if match is None:
            return None
        result = float(match.group(1)) * SI_SUFFIXES.get(match.group(2), 1.0)
        return result if math.isfinite(result) and result >= 0 else None
    return non_negative(value)


def dashed_numbers(text: str) -> list[float]:
    """``"62-60-75-77"`` -> [62, 60, 75, 77]; a negative value doubles the dash:
    ``"2--1-20-22"`` -> [2, -1, 20, 22]. Unreadable parts are skipped."""
    values: list[float] = []
    negative = False
    for part in text.strip().split("-"):
        if part == "":
            negative = True  # the dash before the next number is its sign
            continue
        parsed = number(part)
        if parsed is not None:
            values.append(-parsed if negative else parsed)
        negative = False
    return values


@overload
def tidy(value: float) -> float: ...
@overload
def tidy(value: None) -> None: ...
def tidy(value: float | None) -> float | None:
    """Drop binary noise from unit conversions (1234.5678 / 1e3 -> 1.2345678, not
    1.2345678000000001) without rounding small values away: 12 significant digits."""
    return None if value is None else float(f"{value:.12g}")


def mac_address(value: object) -> str | None:
    """``aa-bb-cc-dd-ee-ff`` or ``AABBCCDDEEFF`` -> ``AA:BB:CC:DD:EE:FF``; None when it is
    not a MAC address (or the all-zero placeholder some firmwares send)."""
    if not isinstance(value, str):
        return None
    digits = re.sub(r"[^0-9a-f]", "", value.lower())
    if len(digits) != 12 or digits == "0" * 12 or len(value.strip()) > 17:
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2)).upper()


def flag(value: object) -> bool | None:
    """True or False from a boolean or a 0/1 number (firmwares send either); None for
    anything else, so a missing flag stays unknown."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return value == 1
    return None


def text(value: object) -> str | None:
    """A non-empty stripped string from a string or number; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        result = str(value).strip()
        return result or None
    return None
