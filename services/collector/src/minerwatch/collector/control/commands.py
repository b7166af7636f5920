"""Commands heard on the collector's MQTT session, carried out, and answered.

The listener (``collector.listener``) hands each message on ``{base}/miners/+/command``
that ``decode_message`` accepted to ``Commands.submit``, which never waits: a command for
a miner the fleet does not poll is answered ``unknown`` at once, any other joins its
miner's queue. Each miner's commands run one at a time, in order, in a task of their own
(at most ``MAX_QUEUED`` wait per miner: more are answered ``busy``), and at most
``MAX_RUNNING`` miners are worked on at once, so polling and receiving never wait for a
miner that is slow to restart.

Every result goes to ``{base}/miners/{id}/command/result`` (QoS 1, not retained: the audit
the store keeps), and again to the command's MQTT v5 response topic with its correlation
data when that topic is under ``{base}/replies/`` (any other is not answered: a requester
must not make the collector publish elsewhere). A result that is ready while the broker is
away is logged and lost: queueing results for later would grow without bound, and the
requester times out either way.

``tune`` and ``tune_abort`` go to the collector's one ``Tuner`` (``collector.tune``); while
a run holds a miner, its other commands but ``settings``, ``identify`` and ``tune_abort``
are ``busy``. A run's progress is published, retained, on ``{base}/miners/{id}/tune``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass

from minerwatch.collector.control.driver import ControlDriver
from minerwatch.collector.control.drivers import control_kind, create_control
from minerwatch.collector.control.executor import carry_out, precheck, result
from minerwatch.collector.drivers import Driver, create_driver
from minerwatch.collector.fleet import FleetRegistry, MinerSlot
from minerwatch.collector.tune import Tuner, TuneRefused
from minerwatch.shared.config import Config, MinerConfig, endpoint
from minerwatch.shared.errors import one_line
from minerwatch.shared.mqtt import BrokerLimitError, Message, MqttClient, MqttError, Subscription
from minerwatch.shared.rejects import RejectLog
from minerwatch.shared.schemas import Command, CommandResult, TuneProgress, encode
from minerwatch.shared.topics import COMMAND, COMMAND_RESULT, TUNE, is_reply_topic

log = logging.getLogger(__name__)

#: Commands that may wait for one miner; more are answered ``busy``.
MAX_QUEUED = 16
#: Miners worked on at once.
MAX_RUNNING = 16
#: Commands answered at once (unknown miner, disabled, queue full) whose results are
#: still being published: past this, a flood is dropped (and logged), not queued.
MAX_ANSWERING = 256
#: Command ids remembered, so a QoS 1 redelivery (DUP, same id) does not restart twice.
REMEMBERED_IDS = 1024
#: What a run holds a miner against: these still reach it.
WHILE_TUNING = frozenset({"settings", "identify", "tune_abort"})
#: A publish that takes longer means the connection is as good as gone.
PUBLISH_TIMEOUT_S = 10.0


@dataclass(slots=True)
class Pending:
    """A command waiting for its miner, with where its result also goes."""

    command: Command
    reply_to: str | None = None
    correlation: bytes | None = None


@dataclass(slots=True)
class Control:
    """One miner's control driver and its own read driver (for autotune: the fleet's
    poller keeps one exchange at a time, so a run reads on a connection of its own)."""

    key: tuple[str, str, int]
    driver: ControlDriver
    reader: Driver

    async def aclose(self) -> None:
        for closing in (self.driver.aclose(), self.reader.aclose()):
            with contextlib.suppress(Exception):
                await closing


class Commands:
    """The command side of a collector: queues, drivers, the tuner and the answers."""

    def __init__(self, config: Config, fleet: FleetRegistry) -> None:
        self.config = config
        self.base = config.mqtt.base_topic
        self.fleet = fleet
        self.rejects = RejectLog(log, what="command")
        self.tuner = Tuner(config, self.publish_tune)
        #: The connected session, while there is one (``attach`` / ``detach``).
        self.client: MqttClient | None = None
        self._queues: dict[str, deque[Pending]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._answering: set[asyncio.Task[None]] = set()
        self._running = asyncio.Semaphore(MAX_RUNNING)
        self._controls: dict[str, Control] = {}
        self._seen: deque[tuple[str, str]] = deque(maxlen=REMEMBERED_IDS)
        self._seen_set: set[tuple[str, str]] = set()
        self._miners: dict[tuple[str, str, int], MinerConfig] = {}
        for miner in config.collector.miners:
            where = endpoint(miner.url)
            self._miners[(where.driver, where.host, where.port)] = miner
        #: Results published, and those lost because the broker was away.
        self.answered = 0
        self.lost = 0

    # -- the session ----------------------------------------------------------------------

    def subscription(self) -> Subscription:
        # Commands are never retained: one published so is not carried out, neither at
        # once (retain_as_published shows the flag) nor at each connect (retain_handling 2).
        return Subscription(COMMAND.filter(self.base), qos=1, no_local=True,
                            retain_as_published=True, retain_handling=2)

    def attach(self, client: MqttClient) -> None:
        self.client = client

    def detach(self, client: MqttClient) -> None:
        if self.client is client:
            self.client = None

    # -- receiving ------------------------------------------------------------------------

    def submit(self, command: Command, message: Message | None = None) -> None:
        """Take a decoded command (``message``: its MQTT properties, retain flag); never
        waits and never raises."""
        if message is not None and message.retain:
            self.rejects.note(COMMAND.name, f"{message.topic[:200]}: a retained command is "
                                            "never carried out")
            return
        key = (command.miner_id, command.id)
        if key in self._seen_set and message is not None and message.dup:
            log.info("%s: command %s delivered again (its acknowledgement was lost): carried "
                     "out once only", command.miner_id, command.id)
            return
        if key not in self._seen_set:
            if len(self._seen) == self._seen.maxlen:
                self._seen_set.discard(self._seen[0])
            self._seen.append(key)
            self._seen_set.add(key)
        pending = Pending(command, *self._reply_of(message))
        early = precheck(command, self.config.control)
        if early is None and self._slot(command.miner_id) is None:
            early = result(command, "unknown", f"the collector polls no miner "
                                               f"{command.miner_id!r}")
        queue = self._queues.setdefault(command.miner_id, deque())
        if early is None and len(queue) >= MAX_QUEUED:
            early = result(command, "busy", f"{MAX_QUEUED} commands wait for this miner "
                                            "already")
        if early is not None:
            if not queue:
                del self._queues[command.miner_id]
            self._answer_now(early, pending)
            return
        queue.append(pending)
        if command.miner_id not in self._workers:
            self._workers[command.miner_id] = asyncio.ensure_future(
                self._work(command.miner_id))

    def _reply_of(self, message: Message | None) -> tuple[str | None, bytes | None]:
        if message is None:
            return None, None
        topic = message.properties.get("response_topic")
        correlation = message.properties.get("correlation_data")
        if not isinstance(topic, str):
            return None, None
        if not is_reply_topic(self.base, topic):
            self.rejects.note("response_topic", f"{message.topic[:200]}: response topic "
                              f"{topic[:120]!r} is not under {self.base}/replies/: the "
                              "result goes to the result topic only")
            return None, None
        return topic, correlation if isinstance(correlation, bytes) else None

    def _answer_now(self, answer: CommandResult, pending: Pending) -> None:
        if len(self._answering) >= MAX_ANSWERING:
            self.lost += 1
            self.rejects.note("flood", f"{answer.miner_id}: {MAX_ANSWERING} answers are "
                                       f"being sent already; {answer.action} {answer.id} "
                                       f"({answer.status}) is dropped unanswered")
            return
        task = asyncio.ensure_future(self._publish(answer, pending))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    # -- carrying out -----------------------------------------------------------------------

    async def _work(self, miner_id: str) -> None:
        """Carry out ``miner_id``'s commands in order until its queue is empty."""
        try:
            queue = self._queues[miner_id]
            while queue:
                pending = queue[0]
                async with self._running:
                    answer = await self.run(pending.command)
                queue.popleft()
                await self._publish(answer, pending)
        finally:
            self._workers.pop(miner_id, None)
            if not self._queues.get(miner_id):
                self._queues.pop(miner_id, None)

    async def run(self, command: Command) -> CommandResult:
        """Carry out one command now; never raises (but on cancel)."""
        try:
            answer = await self._run(command)
        except Exception as exc:  # a bug costs this command, never the collector
            log.exception("%s: %s %s failed unexpectedly", command.miner_id, command.action,
                          command.id)
            answer = result(command, "failed", f"internal error: {type(exc).__name__}: "
                                               f"{one_line(exc)}")
        log.info("%s: %s %s by %s: %s: %s", command.miner_id, command.action, command.id,
                 command.by, answer.status, answer.message)
        return answer

    async def _run(self, command: Command) -> CommandResult:
        control = self.config.control
        early = precheck(command, control)  # again: it may have waited in the queue
        if early is not None:
            return early
        slot = self._slot(command.miner_id)
        if slot is None:
            return result(command, "unknown", f"the collector polls no miner "
                                              f"{command.miner_id!r} (any more)")
        action = command.action
        if self.tuner.busy(command.miner_id) and action not in WHILE_TUNING:
            return result(command, "busy", "an autotune run holds this miner (tune_abort "
                                           "stops it)")
        if action == "tune_abort":
            if await self.tuner.abort(command.miner_id):
                return result(command, "ok", "autotune stopped; the miner has its settings "
                                             "from before the run again")
            return result(command, "refused", "no autotune run holds this miner")
        entry = await self._control(slot)
        if action == "tune":
            try:
                run_id = self.tuner.start(command, entry.driver, entry.reader.fetch)
            except TuneRefused as exc:
                return result(command, "refused", exc.reason)
            return result(command, "ok", f"autotune run {run_id} started: progress on "
                          f"{TUNE.topic(self.base, miner_id=command.miner_id)}")
        budget = self._budget(action)
        try:
            async with asyncio.timeout(budget):
                return await carry_out(command, entry.driver, control)
        except TimeoutError:
            return result(command, "failed", f"no result within {budget:g} s")

    def _budget(self, action: str) -> float:
        """The most one command may take: its own waits and a few requests' timeouts (a
        read is two requests, then the write, then the last read-back)."""
        control = self.config.control
        requests = 6 * self.config.collector.timeout_s
        if action == "restart":
            return control.restart_timeout_s + requests
        return control.timeout_s + requests

    def _slot(self, miner_id: str) -> MinerSlot | None:
        return next((slot for slot in self.fleet.slots_of(miner_id) if not slot.retired),
                    None)

    async def _control(self, slot: MinerSlot) -> Control:
        """The miner's control driver, made once and again when it answers as another
        firmware or at another address."""
        driver = slot.driver
        info = slot.info
        quirks = getattr(driver, "quirks", None)
        family = getattr(getattr(quirks, "family", None), "name", None)
        kind = control_kind(driver.name, info.make if info is not None else None, family)
        key = (kind, driver.host, driver.port)
        entry = self._controls.get(slot.miner_id)
        if entry is not None and entry.key == key:
            return entry
        if entry is not None:
            await entry.aclose()
        await self._forget_gone()
        timeout_s = self.config.collector.timeout_s
        entry = Control(
            key=key,
            driver=create_control(kind, driver.host, driver.port, control=self.config.control,
                                  miner=self._miners.get((driver.name, driver.host,
                                                          driver.port)),
                                  timeout_s=timeout_s),
            reader=create_driver(driver.name, driver.host, driver.port, timeout_s),
        )
        self._controls[slot.miner_id] = entry
        return entry

    async def _forget_gone(self) -> None:
        """Drop the drivers of miners the fleet no longer polls (bounded by the fleet)."""
        if len(self._controls) <= len(self.fleet):
            return
        for miner_id in [m for m in self._controls if self._slot(m) is None]:
            if self.tuner.busy(miner_id):
                continue
            await self._controls.pop(miner_id).aclose()

    # -- answering ------------------------------------------------------------------------

    async def _publish(self, answer: CommandResult, pending: Pending) -> None:
        """The result on its topic and, when asked for, the requester's response topic.
        Lost (and logged) when the broker is away: see the module's docstring."""
        client = self.client
        payload = encode(answer)
        if client is None or not client.connected:
            self._lost(answer, "the broker connection is down")
            return
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await client.publish(COMMAND_RESULT.topic(self.base, miner_id=answer.miner_id),
                                     payload, qos=1)
                if pending.reply_to is not None:
                    properties = ({} if pending.correlation is None
                                  else {"correlation_data": pending.correlation})
                    await client.publish(pending.reply_to, payload, qos=1,
                                         properties=properties)
        except (MqttError, BrokerLimitError, TimeoutError) as exc:
            self._lost(answer, one_line(exc) if str(exc) else type(exc).__name__)
            return
        self.answered += 1

    def _lost(self, answer: CommandResult, why: str) -> None:
        self.lost += 1
        log.warning("%s: the result of %s %s (%s) is lost: %s", answer.miner_id,
                    answer.action, answer.id, answer.status, why)

    async def publish_tune(self, progress: TuneProgress) -> None:
        """An autotune run's progress, retained. While the broker is away it is lost; the
        run's next progress (or its end) carries everything again."""
        client = self.client
        if client is None or not client.connected:
            log.debug("%s: tune progress not published: the broker connection is down",
                      progress.miner_id)
            return
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await client.publish(TUNE.topic(self.base, miner_id=progress.miner_id),
                                     encode(progress), qos=1, retain=True)
        except (MqttError, BrokerLimitError, TimeoutError) as exc:
            log.warning("%s: tune progress not published: %s", progress.miner_id,
                        one_line(exc) if str(exc) else type(exc).__name__)

    # -- the end ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the work in hand (aborting autotune runs restores their miners) and close
        the drivers."""
        await self.tuner.aclose()
        tasks = [*self._workers.values(), *self._answering]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._queues.clear()
        for entry in list(self._controls.values()):
            await entry.aclose()
        self._controls.clear()
