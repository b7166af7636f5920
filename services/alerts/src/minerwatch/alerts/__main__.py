"""minerwatch-alerts: evaluates threshold rules on live samples, publishes and notifies.

Subscribes (QoS 1) to ``{base}/miners/+/sample`` and evaluates every rule on each sample,
with the sample's own ``ts`` as the rule clock (see ``rules``). Each event is published
retained, QoS 1, on ``{base}/alerts/{miner_id}/{rule}`` and handed to Apprise.

At start it also subscribes to ``{base}/alerts/+/+`` (MQTT v5 no-local, so its own events do
not come back): the retained events there restore which alerts are already firing, so a
restart does not fire them again. Only retained deliveries are used for that; live events
from elsewhere never override state built from samples.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from minerwatch.alerts.notify import Notifier
from minerwatch.alerts.rules import RuleSet, ts_seconds
from minerwatch.shared.config import Config
from minerwatch.shared.mqtt import MqttLink, publish
from minerwatch.shared.schemas import AlertEvent, Sample, decode, encode
from minerwatch.shared.service import run_service
from minerwatch.shared.topics import ParsedTopic, alert_topic, parse_topic

SERVICE = "alerts"
log = logging.getLogger("minerwatch.alerts")

#: Samples stamped further ahead of our clock than this are refused: one bogus future ts
#: would otherwise make every later sample of that miner look old.
MAX_FUTURE_S = 300.0


class BadInputLog:
    """At most one warning per ``interval_s`` about bad input, counting what it skipped."""

    def __init__(
        self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._last: float | None = None
        self._skipped = 0

    def report(self, topic: str, problem: str) -> None:
        now = self.clock()
        if self._last is not None and now - self._last < self.interval_s:
            self._skipped += 1
            return
        more = f" (+{self._skipped} more since the last report)" if self._skipped else ""
        log.warning("ignored message on %s: %s%s", topic, problem, more)
        self._last = now
        self._skipped = 0


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


class AlertService:
    """Rules, notifier and MQTT session of one alerts process."""

    def __init__(self, config: Config, *, notify_timeout_s: float = 10.0) -> None:
        self.base = config.mqtt.base_topic
        self.rules = RuleSet(config.alerts.rules)  # ConfigError on a bad rule
        self.notifier = Notifier(
            config.alerts.notify, config.alerts.rules, timeout_s=notify_timeout_s
        )
        self.link = MqttLink(config.mqtt, SERVICE)
        self.bad_input = BadInputLog()
        #: Set once the first session has subscribed (tests and health checks wait on it).
        self.subscribed = asyncio.Event()
        # Events not yet acknowledged by the broker, latest per alert topic: sent on reconnect.
        self._unpublished: dict[str, AlertEvent] = {}

    async def run(self) -> None:
        try:
            await self.link.run(self.session)
        finally:
            await self.notifier.drain(timeout_s=2.0)

    async def session(self, client: aiomqtt.Client) -> None:
        # Alerts first: the broker answers subscriptions in order, so the retained alerts
        # are restored before the retained samples are evaluated.
        await client.subscribe(
            f"{self.base}/alerts/+/+", options=SubscribeOptions(qos=1, noLocal=True)
        )
        await client.subscribe(f"{self.base}/miners/+/sample", qos=1)
        self.subscribed.set()
        await self.publish(client, list(self._unpublished.values()))
        async for message in client.messages:
            events = self.handle(str(message.topic), message.payload, retained=message.retain)
            await self.publish(client, events)

    async def publish(self, client: aiomqtt.Client, events: list[AlertEvent]) -> None:
        for event in events:
            topic = alert_topic(self.base, event.miner_id, event.rule)
            await publish(client, topic, encode(event))
            if self._unpublished.get(topic) is event:
                del self._unpublished[topic]

    def handle(self, topic: str, payload: object, *, retained: bool) -> list[AlertEvent]:
        """The events one incoming message causes (and notifications started for them)."""
        parsed = parse_topic(self.base, topic)
        if parsed is None or parsed.miner_id is None:
            return []
        if not isinstance(payload, bytes | bytearray | str):
            self.bad_input.report(topic, f"payload of type {type(payload).__name__}")
            return []
        if not payload:
            return []  # a cleared retained topic
        if parsed.kind == "alert":
            if retained:
                self.recover(topic, parsed, payload)
            return []
        if parsed.kind != "sample":
            return []
        events = self.evaluate(topic, parsed.miner_id, payload)
        for event in events:
            self._unpublished[alert_topic(self.base, event.miner_id, event.rule)] = event
            log.info("%s %s/%s: %s", event.state, event.miner_id, event.rule, event.message)
            self.notifier.send(event)
        return events

    def evaluate(self, topic: str, miner_id: str, payload: bytes | bytearray | str
                 ) -> list[AlertEvent]:
        try:
            sample = decode(payload, Sample)
        except ValueError as exc:
            self.bad_input.report(topic, f"not a Sample: {_first_line(exc)}")
            return []
        if sample.miner_id != miner_id:
            self.bad_input.report(topic, f"miner_id {sample.miner_id!r} does not match the topic")
            return []
        try:
            ahead = ts_seconds(sample.ts) - time.time()
            if ahead > MAX_FUTURE_S:
                self.bad_input.report(topic, f"ts {sample.ts} is {ahead:.0f} s in the future")
                return []
            return self.rules.evaluate(sample)
        except ValueError as exc:
            self.bad_input.report(topic, f"bad ts {sample.ts!r}: {_first_line(exc)}")
            return []

    def recover(self, topic: str, parsed: ParsedTopic, payload: bytes | bytearray | str) -> None:
        try:
            event = decode(payload, AlertEvent)
            if event.miner_id != parsed.miner_id or event.rule != parsed.name:
                raise ValueError("miner_id or rule does not match the topic")
            restored = self.rules.restore(event)
        except ValueError as exc:
            self.bad_input.report(topic, f"not an alert event: {_first_line(exc)}")
            return
        if restored and event.state == "firing":
            log.info("recovered firing alert %s/%s (since %s)", event.miner_id, event.rule,
                     event.ts)


async def serve(config: Config) -> None:
    await AlertService(config).run()


def main() -> None:
    run_service(SERVICE, serve)


if __name__ == "__main__":
    main()
