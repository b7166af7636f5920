"""Restarting stalled miners (``[alerts.stalled] restart``): the backoff and its bounded
memory on a clock the tests set, then the real service and a real broker: a stalled miner
gets a restart Command on its command topic, once per backoff, and only where restart is
on (the rule's table or an override)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import msgspec
import pytest

from minerwatch.alerts.__main__ import AlertService
from minerwatch.alerts.recovery import STALE_S, Restarts, restarts_configured
from minerwatch.shared.config import (
    BUILTIN_RULES,
    AlertsConfig,
    Config,
    DatabaseConfig,
    MqttConfig,
    StalledRule,
)
from minerwatch.shared.messages import Received, decode_message
from minerwatch.shared.schemas import AlertEvent, Command, Sample, encode, format_ts
from minerwatch.shared.topics import COMMAND, sample_topic

NOW = time.time()
T0 = 1_800_000_000.0


def ts_at(offset: float, start: float = NOW) -> str:
    return format_ts(datetime.fromtimestamp(start + offset, UTC))


def alerts_config(overrides: list[dict[str, Any]] | None = None, **stalled: Any
                  ) -> AlertsConfig:
    """Only ``stalled`` on: a flat hashrate over 2 polls fires it, no cooldown."""
    raw: dict[str, Any] = {name: {"enabled": name == "stalled"} for name in BUILTIN_RULES}
    raw["stalled"].update(polls=2, cooldown_s=0, **stalled)
    raw.update(notify=[], group_s=0, overrides=overrides or [])
    return msgspec.convert(raw, AlertsConfig)


def stalled(miner_id: str, state: str = "firing", rule: str = "stalled") -> AlertEvent:
    return AlertEvent(miner_id=miner_id, rule=rule, state=state,  # type: ignore[arg-type]
                      severity="warning", value=1.2, threshold=2.0, message="stuck",
                      ts=ts_at(0, T0))


# --- the backoff, on a clock of the test's own ------------------------------------------


def test_a_firing_stall_asks_one_restart_per_backoff_and_memory_stays_bounded(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "minerwatch.alerts")
    restarts = Restarts()
    on = StalledRule(restart=True, restart_backoff_s=600)
    off = StalledRule()

    def rule_of(miner_id: str) -> StalledRule:
        return on if miner_id.startswith("on") else off

    [first] = restarts.on_events([stalled("on-1"), stalled("off-1")], rule_of, T0)
    assert (first.miner_id, first.action, first.by, first.ts) == (
        "on-1", "restart", "alerts", ts_at(0, T0))
    # resolving, other rules and other miners without restart ask nothing
    assert restarts.on_events([stalled("on-1", "resolved"), stalled("on-2", rule="offline"),
                               stalled("off-2")], rule_of, T0 + 1) == []
    # firing again within the backoff: skipped, with a line
    assert restarts.on_events([stalled("on-1")], rule_of, T0 + 599) == []
    assert "not restarted: a restart was asked 599 s ago" in caplog.text
    assert "on-1: restart asked (command " in caplog.text
    # past the backoff: asked again, with a fresh id; what was remembered is gone
    [again] = restarts.on_events([stalled("on-1")], rule_of, T0 + 600)
    assert again.id != first.id and restarts.remembered == 1
    many = [stalled(f"on-{n}") for n in range(100)]
    assert len(restarts.on_events(many, rule_of, T0 + 10_000)) == 100
    restarts.prune(T0 + 10_600)
    assert restarts.remembered == 0


def test_a_restart_stays_due_until_sent_and_a_stale_one_is_dropped() -> None:
    restarts = Restarts()
    command = restarts.ask("m1", 600, T0)
    assert command is not None
    assert restarts.due(T0 + 1) == [command] == restarts.due(T0 + 2)  # not sent yet
    restarts.sent(command)
    assert restarts.due(T0 + 3) == []
    late = restarts.ask("m2", 600, T0)
    assert late is not None and restarts.due(T0 + STALE_S + 1) == []  # the broker was away
    forgotten = restarts.ask("m3", 600, T0)
    assert forgotten is not None
    restarts.forget("m3")
    assert restarts.due(T0 + 1) == [] and restarts.ask("m3", 600, T0 + 1) is None


def test_restart_is_configured_by_the_table_or_an_override() -> None:
    assert not restarts_configured(alerts_config())
    assert restarts_configured(alerts_config(restart=True))
    assert restarts_configured(alerts_config(
        overrides=[{"match": {"model": "S19"}, "stalled": {"restart": True}}]))


# --- the service, through a real broker --------------------------------------------------


@asynccontextmanager
async def running(broker: Any, base: str, alerts: AlertsConfig) -> AsyncIterator[AlertService]:
    config = Config(
        mqtt=MqttConfig(url=broker.url, base_topic=base, reconnect_min_s=0.1,
                        reconnect_max_s=0.5),
        database=DatabaseConfig(url="sqlite:////nonexistent-minerwatch/x.db"),
        alerts=alerts)
    service = AlertService(config, notify_timeout_s=2.0, tick_s=0.1)
    task = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(5):
            await service.subscribed.wait()
        yield service
        assert not task.done(), "the service stopped on its own"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class Watch:
    """What the service publishes on the alert and command topics, in order."""

    def __init__(self, client: aiomqtt.Client, base: str) -> None:
        self.client = client
        self.base = base

    async def next(self, timeout: float = 5.0) -> AlertEvent | Command:
        async with asyncio.timeout(timeout):
            message = await anext(self.client.messages)
        assert isinstance(message.payload, bytes)
        decoded = decode_message(self.base, message.topic.value, message.payload)
        assert isinstance(decoded, Received), decoded
        if isinstance(decoded.message, Command):
            assert decoded.spec is COMMAND and not message.retain
            assert message.qos == 1
        assert isinstance(decoded.message, AlertEvent | Command)
        return decoded.message


async def feed(client: aiomqtt.Client, base: str, miner_id: str, offset: float,
               *hashrates: float) -> None:
    for index, hashrate in enumerate(hashrates):
        sample = Sample(miner_id=miner_id, ts=ts_at(offset + index), hashrate_ths=hashrate)
        await client.publish(sample_topic(base, miner_id), encode(sample), qos=1)


async def test_a_stalled_miner_is_restarted_once_per_backoff(
        broker: Any, base_topic: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "minerwatch.alerts")
    config = alerts_config(restart=True, restart_backoff_s=60)
    async with aiomqtt.Client(broker.host, broker.port) as client, \
            running(broker, base_topic, config):
        await client.subscribe(f"{base_topic}/alerts/#", qos=1)
        await client.subscribe(COMMAND.filter(base_topic), qos=1)
        watch = Watch(client, base_topic)
        await feed(client, base_topic, "rig-1", 0, 1.2, 1.2)  # flat: stalled
        firing, command = await watch.next(), await watch.next()
        assert isinstance(firing, AlertEvent) and firing.state == "firing"
        assert isinstance(command, Command)
        assert (command.miner_id, command.action, command.by) == ("rig-1", "restart", "alerts")
        assert command.settings is None and command.tune is None
        assert abs(datetime.fromisoformat(command.ts).timestamp() - time.time()) < 10
        # it moves, stalls again within the backoff: an alert, no second restart
        await feed(client, base_topic, "rig-1", 10, 1.3, 1.3)
        seen = [await watch.next(), await watch.next()]
        await feed(client, base_topic, "rig-1", 20, 1.4)  # resolves: the end of what it did
        seen.append(await watch.next())
    assert [(type(m).__name__, getattr(m, "state", None)) for m in seen] == [
        ("AlertEvent", "resolved"), ("AlertEvent", "firing"), ("AlertEvent", "resolved")]
    assert "stalled miner rig-1: restart asked" in caplog.text
    assert "stalled miner rig-1 not restarted: a restart was asked" in caplog.text


async def test_without_restart_a_stall_is_only_an_alert_and_an_override_turns_it_on(
        broker: Any, base_topic: str) -> None:
    config = alerts_config(overrides=[{"match": {"miner_id": "rig-2"},
                                       "stalled": {"restart": True}}])
    async with aiomqtt.Client(broker.host, broker.port) as client, \
            running(broker, base_topic, config):
        await client.subscribe(f"{base_topic}/alerts/#", qos=1)
        await client.subscribe(COMMAND.filter(base_topic), qos=1)
        watch = Watch(client, base_topic)
        await feed(client, base_topic, "rig-1", 0, 1.2, 1.2)
        await feed(client, base_topic, "rig-1", 2, 1.3)  # resolves after firing
        await feed(client, base_topic, "rig-2", 0, 1.2, 1.2)
        seen = [await watch.next() for _ in range(4)]
    assert [(type(m).__name__, m.miner_id, getattr(m, "state", None)) for m in seen] == [
        ("AlertEvent", "rig-1", "firing"), ("AlertEvent", "rig-1", "resolved"),
        ("AlertEvent", "rig-2", "firing"), ("Command", "rig-2", None)]
