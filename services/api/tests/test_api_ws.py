"""WS /ws: the live relay, through a real broker and real WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
import websockets
from websockets.asyncio.client import ClientConnection

from minerwatch.shared.schemas import AlertEvent, MinerInfo, MinerStatus, Sample, encode

StartApi = Callable[..., Any]
Publish = Callable[..., Awaitable[None]]

TS = "2026-11-22T10:00:00.000Z"


def sample(miner_id: str, hashrate_ths: float, **fields: Any) -> bytes:
    """A valid schema-1 Sample payload (the relay passes nothing else on)."""
    return encode(Sample(miner_id=miner_id, ts=TS, hashrate_ths=hashrate_ths, **fields))


def alert(miner_id: str, rule: str, value: float) -> bytes:
    return encode(AlertEvent(miner_id=miner_id, rule=rule, state="firing", severity="warning",
                             value=value, threshold=75.0, message=f"temp_c {value}", ts=TS))


def as_json(payload: bytes) -> Any:
    """What the relay's frame carries for a valid payload: the payload as JSON."""
    return json.loads(payload)


async def receive(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def command(ws: ClientConnection, **body: str) -> None:
    await ws.send(json.dumps(body))


async def subscribe(ws: ClientConnection, topic_filter: str) -> None:
    await command(ws, subscribe=topic_filter)
    assert await receive(ws) == {"subscribed": topic_filter}


async def test_retained_state_first_then_live_messages(
    start_api: StartApi, publish: Publish, base_topic: str
) -> None:
    sample_topic = f"{base_topic}/miners/bitaxe-1/sample"
    status_topic = f"{base_topic}/miners/bitaxe-1/status"
    status = encode(MinerStatus(state="online", since=TS))
    await publish(sample_topic, sample("bitaxe-1", 1.1), retain=True)
    await publish(status_topic, status, retain=True)
    await publish(f"{base_topic}/alerts/bitaxe-1/overheat", alert("bitaxe-1", "overheat", 80.0),
                  retain=True)
    async with start_api() as api:
        # The relay's own subscription brought the retained state into its cache.
        deadline = time.monotonic() + 5
        while len(api.relay.retained) < 4:  # three topics plus the api's own "online"
            assert time.monotonic() < deadline, list(api.relay.retained)
            await asyncio.sleep(0.02)

        async with websockets.connect(api.ws_url) as ws:
            await subscribe(ws, f"{base_topic}/miners/+/+")
            replay = [await receive(ws), await receive(ws)]
            assert sorted(replay, key=lambda m: m["topic"]) == [
                {"topic": sample_topic, "payload": as_json(sample("bitaxe-1", 1.1))},
                {"topic": status_topic, "payload": as_json(status)},
            ]
            await publish(sample_topic, sample("bitaxe-1", 2.2))
            assert await receive(ws) == {"topic": sample_topic,
                                         "payload": as_json(sample("bitaxe-1", 2.2))}

            # Plain-text payloads (service status) come as strings.
            await subscribe(ws, f"{base_topic}/services/+/status")
            assert await receive(ws) == {"topic": f"{base_topic}/services/api/status",
                                         "payload": "online"}

        # A newer value replaces the cached one; an empty payload deletes the topic.
        await publish(status_topic, b"", retain=True)
        async with websockets.connect(api.ws_url) as ws:
            await subscribe(ws, f"{base_topic}/miners/#")
            assert await receive(ws) == {"topic": sample_topic,
                                         "payload": as_json(sample("bitaxe-1", 2.2))}
            await publish(sample_topic, sample("bitaxe-1", 3.3))
            # Nothing else was cached for the filter: the next message is the live one.
            assert await receive(ws) == {"topic": sample_topic,
                                         "payload": as_json(sample("bitaxe-1", 3.3))}


async def test_bad_commands_get_an_error_and_the_connection_stays_usable(
    start_api: StartApi, publish: Publish, base_topic: str
) -> None:
    async with start_api() as api, websockets.connect(api.ws_url) as ws:
        bad = [
            json.dumps({"subscribe": "#"}),
            json.dumps({"subscribe": "other/miners/+/sample"}),
            json.dumps({"subscribe": f"{base_topic}-other/#"}),
            json.dumps({"subscribe": f"{base_topic}/#/sample"}),
            json.dumps({"subscribe": f"$share/g/{base_topic}/#"}),
            json.dumps({"unsubscribe": f"{base_topic}/never"}),
            json.dumps({"subscribe": 42}),
            json.dumps({"publish": "x"}),
            "{not json",
            b"\x00\x01binary",
        ]
        for message in bad:
            await ws.send(message)
            reply = await receive(ws)
            assert list(reply) == ["error"], (message, reply)
            assert reply["error"] and "\n" not in reply["error"]
        await ws.send(json.dumps({"subscribe": "#"}))
        assert "outside" in (await receive(ws))["error"]

        await subscribe(ws, f"{base_topic}/miners/+/sample")
        await publish(f"{base_topic}/miners/s19/sample", sample("s19", 95.0))
        assert await receive(ws) == {"topic": f"{base_topic}/miners/s19/sample",
                                     "payload": as_json(sample("s19", 95.0))}


async def test_unsubscribe_stops_messages(
    start_api: StartApi, publish: Publish, base_topic: str
) -> None:
    samples = f"{base_topic}/miners/+/sample"
    alerts = f"{base_topic}/alerts/#"
    async with start_api() as api, websockets.connect(api.ws_url) as ws:
        await subscribe(ws, samples)
        await subscribe(ws, alerts)
        await publish(f"{base_topic}/miners/a/sample", sample("a", 1.0))
        assert await receive(ws) == {"topic": f"{base_topic}/miners/a/sample",
                                     "payload": as_json(sample("a", 1.0))}

        await command(ws, unsubscribe=samples)
        assert await receive(ws) == {"unsubscribed": samples}
        # Published in this order, so a leaked sample would arrive before the alert.
        await publish(f"{base_topic}/miners/a/sample", sample("a", 2.0))
        await publish(f"{base_topic}/alerts/a/overheat", alert("a", "overheat", 3.0))
        assert await receive(ws) == {"topic": f"{base_topic}/alerts/a/overheat",
                                     "payload": as_json(alert("a", "overheat", 3.0))}


async def test_slow_client_does_not_delay_a_fast_client(
    start_api: StartApi, publish: Publish, base_topic: str
) -> None:
    count = 1500
    topic = f"{base_topic}/miners/m/sample"
    # The slow client never reads; a small receive buffer and a one-frame queue on its side
    # make the server's writes to it block once the kernel's send buffer (up to a few MB
    # on loopback) is full, so a burst of ~9 MB must overflow its backlog in the relay.
    slow_sock = socket.socket()
    slow_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    async with start_api(backlog_limit=200) as api:
        slow_sock.connect(("127.0.0.1", int(api.url.rsplit(":", 1)[1])))
        async with (
            websockets.connect(api.ws_url, sock=slow_sock, max_queue=1) as slow,
            websockets.connect(api.ws_url) as fast,
        ):
            await subscribe(slow, f"{base_topic}/miners/#")
            await subscribe(fast, f"{base_topic}/miners/#")

            async def read_all() -> list[int]:
                return [int((await receive(fast))["payload"]["hashrate_ths"])
                        for _ in range(count)]

            # The fast client reads while the burst is published, as a live dashboard does.
            reader = asyncio.create_task(read_all())
            started = time.monotonic()
            for i in range(count):
                # Fresh random padding: permessage-deflate cannot shrink the burst away.
                padding = secrets.token_urlsafe(4500)
                await publish(topic, sample("m", float(i), pool_url=padding))
            seen = await reader
            elapsed = time.monotonic() - started

            assert seen == list(range(count))
            assert elapsed < 10, f"the fast client needed {elapsed:.1f} s"
            behind = [s for s in api.relay.subscribers if s.dropped]
            assert len(behind) == 1, "exactly the slow client lost messages"
            assert behind[0].backlog <= 200  # bounded: its oldest frames went

            # When the slow client finally reads, the newest messages are what it gets.
            last = -1
            received = 0
            while last != count - 1:
                message = await receive(slow)
                last = int(message["payload"]["hashrate_ths"])
                received += 1
            assert received < count


async def test_cache_starts_afresh_after_a_broker_restart(
    start_api: StartApi, own_broker: Any, base_topic: str
) -> None:
    """The restarted broker (no persistence) no longer has the retained message, so the
    relay must not keep replaying it to new clients."""
    topic = f"{base_topic}/miners/gone/info"
    async with start_api(broker_url=own_broker.url) as api:
        async with aiomqtt.Client(own_broker.host, own_broker.port) as client:
            info = MinerInfo(miner_id="gone", driver="axeos", host="10.0.0.9", port=80)
            await client.publish(topic, encode(info), qos=1, retain=True)
        await wait_for(lambda: topic in api.relay.retained)
        own_broker.local.stop()
        await wait_for(lambda: not api.relay.listening)
        own_broker.local.start()
        await wait_for(lambda: api.relay.listening)
        async with websockets.connect(api.ws_url) as ws:
            await subscribe(ws, f"{base_topic}/#")
            # Only the api's own fresh "online" is there; the old info is not.
            assert await receive(ws) == {"topic": f"{base_topic}/services/api/status",
                                         "payload": "online"}
        assert topic not in api.relay.retained


async def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
