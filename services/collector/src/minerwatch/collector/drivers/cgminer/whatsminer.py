"""Whatsminer (MicroBT btminer): everything is in ``summary``; the model in ``devdetails``.

``summary`` carries ``MHS 5s``/``MHS 1m`` (MH/s), ``Power`` W, ``Chip Temp Max`` (0.0 on
firmwares that do not measure it), board ``Temperature``, ``Fan Speed In``/``Out``,
``Factory GHS``, ``MAC`` and ``Firmware Version`` wrapped in extra quotes
(``"'20210322.22.REL'"``). ``version`` is not a btminer command: its error reply says
``"Description":"whatsminer v1.1"``, which is how the family is recognised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from minerwatch.collector.drivers.cgminer.replies import Details, Identity, first_block
from minerwatch.collector.drivers.values import (
    count,
    mac_address,
    positive,
    temperature,
    text,
    tidy,
)

MAKE = "Whatsminer"
FAN_KEYS = ("Fan Speed In", "Fan Speed Out")
#: The hardware revision after the model: "M30S+V40" -> "M30S+", "M50VH50" -> "M50".
_REVISION = re.compile(r"V[A-Z]{0,2}\d+$")


def _chip_temp(value: object) -> float | None:
    """A measured temperature; 0 means "not measured" on these firmwares."""
    result = temperature(value)
    return result if result is not None and result > 0 else None


def firmware_version(value: object) -> str | None:
    """``"'20210322.22.REL'"`` -> ``20210322.22.REL``."""
    version = text(value)
    return (version.strip("'\" ") or None) if version else None


def model_name(value: object) -> str | None:
    """``M30S+V40`` -> ``M30S+``; the hardware revision is not part of the model."""
    model = text(value)
    if model is None:
        return None
    trimmed = _REVISION.sub("", model)
    return trimmed or model


def parse_summary(reply: Mapping[str, Any]) -> Details:
    """The Whatsminer-only fields of ``summary`` (the shared ones are read elsewhere)."""
    block = first_block(reply, "SUMMARY")
    temp = _chip_temp(block.get("Chip Temp Max")) or _chip_temp(block.get("Temperature"))
    reported = [count(block[key]) for key in FAN_KEYS if key in block]
    factory_ghs = positive(block.get("Factory GHS"))
    power = positive(block.get("Power"))
    if power is None:
        power = positive(block.get("Power_RT"))
    return Details(
        expected_hashrate_ths=tidy(factory_ghs / 1e3) if factory_ghs is not None else None,
        power_w=power,
        temp_c=temp,
        # Both fans are always reported; 0 is a liquid-cooled unit without fans.
        fan_rpm=[rpm for rpm in reported if rpm] if reported else None,
        identity=Identity(
            make=MAKE,
            firmware=firmware_version(block.get("Firmware Version")),
            mac=mac_address(block.get("MAC")),
        ),
    )


def parse_devdetails(reply: Mapping[str, Any]) -> Details:
    """``DEVDETAILS[0].Model`` ("M30S+V40") -> the model."""
    block = first_block(reply, "DEVDETAILS")
    return Details(identity=Identity(make=MAKE, model=model_name(block.get("Model"))))


def is_whatsminer_summary(block: Mapping[str, Any]) -> bool:
    """A summary only btminer sends (for firmwares whose version reply says nothing)."""
    return "Firmware Version" in block or ("Fan Speed In" in block and "Power" in block)
