"""Fixtures of the api tests: the real app under uvicorn on a free loopback port.

``start_api`` runs ``create_app`` in uvicorn as a task of the test's own event loop, with a
real SQLite file and the broker from the root fixtures; rows go into the database through
the shared tables, exactly as the store writes them. It runs with ``[api] auth = "lan"``
(reads open) unless told otherwise, and makes an operator token for the tests that
write: ``api.headers`` carries it (``make_token`` makes others). ``postgres_schema_url`` gives a
PostgreSQL URL whose tables live in a throwaway schema.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
import pytest
import uvicorn
from sqlalchemy import Table, text
from sqlalchemy.exc import SQLAlchemyError

from minerwatch.api.app import create_app
from minerwatch.api.relay import Relay
from minerwatch.api.tokens import add_token, create_table
from minerwatch.shared.config import (
    ApiConfig,
    CollectorConfig,
    Config,
    DatabaseConfig,
    MqttConfig,
)
from minerwatch.shared.db import (
    alert_events,
    alert_row,
    create_engine,
    create_schema,
    info_row,
    miners,
    sample_row,
    samples,
    status_events,
    status_row,
)
from minerwatch.shared.mqtt.client import Client as LeanClient
from minerwatch.shared.schemas import AlertEvent, MinerInfo, MinerStatus, Sample

if TYPE_CHECKING:
    from playwright.async_api import Browser
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class ApiServer:
    url: str
    ws_url: str
    base: str
    db_url: str
    relay: Relay
    #: An operator token, and the Authorization header that carries it ({} when the
    #: database could not take one).
    token: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


async def make_token(db_url: str, role: str = "operator", name: str | None = None) -> str:
    """A new token of ``role`` in the api's table, as ``minerwatch-api token create``
    makes it."""
    engine = create_engine(db_url)
    try:
        await create_table(engine)
        async with engine.begin() as conn:
            return await add_token(conn, name or f"{role}-{uuid.uuid4().hex[:8]}", role,
                                   int(time.time() * 1000))
    finally:
        await engine.dispose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


StartApi = Callable[..., AbstractAsyncContextManager[ApiServer]]


def build_sample(miner_id: str, ts: str, hashrate_ths: float = 1.0, **fields: object) -> Sample:
    values: dict[str, object] = {
        "power_w": 15.0,
        "efficiency_jth": 15.0 / hashrate_ths if hashrate_ths else None,
        "temp_c": 55.0,
        "fan_rpm": [4200],
        "shares_accepted": 100,
        "shares_rejected": 1,
    }
    values.update(fields)
    return Sample(miner_id=miner_id, ts=ts, hashrate_ths=hashrate_ths, **values)  # type: ignore[arg-type]


async def seed_rows(
    db_url: str,
    *,
    sample_rows: Iterable[Sample] = (),
    infos: Iterable[MinerInfo] = (),
    statuses: Iterable[tuple[str, MinerStatus]] = (),
    events: Iterable[tuple[str, MinerStatus] | AlertEvent] = (),
    rollups: Iterable[tuple[Table, dict[str, object]]] = (),
) -> None:
    """Write rows the way the store does: one ``miners`` row with info and status columns,
    status changes and alerts as ``events``, rollup rows as (table, row)."""
    engine = create_engine(db_url)
    try:
        await create_schema(engine)
        per_miner: dict[str, dict[str, object]] = {}
        for info in infos:
            per_miner.setdefault(info.miner_id, {}).update(info_row(info))
        for miner_id, status in statuses:
            per_miner.setdefault(miner_id, {}).update(status_row(miner_id, status))
        async with engine.begin() as conn:
            rows = [sample_row(sample) for sample in sample_rows]
            if rows:
                await conn.execute(samples.insert(), rows)
            for row in per_miner.values():
                await conn.execute(miners.insert(), [row])
            for event in events:
                if isinstance(event, AlertEvent):
                    await conn.execute(alert_events.insert(), [alert_row(event)])
                else:
                    await conn.execute(status_events.insert(), [status_row(*event)])
            for table, row in rollups:
                await conn.execute(table.insert(), [row])
    finally:
        await engine.dispose()


async def wait_until(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


@pytest.fixture
def make_sample() -> Callable[..., Sample]:
    """``make_sample(miner_id, ts, hashrate_ths=1.0, **fields)``: a plausible Bitaxe sample."""
    return build_sample


@pytest.fixture
def seed() -> Callable[..., Awaitable[None]]:
    """``await seed(db_url, sample_rows=[...], infos=[...], statuses=[(id, status)])``."""
    return seed_rows


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'history.db'}"


@asynccontextmanager
async def postgres_schema_url() -> AsyncIterator[str]:
    """The test PostgreSQL with a schema of its own as search path, dropped afterwards."""
    schema = f"mwapi_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        await admin.dispose()
        problem = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
        pytest.fail(f"PostgreSQL at {PG_URL} is unreachable; the api's history tests need "
                    f"it: {problem}", pytrace=False)
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A history database on each engine; a module takes it with ``db_url = any_db_url``."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'history.db'}"
        return
    async with postgres_schema_url() as url:
        yield url


@pytest.fixture
def start_api(broker, base_topic: str, db_url: str) -> StartApi:  # type: ignore[no-untyped-def]
    """``async with start_api(db_url=..., broker_url=..., backlog_limit=..., port=...) as api:``;
    ``relay_options`` go to the Relay (e.g. ``max_cached_topics``); ``poll_interval_s`` is
    the collector's, which says when a sample is stale (3 of them)."""

    @asynccontextmanager
    async def start(
        *,
        db_url: str = db_url,
        broker_url: str = broker.url,
        backlog_limit: int = 1000,
        wait_for_broker: bool = True,
        send_buffer: int | None = None,
        port: int = 0,
        relay_options: dict[str, Any] | None = None,
        poll_interval_s: float = 10.0,
        auth: str = "lan",
        api_options: dict[str, Any] | None = None,
    ) -> AsyncIterator[ApiServer]:
        mqtt = MqttConfig(url=broker_url, base_topic=base_topic, reconnect_min_s=0.1,
                          reconnect_max_s=0.5)
        config = Config(mqtt=mqtt, database=DatabaseConfig(url=db_url),
                        collector=CollectorConfig(poll_interval_s=poll_interval_s),
                        api=ApiConfig(auth=auth, **(api_options or {})))  # type: ignore[arg-type]
        relay = Relay(mqtt, backlog_limit=backlog_limit, **(relay_options or {}))
        sock = socket.socket()
        if send_buffer is not None:
            # Accepted connections inherit it: a kernel that buffers little for slow peers.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restarts on one port
        sock.bind(("127.0.0.1", port))
        port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(create_app(config, relay=relay), log_config=None, lifespan="on")
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            await wait_until(lambda: server.started or task.done(), what="uvicorn to start")
            assert not task.done(), "the api did not start"
            if wait_for_broker:
                await wait_until(lambda: relay.listening, what="the relay to subscribe")
            try:
                token: str | None = await make_token(db_url, "operator")
            except (SQLAlchemyError, OSError):  # a test of a database that cannot be used
                token = None
            yield ApiServer(
                url=f"http://127.0.0.1:{port}",
                ws_url=f"ws://127.0.0.1:{port}/ws",
                base=base_topic,
                db_url=db_url,
                relay=relay,
                token=token,
                headers=bearer(token) if token else {},
            )
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)
            sock.close()

    return start


@pytest.fixture
async def publish(broker) -> AsyncIterator[Callable[..., Awaitable[None]]]:  # type: ignore[no-untyped-def]
    """``await publish(topic, payload, retain=False)`` through a client of the test's own."""
    async with aiomqtt.Client(broker.host, broker.port) as client:

        async def send(topic: str, payload: bytes | str, *, retain: bool = False) -> None:
            await client.publish(topic, payload, qos=1, retain=retain)

        yield send


async def publish_many(broker: Any, messages: Iterable[tuple[str, bytes, bool]]) -> None:
    """(topic, payload, retain) at QoS 1 as every publisher of the contract does, pipelined
    under the broker's Receive Maximum (tens of thousands a second); returns once the
    broker has acknowledged them all."""
    async with LeanClient(broker.host, broker.port) as client:
        settled = asyncio.Event()
        client.on_settled = lambda _delivery: settled.set()
        deliveries = []
        for topic, payload, retain in messages:
            while client.send_quota == 0:
                settled.clear()
                await settled.wait()
            deliveries.append(client.publish_nowait(topic, payload, retain=retain))
            if len(deliveries) >= 1000:
                deliveries = [d for d in deliveries if not d.settled]
        while not all(d.settled for d in deliveries):
            settled.clear()
            await settled.wait()
        assert not any(d.refused for d in deliveries)


@pytest.fixture
def bulk_publish() -> Callable[..., Awaitable[None]]:
    """``await bulk_publish(broker, [(topic, payload, retain), ...])``: many messages fast."""
    return publish_many


async def retained_messages(broker: Any, topic_filter: str) -> dict[str, bytes]:
    """Every retained message the broker holds under ``topic_filter``, read by a client of
    the test's own. A marker subscribed after the filter comes after all of its retained
    messages (the broker queues them in the order of the subscriptions), so the read ends
    when the marker arrives, without waiting for a silence."""
    marker = f"mwtest-marker-{uuid.uuid4().hex}"
    found: dict[str, bytes] = {}
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.publish(marker, b"end", qos=1, retain=True)
        await client.subscribe(topic_filter, qos=1)
        await client.subscribe(marker, qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                if message.topic.value == marker:
                    break
                found[message.topic.value] = bytes(message.payload)  # type: ignore[arg-type]
        await client.publish(marker, b"", qos=1, retain=True)
    return found


@pytest.fixture
def broker_retained(broker: Any) -> Callable[[str], Awaitable[dict[str, bytes]]]:
    """``await broker_retained(filter)``: topic -> payload of what the broker retains."""
    return lambda topic_filter: retained_messages(broker, topic_filter)


# --- the browser of the dashboard tests ------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's chromium through Playwright (``make browser-deps``), one per test."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
