"""Comparing settings (pure): what a change would alter, and whether a read-back shows it.

A pool is the same when its address is (scheme, host without case, port: ``pool:3333``
is ``stratum+tcp://pool:3333``, ``stratum+tls`` is ``stratum+ssl``) and its user is; a
password is never read back, so a given one always counts as a change and is never
verified. ``without_passwords`` is what goes into results and the audit.
"""

from __future__ import annotations

import msgspec

from minerwatch.shared.control import pool_address
from minerwatch.shared.schemas import MinerSettings, Pool, Pools

#: The plain fields of MinerSettings (``pools`` is compared per role).
PLAIN_FIELDS = ("frequency_mhz", "core_voltage_mv", "fan_mode", "fan_percent",
                "temp_target_c")
POOL_ROLES = ("primary", "fallback")


def pool_key(url: str) -> tuple[str, str, int] | str:
    """What two pool URLs share when they name the same pool."""
    address = pool_address(url)
    if address is None:
        return url.strip().lower()
    scheme, host, port = address
    return ("stratum+ssl" if scheme == "stratum+tls" else scheme, host.lower(), port)


def same_pool(wanted: Pool, current: Pool | None) -> bool:
    """Whether ``current`` is ``wanted`` already (the password aside)."""
    return (current is not None and pool_key(wanted.url) == pool_key(current.url)
            and wanted.user == current.user)


def _current_pool(settings: MinerSettings, role: str) -> Pool | None:
    pools = settings.pools
    return None if pools is None else getattr(pools, role)


def differences(change: MinerSettings, current: MinerSettings
                ) -> tuple[MinerSettings, list[str]]:
    """The part of ``change`` that differs from ``current``, and those fields' names
    (``pools.primary``...); a pool given with a password is always a change."""
    plain = {name: getattr(change, name) for name in PLAIN_FIELDS
             if getattr(change, name) is not None
             and getattr(change, name) != getattr(current, name)}
    names = list(plain)
    pools: dict[str, Pool] = {}
    for role in POOL_ROLES:
        wanted = None if change.pools is None else getattr(change.pools, role)
        if wanted is None:
            continue
        if wanted.password is not None or not same_pool(wanted, _current_pool(current, role)):
            pools[role] = wanted
            names.append(f"pools.{role}")
    return MinerSettings(**plain, pools=Pools(**pools) if pools else None), names


def not_taken(written: MinerSettings, read: MinerSettings) -> list[str]:
    """The fields of ``written`` that ``read`` does not show, as ``name wanted, read
    value``; empty when every one took (pool passwords cannot be checked)."""
    missed: list[str] = []
    for name in PLAIN_FIELDS:
        wanted = getattr(written, name)
        if wanted is not None and getattr(read, name) != wanted:
            missed.append(f"{name} {wanted} (reads {getattr(read, name)})")
    for role in POOL_ROLES:
        wanted = None if written.pools is None else getattr(written.pools, role)
        if wanted is None:
            continue
        current = _current_pool(read, role)
        if not same_pool(wanted, current):
            shown = "nothing" if current is None else f"{current.url} {current.user}"
            missed.append(f"pools.{role} {wanted.url} {wanted.user} (reads {shown})")
    return missed


def _blank(pool: Pool | None) -> Pool | None:
    return None if pool is None else msgspec.structs.replace(pool, password=None)


def without_passwords(settings: MinerSettings | None) -> MinerSettings | None:
    """``settings`` with no pool password in it: what results and the audit may hold."""
    if settings is None or settings.pools is None:
        return settings
    pools = Pools(primary=_blank(settings.pools.primary),
                  fallback=_blank(settings.pools.fallback))
    return msgspec.structs.replace(settings, pools=pools)
