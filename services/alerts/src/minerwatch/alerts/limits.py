"""Temperature limits per make and model: what ``temp_high`` and ``vr_temp_high`` compare
with when the config names no ``threshold``.

``temp_c`` is the hottest chip (or, where the firmware reports no chip sensor, board)
temperature; ``vr_temp_c`` the voltage regulator's. Each limit sits a few degrees below
where the firmware itself starts protecting the hardware, so the alert comes while there
is still something to do about it. Where no limit is known, the rule's
``default_threshold`` applies. The user's ``threshold`` (in ``[alerts.temp_high]`` or an
override) always wins over these.

Where the numbers come from:

- **Bitaxe** (ESP-Miner): the firmware's power management task enters overheat mode
  (core voltage off) when the chip average passes ``THROTTLE_TEMP`` 75 °C or the TPS546
  regulator passes 105 °C (``main/tasks/power_management_task.c``). The Bitaxe community
  keeps chips under 65-70 °C and the regulator under 85 °C for a long life (the
  Bitaxe-Hashrate-Benchmark tool stops at 66 °C chip and 86 °C VR): chip 70, VR 85.
- **NerdQAxe / NerdOCTAXE** run the same ESP-Miner core (shufps/ESP-Miner-NerdQAxePlus,
  whose PID keeps the chips near 55 °C): the Bitaxe limits.
- **Antminer S19 / S21 / T19 family**: stock firmware shows chip temperatures estimated as
  the hashboard sensor plus about 15 °C (LuxOS documentation, "Temperature & Fans"), and
  LuxOS's default "dangerous" board temperature, where it shuts a board down, is 70 °C
  (75 °C at most for fibreglass boards): 70 + 15 gives a chip limit of 85 °C.
- **Antminer S9 / T9 family** (BM1387): Bitmain's over-temperature protection acts at
  90 °C on the board sensor, the chip generation is rated far higher (D-Central's ASIC
  thermal-limits reference, after Bitmain's S9 specification); chip readings run 10-15 °C
  above the board: minerwatch's pick is 95 °C.
- **Whatsminer, Avalon**: no published chip limit was found; minerwatch's picks from the
  readings these firmwares show at normal work (Avalon Nano 3s ``TMax`` near 78 °C,
  Whatsminer ``Chip Temp Max`` in the 70s-80s): 90 °C for both.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits known for one family; None: not known (the default applies)."""

    family: str
    chip_c: float | None = None
    vr_c: float | None = None


BITAXE = Limits("Bitaxe", chip_c=70.0, vr_c=85.0)
NERDQAXE = Limits("NerdQAxe", chip_c=70.0, vr_c=85.0)
ANTMINER_S19 = Limits("Antminer S19/S21/T19", chip_c=85.0)
ANTMINER_S9 = Limits("Antminer S9/T9", chip_c=95.0)
WHATSMINER = Limits("Whatsminer", chip_c=90.0)
AVALON = Limits("Avalon", chip_c=90.0)
UNKNOWN = Limits("unknown")

#: Every family with limits, for the docs and tests.
FAMILIES: tuple[Limits, ...] = (BITAXE, NERDQAXE, ANTMINER_S19, ANTMINER_S9, WHATSMINER,
                                AVALON)


def limits_for(make: str | None, model: str | None) -> Limits:
    """The limits of a miner's family, from its make and model as the collector reports
    them (``Bitaxe``/``Gamma BM1370``, ``Antminer``/``S19j Pro``, ``NerdQAxe``/``NerdQAxe++``)."""
    make_l = (make or "").strip().lower()
    model_l = (model or "").strip().lower()
    if make_l == "bitaxe":
        return BITAXE
    if make_l.startswith("nerd") or model_l.startswith("nerd"):
        return NERDQAXE
    if make_l == "antminer" or model_l.startswith("antminer"):
        name = model_l.removeprefix("antminer").strip()
        if name.startswith(("s9", "t9")):
            return ANTMINER_S9
        if name.startswith(("s19", "t19", "s21", "t21")):
            return ANTMINER_S19
        return UNKNOWN
    if make_l == "whatsminer":
        return WHATSMINER
    if make_l == "avalon":
        return AVALON
    return UNKNOWN
