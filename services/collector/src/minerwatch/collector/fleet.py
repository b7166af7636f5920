"""The fleet registry: every miner the collector polls, who it is, what was said about it.

One ``MinerSlot`` per miner: its driver (and the other addresses it answers at), its
health, its id, and the info and status last published for it. The registry alone adds,
merges and removes slots (configured miners at start, discovery's finds while running,
duplicates of one MAC merged by ``identity.Identities``), and turns each poll result into
what goes into the outbox: a sample per good poll, info when it changed, status on every
transition.

Until a miner has answered once, its id is the name or the host-port slug; if it then
turns out to have a MAC (and no name), the id switches to the MAC for good and the
offline status published under the slug meanwhile is cleared, so no phantom miner stays
behind.

``retained()`` is the current info and status of every miner: what the publisher sends
again at each new broker session, so a broker that lost its retained messages is whole
after one reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from minerwatch.collector.drivers import Driver, PollError, Reading, create_driver
from minerwatch.collector.drivers.live import with_live_push
from minerwatch.collector.drivers.reading import timeout_reason
from minerwatch.collector.health import MinerHealth
from minerwatch.collector.identity import Address, Identities, address_of, miner_id_for
from minerwatch.collector.outbox import Outbox, Outgoing, outbox_size
from minerwatch.shared.config import CollectorConfig, endpoint
from minerwatch.shared.schemas import MinerInfo, MinerStatus, now_ts
from minerwatch.shared.topics import is_miner_id, slugify

log = logging.getLogger(__name__)

#: Drivers bound their own time; this guard only catches a driver that does not.
TIMEOUT_GRACE_S = 1.0


@dataclass(slots=True)
class MinerSlot:
    """One miner: its driver, its health and what was last published for it."""

    driver: Driver
    name: str | None
    health: MinerHealth
    miner_id: str
    id_decided: bool = False
    #: The info and status last queued under ``miner_id`` (what the broker retains).
    info: MinerInfo | None = None
    status: MinerStatus | None = None
    published_status_ids: set[str] = field(default_factory=set)
    #: Other addresses this miner answered at (identity.py); tried when this one fails.
    alternates: list[Driver] = field(default_factory=list)
    #: Removed, or merged into another slot with the same MAC: no more polls.
    retired: bool = False

    @property
    def where(self) -> str:
        return f"{self.driver.name}://{self.driver.host}:{self.driver.port}"

    def drivers(self) -> tuple[Driver, ...]:
        return (self.driver, *self.alternates)


def valid_name(url: str, name: str | None) -> str | None:
    """A configured name (``name``, or ``?name=`` in the URL) as a valid miner id."""
    if name is not None and not is_miner_id(name):  # ?name= is not validated upstream
        log.warning("%s: name %r is not a valid miner id; using %r", url, name, slugify(name))
        return slugify(name)
    return name


class FleetRegistry:
    """The slots of every miner polled, and what their polls said."""

    def __init__(self, config: CollectorConfig, outbox: Outbox) -> None:
        self.config = config
        self.outbox = outbox
        self.slots: list[MinerSlot] = []
        self.identities = Identities()
        #: Told of each slot added while running (the scheduler's hook).
        self.on_added: Callable[[MinerSlot], None] | None = None
        self._by_address: dict[Address, MinerSlot] = {}
        for miner in config.miners:
            where = endpoint(miner.url)
            name = valid_name(miner.url, miner.name or where.name)
            self._append(MinerSlot(
                driver=self._make_driver(where.driver, where.host, where.port),
                name=name,
                health=MinerHealth(offline_after=config.offline_after),
                # Known now unless a MAC may decide it at the first good poll.
                miner_id=miner_id_for(name, None, where.host, where.port),
                id_decided=name is not None,
            ))
        self._warn_duplicate_ids()
        self._resize_outbox()

    def __len__(self) -> int:
        return len(self.slots)

    def _make_driver(self, kind: str, host: str, port: int) -> Driver:
        keepalive_s = self.config.poll_interval_s + self.config.timeout_s
        driver = create_driver(kind, host, port, self.config.timeout_s, keepalive_s)
        if not self.config.live_push:
            return driver
        return with_live_push(driver, retry_s=keepalive_s)  # AxeOS v2.14+: WebSocket

    # -- the slots ----------------------------------------------------------------------

    def polled_at(self, address: Address) -> MinerSlot | None:
        """The slot that polls ``address``, actively or as an alternate."""
        slot = self._by_address.get(address)
        return None if slot is None or slot.retired else slot

    def add(self, kind: str, host: str, port: int, mac: str | None = None) -> MinerSlot | None:
        """Poll a miner found while running (discovery), from now on; None when it is
        polled already (same address, or same MAC: then it is an alternate address)."""
        address = (kind, host, port)
        if self.polled_at(address) is not None:
            return None
        owner = self.identities.owner(mac)
        if owner is not None:
            driver = self._make_driver(kind, host, port)
            self._by_address[address] = owner
            self.identities.also_at(owner, driver)
            return None
        slot = MinerSlot(
            driver=self._make_driver(kind, host, port),
            name=None,
            health=MinerHealth(offline_after=self.config.offline_after),
            miner_id=miner_id_for(None, None, host, port),
        )
        self._append(slot)
        log.info("added %s", slot.where)
        self._resize_outbox()
        if self.on_added is not None:
            self.on_added(slot)
        return slot

    async def remove(self, slot: MinerSlot) -> None:
        """Stop polling ``slot`` and close its drivers; a poll under way ends unheard."""
        self._forget(slot)
        self._resize_outbox()
        for driver in slot.drivers():
            with contextlib.suppress(Exception):
                await driver.aclose()

    async def aclose(self) -> None:
        """Close every driver (the fleet stays as it is)."""
        for slot in self.slots:
            for driver in slot.drivers():
                with contextlib.suppress(Exception):
                    await driver.aclose()

    def _append(self, slot: MinerSlot) -> None:
        self.slots.append(slot)
        for driver in slot.drivers():
            self._by_address[address_of(driver)] = slot

    def _forget(self, slot: MinerSlot) -> None:
        slot.retired = True
        if slot in self.slots:
            self.slots.remove(slot)
        for address, owner in list(self._by_address.items()):
            if owner is slot:
                del self._by_address[address]

    def _warn_duplicate_ids(self) -> None:
        seen: dict[str, str] = {}
        for slot in self.slots:
            if slot.miner_id in seen and slot.id_decided:
                log.warning("%s and %s share the miner id %r: their topics will mix",
                            seen[slot.miner_id], slot.where, slot.miner_id)
            seen[slot.miner_id] = slot.where

    def _resize_outbox(self) -> None:
        self.outbox.maxsize = outbox_size(self.config, len(self.slots))

    # -- what was published -------------------------------------------------------------

    def retained(self) -> list[Outgoing]:
        """The current info and status of every miner, as last queued: what a broker
        that lost its retained messages needs to be whole again."""
        current: list[Outgoing] = []
        for slot in self.slots:
            if slot.retired:
                continue
            if slot.info is not None:
                current.append(Outgoing.of(slot.miner_id, slot.info))
            if slot.status is not None:
                current.append(Outgoing.of(slot.miner_id, slot.status))
        return current

    # -- one poll -----------------------------------------------------------------------

    async def poll(self, slot: MinerSlot) -> bool:
        """Poll one miner once and queue what changed; whether the poll was good. Never
        raises (but on cancel)."""
        ts = now_ts()
        timeout_s = self.config.timeout_s
        try:
            async with asyncio.timeout(timeout_s + TIMEOUT_GRACE_S):
                reading = await slot.driver.fetch()
        except PollError as exc:
            self.failed(slot, ts, exc.reason)
        except TimeoutError:
            self.failed(slot, ts, timeout_reason(timeout_s))
        except Exception as exc:  # a driver bug must not stop the other miners
            if not slot.retired:
                log.exception("%s: unexpected error while polling", slot.where)
            self.failed(slot, ts, f"internal error: {type(exc).__name__}")
        else:
            self.succeeded(slot, ts, reading)
            return True
        return False

    def failed(self, slot: MinerSlot, ts: str, reason: str) -> None:
        """A failed poll at ``ts``."""
        if slot.retired:  # removed while this poll ran
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: poll failed: %s", slot.where, reason)
        status = slot.health.failed(ts, reason)
        if status is not None:
            log.warning("%s (%s) is offline: %s", slot.miner_id, slot.where, reason)
            self._publish_status(slot, status)
        self.identities.failed(slot)  # the next poll tries another known address

    def succeeded(self, slot: MinerSlot, ts: str, reading: Reading) -> None:
        """A good poll at ``ts``: the sample, and info and status when they changed."""
        if slot.retired:
            return
        if reading.mac:  # one miner per MAC
            claim = self.identities.claim(slot, reading)
            if claim.merged_into is not None:
                self._merged(slot, into=claim.merged_into)
            if claim.publish_as is None:
                return  # polled through another address already
            slot = claim.publish_as
        if not slot.id_decided:
            self._decide_id(slot, reading)
        driver = slot.driver
        info = reading.info(slot.miner_id, driver.name, driver.host, driver.port)
        if info != slot.info:
            slot.info = info
            self.outbox.put(Outgoing.of(slot.miner_id, info))
        status = slot.health.succeeded(ts, reading.is_mining)
        if status is not None:
            log.info("%s (%s) is %s", slot.miner_id, slot.where, status.state)
            self._publish_status(slot, status)
        self.outbox.put(Outgoing.of(slot.miner_id, reading.sample(slot.miner_id, ts)))

    def _merged(self, alias: MinerSlot, into: MinerSlot) -> None:
        """``alias`` turned out to be ``into`` at another address: its addresses are
        ``into``'s now, and what it published under a provisional id must not stay."""
        self.slots.remove(alias)
        for driver in into.drivers():
            self._by_address[address_of(driver)] = into
        for stale in alias.published_status_ids - {into.miner_id}:
            self.outbox.put(Outgoing.clear(stale, "status"))
        alias.published_status_ids.clear()
        alias.status = None

    def _decide_id(self, slot: MinerSlot, reading: Reading) -> None:
        driver = slot.driver
        miner_id = miner_id_for(slot.name, reading, driver.host, driver.port)
        if miner_id != slot.miner_id:
            slot.miner_id, slot.status = miner_id, None  # that status is cleared below
        slot.id_decided = True
        for stale in slot.published_status_ids - {slot.miner_id}:
            self.outbox.put(Outgoing.clear(stale, "status"))
        slot.published_status_ids &= {slot.miner_id}

    def _publish_status(self, slot: MinerSlot, status: MinerStatus) -> None:
        slot.status = status
        slot.published_status_ids.add(slot.miner_id)
        self.outbox.put(Outgoing.of(slot.miner_id, status))
