"""Antminer stock firmware (bmminer / cgminer by Bitmain): ``stats`` and ``version``.

Legacy ``stats``: ``STATS[0]`` is a version block (``Type``), ``STATS[1]`` the data: ``fanN``
RPM, ``tempN`` board and ``temp2_N`` chip temperatures on chains 1-3 (S9 family: 6-8),
``temp_pcbN``/``temp_chipN`` as dash-joined strings ("62-60-75-77", "2--1-20-22"),
``total_rateideal`` with ``rate_unit``. Newer stock firmware also answers
``{"command":"stats","new_api":true}`` with ``STATS[0].chain[]`` lists (``temp_chip``,
``temp_pcb``), a ``fan`` list, ``rate_5s``/``rate_ideal`` in ``rate_unit`` and the model in
``INFO.type``. Stock firmware reports no power: none is invented.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from minerwatch.collector.drivers.cgminer.replies import (
    Details,
    Identity,
    first_block,
    hashrate_ths,
    rate_divisor,
    section,
)
from minerwatch.collector.drivers.values import (
    TEMP_MAX_C,
    count,
    dashed_numbers,
    non_negative,
    number,
    positive,
    text,
    tidy,
)

_CHIP_TEMP_KEY = re.compile(r"^(?:temp2_\d+|temp_chip\d+)$")
_BOARD_TEMP_KEY = re.compile(r"^(?:temp\d+|temp_pcb\d+)$")
_FAN_KEY = re.compile(r"^fan(\d+)$")
#: new_api rate keys, shortest window first.
_NEW_API_RATES = ("rate_5s", "rate_30s", "rate_1m", "rate_15m", "rate_30m", "rate_avg")
FIRMWARE_KEYS = ("BMMiner", "CGMiner", "BOSminer", "LUXminer", "bmminer", "cgminer")


def temperatures(value: object) -> Iterator[float]:
    """Chip/board temperatures from a number, a dash-joined string, or a list of those."""
    candidates: list[float | None] = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str) and "-" in item.strip()[1:]:
            candidates.extend(dashed_numbers(item))
        else:
            candidates.append(number(item))
    for reading in candidates:
        # Unpopulated chains read 0 (or -1, -64): only positive, plausible values count.
        if reading is not None and 0 < reading < TEMP_MAX_C:
            yield reading


def identity_from_type(miner_type: str | None) -> Identity:
    """``"Antminer S19 Pro"`` -> make Antminer, model S19 Pro."""
    if not miner_type:
        return Identity()
    if miner_type.lower().startswith("antminer"):
        return Identity(make="Antminer", model=miner_type[len("antminer"):].strip() or None)
    return Identity(model=miner_type)


def _new_api_rate(block: Mapping[str, Any]) -> float | None:
    divisor = rate_divisor(block.get("rate_unit"))
    if divisor is None:
        return None
    for key in _NEW_API_RATES:
        value = non_negative(block.get(key))
        if value is not None:
            return tidy(value / divisor)
    return None


def _expected(block: Mapping[str, Any]) -> float | None:
    ideal = positive(block.get("total_rateideal"))
    if ideal is None:
        ideal = positive(block.get("rate_ideal"))  # new_api
    divisor = rate_divisor(block.get("rate_unit"))
    return tidy(ideal / divisor) if ideal is not None and divisor is not None else None


def parse_stats(reply: Mapping[str, Any]) -> Details:
    """``stats`` (legacy or new_api) -> hashrate, expected hashrate, hottest chip, fans."""
    chip: list[float] = []
    board: list[float] = []
    fans: list[tuple[int, int]] = []
    rate: float | None = None
    expected: float | None = None
    miner_type = text(first_block(reply, "INFO").get("type"))  # new_api
    for block in section(reply, "STATS"):
        miner_type = miner_type or text(block.get("Type"))
        if rate is None:
            rate = hashrate_ths(block)
            if rate is None:
                rate = _new_api_rate(block)
        if expected is None:
            expected = _expected(block)
        for key, value in block.items():
            if _CHIP_TEMP_KEY.match(key):
                chip.extend(temperatures(value))
            elif _BOARD_TEMP_KEY.match(key):
                board.extend(temperatures(value))
            elif fan := _FAN_KEY.match(key):
                rpm = count(value)
                if rpm:  # fan slots that are not fitted read 0
                    fans.append((int(fan.group(1)), rpm))
        if isinstance(block.get("fan"), list):  # new_api: one list, in slot order
            for slot, value in enumerate(block["fan"], start=1):
                rpm = count(value)
                if rpm:
                    fans.append((slot, rpm))
        for chain in block.get("chain") or []:  # new_api: one entry per hashboard
            if isinstance(chain, Mapping):
                chip.extend(temperatures(chain.get("temp_chip")))
                board.extend(temperatures(chain.get("temp_pcb")))
    temps = chip or board  # the hottest chip; boards only when no chip is reported
    return Details(
        hashrate_ths=rate,
        expected_hashrate_ths=expected,
        temp_c=max(temps) if temps else None,
        fan_rpm=[rpm for _, rpm in sorted(fans)] if fans else None,
        identity=identity_from_type(miner_type),
    )


def parse_version(reply: Mapping[str, Any]) -> Identity:
    """``{"BMMiner":"1.0.0","CompileTime":"...","Type":"Antminer S19 Pro"}``."""
    block = first_block(reply, "VERSION")
    identity = identity_from_type(text(block.get("Type")))
    firmware = None
    for key in FIRMWARE_KEYS:
        version = text(block.get(key))
        if version:
            firmware = f"{key} {version}"
            break
    compiled = text(block.get("CompileTime"))
    if firmware and compiled:
        firmware = f"{firmware} ({compiled})"
    return Identity(identity.make, identity.model, firmware)
