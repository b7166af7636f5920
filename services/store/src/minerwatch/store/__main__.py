"""``minerwatch-store``: subscribes to samples, status, info and alerts and writes history.

The database is prepared first (a bad ``MINERWATCH_DB_URL`` stops the service with one
line; an unreachable database is waited for), then the MQTT session feeds the writer.
On SIGTERM the pending rows are flushed before the process exits.
"""

from __future__ import annotations

import asyncio
import logging

import aiomqtt
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from minerwatch.shared import db
from minerwatch.shared.config import Config, ConfigError
from minerwatch.shared.mqtt import MqttLink, Session, backoff_delays
from minerwatch.shared.service import run_service
from minerwatch.store.ingest import (
    BadMessage,
    Rejects,
    Writer,
    is_transient,
    route,
    subscriptions,
)

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


def mqtt_session(base: str, writer: Writer, rejects: Rejects) -> Session:
    """What runs on each broker connection: subscribe (QoS 1), route every message."""

    async def session(client: aiomqtt.Client) -> None:
        await client.subscribe([(topic, 1) for topic in subscriptions(base)])
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray | str):
                payload = b""  # paho only hands out bytes; anything else is not ours
            try:
                row = route(base, message.topic.value, payload)
            except BadMessage as exc:
                rejects.note(exc)
                continue
            if row is not None:
                writer.add(row)

    return session


async def serve(config: Config) -> None:
    engine = open_engine(config.database.url)
    try:
        await prepare_schema(engine)
        writer = Writer(
            engine,
            batch_size=config.store.batch_size,
            interval_s=config.store.batch_interval_s,
        )
        async with writer:
            session = mqtt_session(config.mqtt.base_topic, writer, Rejects())
            await MqttLink(config.mqtt, "store").run(session)
    finally:
        await engine.dispose()


def main() -> None:
    run_service("store", serve)


if __name__ == "__main__":
    main()
