"""The control interface: what the collector asks of a miner to change it.

A ``ControlDriver`` speaks one firmware's write API (AxeOS's HTTP, CGMiner's privileged
commands, a stock Antminer's web CGI). ``read`` gives the current settings with the facts
their safe ranges depend on; ``write`` sends the given fields only; ``act`` carries out an
action. Every failure is a ``ControlError`` with a one-line reason; ``unsupported`` marks
what this firmware cannot do at all (never attempted).

The executor (``control.executor``) checks every change against ``shared.control`` before
a driver sees it; the autotuner (``tune``) uses the same drivers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from minerwatch.shared.schemas import MinerSettings

MinerAction = Literal["restart", "pause", "resume", "identify"]


class ControlError(Exception):
    """A command the miner did not carry out; ``str()`` is the one-line reason."""

    def __init__(self, reason: str, *, unsupported: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unsupported = unsupported


@dataclass(frozen=True, slots=True)
class MinerFacts:
    """What the safe ranges and the expected hashrate depend on, as the miner says."""

    asic: str | None = None  # BM1370
    device_model: str | None = None  # Gamma, GammaDuo, NerdQAxe++
    firmware: str | None = None
    frequency_options: tuple[int, ...] = ()  # GET /api/system/asic (v2.9+)
    voltage_options: tuple[int, ...] = ()
    small_cores: int | None = None  # per ASIC
    asic_count: int | None = None

    def expected_ghs(self, frequency_mhz: float) -> float | None:
        """What a frequency should give: MHz x small cores x ASICs / 1000."""
        if not self.small_cores or not self.asic_count:
            return None
        return frequency_mhz * self.small_cores * self.asic_count / 1000.0


@dataclass(slots=True)
class ReadBack:
    """The miner's settings as read now (pool passwords never), with its facts."""

    settings: MinerSettings
    facts: MinerFacts = field(default_factory=MinerFacts)
    uptime_s: int | None = None
    paused: bool | None = None


class ControlDriver(Protocol):
    @property
    def name(self) -> str: ...

    def supports(self, action: str) -> bool:
        """Whether this firmware can do ``action`` (a MinerAction, ``configure``,
        ``tune``)."""

    def settable(self) -> frozenset[str]:
        """The MinerSettings fields this firmware can write."""

    async def read(self) -> ReadBack: ...

    async def write(self, change: MinerSettings) -> None:
        """Write the non-null fields of ``change`` (the executor passes only those that
        differ from what was read)."""

    async def act(self, action: MinerAction) -> None: ...

    async def aclose(self) -> None: ...
