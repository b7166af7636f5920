"""Nothing lost, nothing doubled: acknowledgement after commit, redelivery, flow control,
shared subscriptions and SIGKILL, through a real broker into both databases."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from minerwatch.shared import db
from minerwatch.shared.config import Config, MqttConfig, StoreConfig
from minerwatch.shared.mqtt import MAX_PACKET_SIZE
from minerwatch.shared.rejects import RejectLog
from minerwatch.shared.schemas import encode
from minerwatch.store import consumer
from minerwatch.store.consumer import mqtt_session, receive_window, store_link
from minerwatch.store.retention import Horizon
from minerwatch.store.writer import Writer

STORE_BIN = Path(sys.executable).parent / "minerwatch-store"
STORE_LOG = logging.getLogger("minerwatch.store")
DEV_CONF = Path(__file__).resolve().parents[3] / "mosquitto" / "dev.conf"
T0_MS = 1795341600000  # 2026-11-22T10:00:00.000Z


async def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)


def ts_text(ms: int) -> str:
    return db.ms_to_datetime(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def stream(make: Any, miners: int, per_miner: int) -> list[tuple[str, bytes, tuple[str, int]]]:
    """(miner id, payload, key) of 10-second samples, the miners interleaved."""
    out = []
    for i in range(per_miner):
        for m in range(miners):
            miner, ms = f"rig-{m}", T0_MS + i * 10_000
            out.append((miner, encode(make.sample(miner, ts_text(ms), shares_accepted=i)),
                        (miner, ms)))
    return out


async def sample_keys(engine: AsyncEngine) -> list[tuple[str, int]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(db.samples.c.miner_id, db.samples.c.ts_ms))
        return sorted(tuple(r) for r in result)


async def sample_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(db.samples))).scalar_one()


async def rollup_totals(engine: AsyncEngine) -> list[int]:
    """Samples counted by each rollup table: each must equal the number of samples."""
    totals = []
    async with engine.connect() as conn:
        for resolution in db.ROLLUPS:
            total = select(func.coalesce(func.sum(resolution.table.c.samples), 0))
            totals.append((await conn.execute(total)).scalar_one())
    return totals


@contextlib.asynccontextmanager
async def publisher(broker: Any) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        yield client


def store_config(broker: Any, base_topic: str, client_id: str, **store: Any) -> Config:
    return Config(
        mqtt=MqttConfig(url=broker.url, base_topic=base_topic, reconnect_min_s=0.1,
                        reconnect_max_s=0.5),
        store=StoreConfig(client_id=client_id, **store),
    )


@contextlib.asynccontextmanager
async def running_store(
    engine: AsyncEngine, config: Config, rejects: RejectLog | None = None, **session: Any
) -> AsyncIterator[Writer]:
    """The store's writer and MQTT link in this process, stopped (like SIGTERM) on exit."""
    store = config.store
    async with Writer(engine, batch_size=store.batch_size,
                      interval_s=store.batch_interval_s) as writer:
        handler = mqtt_session(config.mqtt.base_topic, writer, rejects or RejectLog(STORE_LOG),
                               group=store.group, **session)
        link = asyncio.create_task(store_link(config).run(handler))
        try:
            yield writer
        finally:
            link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link


async def subscribed(client: aiomqtt.Client, writer: Writer, base: str, make: Any) -> None:
    """Wait until the store's subscription holds: a probe info message gets written."""
    before = writer.written
    topic = f"{base}/miners/probe/info"
    await client.publish(topic, encode(make.info("probe")), qos=1, retain=True)
    await wait_until(lambda: writer.written > before)


async def test_committed_but_unacknowledged_messages_come_back_and_change_nothing(
    engine: AsyncEngine, broker: Any, base_topic: str, make: Any
) -> None:
    config = store_config(broker, base_topic, base_topic, batch_size=100,
                          batch_interval_s=0.05)
    samples = stream(make, miners=3, per_miner=50)
    async with publisher(broker) as client:
        # first life: every row committed, no acknowledgement sent (as if killed each time
        # right after the commit)
        async with running_store(engine, config, acknowledge=lambda _c, _m: None) as first:
            await subscribed(client, first, base_topic, make)
            for miner, payload, _key in samples:
                await client.publish(f"{base_topic}/miners/{miner}/sample", payload, qos=1)
            await wait_until(lambda: first.new_samples == len(samples))
        assert await sample_keys(engine) == sorted(key for *_, key in samples)

        # second life, same session: the broker delivers all of it again
        async with running_store(engine, config) as second:
            await wait_until(lambda: second.written >= len(samples) + 1)
            assert second.new_samples == 0
            assert await sample_count(engine) == len(samples)
            assert await rollup_totals(engine) == [len(samples), len(samples)]

        # third life: what the second acknowledged does not come back
        async with running_store(engine, config) as third:
            marker = make.sample("rig-0", ts_text(T0_MS - 10_000))
            await client.publish(f"{base_topic}/miners/rig-0/sample", encode(marker), qos=1)
            await wait_until(lambda: third.written >= 1)
            await asyncio.sleep(0.2)
            assert (third.written, third.new_samples) == (1, 1)
    assert await rollup_totals(engine) == [len(samples) + 1] * 2


async def test_while_the_database_is_locked_the_store_holds_one_window_and_loses_nothing(
    sqlite_url: str, sqlite_engine: AsyncEngine, broker: Any, base_topic: str, make: Any
) -> None:
    event.listen(sqlite_engine.sync_engine, "connect",
                 lambda dbapi, _rec: dbapi.execute("PRAGMA busy_timeout=20"))
    await sqlite_engine.dispose()
    config = store_config(broker, base_topic, base_topic, batch_size=20,
                          batch_interval_s=0.02)
    window = receive_window(20)
    samples = stream(make, miners=5, per_miner=100)
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        async with publisher(broker) as client, running_store(sqlite_engine, config) as writer:
            await subscribed(client, writer, base_topic, make)
            holder.execute("BEGIN EXCLUSIVE")  # the database is away from here on
            for miner, payload, _key in samples:
                await client.publish(f"{base_topic}/miners/{miner}/sample", payload, qos=1)
            most = 0
            for _ in range(30):  # the broker stops at the window; the rest waits there
                most = max(most, writer.pending)
                await asyncio.sleep(0.01)
            assert most == window
            assert await sample_count(sqlite_engine) == 0
            holder.execute("ROLLBACK")
            await wait_until(lambda: writer.new_samples == len(samples))
    finally:
        holder.close()
    assert await sample_keys(sqlite_engine) == sorted(key for *_, key in samples)


async def test_a_shared_subscription_group_splits_the_work_without_doubling_a_sample(
    engine: AsyncEngine, broker: Any, base_topic: str, make: Any
) -> None:
    group = f"g{base_topic[-5:]}"
    configs = [store_config(broker, base_topic, f"{base_topic}-{n}", batch_size=50,
                            batch_interval_s=0.02, group=group) for n in (1, 2)]
    samples = stream(make, miners=4, per_miner=100)
    async with (publisher(broker) as client,
                running_store(engine, configs[0]) as one,
                running_store(engine, configs[1]) as two):
        # shared subscriptions get no retained messages: probe until both take a share
        probes = 0
        while not (one.written and two.written):
            probes += 1
            await client.publish(f"{base_topic}/miners/probe/sample",
                                 encode(make.sample("probe", ts_text(T0_MS - probes))), qos=1)
            await asyncio.sleep(0.05)
        # Count from when the last probe is committed: it went out after both subscribed,
        # so it is delivered, and it was still in flight when the loop saw both written.
        last_probe = ("probe", T0_MS - probes)

        async def committed() -> bool:
            keys = [key for key in await sample_keys(engine) if key[0] == "probe"]
            return last_probe in keys and one.written + two.written == len(keys)

        await wait_until(committed)
        stored_before = one.new_samples + two.new_samples
        taken_before = one.written + two.written
        for miner, payload, _key in samples:
            await client.publish(f"{base_topic}/miners/{miner}/sample", payload, qos=1)
        await wait_until(lambda: one.new_samples + two.new_samples
                         == stored_before + len(samples))
        await asyncio.sleep(0.2)  # a message delivered twice would show up here
        shares = (one.written, two.written)
    assert sum(shares) == taken_before + len(samples)  # each message to one store, once
    assert min(shares) >= len(samples) // 4  # and both took a fair part
    keys = await sample_keys(engine)
    assert [k for k in keys if k[0] != "probe"] == sorted(key for *_, key in samples)
    assert await rollup_totals(engine) == [len(keys)] * 2


async def test_an_oversized_message_never_reaches_the_store_and_the_stream_goes_on(
    sqlite_engine: AsyncEngine, broker: Any, base_topic: str, make: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = store_config(broker, base_topic, base_topic, batch_size=10,
                          batch_interval_s=0.02)
    good = stream(make, miners=1, per_miner=3)
    async with publisher(broker) as client, running_store(sqlite_engine, config) as writer:
        await subscribed(client, writer, base_topic, make)
        await client.publish(f"{base_topic}/miners/rig-0/sample", good[0][1], qos=1)
        # the broker drops it for the store (its maximum packet size), acknowledging it
        await client.publish(f"{base_topic}/miners/rig-0/sample",
                             b"[" + b"1," * (MAX_PACKET_SIZE) + b"1]", qos=1)
        for _miner, payload, _key in good[1:]:
            await client.publish(f"{base_topic}/miners/rig-0/sample", payload, qos=1)
        await wait_until(lambda: writer.new_samples == len(good))
        assert writer.written == len(good) + 1  # the probe info and the samples, no more
    assert await sample_keys(sqlite_engine) == [key for *_, key in good]
    # had it been delivered, the store would have refused it as a bad sample
    assert not [r for r in caplog.records if "bad sample" in r.getMessage()]


async def test_postgresql_dropping_the_stores_connections_mid_stream_loses_nothing(
    postgres_engine: AsyncEngine, broker: Any, base_topic: str, make: Any,
) -> None:
    # what a server restart or failover does to the store: every connection it holds is
    # cut, in the middle of batches; the writes are retried and nothing is doubled
    name = f"mw-{base_topic[-12:]}"
    url = postgres_engine.url.update_query_dict({"application_name": name})
    store_engine = db.create_engine(url.render_as_string(hide_password=False))
    config = store_config(broker, base_topic, base_topic, batch_size=50,
                          batch_interval_s=0.02)
    samples = stream(make, miners=10, per_miner=60)
    cut = 0

    async def cut_connections() -> None:
        nonlocal cut
        query = text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                     "WHERE application_name = :name")
        while True:
            await asyncio.sleep(0.1)
            async with postgres_engine.connect() as conn:
                cut += (await conn.execute(query, {"name": name})).scalar_one()

    try:
        async with publisher(broker) as client, running_store(store_engine, config) as writer:
            await subscribed(client, writer, base_topic, make)
            cutting = asyncio.create_task(cut_connections())
            try:
                for n, (miner, payload, _key) in enumerate(samples):
                    await client.publish(f"{base_topic}/miners/{miner}/sample", payload, qos=1)
                    if n % 50 == 0:
                        await asyncio.sleep(0.05)  # a stream over about a second
            finally:
                cutting.cancel()
            await wait_until(lambda: writer.new_samples == len(samples), timeout=30)
    finally:
        await store_engine.dispose()
    assert cut > 0  # connections were really cut while the store wrote
    assert await sample_keys(postgres_engine) == sorted(key for *_, key in samples)
    assert await rollup_totals(postgres_engine) == [len(samples)] * 2


async def test_samples_older_than_the_raw_retention_are_refused_and_acknowledged(
    sqlite_engine: AsyncEngine, broker: Any, base_topic: str, make: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = store_config(broker, base_topic, base_topic, batch_size=10,
                          batch_interval_s=0.02)
    horizon = Horizon(7, clock=lambda: T0_MS / 1000)
    old = make.sample("rig-1", ts_text(T0_MS - 8 * 86_400_000))
    fresh = make.sample("rig-1", ts_text(T0_MS - 86_400_000))
    async with publisher(broker) as client:
        async with running_store(sqlite_engine, config, horizon=horizon) as writer:
            await subscribed(client, writer, base_topic, make)
            for sample in (old, fresh):
                await client.publish(f"{base_topic}/miners/rig-1/sample", encode(sample),
                                     qos=1)
            await wait_until(lambda: writer.new_samples == 1)
        assert await sample_keys(sqlite_engine) == [("rig-1", T0_MS - 86_400_000)]
        assert any("older than the raw retention (7 days)" in r.getMessage()
                   for r in caplog.records)
        async with running_store(sqlite_engine, config, horizon=horizon) as again:
            await subscribed(client, again, base_topic, make)
            assert again.written == 1  # the refused sample was acknowledged, not redelivered


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINERWATCH_")}
    env.update(values)
    return env


async def test_sigkill_mid_stream_then_restart_keeps_every_sample_exactly_once(
    engine: AsyncEngine, own_broker: Any, base_topic: str, tmp_path: Path, make: Any,
) -> None:
    settings = tmp_path / "minerwatch.toml"
    # the samples are from a fixed day: kept forever, whenever the test runs
    settings.write_text(f'[store]\nbatch_size = 50\nbatch_interval_s = 0.05\n'
                        f'client_id = "{base_topic}"\nkeep_raw_days = 0\nkeep_1m_days = 0\n'
                        'keep_1h_days = 0\n')
    env = _env(MINERWATCH_MQTT_URL=own_broker.url, MINERWATCH_BASE_TOPIC=base_topic,
               MINERWATCH_DB_URL=engine.url.render_as_string(hide_password=False),
               MINERWATCH_CONFIG=str(settings), MINERWATCH_LOG_LEVEL="WARNING")
    samples = stream(make, miners=20, per_miner=150)
    status_topic = f"{base_topic}/services/store/status"

    async def start(client: aiomqtt.Client) -> asyncio.subprocess.Process:
        await client.publish(status_topic, b"", qos=1, retain=True)
        proc = await asyncio.create_subprocess_exec(
            str(STORE_BIN), cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(10):
            async for message in client.messages:
                if message.topic.value == status_topic and message.payload == b"online":
                    return proc
        raise AssertionError("unreachable")

    async def publish_all(client: aiomqtt.Client) -> None:
        for n, (miner, payload, _key) in enumerate(samples):
            await client.publish(f"{base_topic}/miners/{miner}/sample", payload, qos=1)
            if n % 20 == 0:
                await asyncio.sleep(0.005)  # a steady stream, not one burst

    procs: list[asyncio.subprocess.Process] = []
    async with publisher(own_broker) as client:
        await client.subscribe(status_topic, qos=1)
        procs.append(await start(client))
        streaming = asyncio.create_task(publish_all(client))
        try:
            await wait_until(lambda: _at_least(engine, 500))
            procs[0].send_signal(signal.SIGKILL)
            await procs[0].wait()
            assert await sample_count(engine) < len(samples)  # killed mid-stream
            procs.append(await start(client))
            await streaming
            await wait_until(lambda: _at_least(engine, len(samples)), timeout=20)
            await asyncio.sleep(0.3)  # late redeliveries would land now
            procs[1].send_signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                _, stderr = await procs[1].communicate()
            assert procs[1].returncode == 0, stderr.decode()
        finally:
            streaming.cancel()
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    assert await sample_keys(engine) == sorted(key for *_, key in samples)
    assert await rollup_totals(engine) == [len(samples), len(samples)]


async def _at_least(engine: AsyncEngine, count: int) -> bool:
    return await sample_count(engine) >= count


class DevBroker:
    """mosquitto with the shipped ``mosquitto/dev.conf`` (port and folder swapped)."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.port = port
        self.url = f"mqtt://127.0.0.1:{port}"
        self.host = "127.0.0.1"
        conf = DEV_CONF.read_text().replace("listener 1883 ", f"listener {port} ")
        conf = conf.replace("persistence_location .demo/", f"persistence_location {workdir}/")
        self.conf = workdir / "dev.conf"
        # started as root, mosquitto would drop to a user who cannot write tmp dirs
        self.conf.write_text(conf + f"\nuser {getpass.getuser()}\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, port_waiter: Callable[..., None]) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_waiter(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # a clean stop saves the persistence file
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def dev_broker(tmp_path: Path, port_picker: Any, port_waiter: Any) -> Iterator[DevBroker]:
    broker = DevBroker(tmp_path, port_picker())
    broker.start(port_waiter)
    try:
        yield broker
    finally:
        broker.stop()


async def test_the_dev_broker_keeps_a_stopped_stores_messages_even_across_its_restart(
    sqlite_engine: AsyncEngine, dev_broker: DevBroker, port_waiter: Any, base_topic: str,
    make: Any,
) -> None:
    config = store_config(dev_broker, base_topic, base_topic, batch_size=50,
                          batch_interval_s=0.02)
    samples = stream(make, miners=3, per_miner=100)
    async with publisher(dev_broker) as client, running_store(sqlite_engine, config) as w:
        await subscribed(client, w, base_topic, make)
    # the store is stopped: everything published now waits in its session at the broker
    async with publisher(dev_broker) as client:
        for miner, payload, _key in samples:
            await client.publish(f"{base_topic}/miners/{miner}/sample", payload, qos=1)
    dev_broker.stop()
    dev_broker.start(port_waiter)
    async with running_store(sqlite_engine, config) as writer:
        await wait_until(lambda: writer.new_samples == len(samples))
    assert await sample_keys(sqlite_engine) == sorted(key for *_, key in samples)


async def test_a_message_whose_handling_raises_is_dropped_acknowledged_and_the_rest_stored(
    sqlite_engine: AsyncEngine, broker: Any, base_topic: str, make: Any,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The consume loop's last resort: an exception from inside handling (a bug routing
    did not foresee) costs that one message, not its batch, the session or the service."""
    config = store_config(broker, base_topic, base_topic, batch_size=10,
                          batch_interval_s=0.02)
    real_route = consumer.route

    def route_or_raise(base: str, topic: str, payload: bytes, **options: Any) -> Any:
        if b'"boom"' in payload:
            raise RuntimeError("a bug nobody foresaw")
        return real_route(base, topic, payload, **options)

    good = stream(make, miners=2, per_miner=5)
    boom = make.sample("boom", ts_text(T0_MS))
    async with publisher(broker) as client:
        monkeypatch.setattr(consumer, "route", route_or_raise)
        async with running_store(sqlite_engine, config) as writer:
            await subscribed(client, writer, base_topic, make)
            for n, (miner, payload, _key) in enumerate(good):
                await client.publish(f"{base_topic}/miners/{miner}/sample", payload, qos=1)
                if n == 4:  # in the middle of a batch
                    await client.publish(f"{base_topic}/miners/boom/sample", encode(boom),
                                         qos=1)
            await wait_until(lambda: writer.new_samples == len(good))
        assert await sample_keys(sqlite_engine) == sorted(key for *_, key in good)
        assert any("dropped after an unexpected error (RuntimeError: a bug nobody foresaw)"
                   in r.getMessage() for r in caplog.records)
        # the bug fixed, the same session again: a message never acknowledged would come
        # back now, and be stored
        monkeypatch.undo()
        async with running_store(sqlite_engine, config) as again:
            await subscribed(client, again, base_topic, make)
            await asyncio.sleep(0.2)
            assert again.written == 1  # the probe alone
    assert ("boom", T0_MS) not in await sample_keys(sqlite_engine)


async def test_the_count_of_rejected_messages_is_logged_by_a_timer(
    sqlite_engine: AsyncEngine, broker: Any, base_topic: str, make: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not only when a later bad message arrives: the last window's total is logged at
    its end, although nothing else comes."""
    config = store_config(broker, base_topic, base_topic, batch_size=10,
                          batch_interval_s=0.02)
    rejects = RejectLog(STORE_LOG, window_s=0.3)
    good = stream(make, miners=1, per_miner=1)
    async with publisher(broker) as client, \
            running_store(sqlite_engine, config, rejects=rejects) as writer:
        await subscribed(client, writer, base_topic, make)
        for _ in range(4):
            await client.publish(f"{base_topic}/miners/rig-0/sample", b"not json", qos=1)
        await client.publish(f"{base_topic}/miners/rig-0/sample", good[0][1], qos=1)
        await wait_until(lambda: writer.new_samples == 1)
        await wait_until(lambda: any("3 more bad sample messages" in r.getMessage()
                                     for r in caplog.records), timeout=3)
    assert rejects.counts == {"sample": 4}
    assert await sample_keys(sqlite_engine) == [good[0][2]]


async def test_hostile_payloads_retained_or_not_on_every_topic_leave_every_sample_stored(
    engine: AsyncEngine, broker: Any, base_topic: str, make: Any, hostile: tuple[bytes, ...],
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = store_config(broker, base_topic, base_topic, batch_size=20,
                          batch_interval_s=0.02)
    good = stream(make, miners=3, per_miner=len(hostile) * 2)
    topics = [f"{base_topic}/miners/rig-9/sample", f"{base_topic}/miners/rig-9/status",
              f"{base_topic}/miners/rig-9/info", f"{base_topic}/alerts/rig-9/overheat"]
    bad = [(topic, payload) for topic in topics for payload in hostile]
    async with publisher(broker) as client:
        async with running_store(engine, config) as writer:
            await subscribed(client, writer, base_topic, make)
            for n, (miner, payload, _key) in enumerate(good):
                await client.publish(f"{base_topic}/miners/{miner}/sample", payload, qos=1)
                if n < len(bad):
                    topic, junk = bad[n]
                    await client.publish(topic, junk, qos=1, retain=n % 2 == 0)
            await wait_until(lambda: writer.new_samples == len(good))
            await wait_until(lambda: writer.pending == 0)
            taken = writer.written
        assert await sample_keys(engine) == sorted(key for *_, key in good)
        assert await rollup_totals(engine) == [len(good)] * 2
        reasons = {r.getMessage().split()[1] for r in caplog.records
                   if r.getMessage().startswith("bad ")}
        assert reasons == {"sample", "status", "info", "alert"}
        # every one was acknowledged: the same session again gets none of them back
        async with running_store(engine, config) as again:
            await subscribed(client, again, base_topic, make)
            await asyncio.sleep(0.2)
            assert again.written == 1
        for topic in topics:  # leave no retained junk behind
            await client.publish(topic, b"", qos=1, retain=True)
    assert taken == len(good) + 1
