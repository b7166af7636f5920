"""The built-in rules through the real service and a real broker: info, status, samples,
service liveness and mutes in; retained alert events and notifications out; a restart in
between; the baselines seeded from a real SQLite history."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
import msgspec
import pytest
from sqlalchemy import insert

from minerwatch.alerts.__main__ import AlertService
from minerwatch.shared import db
from minerwatch.shared.config import BUILTIN_RULES, AlertsConfig, Config, DatabaseConfig, MqttConfig
from minerwatch.shared.schemas import (
    AlertEvent,
    MinerInfo,
    MinerStatus,
    Mute,
    Sample,
    decode,
    encode,
    format_ts,
)
from minerwatch.shared.topics import (
    alert_topic,
    info_topic,
    mute_topic,
    sample_topic,
    service_status_topic,
    status_topic,
)

if TYPE_CHECKING:
    from .conftest import Receiver

MINER = "garage"
LABEL = "Garage Bitaxe"
NOW = time.time()


def ts_at(offset: float) -> str:
    """A timestamp ``offset`` seconds from when the tests started."""
    return format_ts(datetime.fromtimestamp(NOW + offset, UTC))


def make_config(broker: Any, base: str, *enabled: str, notify: list[str] | None = None,
                database: str | None = None, overrides: list[dict[str, Any]] | None = None,
                **tables: dict[str, Any]) -> Config:
    """Only the ``enabled`` built-in rules on, with ``tables`` on top; no grouping."""
    raw: dict[str, Any] = {name: {"enabled": name in enabled} for name in BUILTIN_RULES}
    for name, values in tables.items():
        raw[name].update(values)
    raw.update(notify=notify or [], group_s=0, overrides=overrides or [])
    return Config(
        mqtt=MqttConfig(url=broker.url, base_topic=base, reconnect_min_s=0.1,
                        reconnect_max_s=0.5),
        database=DatabaseConfig(url=database or "sqlite:////nonexistent-minerwatch/x.db"),
        alerts=msgspec.convert(raw, AlertsConfig),
    )


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[AlertService]:
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


@asynccontextmanager
async def mqtt(broker: Any) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        yield client


async def next_event(client: aiomqtt.Client, timeout: float = 5.0) -> AlertEvent:
    async with asyncio.timeout(timeout):
        message = await anext(client.messages)
    assert isinstance(message.payload, bytes)
    return decode(message.payload, AlertEvent)


async def quiet(client: aiomqtt.Client, seconds: float) -> list[AlertEvent]:
    found = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            found.append(await next_event(client, left))
        except TimeoutError:
            break
    return found


async def retained(broker: Any, topic: str) -> bytes | None:
    """The retained payload of ``topic``, None when there is none."""
    async with mqtt(broker) as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(1.0):
                message = await anext(client.messages)
        except TimeoutError:
            return None
        assert message.retain and isinstance(message.payload, bytes)
        return message.payload


def info(make: str = "Bitaxe", model: str = "Gamma BM1370", label: str | None = LABEL
         ) -> bytes:
    return encode(MinerInfo(miner_id=MINER, driver="axeos", host="10.0.0.5", port=80,
                            make=make, model=model, label=label))


def status(state: str, since: float, reason: str | None = None) -> bytes:
    return encode(MinerStatus(state=state, since=ts_at(since), reason=reason,  # type: ignore[arg-type]
                              last_seen=ts_at(0)))


def sample(offset: float, **values: Any) -> bytes:
    values.setdefault("hashrate_ths", 1.2)
    return encode(Sample(miner_id=MINER, ts=ts_at(offset), **values))


async def test_offline_fires_with_label_and_reason_notifies_and_resolves(
    broker: Any, base_topic: str, receiver: Receiver
) -> None:
    config = make_config(broker, base_topic, "offline", notify=[receiver.url],
                         offline={"for_s": 1.0})
    topic = alert_topic(base_topic, MINER, "offline")
    async with mqtt(broker) as client, running(config):
        await client.subscribe(f"{base_topic}/alerts/#", qos=1)
        await client.publish(info_topic(base_topic, MINER), info(), qos=1, retain=True)
        await client.publish(status_topic(base_topic, MINER), status("offline", 0, "timeout "
                             "after 5 s"), qos=1, retain=True)
        # Held for 1 s from the status's since: the tick fires it.
        firing = await next_event(client)
        assert (firing.rule, firing.state, firing.label, firing.since, firing.muted) == (
            "offline", "firing", LABEL, ts_at(0), False)
        assert firing.message.startswith(f"{LABEL}: offline for ")
        assert firing.message.endswith(": timeout after 5 s")
        assert await quiet(client, 0.5) == []  # once
        assert await retained(broker, topic) == encode(firing)
        post = await receiver.next_post()
        assert firing.message in post.json()["message"]

        await client.publish(status_topic(base_topic, MINER), status("online", 5), qos=1,
                             retain=True)
        resolved = await next_event(client)
        assert (resolved.state, resolved.label) == ("resolved", LABEL)
        assert await retained(broker, topic) == encode(resolved)


async def test_a_per_model_override_sets_the_threshold(broker: Any, base_topic: str) -> None:
    overrides = [{"match": {"model": "gamma bm1370"}, "temp_high": {"threshold": 65}}]
    config = make_config(broker, base_topic, "temp_high", overrides=overrides,
                         temp_high={"for_s": 0})
    async with mqtt(broker) as client, running(config):
        await client.subscribe(f"{base_topic}/alerts/#", qos=1)
        await client.publish(info_topic(base_topic, MINER), info(), qos=1, retain=True)
        await client.publish(sample_topic(base_topic, MINER), sample(0, temp_c=64.0), qos=1)
        await client.publish(sample_topic(base_topic, MINER), sample(1, temp_c=66.0), qos=1)
        event = await next_event(client)
    assert (event.rule, event.threshold, event.value) == ("temp_high", 65.0, 66.0)
    assert event.message == f"{LABEL}: chip 66 °C > 65 °C for 0 s"


async def test_a_mute_marks_the_event_muted_and_holds_its_notification_back(
    broker: Any, base_topic: str, receiver: Receiver
) -> None:
    config = make_config(broker, base_topic, "offline", notify=[receiver.url],
                         offline={"for_s": 0})
    mute = Mute(id="maint", miner_id=MINER, rule=None, until=ts_at(3600), created=ts_at(0))
    gone = Mute(id="old", miner_id=None, rule="offline", until=ts_at(-60),
                created=ts_at(-120))
    async with mqtt(broker) as client:
        await client.publish(mute_topic(base_topic, "maint"), encode(mute), qos=1, retain=True)
        await client.publish(mute_topic(base_topic, "old"), encode(gone), qos=1, retain=True)
        async with running(config):
            await client.subscribe(f"{base_topic}/alerts/#", qos=1)
            await client.publish(status_topic(base_topic, MINER), status("offline", -10),
                                 qos=1, retain=True)
            firing = await next_event(client)
            assert (firing.state, firing.muted) == ("firing", True)
            # The expired mute is cleared on the broker; the one in force stays.
            async with asyncio.timeout(5):
                while await retained(broker, mute_topic(base_topic, "old")) is not None:
                    await asyncio.sleep(0.1)
            assert await retained(broker, mute_topic(base_topic, "maint")) == encode(mute)
            # Lifted: the next alert is notified again.
            await client.publish(mute_topic(base_topic, "maint"), b"", qos=1, retain=True)
            await client.publish(status_topic(base_topic, MINER), status("online", 1), qos=1,
                                 retain=True)
            resolved = await next_event(client)
            assert (resolved.state, resolved.muted) == ("resolved", False)
            post = await receiver.next_post()
    assert resolved.message in post.json()["message"]
    assert receiver.posts.empty()  # the muted firing was never notified


async def test_a_restart_does_not_notify_again_and_knows_the_best_difficulty(
    broker: Any, base_topic: str, receiver: Receiver
) -> None:
    config = make_config(broker, base_topic, "best_difficulty", "temp_high",
                         notify=[receiver.url], temp_high={"for_s": 0})
    async with mqtt(broker) as client:
        await client.subscribe(f"{base_topic}/alerts/#", qos=1)
        await client.publish(info_topic(base_topic, MINER), info(), qos=1, retain=True)
        async with running(config):
            for offset, best in ((0, 1e6), (1, 2e6)):
                await client.publish(sample_topic(base_topic, MINER),
                                     sample(offset, best_diff=best, temp_c=75.0), qos=1,
                                     retain=True)
            seen = {(e.rule, e.state): e for e in [await next_event(client),
                                                   await next_event(client)]}
            assert set(seen) == {("temp_high", "firing"), ("best_difficulty", "event")}
            assert seen["best_difficulty", "event"].value == 2e6
            await receiver.next_post()
            await receiver.next_post()

        async with running(config):
            # The same retained sample and one more as hot, with the same best: nothing.
            await client.publish(sample_topic(base_topic, MINER),
                                 sample(2, best_diff=2e6, temp_c=76.0), qos=1, retain=True)
            assert await quiet(client, 1.0) == []
            await client.publish(sample_topic(base_topic, MINER),
                                 sample(3, best_diff=3e6, temp_c=60.0), qos=1, retain=True)
            got = {(e.rule, e.state): e for e in [await next_event(client),
                                                  await next_event(client)]}
            assert set(got) == {("temp_high", "resolved"), ("best_difficulty", "event")}
            assert got["best_difficulty", "event"].threshold == 2e6
            posts = [await receiver.next_post(), await receiver.next_post()]
    assert receiver.posts.empty()
    bodies = " ".join(p.json()["message"] for p in posts)
    assert all(event.message in bodies for event in got.values())


async def test_service_down_and_back(broker: Any, base_topic: str) -> None:
    config = make_config(broker, base_topic, "service_down", service_down={"for_s": 0.5})
    topic = alert_topic(base_topic, "minerwatch-collector", "service_down")
    async with mqtt(broker) as client, running(config):
        await client.subscribe(f"{base_topic}/alerts/#", qos=1)
        await client.publish(service_status_topic(base_topic, "collector"), b"offline", qos=1,
                             retain=True)
        firing = await next_event(client)
        assert (firing.miner_id, firing.state) == ("minerwatch-collector", "firing")
        assert await retained(broker, topic) == encode(firing)
        await client.publish(service_status_topic(base_topic, "collector"), b"online", qos=1,
                             retain=True)
        assert (await next_event(client)).state == "resolved"


async def test_an_empty_info_forgets_the_miner(broker: Any, base_topic: str) -> None:
    config = make_config(broker, base_topic, "offline", offline={"for_s": 0})
    async with mqtt(broker) as client, running(config) as service:
        await client.subscribe(f"{base_topic}/alerts/#", qos=1)
        await client.publish(info_topic(base_topic, MINER), info(), qos=1, retain=True)
        await client.publish(status_topic(base_topic, MINER), status("offline", -5), qos=1,
                             retain=True)
        assert (await next_event(client)).state == "firing"
        assert [e.miner_id for e in service.republished()] == [MINER]
        await client.publish(info_topic(base_topic, MINER), b"", qos=1, retain=True)
        async with asyncio.timeout(5):
            while MINER in service.evaluator.miners:
                await asyncio.sleep(0.05)
        assert service.republished() == []


async def seeded_history(path: Path, mean_ths: float) -> str:
    url = f"sqlite:///{path}"
    engine = db.create_engine(url)
    await db.create_schema(engine)
    # The hour of now, not of NOW: the module is imported minutes before this test runs
    # and an hour boundary in between would move the window by one row.
    hour_ms = int(time.time() // 3600) * 3_600_000
    zeros = {f"{m}_{part}": 0 for m in db.ROLLUP_METRICS for part in ("sum", "n")}
    rows = [{**zeros, "miner_id": MINER, "bucket_ms": hour_ms - back * 3_600_000,
             "samples": 360, "last_ts_ms": hour_ms - back * 3_600_000,
             "hashrate_ths_sum": mean_ths * 360, "hashrate_ths_n": 360, "fan_rpm": [],
             "is_mining": True}
            for back in range(1, 30)]
    async with engine.begin() as conn:
        await conn.execute(insert(db.rollups_1h), rows)
    await engine.dispose()
    return url


async def test_baselines_are_seeded_from_the_hourly_rollups(
    broker: Any, base_topic: str, tmp_path: Path
) -> None:
    url = await seeded_history(tmp_path / "history.db", 10.0)
    config = make_config(broker, base_topic, "hashrate_low", database=url,
                         hashrate_low={"for_s": 0})
    async with mqtt(broker) as client, running(config) as service:
        await client.subscribe(f"{base_topic}/alerts/#", qos=1)
        async with asyncio.timeout(5):
            while service.seeded is None:
                await asyncio.sleep(0.05)
        assert service.seeded in (24, 25)  # the last 25 hours of 29, not older
        await client.publish(sample_topic(base_topic, MINER), sample(0, hashrate_ths=7.5),
                             qos=1)
        event = await next_event(client)
    assert event.rule == "hashrate_low"
    assert event.threshold == pytest.approx(8.0)
    assert "its 24 h median" in event.message


async def test_a_database_that_does_not_open_is_one_warning(
    broker: Any, base_topic: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not a database" * 100)
    config = make_config(broker, base_topic, "temp_high", database=f"sqlite:///{broken}",
                         temp_high={"for_s": 0})
    with caplog.at_level(logging.INFO, logger="minerwatch"):
        async with mqtt(broker) as client, running(config) as service:
            await client.subscribe(f"{base_topic}/alerts/#", qos=1)
            async with asyncio.timeout(5):
                while service.seeded is None:
                    await asyncio.sleep(0.05)
            await client.publish(sample_topic(base_topic, MINER), sample(0, temp_c=99.0),
                                 qos=1)
            assert (await next_event(client)).rule == "temp_high"  # alerts go on
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "baselines" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].startswith("hashrate baselines start empty: reading the history "
                                  "failed: ")
    assert "\n" not in warnings[0]
    assert service.seeded == -1
