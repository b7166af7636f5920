"""Which control driver speaks to a miner: by its read driver and what it said it is.

- ``axeos``: AxeOS / ESP-Miner and NerdQAxe (``control.axeos``);
- ``cgminer`` answering as Bitmain/Antminer: the web interface's reboot
  (``control.antminer``): stock firmware keeps its API read-only;
- ``cgminer`` answering as Canaan/Avalon: ``ascset`` (``control.cgminer.AvalonControl``);
- any other ``cgminer``: its privileged API (``control.cgminer.CgminerControl``).
"""

from __future__ import annotations

from minerwatch.collector.control.antminer import AntminerWebControl
from minerwatch.collector.control.axeos import AxeosControl
from minerwatch.collector.control.cgminer import AvalonControl, CgminerControl
from minerwatch.collector.control.driver import ControlDriver
from minerwatch.shared.config import ControlConfig, MinerConfig

ControlKind = str  # "axeos", "antminer", "avalon", "cgminer"


def control_kind(read_kind: str, make: str | None = None, family: str | None = None
                 ) -> ControlKind:
    """The control driver for a miner polled by ``read_kind`` whose identity says
    ``make`` (MinerInfo.make) or whose cgminer family is ``family``."""
    if read_kind == "axeos":
        return "axeos"
    if read_kind != "cgminer":
        raise ValueError(f"no control driver for {read_kind!r} miners")
    said = f"{make or ''} {family or ''}".lower()
    if "antminer" in said or "bitmain" in said:
        return "antminer"
    if "avalon" in said or "canaan" in said:
        return "avalon"
    return "cgminer"


def create_control(kind: ControlKind, host: str, port: int, *, control: ControlConfig,
                   miner: MinerConfig | None = None, timeout_s: float = 5.0) -> ControlDriver:
    """The control driver of ``kind`` (``control_kind``) for the miner at host:port (the
    read driver's port); ``miner`` is its config entry, if it has one."""
    if kind == "axeos":
        secret = (miner.otp_secret if miner is not None else None) or control.otp_secret
        return AxeosControl(host, port, timeout_s, otp_secret=secret)
    if kind == "antminer":
        web_port = (miner.web_port if miner is not None else None) or control.antminer_web_port
        return AntminerWebControl(host, port, web_port, timeout_s, user=control.antminer_user,
                                  password=control.antminer_password)
    if kind == "avalon":
        return AvalonControl(host, port, timeout_s)
    if kind == "cgminer":
        return CgminerControl(host, port, timeout_s)
    raise ValueError(f"unknown control driver {kind!r}")
