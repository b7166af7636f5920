"""The alerts service against a real broker: samples in, retained alert events and HTTP
notifications out. The rule clock is the samples' ts, which the tests set, so a 2 s hold
takes no wall-clock time at all."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
import pytest

from minerwatch.alerts.__main__ import AlertService
from minerwatch.alerts.rules import NUMERIC_FIELDS
from minerwatch.shared.config import (
    BUILTIN_RULES,
    AlertsConfig,
    Config,
    DatabaseConfig,
    MqttConfig,
    NotifyTarget,
    RuleConfig,
)
from minerwatch.shared.schemas import AlertEvent, Sample, decode, encode, format_ts
from minerwatch.shared.topics import alert_topic, sample_topic, service_status_topic

if TYPE_CHECKING:
    from .conftest import Receiver

MINER = "bitaxe-1"
#: A database path that does not exist: the baselines start empty, nothing is created.
NO_DB = Path("/nonexistent-minerwatch-test") / "minerwatch.db"
T0 = float(int(time.time()) - 120)  # recent past: the samples' own clock


def ts_at(offset: float) -> str:
    return format_ts(datetime.fromtimestamp(T0 + offset, UTC))


def make_config(broker: Any, base: str, notify: list[str] | None = None, **rule: Any) -> Config:
    fields: dict[str, Any] = dict(name="overheat", field="temp_c", op=">", threshold=75.0,
                                  for_s=2.0, cooldown_s=600.0, hysteresis=3.0,
                                  severity="critical")
    fields.update(rule)
    targets: list[str | NotifyTarget] = list(notify or [])
    alerts = AlertsConfig(rules=[RuleConfig(**fields)], notify=targets, group_s=0)
    for name in BUILTIN_RULES:  # the free rule alone: what these tests are about
        alerts.builtin(name).enabled = False
    return Config(
        mqtt=MqttConfig(url=broker.url, base_topic=base, reconnect_min_s=0.1,
                        reconnect_max_s=0.5),
        database=DatabaseConfig(url=f"sqlite:///{NO_DB}"),
        alerts=alerts,
    )


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[AlertService]:
    service = AlertService(config, notify_timeout_s=2.0)
    task = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(5):
            await service.subscribed.wait()
        yield service
        assert not task.done(), "the service stopped on its own"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def mqtt(broker: Any) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        yield client


async def next_message(client: aiomqtt.Client, timeout: float = 5.0) -> aiomqtt.Message:
    async with asyncio.timeout(timeout):
        return await anext(client.messages)


async def messages_within(client: aiomqtt.Client, seconds: float) -> list[aiomqtt.Message]:
    found = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            found.append(await next_message(client, left))
        except TimeoutError:
            break
    return found


async def retained_event(broker: Any, topic: str) -> AlertEvent:
    async with mqtt(broker) as client:
        await client.subscribe(topic, qos=1)
        message = await next_message(client, 3)
        assert message.retain
        assert isinstance(message.payload, bytes)
        return decode(message.payload, AlertEvent)


async def publish_samples(client: aiomqtt.Client, base: str, readings: list[tuple[float, Any]],
                          miner_id: str = MINER) -> None:
    """Publish samples as the collector does (retained, QoS 1), ts = T0 + offset."""
    for offset, temp in readings:
        sample = Sample(miner_id=miner_id, ts=ts_at(offset), hashrate_ths=1.2, temp_c=temp)
        await client.publish(sample_topic(base, miner_id), encode(sample), qos=1, retain=True)


def event_of(message: aiomqtt.Message) -> AlertEvent:
    assert isinstance(message.payload, bytes)
    return decode(message.payload, AlertEvent)


async def test_fires_once_resolves_once_and_notifies(
    broker: Any, base_topic: str, receiver: Receiver
) -> None:
    topic = alert_topic(base_topic, MINER, "overheat")
    config = make_config(broker, base_topic, notify=[receiver.url])
    async with running(config), mqtt(broker) as client:
        await client.subscribe(f"{base_topic}/alerts/#", qos=1)
        # Hot from 0 s; the 2 s hold is reached by the sample stamped 2 s.
        await publish_samples(client, base_topic, [(t, 80.0) for t in range(7)])
        firing = event_of(await next_message(client))
        assert firing == AlertEvent(miner_id=MINER, rule="overheat", state="firing",
                                    severity="critical", value=80.0, threshold=75.0,
                                    message=f"{MINER}: temp_c 80 > 75 for 2 s", ts=ts_at(2),
                                    since=ts_at(0))
        assert await retained_event(broker, topic) == firing

        # A late, older sample is ignored; inside the band stays firing; past it resolves.
        await publish_samples(client, base_topic, [(1, 60.0), (7, 73.0), (8, 80.0), (9, 71.0)])
        resolved = event_of(await next_message(client))
        assert (resolved.state, resolved.value, resolved.ts) == ("resolved", 71.0, ts_at(9))
        assert "temp_c 71 <= 72" in resolved.message
        assert await messages_within(client, 0.5) == []  # exactly one of each
        assert await retained_event(broker, topic) == resolved

        posts = [(await receiver.next_post()).json(), (await receiver.next_post()).json()]
        assert firing.message in posts[0]["message"]
        assert resolved.message in posts[1]["message"]
        assert posts[0]["type"] == "failure"  # critical
        assert posts[1]["type"] == "success"


async def test_flapping_within_cooldown_publishes_one_firing(broker: Any, base_topic: str) -> None:
    config = make_config(broker, base_topic, for_s=0, hysteresis=0, cooldown_s=60)
    async with running(config), mqtt(broker) as client:
        await client.subscribe(f"{base_topic}/alerts/#", qos=1)
        await publish_samples(client, base_topic,
                              [(t, 76.0 if t % 2 == 0 else 74.0) for t in range(40)])
        await publish_samples(client, base_topic, [(60, 76.0)])  # the cooldown is over
        states = [(e.state, e.ts) for e in map(event_of, await messages_within(client, 1.5))]
    assert states == [("firing", ts_at(0)), ("resolved", ts_at(1)), ("firing", ts_at(60))]


async def test_garbage_is_logged_once_and_never_kills_the_service(
    broker: Any, base_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(broker, base_topic, for_s=1)
    topic = sample_topic(base_topic, MINER)
    future = Sample(miner_id=MINER, ts=format_ts(datetime.now(UTC).replace(year=2099)),
                    hashrate_ths=1.0, temp_c=99.0)
    garbage = [b"not json", b"\xff\xfe\x00", b"[1, 2]", b"{}", b'{"miner_id": "x"}',
               encode(Sample(miner_id="someone-else", ts=ts_at(0), hashrate_ths=1.0)),
               b'{"miner_id":"bitaxe-1","ts":"2026-13-45T99:00:00.000Z","hashrate_ths":1}',
               b'{"miner_id":"bitaxe-1","ts":"' + ts_at(0).encode() + b'","hashrate_ths":1,'
               b'"temp_c":"hot"}',
               encode(future)]
    async with mqtt(broker) as client:
        # Garbage already retained on an alert topic at start is survived too.
        await client.publish(alert_topic(base_topic, MINER, "overheat"), b"{oops", qos=1,
                             retain=True)
        with caplog.at_level(logging.INFO, logger="minerwatch"):
            async with running(config) as service:
                await client.subscribe(f"{base_topic}/alerts/#", qos=1)
                await next_message(client)  # the retained garbage itself
                for payload in garbage:
                    await client.publish(topic, payload, qos=1)
                await publish_samples(client, base_topic, [(0, 80.0), (1, 80.0)])
                event = event_of(await next_message(client))
    assert (event.state, event.ts) == ("firing", ts_at(1))
    assert service.rejects.counts == {"alert": 1, "sample": len(garbage)}
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "minerwatch.alerts" and r.levelno == logging.WARNING]
    # Rate limited: one line per kind for the whole burst, and the count held back is
    # logged when the service stops.
    assert len(warnings) == 3
    assert warnings[0].startswith(
        f"bad alert message ignored: {alert_topic(base_topic, MINER, 'overheat')}: ")
    assert warnings[1].startswith(f"bad sample message ignored: {topic}: not a Sample")
    assert warnings[2] == (f"{len(garbage) - 1} more bad sample messages ignored in 30 s "
                           f"({len(garbage)} in all)")


async def test_restart_recovers_firing_alerts_instead_of_firing_again(
    broker: Any, base_topic: str
) -> None:
    config = make_config(broker, base_topic, for_s=1)
    async with mqtt(broker) as client:
        await client.subscribe(f"{base_topic}/alerts/#", qos=1)
        async with running(config):
            await publish_samples(client, base_topic, [(0, 80.0), (1, 80.0)])
            assert event_of(await next_message(client)).state == "firing"

        # A new process: it sees the retained alert and the retained hot sample.
        async with running(config):
            await publish_samples(client, base_topic, [(2, 81.0), (3, 82.0)])
            # A probe miner fires; messages are handled in order, so by the time its alert
            # arrives everything about the first miner has been handled too.
            await publish_samples(client, base_topic, [(0, 90.0), (1, 90.0)], miner_id="probe")
            seen = [event_of(m) for m in await messages_within(client, 1.0)]
            assert [(e.miner_id, e.state) for e in seen] == [("probe", "firing")]
            await publish_samples(client, base_topic, [(4, 70.0)])
            resolved = event_of(await next_message(client))
    assert (resolved.miner_id, resolved.state, resolved.ts) == (MINER, "resolved", ts_at(4))


async def test_keeps_state_across_a_broker_restart(own_broker: Any, base_topic: str) -> None:
    assert own_broker.local is not None
    config = make_config(own_broker, base_topic, for_s=1)
    async with running(config) as service:
        async with mqtt(own_broker) as client:
            await client.subscribe(f"{base_topic}/alerts/#", qos=1)
            await publish_samples(client, base_topic, [(0, 80.0), (1, 80.0)])
            assert event_of(await next_message(client)).state == "firing"
        own_broker.local.stop()
        own_broker.local.start()  # no persistence: every retained message is gone
        async with asyncio.timeout(5):
            while not service.link.connected:
                await asyncio.sleep(0.05)
        async with mqtt(own_broker) as client:
            await client.subscribe(f"{base_topic}/alerts/#", qos=1)
            # The new session republishes the firing alert first (retained or live,
            # depending on whether it came before this subscription).
            assert event_of(await next_message(client)).state == "firing"
            # Retained, so it reaches the service even if it subscribes after this.
            await publish_samples(client, base_topic, [(5, 70.0)])
            resolved = event_of(await next_message(client))
    assert (resolved.state, resolved.ts) == ("resolved", ts_at(5))


def hostile_samples(miner_id: str, ts: str) -> list[bytes]:
    """The payloads of issue 8 that killed services, as samples of ``miner_id``."""
    head = f'{{"miner_id":"{miner_id}","ts":"{ts}",'.encode()
    return [
        head + b'"hashrate_ths":1,"extra":' + b"[" * 1000 + b"]" * 1000 + b"}",
        head + b'"hashrate_ths":1,"extra":' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}",
        head + b'"hashrate_ths":1,"pool_url":"\xed\xa0\x80"}',  # a surrogate as UTF-8
        head + b'"hashrate_ths":1,"pool_url":"\\ud800"}',  # a lone surrogate escaped
        b"[" * 5000 + b"]" * 5000,
        head + b'"hashrate_ths":1.7e308,"temp_c":99}',  # no miner hashes that fast
        head + b'"hashrate_ths":1e999,"temp_c":99}',
        head + b'"hashrate_ths":1,"temp_c":99,"pool_url":"' + b"x" * 70_000 + b'"}',
    ]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "minerwatch.alerts" and r.levelno == logging.WARNING]


async def test_hostile_payloads_retained_and_live_are_survived_and_alerts_still_fire(
    broker: Any, base_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(broker, base_topic, for_s=1)
    deep = b'{"miner_id":"x","rule":' + b"[" * 1000 + b"]" * 1000 + b"}"
    async with mqtt(broker) as client:
        # Retained before the service starts: it meets them at every (re)start.
        retained = len(hostile_samples(MINER, ts_at(0)))
        for index in range(retained):  # one a topic: a topic retains one message
            held = f"held-{index}"
            await client.publish(sample_topic(base_topic, held),
                                 hostile_samples(held, ts_at(0))[index], qos=1, retain=True)
        await client.publish(f"{base_topic}/miners/Not_A_Miner/sample", b"{}", qos=1,
                             retain=True)
        for rule, payload in (("overheat", deep), ("hot", b'{"rule":"\xed\xa0\x80"}')):
            await client.publish(alert_topic(base_topic, MINER, rule), payload, qos=1,
                                 retain=True)
        with caplog.at_level(logging.INFO, logger="minerwatch"):
            async with running(config) as service:
                await client.subscribe(f"{base_topic}/alerts/#", qos=1)
                assert len(await messages_within(client, 0.3)) == 2  # the two retained above
                live = hostile_samples(MINER, ts_at(0))
                for payload in live:
                    await client.publish(sample_topic(base_topic, MINER), payload, qos=1)
                # Impossible optional readings are no readings: they never fire.
                huge = [(0, 1.7e308), (1, 1.7e308), (2, -1.7e308), (3, 1.7e308)]
                await publish_samples(client, base_topic, huge, miner_id="huge")
                await publish_samples(client, base_topic, [(0, 80.0), (1, 80.0)])
                event = event_of(await next_message(client))
                assert await messages_within(client, 0.5) == []
                assert service.sessions == 1  # the session itself never broke
                counts = dict(service.rejects.counts)
    assert (event.miner_id, event.state, event.ts) == (MINER, "firing", ts_at(1))
    samples = retained + 1 + len(live)
    assert counts == {"alert": 2, "sample": samples}
    warnings = warnings_of(caplog)
    assert len(warnings) == 4  # rate limited: one line per kind, then the totals
    assert warnings[0].startswith(f"bad alert message ignored: {base_topic}/alerts/")
    assert warnings[1].startswith(f"bad sample message ignored: {base_topic}/miners/")
    assert warnings[2:] == ["1 more bad alert messages ignored in 30 s (2 in all)",
                            f"{samples - 1} more bad sample messages ignored in 30 s "
                            f"({samples} in all)"]


async def test_an_exception_inside_handling_costs_only_that_message(
    broker: Any, base_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(broker, base_topic, for_s=1)
    async with mqtt(broker) as client:
        with caplog.at_level(logging.INFO, logger="minerwatch"):
            async with running(config) as service:
                judge = service.evaluator.on_sample

                def evaluate(sample: Sample) -> list[AlertEvent]:
                    if sample.miner_id == "boom":
                        raise RuntimeError("a bug nobody foresaw")
                    return judge(sample)

                service.evaluator.on_sample = evaluate  # type: ignore[method-assign]
                await client.subscribe(f"{base_topic}/alerts/#", qos=1)
                await publish_samples(client, base_topic, [(0, 80.0), (1, 80.0)],
                                      miner_id="boom")
                await publish_samples(client, base_topic, [(0, 80.0), (1, 80.0)])
                event = event_of(await next_message(client))
                assert service.sessions == 1  # the loop went on: no reconnect
                counts = dict(service.rejects.counts)
    assert (event.miner_id, event.state, event.ts) == (MINER, "firing", ts_at(1))
    assert counts == {"unhandled": 2}
    assert warnings_of(caplog)[0] == (
        f"bad unhandled message ignored: {sample_topic(base_topic, 'boom')}: handling "
        "failed: RuntimeError: a bug nobody foresaw")


async def test_miners_past_the_bound_are_logged_and_not_judged(
    broker: Any, base_topic: str
) -> None:
    config = make_config(broker, base_topic, for_s=0)
    async with mqtt(broker) as client, running(config) as service:
        service.evaluator.max_miners = 1
        await client.subscribe(f"{base_topic}/alerts/#", qos=1)
        await publish_samples(client, base_topic, [(0, 80.0)])
        await publish_samples(client, base_topic, [(0, 90.0), (1, 90.0)], miner_id="more")
        await publish_samples(client, base_topic, [(1, 60.0)])
        seen = [event_of(m) for m in await messages_within(client, 1.0)]
        counts = dict(service.rejects.counts)
    assert [(e.miner_id, e.state) for e in seen] == [(MINER, "firing"), (MINER, "resolved")]
    assert counts == {"sample": 2}


async def test_a_broker_that_lost_its_retained_messages_gets_the_firing_alerts_back(
    own_broker: Any, base_topic: str, receiver: Receiver
) -> None:
    assert own_broker.local is not None
    config = make_config(own_broker, base_topic, notify=[receiver.url], for_s=1)
    mine, old = alert_topic(base_topic, MINER, "overheat"), alert_topic(base_topic, "old",
                                                                        "overheat")
    # Retained by an earlier process: recovered at start, so this one's to keep.
    recovered = AlertEvent(miner_id="old", rule="overheat", state="firing",
                           severity="critical", value=90.0, threshold=75.0,
                           message="old: temp_c 90 > 75 for 60 s", ts=ts_at(-60))
    async with mqtt(own_broker) as client:
        await client.publish(old, encode(recovered), qos=1, retain=True)
    async with running(config) as service:
        async with mqtt(own_broker) as client:
            await client.subscribe(f"{base_topic}/alerts/#", qos=1)
            assert event_of(await next_message(client)) == recovered
            await publish_samples(client, base_topic, [(0, 80.0), (1, 80.0)])
            fired = event_of(await next_message(client))
            assert fired.state == "firing"
            # One that fired and resolved again is not firing: not republished.
            await publish_samples(client, base_topic, [(0, 80.0), (1, 80.0), (2, 60.0)],
                                  miner_id="calm")
            assert [event_of(m).state for m in await messages_within(client, 0.5)] == [
                "firing", "resolved"]
        assert MINER in (await receiver.next_post()).json()["title"]
        await receiver.next_post()  # calm firing
        await receiver.next_post()  # calm resolved

        own_broker.local.stop()
        own_broker.local.start()  # no persistence: every retained message is gone
        async with asyncio.timeout(10):
            while service.sessions < 2:
                await asyncio.sleep(0.05)
        async with mqtt(own_broker) as client:
            await client.subscribe(f"{base_topic}/alerts/#", qos=1)
            back = sorted((str(m.topic), event_of(m)) for m in await messages_within(client, 1.0))
        assert back == sorted([(mine, fired), (old, recovered)])
        assert await retained_event(own_broker, mine) == fired
        assert await retained_event(own_broker, old) == recovered
        assert receiver.posts.empty()  # republished, not notified again
        assert service.sessions == 2


def console_script() -> str:
    script = Path(sys.executable).parent / "minerwatch-alerts"
    assert script.exists(), "the minerwatch-alerts console script is not installed"
    return str(script)


def clean_env(config_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINERWATCH_")}
    env["MINERWATCH_CONFIG"] = str(config_file)
    return env


def test_bad_rule_field_exits_2_with_one_line(
    broker: Any, base_topic: str, tmp_path: Path
) -> None:
    config_file = tmp_path / "minerwatch.toml"
    config_file.write_text(
        f'[mqtt]\nurl = "{broker.url}"\nbase_topic = "{base_topic}"\n\n'
        '[[alerts.rules]]\nname = "overheat"\nfield = "tmp_c"\nthreshold = 75\n'
    )
    done = subprocess.run([console_script()], env=clean_env(config_file), capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "minerwatch-alerts: config: alerts.rules[0].field: 'tmp_c' is not a numeric Sample "
        f"field ({', '.join(NUMERIC_FIELDS)})"
    ]
    assert done.stdout == ""


async def test_console_script_fires_on_a_retained_sample_and_stops_cleanly(
    broker: Any, base_topic: str, tmp_path: Path
) -> None:
    config_file = tmp_path / "minerwatch.toml"
    config_file.write_text(
        f'[mqtt]\nurl = "{broker.url}"\nbase_topic = "{base_topic}"\n\n'
        '[[alerts.rules]]\nname = "hot"\nfield = "temp_c"\nthreshold = 75\nfor_s = 0\n'
    )
    async with mqtt(broker) as client:
        # Retained before the service exists: it must still be judged on its own ts.
        await publish_samples(client, base_topic, [(0, 88.5)])
        await client.subscribe(f"{base_topic}/alerts/#", qos=1)
        await client.subscribe(service_status_topic(base_topic, "alerts"), qos=1)
        proc = await asyncio.create_subprocess_exec(
            console_script(), env=clean_env(config_file),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            seen: dict[str, bytes] = {}
            async with asyncio.timeout(15):
                while str(alert_topic(base_topic, MINER, "hot")) not in seen:
                    message = await anext(client.messages)
                    assert isinstance(message.payload, bytes)
                    seen[str(message.topic)] = message.payload
            event = decode(seen[alert_topic(base_topic, MINER, "hot")], AlertEvent)
            assert (event.state, event.value, event.ts) == ("firing", 88.5, ts_at(0))
            assert event.message == f"{MINER}: temp_c 88.5 > 75 for 0 s"
        finally:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                _, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()
        status = await messages_within(client, 1.0)
        assert [m.payload for m in status if "services" in str(m.topic)][-1:] == [b"offline"]
