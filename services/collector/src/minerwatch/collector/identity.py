"""Who a miner is: its id, and one slot per MAC address however many addresses it has.

Miner ids (one topic level): the configured name, else the MAC address the miner reports
at its first good poll, else a slug of host and port.

A miner can be reachable at more than one address: configured twice (by IP and by
hostname), found by a scan and by mDNS, or moved to a new DHCP lease that discovery finds
while the old address is still listed. Whatever the number of addresses, it is polled
once and published under one miner id:

- the first slot to report a MAC owns it; a later slot reporting the same MAC is merged
  into the owner (it is retired and its address becomes one of the owner's alternates);
- the owner keeps polling the address that answers: when its own address fails and
  another one answers (a merge, or discovery finding the MAC elsewhere), the answering
  address becomes the active one, so ``info.host`` follows the miner;
- when the active address fails, the next poll tries the next alternate.

Failures still count per miner, not per address: a miner that answers at none of its
addresses goes offline after the usual number of failed polls.

``Identities`` decides all that over the slots it is shown; the fleet registry
(``fleet.py``) keeps the list of slots and acts on the decisions.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NamedTuple

from minerwatch.collector.drivers import Driver, Reading
from minerwatch.shared.topics import mac_miner_id, slugify

if TYPE_CHECKING:
    from minerwatch.collector.fleet import MinerSlot

log = logging.getLogger(__name__)

Address = tuple[str, str, int]  # driver kind, host, port


def address_of(driver: Driver) -> Address:
    return (driver.name, driver.host, driver.port)


def host_port_id(host: str, port: int) -> str:
    return slugify(f"{host}-{port}")


def miner_id_for(name: str | None, reading: Reading | None, host: str, port: int) -> str:
    """The configured name, else the reported MAC, else the host-port slug."""
    if name:
        return name
    if reading is not None and reading.mac:
        mac_id = mac_miner_id(reading.mac)
        if mac_id:
            return mac_id
    return host_port_id(host, port)


class Claim(NamedTuple):
    """After a good poll: the slot to publish the reading under (None: the miner is
    polled through another slot, the reading is dropped), and, when the polled slot
    turned out to be another slot's miner, that slot (it was merged into it)."""

    publish_as: MinerSlot | None
    merged_into: MinerSlot | None = None


class Identities:
    """Which slot owns each MAC address, and what becomes of the others."""

    def __init__(self) -> None:
        self.by_mac: dict[str, MinerSlot] = {}

    def owner(self, mac: str | None) -> MinerSlot | None:
        mac_id = mac_miner_id(mac) if mac else None
        owner = self.by_mac.get(mac_id) if mac_id else None
        return None if owner is None or owner.retired else owner

    def also_at(self, owner: MinerSlot, driver: Driver) -> None:
        """``owner``'s MAC answered at another address: an alternate, and the active one
        at once when the owner's own address is failing."""
        owner.alternates.append(driver)
        log.info("%s is also at %s:%d", owner.miner_id, driver.host, driver.port)
        if owner.health.failures > 0:
            self._activate(owner, driver)

    def claim(self, slot: MinerSlot, reading: Reading) -> Claim:
        """After a good poll of ``slot``: one miner per MAC. A slot reporting a MAC that
        another slot owns is merged into the owner (retired, its addresses the owner's
        alternates); the reading is kept only when the owner is failing meanwhile (the
        address that answers wins), else dropped: one sample per poll interval."""
        mac_id = mac_miner_id(reading.mac) if reading.mac else None
        if mac_id is None:
            return Claim(slot)
        owner = self.by_mac.get(mac_id)
        if owner is None or owner is slot or owner.retired:
            self.by_mac[mac_id] = slot
            return Claim(slot)
        self._merge(slot, owner)
        if owner.health.failures > 0:
            self._activate(owner, slot.driver)
            return Claim(owner, merged_into=owner)
        return Claim(None, merged_into=owner)

    @staticmethod
    def failed(slot: MinerSlot) -> None:
        """After a failed poll: the next poll tries the next known address."""
        if slot.alternates:
            slot.alternates.append(slot.driver)
            slot.driver = slot.alternates.pop(0)

    @staticmethod
    def _merge(alias: MinerSlot, owner: MinerSlot) -> None:
        if alias.name and owner.name and alias.name != owner.name:
            log.warning("%s and %s report the same MAC address: publishing both as %r",
                        alias.name, owner.name, owner.miner_id)
        log.info("%s is the same miner as %s (%s): polling it once",
                 alias.where, owner.miner_id, owner.where)
        alias.retired = True
        owner.alternates.extend([alias.driver, *alias.alternates])
        alias.alternates = []

    @staticmethod
    def _activate(owner: MinerSlot, driver: Driver) -> None:
        if driver is owner.driver:
            return
        owner.alternates.remove(driver)
        owner.alternates.insert(0, owner.driver)
        owner.driver = driver
