"""``minerwatch-collector forget MINER_ID``: clear a miner's retained topics on the broker.

It connects to the broker of the config, subscribes for a moment to
``{base}/miners/{id}/+`` and ``{base}/alerts/{id}/+`` to learn which retained messages
exist, then publishes an empty retained message (QoS 1, acknowledged) to each of them and
to every topic of ``topics.MINER_TOPICS`` and every Home Assistant discovery config of the
miner (``homeassistant.discovery_topics``) whether it was seen or not, the info last. It
never touches the database: the store marks the miner forgotten when it sees the empty
info, and a collector still polling the miner publishes it again at its next good poll
(``listener``), so a miner that answers comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from minerwatch.shared.config import MqttConfig, parse_mqtt_url
from minerwatch.shared.homeassistant import discovery_topics
from minerwatch.shared.mqtt import MAX_PACKET_SIZE, Client, MqttClient, Subscription
from minerwatch.shared.topics import INFO, MINER_TOPICS, is_miner_id

#: How long to wait for retained messages after subscribing, and for a pause in them.
LISTEN_S = 2.0
QUIET_S = 0.3


def miner_filters(base: str, miner_id: str) -> list[str]:
    return [f"{base}/miners/{miner_id}/+", f"{base}/alerts/{miner_id}/+"]


def topics_to_clear(base: str, miner_id: str, seen: set[str],
                    discovery_prefix: str | None = None) -> list[str]:
    """What was seen, plus every miner topic (and discovery config, given the prefix), with
    the info last (the store's signal that the miner was forgotten comes once the rest is
    gone)."""
    info = INFO.topic(base, miner_id=miner_id)
    wanted = {spec.topic(base, miner_id=miner_id) for spec in MINER_TOPICS} | seen
    if discovery_prefix is not None:
        wanted.update(discovery_topics(discovery_prefix, base, miner_id))
    return [*sorted(wanted - {info}), info]


async def retained_topics(client: MqttClient, filters: list[str], *, listen_s: float,
                          quiet_s: float) -> set[str]:
    """The topics under ``filters`` that hold a retained message now. The broker sends
    them right after the SUBACK: wait until none came for ``quiet_s`` (at most
    ``listen_s``)."""
    await client.subscribe([Subscription(f, qos=1) for f in filters])
    seen: set[str] = set()
    messages = aiter(client.messages)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + listen_s
    with contextlib.suppress(TimeoutError):
        while (left := deadline - loop.time()) > 0:
            async with asyncio.timeout(min(quiet_s, left)):
                message = await anext(messages)
            client.ack(message)
            if message.retain and message.payload:
                seen.add(message.topic)
    await client.unsubscribe(filters)
    return seen


async def forget(config: MqttConfig, miner_id: str, *, discovery_prefix: str | None = None,
                 listen_s: float = LISTEN_S, quiet_s: float = QUIET_S) -> list[str]:
    """Clear ``miner_id``'s retained topics (its Home Assistant configs too, under
    ``discovery_prefix``); the topics cleared. ValueError for an id that is not one;
    MqttError when the broker cannot be reached or refuses."""
    if not is_miner_id(miner_id):
        raise ValueError(f"{miner_id!r} is not a miner id (1-64 characters of [a-z0-9_-])")
    address = parse_mqtt_url(config.url)
    base = config.base_topic
    client = Client(address.host, address.port, username=address.username,
                    password=address.password,
                    tls_context=ssl.create_default_context() if address.tls else None,
                    keepalive_s=config.keepalive_s, max_packet_size=MAX_PACKET_SIZE)
    async with client:
        seen = await retained_topics(client, miner_filters(base, miner_id),
                                     listen_s=listen_s, quiet_s=quiet_s)
        cleared = topics_to_clear(base, miner_id, seen, discovery_prefix)
        for topic in cleared:
            await client.publish(topic, b"", qos=1, retain=True)
    return cleared
