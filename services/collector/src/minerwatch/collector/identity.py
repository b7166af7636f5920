"""One miner, one slot: the poller's slots deduplicated by the MAC address they report.

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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from minerwatch.collector.drivers import Driver, Reading
from minerwatch.collector.publisher import Outbox, Outgoing
from minerwatch.shared.topics import mac_miner_id

if TYPE_CHECKING:
    from minerwatch.collector.poller import MinerSlot

log = logging.getLogger("minerwatch.collector.identity")

Address = tuple[str, str, int]  # driver kind, host, port


def address_of(driver: Driver) -> Address:
    return (driver.name, driver.host, driver.port)


class Identities:
    """The MAC registry over the poller's slot list (the same list object, edited here
    when a slot is merged away)."""

    def __init__(self, slots: list[MinerSlot], outbox: Outbox) -> None:
        self.slots = slots
        self.outbox = outbox
        self.by_mac: dict[str, MinerSlot] = {}
        # Address -> slot over the slot list, which the poller appends to (and now and
        # then removes from): new slots are indexed as they appear, a removal rebuilds.
        self._by_address: dict[Address, MinerSlot] = {}
        self._indexed = 0

    def owner(self, mac: str | None) -> MinerSlot | None:
        mac_id = mac_miner_id(mac) if mac else None
        return self.by_mac.get(mac_id) if mac_id else None

    def polled_at(self, address: Address) -> MinerSlot | None:
        """The slot that polls ``address``, actively or as an alternate."""
        if len(self.slots) < self._indexed:
            self._by_address.clear()
            self._indexed = 0
        for slot in self.slots[self._indexed:]:
            for driver in (slot.driver, *slot.alternates):
                self._by_address[address_of(driver)] = slot
        self._indexed = len(self.slots)
        slot = self._by_address.get(address)
        return None if slot is None or slot.retired else slot

    def known(self, address: Address, mac: str | None,
              make_driver: Callable[[], Driver]) -> bool:
        """Whether a miner found at ``address`` (reporting ``mac``) is polled already.

        A known MAC at a new address gives its owner that address as an alternate, and
        makes it the active one at once when the owner's own address is failing."""
        if self.polled_at(address) is not None:
            return True
        owner = self.owner(mac)
        if owner is None:
            return False
        driver = make_driver()
        owner.alternates.append(driver)
        self._by_address[address] = owner
        log.info("%s is also at %s:%d", owner.miner_id, address[1], address[2])
        if owner.health.failures > 0:
            self._activate(owner, driver)
        return True

    def claim(self, slot: MinerSlot, reading: Reading) -> MinerSlot | None:
        """After a good poll of ``slot``: the slot to publish ``reading`` under, or None
        when the miner is polled through another slot that answers well (the reading is
        dropped: one sample per poll interval)."""
        mac_id = mac_miner_id(reading.mac) if reading.mac else None
        if mac_id is None:
            return slot
        owner = self.by_mac.get(mac_id)
        if owner is None or owner is slot or owner.retired:
            self.by_mac[mac_id] = slot
            return slot
        self._merge(slot, owner)
        if owner.health.failures > 0:
            self._activate(owner, slot.driver)  # the address that answers wins
            return owner
        return None

    def failed(self, slot: MinerSlot) -> None:
        """After a failed poll: the next poll tries the next known address."""
        if slot.alternates:
            slot.alternates.append(slot.driver)
            slot.driver = slot.alternates.pop(0)

    def _merge(self, alias: MinerSlot, owner: MinerSlot) -> None:
        if alias.name and owner.name and alias.name != owner.name:
            log.warning("%s and %s report the same MAC address: publishing both as %r",
                        alias.name, owner.name, owner.miner_id)
        log.info("%s is the same miner as %s (%s): polling it once",
                 alias.where, owner.miner_id, owner.where)
        alias.retired = True
        owner.alternates.extend([alias.driver, *alias.alternates])
        alias.alternates = []
        if alias in self.slots:
            self.slots.remove(alias)
        # Whatever the alias published under a provisional id must not stay behind.
        for stale in alias.published_status_ids - {owner.miner_id}:
            self.outbox.put(Outgoing.clear(stale, "status"))
        alias.published_status_ids.clear()

    @staticmethod
    def _activate(owner: MinerSlot, driver: Driver) -> None:
        if driver is owner.driver:
            return
        owner.alternates.remove(driver)
        owner.alternates.insert(0, owner.driver)
        owner.driver = driver
