"""``minerwatch-store``: subscribes to samples, status, info and alerts and writes history.

The database is prepared first (a bad ``MINERWATCH_DB_URL`` stops the service with one
line; an unreachable database is waited for), then the MQTT session feeds the writer.

Nothing acknowledged is lost: the store keeps a persistent MQTT session under a fixed
client id and acknowledges each QoS 1 message only after the transaction holding its row
is committed. Whatever it had not acknowledged when it died (SIGKILL, power, a crash)
the broker delivers again, and the writes are idempotent. The broker sends at most
``2 * batch_size`` unacknowledged messages (the store stops reading when one sends more):
while the database is away the store holds that much and the broker queues the rest.
On SIGTERM the pending rows are written and acknowledged before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable
from functools import partial

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from minerwatch.shared import db
from minerwatch.shared.backoff import backoff_delays
from minerwatch.shared.config import Config, ConfigError
from minerwatch.shared.mqtt import AckingSession, PersistentLink
from minerwatch.shared.mqtt.client import Client, Message, Subscription
from minerwatch.shared.service import run_service
from minerwatch.store.ingest import (
    BadMessage,
    Rejects,
    SampleRow,
    Writer,
    is_transient,
    route,
    subscriptions,
)
from minerwatch.store.retention import Horizon, Retention, policy

log = logging.getLogger("minerwatch.store")


def shown_url(url: str) -> str:
    """The URL as it may appear in logs: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url  # not a URL at all, so it holds no password either


def open_engine(url: str) -> AsyncEngine:
    """The engine for the configured URL; ConfigError (one line) when it cannot be."""
    try:
        return db.create_engine(url)
    except ConfigError:
        raise
    except OSError as exc:  # the SQLite file's folder cannot be created
        raise ConfigError(f"MINERWATCH_DB_URL {shown_url(url)!r}: cannot create folder "
                          f"{exc.filename}: {exc.strerror}") from None
    except Exception as exc:  # e.g. an unknown driver or malformed query options
        text = " ".join(str(exc).split())
        raise ConfigError(f"MINERWATCH_DB_URL {shown_url(url)!r}: {text}") from None


async def prepare_schema(engine: AsyncEngine, retry_min_s: float = 0.5,
                         retry_max_s: float = 30.0) -> None:
    """Create the tables, waiting (with backoff) for a database that is not up yet."""
    next_delay = backoff_delays(retry_min_s, retry_max_s)
    while True:
        try:
            await db.create_schema(engine)
            return
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay = next_delay()
            reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
            log.warning("database unavailable (%s); retrying in %.1f s", reason, delay)
            await asyncio.sleep(delay)


Acknowledge = Callable[[Client, Message], None]


def ack(client: Client, message: Message) -> None:
    """Acknowledge once committed (tests pass another, to play a store killed between its
    commit and its acknowledgement)."""
    client.ack(message)


#: How long a session that is being stopped waits for its last rows to be committed.
SETTLE_S = 5.0


def receive_window(batch_size: int) -> int:
    """Unacknowledged messages the broker may send: a batch being written, the next one
    filling up (MQTT v5 Receive Maximum, at most 65535)."""
    return min(2 * batch_size, 65535)


def topic_filters(base: str, group: str | None) -> list[str]:
    if group is None:
        return subscriptions(base)
    return [f"$share/{group}/{topic}" for topic in subscriptions(base)]


def mqtt_session(
    base: str,
    writer: Writer,
    rejects: Rejects,
    *,
    group: str | None = None,
    horizon: Horizon | None = None,
    acknowledge: Acknowledge = ack,
) -> AckingSession:
    """What runs on each broker connection: subscribe (QoS 1), route every message, and
    hand it to the writer with its acknowledgement.

    Every message is acknowledged after the rows received before it are committed, bad
    ones included (they are counted and logged, and a redelivery would not fix them).
    """
    async def session(client: Client) -> None:
        if group is not None:
            # a session that used to subscribe without the group would get everything twice
            await client.unsubscribe(subscriptions(base))
        # Retained messages only when the subscription is new: a resumed session has them.
        await client.subscribe([Subscription(topic, qos=1, retain_handling=1)
                                for topic in topic_filters(base, group)])
        try:
            async for message in client.messages:
                payload, topic = message.payload, message.topic
                try:
                    row = route(base, topic, payload)
                    if (isinstance(row, SampleRow) and horizon is not None
                            and horizon.too_old(row.values["ts_ms"])):
                        raise BadMessage("sample", topic, "older than the raw retention "
                                         f"({horizon.keep_raw_days:g} days)")
                except BadMessage as exc:
                    rejects.note(exc)
                    row = None
                writer.add(row, partial(acknowledge, client, message) if message.qos else None)
        except asyncio.CancelledError:
            # commit and acknowledge what came on this connection while it is still up
            with contextlib.suppress(Exception):
                await writer.write_pending(SETTLE_S)
            raise

    return session


def store_link(config: Config) -> PersistentLink:
    """The store's broker connection: fixed client id, persistent session, acknowledgement
    after commit and a bounded receive window."""
    return PersistentLink(config.mqtt, "store", client_id=config.store.client_id,
                          receive_maximum=receive_window(config.store.batch_size))


async def serve(config: Config) -> None:
    store = config.store
    engine = open_engine(config.database.url)
    try:
        await prepare_schema(engine)
        writer = Writer(engine, batch_size=store.batch_size,
                        interval_s=store.batch_interval_s)
        retention = Retention(engine, policy(store), batch=store.retention_batch,
                              interval_s=store.retention_interval_s)
        async with writer:
            expiring = asyncio.create_task(retention.run(), name="store-retention")
            try:
                session = mqtt_session(config.mqtt.base_topic, writer, Rejects(),
                                       group=store.group, horizon=Horizon(store.keep_raw_days))
                await store_link(config).run(session)
            finally:
                expiring.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await expiring
    finally:
        await engine.dispose()


def main() -> None:
    # Every message leaves short-lived objects behind (the message, its row, the rollup
    # buckets, its acknowledgement): collecting the young generation every 700
    # allocations, over everything the imports created, cost a large share of the rate.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    run_service("store", serve)


if __name__ == "__main__":
    main()
