"""minerwatch-alerts: judges the fleet by the built-in and free rules, publishes, notifies.

Subscribes (QoS 1), in this order, so the retained state of each arrives before what
depends on it:

1. ``{base}/alerts/+/+`` (MQTT v5 no-local, so its own events do not come back): the
   retained events restore which alerts are firing and the best difficulty and block
   count already announced, so a restart neither fires nor notifies them again. Only
   retained deliveries are used; live events from elsewhere never override state;
2. ``{base}/mutes/+`` (no-local): the mutes in force (``mutes.Mutes``);
3. ``{base}/miners/+/info``: labels, makes and models (overrides, per-model limits); an
   empty payload (a forgotten miner) drops everything known of it;
4. ``{base}/services/+/status``: ``service_down``;
5. ``{base}/miners/+/status``: ``offline``, ``not_hashing``;
6. ``{base}/miners/+/sample``: the sample rules and the free ``[[alerts.rules]]``, on the
   sample's own ``ts`` as the clock.

A tick every second runs what time alone decides (``engine.Evaluator.tick``) and clears,
with an empty retained payload, every mute whose ``until`` has passed.

Each event is published retained, QoS 1, on ``{base}/alerts/{miner_id}/{rule}`` with
``muted`` set when a mute matches it, and handed to the notifier unless muted. At start
the hourly rollups of the last day are read from ``[database] url`` (read only) to seed
the hashrate baselines; a database that does not open is one warning line.

Every message goes through ``shared.messages.decode_message``; what it rejects, and
samples stamped too far in the future, are counted and logged rate-limited by a
``RejectLog``. Whatever else handling one message raises is caught per message (the
last-resort guard in ``consume``), logged the same way, and the session goes on.

Every session starts by republishing, retained, the event of each alert that is firing
(fired here or recovered at start) and the latest one-off event of each miner, so a broker
that lost its retained messages is whole again after one reconnect. Republishing notifies
no one: only new events are notified.

The service's own health (samples judged, alerts firing) goes out beside the session on
``{base}/services/alerts/stats`` (``shared.stats``).

With ``[alerts.stalled] restart``, a ``stalled`` alert that fires asks the collector to
restart the miner (``recovery``): a Command on ``{base}/miners/{miner_id}/command``, QoS
1, not retained, at most once per ``restart_backoff_s`` per miner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import cast

from minerwatch.alerts.baseline import HOUR_S, HOURS
from minerwatch.alerts.engine import Evaluator
from minerwatch.alerts.history import seed_hourly
from minerwatch.alerts.mutes import Mutes
from minerwatch.alerts.notify import Notifier
from minerwatch.alerts.recovery import Restarts, restarts_configured
from minerwatch.alerts.rules import ts_seconds
from minerwatch.shared.config import Config, StalledRule
from minerwatch.shared.errors import one_line
from minerwatch.shared.messages import Rejected, decode_message
from minerwatch.shared.metrics import stat
from minerwatch.shared.mqtt import MqttLink
from minerwatch.shared.mqtt.packets import Message, Subscription
from minerwatch.shared.mqtt.protocol import BrokerLimitError, Delivery, MqttClient, MqttError
from minerwatch.shared.rejects import RejectLog
from minerwatch.shared.schemas import (
    AlertEvent,
    MinerInfo,
    MinerStatus,
    Mute,
    Sample,
    ServiceMetric,
    encode,
)
from minerwatch.shared.service import run_service
from minerwatch.shared.stats import StatsPublisher
from minerwatch.shared.topics import (
    ALERT,
    INFO,
    MUTE,
    SAMPLE,
    STATUS,
    alert_topic,
    command_topic,
    mute_topic,
)
from minerwatch.shared.topics import (
    SERVICE as SERVICE_TOPIC,
)

SERVICE = "alerts"
log = logging.getLogger("minerwatch.alerts")

#: Samples stamped further ahead of our clock than this are refused: one bogus future ts
#: would otherwise make every later sample of that miner look old.
MAX_FUTURE_S = 300.0

#: Unacknowledged messages the broker may have out to us (each is acknowledged once
#: handled): a flood waits at the broker, not in this process.
RECEIVE_MAXIMUM = 100

#: The reject kind of a message whose handling raised what nothing foresaw.
UNHANDLED = "unhandled"

#: How often the time-driven rules and the mute expiry run.
TICK_S = 1.0


class AlertService:
    """Engine, mutes, notifier and MQTT session of one alerts process."""

    def __init__(self, config: Config, *, notify_timeout_s: float = 10.0,
                 tick_s: float = TICK_S) -> None:
        self.config = config
        self.base = config.mqtt.base_topic
        self.evaluator = Evaluator(config.alerts)  # ConfigError on a bad rule
        self.notifier = Notifier(config.alerts, public_url=config.api.public_url,
                                 timeout_s=notify_timeout_s)
        self.mutes = Mutes()
        self.restarts = Restarts()
        self._sending_restarts = asyncio.Lock()
        if restarts_configured(config.alerts) and not config.control.enabled:
            log.warning("[alerts.stalled] restart is on but [control] enabled is off: the "
                        "collector will answer each restart with 'disabled'")
        self.link = MqttLink(config.mqtt, SERVICE, receive_maximum=RECEIVE_MAXIMUM)
        self.rejects = RejectLog(log)
        self.tick_s = tick_s
        #: Set once the first session has subscribed (tests and health checks wait on it).
        self.subscribed = asyncio.Event()
        #: Sessions started so far (each one republishes the firing alerts).
        self.sessions = 0
        #: Rows the baselines were seeded from (-1: the database did not open), once done.
        self.seeded: int | None = None
        #: Samples the rules judged (since start), and the service's stats topic.
        self.evaluations = 0
        self.stats = StatsPublisher(self.base, SERVICE, config.metrics.stats_interval_s,
                                    self.own_stats)
        # The latest event of each alert topic whose alert is firing, and the latest one-off
        # event of each: republished, retained, at every session start.
        self._firing: dict[str, AlertEvent] = {}
        self._events: dict[str, AlertEvent] = {}
        # Events not yet acknowledged by the broker, latest per alert topic: sent on reconnect.
        self._unpublished: dict[str, AlertEvent] = {}
        # Pipelined publishes of this session not yet settled: what each one carried.
        self._in_flight: dict[Delivery, tuple[str, AlertEvent]] = {}

    async def run(self) -> None:
        seeding = asyncio.create_task(self.seed())
        try:
            await self.link.run(self.stats.around(self.session))
        finally:
            seeding.cancel()
            await asyncio.gather(seeding, return_exceptions=True)
            self.rejects.close()
            await self.notifier.drain(timeout_s=2.0)

    async def seed(self) -> None:
        """The hashrate baselines from the last day of hourly rollups (never raises)."""
        since = time.time() - (HOURS + 1) * HOUR_S
        try:
            self.seeded = await seed_hourly(self.config.database.url, since,
                                            self.evaluator.seed_hourly)
        except Exception as exc:  # a bug in seeding must not stop the alerts
            log.warning("hashrate baselines start empty: %s: %s", type(exc).__name__,
                        one_line(exc))
            self.seeded = -1

    async def session(self, client: MqttClient) -> None:
        # The broker answers subscriptions in order, so each retained state is in before
        # what depends on it (see the module docstring). No-local: our own events and
        # mute clearings do not come back.
        await client.subscribe([Subscription(ALERT.filter(self.base), qos=1, no_local=True)])
        await client.subscribe([Subscription(MUTE.filter(self.base), qos=1, no_local=True)])
        for spec in (INFO, SERVICE_TOPIC, STATUS, SAMPLE):
            await client.subscribe([Subscription(spec.filter(self.base), qos=1)])
        self.sessions += 1
        # Publishes of an earlier session that never settled are still in _unpublished.
        self._in_flight.clear()
        client.on_settled = self.settled
        self.subscribed.set()
        await self.publish(client, self.republished())
        await self.send_restarts(client)  # any the broker did not take before
        ticker = asyncio.create_task(self.ticker(client))
        try:
            async for message in client.messages:
                events = self.consume(message)
                if events:  # most samples cause none: no coroutine to make and await
                    await self.publish(client, events)
                    await self.send_restarts(client)
                client.ack(message)
        finally:
            # ``messages`` ends by raising when the connection goes: that error (not the
            # ticker's, which fails the same way) is what ends the session.
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)

    def own_stats(self) -> list[ServiceMetric]:
        """What the service publishes on its stats topic (``shared.metrics``)."""
        return [stat("minerwatch_alerts_evaluations_total", self.evaluations),
                stat("minerwatch_alerts_firing", len(self._firing))]

    def republished(self) -> list[AlertEvent]:
        """What a new session publishes first: every firing alert's event, the latest
        one-off events, and any event the broker has not acknowledged yet."""
        return list({**self._events, **self._firing, **self._unpublished}.values())

    async def publish(self, client: MqttClient, events: Iterable[AlertEvent]) -> None:
        """Publish retained, pipelined while the broker's Receive Maximum leaves room (a
        burst of events does not wait a round trip each), else waiting for the PUBACK.
        An event leaves ``_unpublished`` once the broker has it (``settled``)."""
        for event in events:
            topic = alert_topic(self.base, event.miner_id, event.rule)
            if client.send_quota > 0:
                delivery = client.publish_nowait(topic, encode(event), retain=True)
                self._in_flight[delivery] = (topic, event)
                continue
            await client.publish(topic, encode(event), qos=1, retain=True)
            self.published(topic, event)

    def settled(self, delivery: Delivery) -> None:
        """The broker answered a pipelined publish (``on_settled``)."""
        topic, event = self._in_flight.pop(delivery, (delivery.topic, None))
        if event is None:
            return
        if delivery.refused:  # an ACL: sending it again would be refused again
            log.warning("the broker refused alert %s (reason 0x%02X)", topic, delivery.reason)
        self.published(topic, event)

    def published(self, topic: str, event: AlertEvent) -> None:
        if self._unpublished.get(topic) is event:
            del self._unpublished[topic]

    async def ticker(self, client: MqttClient) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.time()
            await self.publish(client, self.tick(now))
            await self.send_restarts(client)
            for mute_id in self.mutes.expired(now):
                log.info("mute %s expired: cleared", mute_id)
                await client.publish(mute_topic(self.base, mute_id), b"", qos=1, retain=True)

    def tick(self, now: float) -> list[AlertEvent]:
        try:
            return self.take(self.evaluator.tick(now), now)
        except Exception as exc:  # a bug in one tick costs that tick, never the session
            self.rejects.note(UNHANDLED, f"tick failed: {type(exc).__name__}: "
                                         f"{one_line(exc)}")
            log.debug("a tick failed", exc_info=True)
            return []

    def consume(self, message: Message) -> list[AlertEvent]:
        """``handle`` behind the last-resort guard: whatever handling one message raises
        (a bug nothing foresaw) costs that message, never the session."""
        try:
            return self.handle(message.topic, message.payload, retained=message.retain)
        except Exception as exc:
            self.rejects.note(UNHANDLED, f"{message.topic[:200]}: handling failed: "
                                         f"{type(exc).__name__}: {one_line(exc)}")
            log.debug("handling a message on %s failed", message.topic[:200], exc_info=True)
            return []

    def handle(self, topic: str, payload: bytes, *, retained: bool) -> list[AlertEvent]:
        """The new events one incoming message causes (notifications started for them)."""
        decoded = decode_message(self.base, topic, payload)
        if isinstance(decoded, Rejected):
            self.rejects.note(decoded.kind, str(decoded))
            return []
        message = decoded.message
        now = time.time()
        if message is None:  # an empty payload: a retained message deleted
            if decoded.spec is INFO and decoded.miner_id is not None:
                self.forget(decoded.miner_id)
            elif decoded.spec is MUTE and decoded.name is not None:
                self.mutes.lift(decoded.name)
            return []
        if isinstance(message, Sample):
            return self.evaluate(topic, message, now)
        if isinstance(message, MinerStatus) and decoded.miner_id is not None:
            return self.status(topic, decoded.miner_id, message, now)
        if isinstance(message, MinerInfo):
            if self.admitted(INFO.name, topic, message.miner_id):
                self.evaluator.on_info(message)
            return []
        if isinstance(message, AlertEvent):
            if retained:  # live events from elsewhere never override state
                self.recover(topic, message)
            return []
        if isinstance(message, Mute):
            refused = self.mutes.apply(message)
            if refused is not None:
                self.rejects.note(MUTE.name, f"{topic[:200]}: {refused}")
            return []
        if isinstance(message, str) and decoded.name is not None:
            return self.take(self.evaluator.on_service(decoded.name, message, now), now)
        return []

    def admitted(self, kind: str, topic: str, miner_id: str) -> bool:
        """Whether the engine keeps state for this miner; a reject line if not."""
        if self.evaluator.admits(miner_id):
            return True
        self.rejects.note(kind, f"{topic[:200]}: a new miner past the "
                                f"{self.evaluator.max_miners} the rules keep")
        return False

    def evaluate(self, topic: str, sample: Sample, now: float) -> list[AlertEvent]:
        if not self.admitted(SAMPLE.name, topic, sample.miner_id):
            return []
        try:
            ahead = ts_seconds(sample.ts) - now
            if ahead > MAX_FUTURE_S:
                self.rejects.note(SAMPLE.name, f"{topic[:200]}: ts {sample.ts} is "
                                               f"{ahead:.0f} s in the future")
                return []
            events = self.evaluator.on_sample(sample)
            self.evaluations += 1
        except (ValueError, OverflowError) as exc:
            self.rejects.note(SAMPLE.name, f"{topic[:200]}: bad ts {sample.ts!r}: "
                                           f"{one_line(exc)}")
            return []
        return self.take(events, now)

    def status(self, topic: str, miner_id: str, status: MinerStatus, now: float
               ) -> list[AlertEvent]:
        if not self.admitted(STATUS.name, topic, miner_id):
            return []
        try:
            events = self.evaluator.on_status(miner_id, status, now)
        except (ValueError, OverflowError) as exc:
            self.rejects.note(STATUS.name, f"{topic[:200]}: bad since {status.since!r}: "
                                           f"{one_line(exc)}")
            return []
        return self.take(events, now)

    def take(self, events: list[AlertEvent], now: float) -> list[AlertEvent]:
        """New events: muted where a mute matches, remembered, logged, notified."""
        for event in events:
            event.muted = self.mutes.muted(event.miner_id, event.rule, now)
            topic = alert_topic(self.base, event.miner_id, event.rule)
            self._unpublished[topic] = event
            if event.state == "firing":
                self._firing[topic] = event
            elif event.state == "event":
                self._events[topic] = event
            else:
                self._firing.pop(topic, None)
            log.info("%s %s/%s: %s%s", event.state, event.miner_id, event.rule,
                     event.message, " (muted)" if event.muted else "")
            if not event.muted:
                self.notifier.send(event)
        self.restarts.on_events(events, self.stalled_rule, now)
        return events

    def stalled_rule(self, miner_id: str) -> StalledRule:
        """The miner's ``stalled`` rule, its overrides applied."""
        miner = self.evaluator.miners.get(miner_id)
        if miner is None:
            return self.config.alerts.stalled
        return cast(StalledRule, miner.settings["stalled"])

    async def send_restarts(self, client: MqttClient) -> None:
        """Publish the restarts asked (``recovery``); one the broker did not take waits
        for the next session, one it refuses (an ACL) is dropped with a line."""
        async with self._sending_restarts:  # the session and its ticker: one at a time
            for command in self.restarts.due(time.time()):
                topic = command_topic(self.base, command.miner_id)
                try:
                    await client.publish(topic, encode(command), qos=1, retain=False)
                except (MqttError, BrokerLimitError) as exc:
                    if not client.connected:
                        return  # the connection went: still due, for the next session
                    log.warning("restart of %s not sent: the broker refused it: %s",
                                command.miner_id, one_line(exc))
                self.restarts.sent(command)

    def forget(self, miner_id: str) -> None:
        """A forgotten miner: its state goes, and its alerts are not republished (the
        api clears their retained topics)."""
        self.evaluator.forget(miner_id)
        self.restarts.forget(miner_id)
        prefix = alert_topic(self.base, miner_id, "")
        for held in (self._firing, self._events, self._unpublished):
            for topic in [t for t in held if t.startswith(prefix)]:
                del held[topic]
        log.info("forgot miner %s", miner_id)

    def recover(self, topic: str, event: AlertEvent) -> None:
        if not event.miner_id.startswith("minerwatch-") and not self.admitted(
                ALERT.name, topic, event.miner_id):
            return
        try:
            restored = self.evaluator.restore(event)
        except (ValueError, OverflowError) as exc:
            self.rejects.note(ALERT.name, f"{topic[:200]}: bad ts {event.ts!r}: "
                                          f"{one_line(exc)}")
            return
        if not restored:
            return
        # Ours now: republished like any alert this process fired.
        if event.state == "firing":
            self._firing[topic] = event
            log.info("recovered firing alert %s/%s (since %s)", event.miner_id, event.rule,
                     event.since or event.ts)
        elif event.state == "event":
            self._events[topic] = event


async def serve(config: Config) -> None:
    await AlertService(config).run()


def main() -> None:
    run_service(SERVICE, serve)


if __name__ == "__main__":
    main()
