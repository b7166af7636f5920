"""The store's MQTT session: its default client id follows the base topic, so two stacks on
one broker keep their own sessions, and a session taken over by another client is an
error in the store's log naming the id. Real Mosquitto, real SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from minerwatch.shared import db
from minerwatch.shared.config import (
    Config,
    DatabaseConfig,
    MqttConfig,
    StoreConfig,
    store_client_id,
)
from minerwatch.shared.rejects import RejectLog
from minerwatch.shared.schemas import encode
from minerwatch.store.__main__ import serve
from minerwatch.store.consumer import mqtt_session, store_link
from minerwatch.store.writer import Writer

T0_MS = 1795341600000  # 2026-11-22T10:00:00.000Z
STORE_LOG = logging.getLogger("minerwatch.store")


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


def config_for(broker: Any, base: str, db_url: str = "sqlite://") -> Config:
    """A stack's config with the store's client id left to its default."""
    return Config(
        mqtt=MqttConfig(url=broker.url, base_topic=base, reconnect_min_s=0.1,
                        reconnect_max_s=0.5),
        database=DatabaseConfig(url=db_url),
        store=StoreConfig(batch_size=50, batch_interval_s=0.02, keep_raw_days=0,
                          keep_1m_days=0),
    )


@contextlib.asynccontextmanager
async def running_store(engine: AsyncEngine, config: Config) -> AsyncIterator[Writer]:
    """The store's writer and MQTT link in this process, stopped (like SIGTERM) on exit."""
    async with Writer(engine, batch_size=config.store.batch_size,
                      interval_s=config.store.batch_interval_s) as writer:
        session = mqtt_session(config.mqtt.base_topic, writer, RejectLog(STORE_LOG))
        link = asyncio.create_task(store_link(config).run(session))
        try:
            yield writer
        finally:
            link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link


def written(writer: Writer) -> bool:
    return writer.written >= 1


async def sample_keys(engine: AsyncEngine) -> list[tuple[str, int]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(db.samples.c.miner_id, db.samples.c.ts_ms))
        return sorted((r[0], r[1]) for r in result)


async def test_two_stacks_on_one_broker_keep_their_own_sessions_and_every_sample(
    broker: Any, base_topic: str, tmp_path: Path, make: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bases = (f"{base_topic}-a", f"{base_topic}-b")
    configs = [config_for(broker, base) for base in bases]
    ids = [store_link(config).client_id for config in configs]
    assert ids == [f"{bases[0]}-store", f"{bases[1]}-store"]
    assert store_client_id(Config()) == "minerwatch-store"  # the default base's
    engines = [db.create_engine(f"sqlite:///{tmp_path / name}.db") for name in ("a", "b")]
    for engine in engines:
        await db.create_schema(engine)
    per_stack = {base: [(f"rig-{n}", T0_MS + i * 10_000) for i in range(40) for n in range(2)]
                 for base in bases}
    try:
        async with aiomqtt.Client(broker.host, broker.port) as client:
            # both stores up at once: each makes its session and subscription
            async with (running_store(engines[0], configs[0]) as one,
                        running_store(engines[1], configs[1]) as two):
                for writer, base in ((one, bases[0]), (two, bases[1])):
                    # retained: it reaches the store whenever its subscription holds
                    await client.publish(f"{base}/miners/probe/info",
                                         encode(make.info("probe")), qos=1, retain=True)
                    await wait_until(partial(written, writer))
            # both stopped: what is published now waits in each one's own session
            for base, keys in per_stack.items():
                for miner, ms in keys:
                    await client.publish(f"{base}/miners/{miner}/sample",
                                         encode(make.sample(miner, ts_text(ms))), qos=1)
            async with (running_store(engines[0], configs[0]) as one,
                        running_store(engines[1], configs[1]) as two):
                await wait_until(lambda: one.new_samples == len(per_stack[bases[0]])
                                 and two.new_samples == len(per_stack[bases[1]]))
                await asyncio.sleep(0.3)  # a takeover fight would show up here
        for engine, base in zip(engines, bases, strict=True):
            assert await sample_keys(engine) == sorted(per_stack[base])
    finally:
        for engine in engines:
            await engine.dispose()
    assert "session taken over" not in caplog.text


class SysBroker:
    """The real mosquitto with ``$SYS`` every second, so its uptime is current: on a
    Mosquitto before 2.0.15 that is how a takeover is told from a restart."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.host, self.port, self.url = "127.0.0.1", port, f"mqtt://127.0.0.1:{port}"
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                             "persistence false\nsys_interval 1\nlog_dest stderr\n"
                             f"log_type error\nuser {getpass.getuser()}\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, port_waiter: Any) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)])
        port_waiter(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def sys_broker(tmp_path: Path, port_picker: Any, port_waiter: Any) -> Iterator[SysBroker]:
    broker = SysBroker(tmp_path, port_picker())
    broker.start(port_waiter)
    try:
        yield broker
    finally:
        broker.stop()


def takeover_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelname == "ERROR" and "session taken over" in r.getMessage()]


async def test_a_second_client_with_the_stores_id_is_an_error_in_the_stores_log(
    sys_broker: SysBroker, base_topic: str, tmp_path: Path, make: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    config = config_for(sys_broker, base_topic, url)
    client_id = store_client_id(config)
    reader = db.create_engine(url)

    async def stored(miner_id: str) -> bool:
        try:
            return any(key[0] == miner_id for key in await sample_keys(reader))
        except Exception:
            return False  # the tables may not exist yet

    await asyncio.sleep(1.5)  # the broker's uptime must exceed the store's connection
    store = asyncio.create_task(serve(config))
    try:
        async with aiomqtt.Client(sys_broker.host, sys_broker.port) as client:
            await client.publish(f"{base_topic}/miners/before/sample",
                                 encode(make.sample("before")), qos=1, retain=True)
            await wait_until(lambda: stored("before"))
            for _attempt in range(3):  # a loaded machine may miss the uptime probe once
                async with aiomqtt.Client(sys_broker.host, sys_broker.port,
                                          identifier=client_id,
                                          protocol=aiomqtt.ProtocolVersion.V5):
                    pass
                with contextlib.suppress(TimeoutError):
                    await wait_until(lambda: takeover_errors(caplog), timeout=8.0)
                    break
            [line] = takeover_errors(caplog)
            assert line.startswith("session taken over: another client connected as client "
                                   f"id {client_id!r}; ")
            # and the store goes on: it took its session back (the intruder's clean start
            # ended it: retained, the sample reaches the store's new subscription)
            await client.publish(f"{base_topic}/miners/after/sample",
                                 encode(make.sample("after")), qos=1, retain=True)
            await wait_until(lambda: stored("after"))
            assert not store.done()
    finally:
        store.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await store
        await reader.dispose()
