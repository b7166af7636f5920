"""minerwatch-alerts: evaluates threshold rules on live samples, publishes and notifies.

Subscribes (QoS 1) to ``{base}/miners/+/sample`` and evaluates every rule on each sample,
with the sample's own ``ts`` as the rule clock (see ``rules``). Each event is published
retained, QoS 1, on ``{base}/alerts/{miner_id}/{rule}`` and handed to Apprise.

At start it also subscribes to ``{base}/alerts/+/+`` (MQTT v5 no-local, so its own events do
not come back): the retained events there restore which alerts are already firing, so a
restart does not fire them again. Only retained deliveries are used for that; live events
from elsewhere never override state built from samples.

Every message goes through ``shared.messages.decode_message``; what it rejects, and
samples stamped too far in the future, are counted and logged rate-limited by a
``RejectLog``. Whatever else handling one message raises is caught per message (the
last-resort guard in ``consume``), logged the same way, and the session goes on.

Every session starts by republishing, retained, the event of each alert that is firing
(fired here or recovered at start), so a broker that lost its retained messages is whole
again after one reconnect. Republishing notifies no one: only new events are notified.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from minerwatch.alerts.notify import Notifier
from minerwatch.alerts.rules import RuleSet, ts_seconds
from minerwatch.shared.config import Config
from minerwatch.shared.errors import one_line
from minerwatch.shared.messages import Rejected, decode_message
from minerwatch.shared.mqtt import MqttLink
from minerwatch.shared.mqtt.packets import Message, Subscription
from minerwatch.shared.mqtt.protocol import MqttClient
from minerwatch.shared.rejects import RejectLog
from minerwatch.shared.schemas import AlertEvent, Sample, encode
from minerwatch.shared.service import run_service
from minerwatch.shared.topics import ALERT, SAMPLE, alert_topic

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


class AlertService:
    """Rules, notifier and MQTT session of one alerts process."""

    def __init__(self, config: Config, *, notify_timeout_s: float = 10.0) -> None:
        self.base = config.mqtt.base_topic
        self.rules = RuleSet(config.alerts.rules)  # ConfigError on a bad rule
        self.notifier = Notifier(
            config.alerts.notify, config.alerts.rules, timeout_s=notify_timeout_s
        )
        self.link = MqttLink(config.mqtt, SERVICE, receive_maximum=RECEIVE_MAXIMUM)
        self.rejects = RejectLog(log)
        #: Set once the first session has subscribed (tests and health checks wait on it).
        self.subscribed = asyncio.Event()
        #: Sessions started so far (each one republishes the firing alerts).
        self.sessions = 0
        # The latest event of each alert topic whose alert is firing: republished, retained,
        # at every session start, so a broker that lost its retained store is whole again.
        self._firing: dict[str, AlertEvent] = {}
        # Events not yet acknowledged by the broker, latest per alert topic: sent on reconnect.
        self._unpublished: dict[str, AlertEvent] = {}

    async def run(self) -> None:
        try:
            await self.link.run(self.session)
        finally:
            self.rejects.close()
            await self.notifier.drain(timeout_s=2.0)

    async def session(self, client: MqttClient) -> None:
        # Alerts first: the broker answers subscriptions in order, so the retained alerts
        # are restored before the retained samples are evaluated. No-local: our own events
        # do not come back.
        await client.subscribe([Subscription(ALERT.filter(self.base), qos=1, no_local=True)])
        await client.subscribe([Subscription(SAMPLE.filter(self.base), qos=1)])
        self.sessions += 1
        self.subscribed.set()
        await self.publish(client, self.republished())
        async for message in client.messages:
            await self.publish(client, self.consume(message))
            client.ack(message)

    def republished(self) -> list[AlertEvent]:
        """What a new session publishes first: every firing alert's event, and any event
        the broker has not acknowledged yet (a resolve included)."""
        return list({**self._firing, **self._unpublished}.values())

    async def publish(self, client: MqttClient, events: Iterable[AlertEvent]) -> None:
        for event in events:
            topic = alert_topic(self.base, event.miner_id, event.rule)
            await client.publish(topic, encode(event), qos=1, retain=True)
            if self._unpublished.get(topic) is event:
                del self._unpublished[topic]

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
        """The events one incoming message causes (and notifications started for them)."""
        decoded = decode_message(self.base, topic, payload)
        if isinstance(decoded, Rejected):
            self.rejects.note(decoded.kind, str(decoded))
            return []
        message = decoded.message
        if isinstance(message, AlertEvent):
            if retained:  # live events from elsewhere never override state from samples
                self.recover(topic, message)
            return []
        if isinstance(message, Sample):
            return self.evaluate(topic, message)
        return []  # an empty payload: a retained message deleted

    def admitted(self, kind: str, topic: str, miner_id: str) -> bool:
        """Whether the rules keep state for this miner; a reject line if not."""
        if self.rules.admits(miner_id):
            return True
        self.rejects.note(kind, f"{topic[:200]}: a new miner past the "
                                f"{self.rules.max_miners} the rules keep")
        return False

    def evaluate(self, topic: str, sample: Sample) -> list[AlertEvent]:
        if not self.admitted(SAMPLE.name, topic, sample.miner_id):
            return []
        try:
            ahead = ts_seconds(sample.ts) - time.time()
            if ahead > MAX_FUTURE_S:
                self.rejects.note(SAMPLE.name, f"{topic[:200]}: ts {sample.ts} is "
                                               f"{ahead:.0f} s in the future")
                return []
            events = self.rules.evaluate(sample)
        except (ValueError, OverflowError) as exc:
            self.rejects.note(SAMPLE.name, f"{topic[:200]}: bad ts {sample.ts!r}: "
                                           f"{one_line(exc)}")
            return []
        for event in events:
            event_topic = alert_topic(self.base, event.miner_id, event.rule)
            self._unpublished[event_topic] = event
            if event.state == "firing":
                self._firing[event_topic] = event
            else:
                self._firing.pop(event_topic, None)
            log.info("%s %s/%s: %s", event.state, event.miner_id, event.rule, event.message)
            self.notifier.send(event)
        return events

    def recover(self, topic: str, event: AlertEvent) -> None:
        if not self.admitted(ALERT.name, topic, event.miner_id):
            return
        try:
            restored = self.rules.restore(event)
        except (ValueError, OverflowError) as exc:
            self.rejects.note(ALERT.name, f"{topic[:200]}: bad ts {event.ts!r}: "
                                          f"{one_line(exc)}")
            return
        if restored and event.state == "firing":
            # Ours now: republished like any alert this process fired.
            self._firing[topic] = event
            log.info("recovered firing alert %s/%s (since %s)", event.miner_id, event.rule,
                     event.ts)


async def serve(config: Config) -> None:
    await AlertService(config).run()


def main() -> None:
    run_service(SERVICE, serve)


if __name__ == "__main__":
    main()
