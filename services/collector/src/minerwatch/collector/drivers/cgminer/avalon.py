"""Avalon (Canaan): ``version`` (PROD, MODEL, LVERSION, MAC) and ``estats``.

``estats`` puts a module's data in one string, ``STATS[0]["MM ID0"]`` (sometimes
``"MM ID0:Summary"``), of ``Key[value]`` tokens whose values may hold spaces and lists:
``Ver[Nano3s-25021401_56abae7] ITemp[-273] TMax[78] Fan1[2460] FanR[49%] PS[0 0 27541 4 0
3756 133] GHSspd[6214.35] SoftOFF[0] SYSTEMSTATU[Work: In Work, Hash Board: 1 ]``.
-273 means "no sensor". The summary's short rate is ``MHS 30s`` (or ``MHS 5s``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from minerwatch.collector.drivers.cgminer.replies import (
    Details,
    Identity,
    first_block,
    section,
)
from minerwatch.collector.drivers.values import (
    count,
    hottest,
    mac_address,
    number,
    positive,
    temperature,
    text,
    tidy,
)

MAKE = "Avalon"
_TOKEN = re.compile(r"(\w+)\[([^\]]*)\]")
_MODULE_KEY = re.compile(r"^MM ID\d+(?::Summary)?$")
_FAN = re.compile(r"^Fan(\d+)$")
#: Index of the power (W) in ``PS[...]``: error, -, Vin, Iout, -, Vout setting, power.
_PS_POWER = 6


def module_fields(text_value: str) -> dict[str, str]:
    """``"Ver[Nano3s-2502] TMax[78] PS[0 0 27541]"`` -> {"Ver": "Nano3s-2502", ...}."""
    return {key: value.strip() for key, value in _TOKEN.findall(text_value)}


def _numbers(value: str | None) -> list[float]:
    if not value:
        return []
    return [n for n in (number(part) for part in value.split()) if n is not None]


def _chip_temp(value: str | None) -> float | None:
    """The hottest plausible value of one field ("78" or "77 78 77"); -273: no sensor."""
    temps = [temperature(n) for n in _numbers(value)]
    return hottest([t for t in temps if t is not None and t > 0])


def _module_power(fields: Mapping[str, str]) -> float | None:
    power = positive(fields.get("WALLPOWER"))
    if power is None:
        ps = _numbers(fields.get("PS"))
        power = positive(ps[_PS_POWER]) if len(ps) > _PS_POWER else None
    return power


def modules(reply: Mapping[str, Any]) -> list[dict[str, str]]:
    """The parsed ``MM ID`` strings of an estats/stats reply, one per module."""
    found: list[dict[str, str]] = []
    for block in section(reply, "STATS"):
        for key, value in block.items():
            if _MODULE_KEY.match(key) and isinstance(value, str):
                parsed = module_fields(value)
                if parsed:
                    found.append(parsed)
    return found


def parse_estats(reply: Mapping[str, Any]) -> Details:
    """``estats`` -> hottest chip (TMax), fans, power, GH/s, standby, model/firmware."""
    mms = modules(reply)
    if not mms:
        return Details()
    temps: list[float | None] = []
    fans: list[tuple[int, int, int]] = []
    powers: list[float] = []
    rates: list[float] = []
    paused = False
    for index, fields in enumerate(mms):
        temps.append(_chip_temp(fields.get("TMax")) or _chip_temp(fields.get("MTmax")))
        for key, value in fields.items():
            if fan := _FAN.match(key):
                rpm = count(value)
                if rpm:
                    fans.append((index, int(fan.group(1)), rpm))
        if (power := _module_power(fields)) is not None:
            powers.append(power)
        if (rate := positive(fields.get("GHSspd"))) is not None:
            rates.append(rate)
        paused = paused or bool(count(fields.get("SoftOFF")))  # standby
    version = fields_version(mms[0])
    return Details(
        hashrate_ths=tidy(positive(sum(rates) / 1e3)),  # several modules: their sum
        power_w=tidy(positive(sum(powers))),
        temp_c=hottest(temps),
        fan_rpm=[rpm for *_, rpm in sorted(fans)] if fans else None,
        paused=paused,
        identity=version,
    )


def fields_version(fields: Mapping[str, str]) -> Identity:
    """``Ver[Nano3s-25021401_56abae7] LVer[25021401_56abae7]`` -> model, firmware."""
    ver = fields.get("Ver") or ""
    model = ver.rsplit("-", 1)[0] if "-" in ver else None
    return Identity(make=MAKE, model=model or None, firmware=fields.get("LVer") or None)


def parse_version(reply: Mapping[str, Any]) -> Identity:
    """``{"PROD":"Avalon Nano3s","MODEL":"Nano3s","LVERSION":"25021401_56abae7",
    "MAC":"e0e1a93f3053"}`` -> make Avalon, model Nano3s."""
    block = first_block(reply, "VERSION")
    model = text(block.get("MODEL"))
    if model is None:
        product = text(block.get("PROD")) or ""
        model = re.sub(r"^avalon(?:miner)?\s*", "", product, flags=re.IGNORECASE) or None
    firmware = None
    for key in ("LVERSION", "VERSION", "CGVERSION", "BVERSION"):
        firmware = text(block.get(key))
        if firmware:
            break
    return Identity(make=MAKE, model=model, firmware=firmware,
                    mac=mac_address(block.get("MAC")))


def is_avalon_version(block: Mapping[str, Any]) -> bool:
    product = (text(block.get("PROD")) or "").lower()
    return product.startswith("avalon") or "HWTYPE" in block or "SWTYPE" in block
