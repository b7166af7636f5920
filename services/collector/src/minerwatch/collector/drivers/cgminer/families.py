"""CGMiner-API firmware families (pure): which one a miner is, what to ask it, how to read it.

``version`` says which family a miner is (``family_of``), ``summary`` gives a second
opinion for firmwares whose ``version`` says nothing; each family's module (``antminer``,
``whatsminer``, ``avalon``) reads its own replies into ``Details``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from minerwatch.collector.drivers.cgminer import antminer, avalon, whatsminer
from minerwatch.collector.drivers.cgminer.replies import Details, Identity, first_block
from minerwatch.collector.drivers.values import text

Parser = Callable[[Mapping[str, Any]], Details]


def _no_identity(_: Mapping[str, Any]) -> Identity:
    return Identity()


@dataclass(frozen=True)
class Family:
    """One kind of cgminer-API firmware: what to ask each poll and how to read it."""

    name: str
    #: Commands asked every poll besides ``summary``.
    commands: tuple[str, ...]
    #: Commands asked only while the identity is unknown (after start and restarts).
    identity_commands: tuple[str, ...] = ()
    #: Per command, the family's reader of that reply (``summary`` too: extra fields).
    parsers: Mapping[str, Parser] = field(default_factory=dict)
    #: The identity in this family's ``version`` reply.
    version: Callable[[Mapping[str, Any]], Identity] = _no_identity
    #: Request options to try for a command whose plain reply has no temperatures and no
    #: fans (newer Antminer firmware keeps them in ``stats`` with ``new_api``).
    richer: Mapping[str, Mapping[str, object]] = field(default_factory=dict)


def _generic_version(reply: Mapping[str, Any]) -> Identity:
    block = first_block(reply, "VERSION")
    for key in antminer.FIRMWARE_KEYS:
        version = text(block.get(key))
        if version:
            return Identity(firmware=f"{key} {version}")
    return Identity()


def _whatsminer_version(_: Mapping[str, Any]) -> Identity:
    return Identity(make=whatsminer.MAKE)


ANTMINER = Family("antminer", ("stats", "pools"), parsers={"stats": antminer.parse_stats},
                  version=antminer.parse_version, richer={"stats": {"new_api": True}})
WHATSMINER = Family(
    "whatsminer", ("pools",), identity_commands=("devdetails",),
    parsers={"summary": whatsminer.parse_summary, "devdetails": whatsminer.parse_devdetails},
    version=_whatsminer_version,
)
AVALON = Family("avalon", ("estats", "pools"), parsers={"estats": avalon.parse_estats},
                version=avalon.parse_version)
#: Any other cgminer: the legacy stats keys (tempN, fanN) are cgminer conventions.
GENERIC = Family("cgminer", ("stats", "pools"), parsers={"stats": antminer.parse_stats},
                 version=_generic_version)
FAMILIES = {family.name: family for family in (ANTMINER, WHATSMINER, AVALON, GENERIC)}


def _description(reply: Mapping[str, Any]) -> str:
    status = reply.get("STATUS")
    if isinstance(status, list) and status and isinstance(status[0], Mapping):
        status = status[0]
    source = status if isinstance(status, Mapping) else reply
    return str(source.get("Description") or "").lower()


def family_of(version: Mapping[str, Any]) -> Family:
    """Which family answered ``version`` (the reply, or the error reply it gave)."""
    description = _description(version)
    if "whatsminer" in description or "btminer" in description:
        return WHATSMINER
    block = first_block(version, "VERSION")
    if "BTMiner" in block:
        return WHATSMINER
    miner_type = (text(block.get("Type")) or "").lower()
    if miner_type.startswith("antminer") or "BMMiner" in block:
        return ANTMINER
    if avalon.is_avalon_version(block):
        return AVALON
    return GENERIC


def family_of_summary(reply: Mapping[str, Any]) -> Family | None:
    """A second opinion from ``summary`` when ``version`` said nothing useful."""
    if "whatsminer" in _description(reply):
        return WHATSMINER
    if whatsminer.is_whatsminer_summary(first_block(reply, "SUMMARY")):
        return WHATSMINER
    return None


def parse_version(reply: Mapping[str, Any]) -> Identity:
    """make, model and firmware from a ``version`` reply, whatever the family."""
    return family_of(reply).version(reply)
