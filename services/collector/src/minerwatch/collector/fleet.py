"""The fleet registry: every miner the collector polls, who it is, what was said about it.

One ``MinerSlot`` per miner: its driver (and the other addresses it answers at), its
health, its id, and the info and status last published for it. The registry alone adds,
merges and removes slots (configured miners at start, discovery's finds while running,
duplicates of one MAC merged by ``identity.Identities``), and turns each poll result into
what goes into the outbox: a sample per good poll, info when it changed, status on every
transition, and the same status again (fresh ``last_seen``) while the miner answers once
the last one published is ``LAST_SEEN_REFRESH_S`` old, so ``last_seen`` on the broker is
true. The check costs one string comparison per poll: the moment a refresh is due is kept,
as a timestamp string, with the status (ISO timestamps of one format sort as text).

The info carries the miner's label: the one set through the api (``labels``, from the
label topic, see ``listener``) over the config's ``label``; a label change queues the info
again at once. A miner forgotten elsewhere (its retained info cleared: ``forgotten``) has
its info and status published again at its next good poll, so a miner that answers comes
back.

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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import msgspec

from minerwatch.collector.drivers import Driver, PollError, Reading, create_driver
from minerwatch.collector.drivers.live import with_live_push
from minerwatch.collector.drivers.reading import timeout_reason
from minerwatch.collector.health import MinerHealth
from minerwatch.collector.identity import Address, Identities, address_of, miner_id_for
from minerwatch.collector.labels import Labels
from minerwatch.collector.outbox import Outbox, Outgoing, outbox_size
from minerwatch.collector.stats import failure_reason
from minerwatch.shared.config import CollectorConfig, endpoint
from minerwatch.shared.schemas import MinerInfo, MinerStatus, format_ts, now_ts, parse_ts
from minerwatch.shared.topics import is_miner_id, slugify

log = logging.getLogger(__name__)

#: Drivers bound their own time; this guard only catches a driver that does not.
TIMEOUT_GRACE_S = 1.0
#: While a miner answers, its status is published again (same state and since) once the
#: ``last_seen`` last published is this old.
LAST_SEEN_REFRESH_S = 60.0


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
    #: The config's ``label`` (a label set through the api wins over it).
    label: str | None = None
    #: From this poll time on, a good poll publishes the status again ("": the next one).
    refresh_after: str = ""
    #: Its retained info was cleared elsewhere: nothing to republish until it answers.
    forgotten: bool = False

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
        self.labels = Labels()
        #: Slots by miner id, rebuilt when slots or ids changed (None: to rebuild).
        self._by_id: dict[str, list[MinerSlot]] | None = None
        #: Told of each slot added while running (the scheduler's hook).
        self.on_added: Callable[[MinerSlot], None] | None = None
        #: Failed polls by what happened (``stats.failure_reason``), since start.
        self.failures: Counter[str] = Counter()
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
                label=miner.label,
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

    def slots_of(self, miner_id: str) -> list[MinerSlot]:
        """The slots publishing as ``miner_id`` (more than one only when misconfigured)."""
        if self._by_id is None:
            by_id: dict[str, list[MinerSlot]] = {}
            for slot in self.slots:
                by_id.setdefault(slot.miner_id, []).append(slot)
            self._by_id = by_id
        return self._by_id.get(miner_id, [])

    def _append(self, slot: MinerSlot) -> None:
        self._by_id = None
        self.slots.append(slot)
        for driver in slot.drivers():
            self._by_address[address_of(driver)] = slot

    def _forget(self, slot: MinerSlot) -> None:
        self._by_id = None
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
            if slot.retired or slot.forgotten:
                continue
            if slot.info is not None:
                current.append(Outgoing.of(slot.miner_id, slot.info))
            if slot.status is not None:
                current.append(Outgoing.of(slot.miner_id, slot.status))
        return current

    # -- what others said ---------------------------------------------------------------

    def set_label(self, miner_id: str, label: str | None) -> None:
        """A label set (None: removed) through the api; the info of a polled miner whose
        label this changes is queued again at once."""
        if not self.labels.set(miner_id, label):
            return
        for slot in self.slots_of(miner_id):
            info = slot.info
            if info is None or slot.forgotten:
                continue
            wanted = self.labels.get(miner_id, slot.label)
            if info.label != wanted:
                slot.info = msgspec.structs.replace(info, label=wanted)
                self.outbox.put(Outgoing.of(miner_id, slot.info))

    def forgotten(self, miner_id: str) -> None:
        """The retained info of ``miner_id`` was cleared (the api or the CLI forgot it):
        if it is still polled, its info and status go out again at its next good poll."""
        for slot in self.slots_of(miner_id):
            log.info("%s (%s) was forgotten: published again when it answers",
                     miner_id, slot.where)
            slot.forgotten = True
            slot.info = None
            slot.refresh_after = ""

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
        self.failures[failure_reason(reason)] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: poll failed: %s", slot.where, reason)
        status = slot.health.failed(ts, reason)
        if status is not None:
            log.warning("%s (%s) is offline: %s", slot.miner_id, slot.where, reason)
            if not slot.forgotten:  # a forgotten miner comes back when it answers, not before
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
        info = reading.info(slot.miner_id, driver.name, driver.host, driver.port,
                            self.labels.get(slot.miner_id, slot.label))
        if info != slot.info:
            slot.info = info
            slot.forgotten = False
            self.outbox.put(Outgoing.of(slot.miner_id, info))
        status = slot.health.succeeded(ts, reading.is_mining)
        if status is not None:
            log.info("%s (%s) is %s", slot.miner_id, slot.where, status.state)
            self._publish_status(slot, status)
        elif ts >= slot.refresh_after:  # the same state, a true last_seen
            self._publish_status(slot, slot.health.status())
        self.outbox.put(Outgoing.of(slot.miner_id, reading.sample(slot.miner_id, ts)))

    def _merged(self, alias: MinerSlot, into: MinerSlot) -> None:
        """``alias`` turned out to be ``into`` at another address: its addresses are
        ``into``'s now, and what it published under a provisional id must not stay."""
        self._by_id = None
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
            self._by_id = None
        slot.id_decided = True
        for stale in slot.published_status_ids - {slot.miner_id}:
            self.outbox.put(Outgoing.clear(stale, "status"))
        slot.published_status_ids &= {slot.miner_id}

    def _publish_status(self, slot: MinerSlot, status: MinerStatus) -> None:
        slot.status = status
        slot.refresh_after = refresh_due(status)
        slot.published_status_ids.add(slot.miner_id)
        self.outbox.put(Outgoing.of(slot.miner_id, status))


def refresh_due(status: MinerStatus) -> str:
    """The poll time from which ``status`` is republished with a fresh ``last_seen``."""
    seen = parse_ts(status.last_seen or status.since)
    return format_ts(seen + timedelta(seconds=LAST_SEEN_REFRESH_S))
