"""``AiomqttClient``, the client interface over aiomqtt, against a real Mosquitto: messages
as ``packets.Message``, subscription options, awaited and pipelined publishing, refusing
QoS 2, cancellation never lost, a lost connection noticed at once."""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import pytest

from minerwatch.shared.mqtt import (
    AiomqttClient,
    Delivery,
    Message,
    MqttClient,
    MqttError,
    Subscription,
    Will,
)


def connect(broker: Any, **options: Any) -> AiomqttClient:
    return AiomqttClient(broker.host, broker.port, **options)


async def next_message(client: MqttClient, timeout: float = 5.0) -> Message:
    async with asyncio.timeout(timeout):
        return await anext(aiter(client.messages))


async def test_messages_arrive_as_packets_messages(broker: Any, base_topic: str) -> None:
    kept, live = f"{base_topic}/kept", f"{base_topic}/live"
    async with aiomqtt.Client(broker.host, broker.port) as peer:
        await peer.publish(kept, b"\x00retained\xff", qos=1, retain=True)
        async with connect(broker) as client:
            assert client.connected
            assert await client.subscribe([f"{base_topic}/#"]) == (1,)
            first = await next_message(client)
            assert isinstance(first, Message)
            assert (first.topic, first.payload, first.qos, first.retain) == (
                kept, b"\x00retained\xff", 1, True)
            client.ack(first)  # a no-op: paho acknowledged it on receipt
            await peer.publish(live, b"zero", qos=0)
            second = await next_message(client)
            assert (type(second.topic), second.topic, second.payload, second.qos,
                    second.retain) == (str, live, b"zero", 0, False)
        assert not client.connected
        with pytest.raises(MqttError):
            await next_message(client)


async def test_subscription_options_reach_the_broker(broker: Any, base_topic: str) -> None:
    own, kept = f"{base_topic}/own", f"{base_topic}/kept"
    async with aiomqtt.Client(broker.host, broker.port) as peer:
        await peer.publish(kept, b"old", qos=1, retain=True)
        async with connect(broker) as client:
            await client.subscribe([
                Subscription(kept, retain_handling=2),  # no retained message at subscribe
                Subscription(own, no_local=True),  # not our own publications
            ])
            await client.publish(own, b"mine")
            await peer.publish(own, b"theirs", qos=1)
            first = await next_message(client)
            assert (first.topic, first.payload) == (own, b"theirs")
            await client.unsubscribe([own])
            await peer.publish(own, b"after", qos=1)
            await peer.publish(kept, b"sentinel", qos=1)
            second = await next_message(client)
            assert (second.topic, second.payload) == (kept, b"sentinel")


async def test_qos2_is_refused_before_sending(broker: Any, base_topic: str) -> None:
    async with connect(broker) as client:
        with pytest.raises(ValueError, match="QoS 2"):
            await client.subscribe([Subscription(f"{base_topic}/x", qos=2)])
        with pytest.raises(ValueError):
            await client.publish(f"{base_topic}/x", b"", qos=2)
        assert client.connected


async def test_publish_nowait_settles_in_order(broker: Any, base_topic: str) -> None:
    topic = f"{base_topic}/pipelined"
    async with aiomqtt.Client(broker.host, broker.port) as peer:
        await peer.subscribe(topic, qos=1)
        async with connect(broker) as client:
            settled: list[Delivery] = []
            client.on_settled = settled.append
            quota = client.send_quota
            deliveries = [client.publish_nowait(topic, b"%d" % i, retain=False)
                          for i in range(quota)]
            assert client.send_quota == 0
            async with asyncio.timeout(5):
                while len(settled) < quota:
                    await asyncio.sleep(0.01)
            assert all(d.settled and not d.refused for d in deliveries)
            assert client.send_quota == quota
        got = []
        async with asyncio.timeout(5):
            async for message in peer.messages:
                got.append(message.payload)
                if len(got) == quota:
                    break
    assert got == [b"%d" % i for i in range(quota)]


async def test_a_cancelled_publish_is_always_cancelled(broker: Any, base_topic: str) -> None:
    # aiomqtt waits with asyncio.wait_for, which on Python 3.11 can swallow a cancel that
    # lands as the acknowledgement arrives: the caller must see CancelledError every time.
    async with connect(broker) as client:
        for turn in range(60):
            task = asyncio.create_task(client.publish(f"{base_topic}/c", b"x"))
            for _ in range(turn % 6):
                await asyncio.sleep(0)
            if turn % 6 == 5:
                await asyncio.sleep(0.001 * (turn % 4))
            was_done = task.done()
            task.cancel()
            if was_done:
                continue
            with pytest.raises(asyncio.CancelledError):
                await task
        assert client.connected


async def test_a_lost_connection_is_noticed_at_once(own_broker: Any, base_topic: str) -> None:
    async with connect(own_broker, keepalive_s=2) as client:
        await client.subscribe([f"{base_topic}/x"])
        waiting = asyncio.create_task(client.wait_closed())
        own_broker.local.stop()
        async with asyncio.timeout(5):
            error = await waiting
            with pytest.raises(MqttError):
                await next_message(client)
            with pytest.raises(MqttError):
                await client.publish(f"{base_topic}/x", b"late")
        assert isinstance(error, MqttError) and "\n" not in str(error)
        assert not client.connected and client.send_quota == 0


async def test_leaving_with_the_will_publishes_it(broker: Any, base_topic: str) -> None:
    status = f"{base_topic}/status"
    async with aiomqtt.Client(broker.host, broker.port) as peer:
        await peer.subscribe(status, qos=1)
        client = connect(broker, will=Will(status, b"offline"))
        async with client:
            await client.disconnect(with_will=True)
        async with asyncio.timeout(5):
            message = await anext(aiter(peer.messages))
    assert (message.payload, message.retain) == (b"offline", False)  # live, not replayed


async def test_connect_failures_are_one_line_mqtt_errors(port_picker: Any) -> None:
    port = port_picker()
    with pytest.raises(MqttError) as caught:
        async with AiomqttClient("127.0.0.1", port, timeout_s=2):
            pass
    assert str(caught.value).startswith(f"cannot connect to 127.0.0.1:{port}: ")
    assert "\n" not in str(caught.value)
