"""How alert messages write numbers and durations: ``65 s``, ``15 min``, ``4.29G``."""

from __future__ import annotations

from minerwatch.alerts.rules import format_number

_SI = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def duration(seconds: float) -> str:
    """``65 s`` up to two minutes, ``15 min`` up to two hours, then ``3.5 h``, ``2 d``."""
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{format_number(round(seconds / 3600, 1))} h"
    return f"{seconds / 86400:.0f} d"


def si(value: float) -> str:
    """A difficulty the way miners show it: ``4.29G``, ``512k``, ``870``."""
    for scale, suffix in _SI:
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return format_number(value)


def ths(value: float) -> str:
    """A hashrate in TH/s with up to three decimals: ``1.2 TH/s``."""
    return f"{format_number(value)} TH/s"
