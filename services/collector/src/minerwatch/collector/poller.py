"""The polling loop: every configured miner on a fixed cadence, results into the outbox.

Each miner gets a fixed phase in the interval (miners are spread evenly over it, so 1000
miners do not all fire at t=0) and is polled at ``start + phase + k * interval``: a slow
poll does not push the next one later (no interval+duration drift); a poll that overruns
its whole slot skips the ticks it missed. At most ``concurrency`` polls run at once and
each is bounded by ``timeout_s``.

Miner ids (one topic level): the configured name, else the MAC address the miner reports
at its first good poll, else a slug of host and port. Until a miner has answered once, its
id is the name or the host-port slug; if it then turns out to have a MAC (and no name), the
id switches to the MAC for good and the offline status published under the slug meanwhile
is cleared, so no phantom miner stays behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from minerwatch.collector.drivers import Driver, PollError, Reading, create_driver
from minerwatch.collector.drivers.reading import timeout_reason
from minerwatch.collector.health import MinerHealth
from minerwatch.collector.publisher import Outbox, Outgoing
from minerwatch.shared.config import CollectorConfig, endpoint
from minerwatch.shared.schemas import MinerInfo, MinerStatus, format_ts
from minerwatch.shared.topics import is_miner_id, mac_miner_id, slugify

log = logging.getLogger("minerwatch.collector.poller")

#: Drivers bound their own time; this guard only catches a driver that does not.
TIMEOUT_GRACE_S = 1.0


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


def utc_now_ts() -> str:
    return format_ts(datetime.now(UTC))


@dataclass(slots=True)
class MinerSlot:
    """One configured miner: its driver, its health and what was last published for it."""

    driver: Driver
    name: str | None
    health: MinerHealth
    miner_id: str
    id_decided: bool = False
    info: MinerInfo | None = None
    published_status_ids: set[str] = field(default_factory=set)

    @property
    def where(self) -> str:
        return f"{self.driver.name}://{self.driver.host}:{self.driver.port}"


class Poller:
    def __init__(self, config: CollectorConfig, outbox: Outbox) -> None:
        self.config = config
        self.outbox = outbox
        keepalive_s = config.poll_interval_s + config.timeout_s
        self.slots: list[MinerSlot] = []
        for miner in config.miners:
            where = endpoint(miner.url)
            name = miner.name or where.name
            if name is not None and not is_miner_id(name):  # ?name= is not validated upstream
                log.warning("%s: name %r is not a valid miner id; using %r",
                            miner.url, name, slugify(name))
                name = slugify(name)
            driver = create_driver(where.driver, where.host, where.port, config.timeout_s,
                                   keepalive_s)
            self.slots.append(
                MinerSlot(
                    driver=driver,
                    name=name,
                    health=MinerHealth(offline_after=config.offline_after),
                    # Known now unless a MAC may decide it at the first good poll.
                    miner_id=miner_id_for(name, None, where.host, where.port),
                    id_decided=name is not None,
                )
            )
        self._warn_duplicate_ids()

    def _warn_duplicate_ids(self) -> None:
        seen: dict[str, str] = {}
        for slot in self.slots:
            if slot.miner_id in seen and slot.id_decided:
                log.warning("%s and %s share the miner id %r: their topics will mix",
                            seen[slot.miner_id], slot.where, slot.miner_id)
            seen[slot.miner_id] = slot.where

    async def run(self) -> None:
        """Poll every miner forever (until cancelled); drivers are closed on the way out."""
        if not self.slots:
            log.warning("no miners configured: set MINERWATCH_MINERS or [[collector.miners]]")
        log.info("polling %d miner(s) every %g s (timeout %g s, concurrency %d)",
                 len(self.slots), self.config.poll_interval_s, self.config.timeout_s,
                 self.config.concurrency)
        limit = asyncio.Semaphore(self.config.concurrency)
        start = asyncio.get_running_loop().time()
        interval = self.config.poll_interval_s
        try:
            async with asyncio.TaskGroup() as group:
                for index, slot in enumerate(self.slots):
                    phase = interval * index / len(self.slots)
                    group.create_task(self._cycle(slot, start + phase, limit))
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        for slot in self.slots:
            with contextlib.suppress(Exception):
                await slot.driver.aclose()

    async def _cycle(self, slot: MinerSlot, first_due: float, limit: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.poll_interval_s
        due = first_due
        while True:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            async with limit:
                await self.poll_once(slot)
            due += interval
            now = loop.time()
            if due <= now:  # this poll (or waiting for a free slot) overran: keep the phase
                missed = int((now - due) // interval) + 1
                log.debug("%s: skipped %d poll(s) that could not start on time",
                          slot.where, missed)
                due += missed * interval

    async def poll_once(self, slot: MinerSlot) -> None:
        """Poll one miner once and queue what changed. Never raises (but on cancel)."""
        ts = utc_now_ts()
        try:
            async with asyncio.timeout(self.config.timeout_s + TIMEOUT_GRACE_S):
                reading = await slot.driver.fetch()
        except PollError as exc:
            self._failed(slot, ts, exc.reason)
        except TimeoutError:
            self._failed(slot, ts, timeout_reason(self.config.timeout_s))
        except Exception as exc:  # a driver bug must not stop the other miners
            log.exception("%s: unexpected error while polling", slot.where)
            self._failed(slot, ts, f"internal error: {type(exc).__name__}")
        else:
            self._succeeded(slot, ts, reading)

    def _failed(self, slot: MinerSlot, ts: str, reason: str) -> None:
        log.debug("%s: poll failed: %s", slot.where, reason)
        status = slot.health.failed(ts, reason)
        if status is not None:
            log.warning("%s (%s) is offline: %s", slot.miner_id, slot.where, reason)
            self._publish_status(slot, status)

    def _succeeded(self, slot: MinerSlot, ts: str, reading: Reading) -> None:
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

    def _decide_id(self, slot: MinerSlot, reading: Reading) -> None:
        driver = slot.driver
        slot.miner_id = miner_id_for(slot.name, reading, driver.host, driver.port)
        slot.id_decided = True
        for stale in slot.published_status_ids - {slot.miner_id}:
            self.outbox.put(Outgoing.clear(stale, "status"))
        slot.published_status_ids &= {slot.miner_id}

    def _publish_status(self, slot: MinerSlot, status: MinerStatus) -> None:
        slot.published_status_ids.add(slot.miner_id)
        self.outbox.put(Outgoing.of(slot.miner_id, status))
