"""The asyncio MQTT v5 ``Client`` against a real Mosquitto (aiomqtt as the independent peer)
and against fake servers on 127.0.0.1 that misbehave on purpose: late acknowledgement with
persistent sessions, receive maximum, the Will, keep-alive, errors, split TCP chunks; and
MQTT 5 strictness: QoS 2 refused, SUBACK/UNSUBACK counts, DISCONNECT with a reason code
on the broker's protocol errors, the CONNACK's limits (receive maximum, maximum packet
size, maximum QoS, retain available) honoured with ``publish_nowait``."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, VariableByteIntegers

from minerwatch.shared.mqtt.client import (
    BrokerLimitError,
    Client,
    Message,
    MqttError,
    Subscription,
    Will,
)

HOST = "127.0.0.1"
CONNACK = b"\x20\x03\x00\x00\x00"  # session not present, success, no properties


class BrokerInfo(Protocol):
    host: str
    port: int


# --- helpers -----------------------------------------------------------------------------


async def next_message(client: Client, timeout: float = 10.0) -> Message:
    async with asyncio.timeout(timeout):
        return await anext(client.messages)


async def take_acking(client: Client, count: int) -> list[Message]:
    """The next ``count`` messages, each acknowledged on arrival."""
    got = []
    for _ in range(count):
        message = await next_message(client)
        client.ack(message)
        got.append(message)
    return got


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def stays_true(predicate: Callable[[], bool], seconds: float) -> bool:
    """Whether ``predicate`` holds for the whole while (to show that nothing more comes)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        await asyncio.sleep(0.02)
    return predicate()


async def publish_all(broker: BrokerInfo, items: list[tuple[str, bytes, int, bool]]) -> None:
    """Publish (topic, payload, qos, retain) in order from an aiomqtt client."""
    async with aiomqtt.Client(broker.host, broker.port) as peer:
        for topic, payload, qos, retain in items:
            await peer.publish(topic, payload, qos=qos, retain=retain)


async def collect(peer: aiomqtt.Client, count: int, timeout: float = 10.0
                  ) -> list[aiomqtt.Message]:
    got: list[aiomqtt.Message] = []
    async with asyncio.timeout(timeout):
        async for message in peer.messages:
            got.append(message)
            if len(got) == count:
                break
    return got


def one_line(error: BaseException) -> str:
    text = str(error)
    assert text and "\n" not in text, f"not one line: {text!r}"
    return text


def mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def packet(first: int, body: bytes) -> bytes:
    """A packet built by hand (the remaining length through paho, not the module)."""
    return bytes((first,)) + VariableByteIntegers.encode(len(body)) + body


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One packet off the wire, decoded here rather than by the module under test."""
    first = (await reader.readexactly(1))[0]
    length = shift = 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, await reader.readexactly(length)


Scenario = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def fake_broker(scenario: Scenario) -> AsyncIterator[int]:
    """A "broker" on 127.0.0.1 that reads the CONNECT then plays ``scenario``; yields its
    port. A scenario's own failures are raised here, not lost in its task."""
    tasks: set[asyncio.Task[Any]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            first, _ = await read_packet(reader)
            assert first == 0x10, f"expected CONNECT, got first byte 0x{first:02X}"
            await scenario(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away: the end of most scenarios
        finally:
            writer.close()

    server = await asyncio.start_server(serve, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        # Scenarios end when the client closes; cancel only one that hangs on.
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                raise result


async def silent_after_connack(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
    writer.write(CONNACK)
    while True:
        await read_packet(reader)


# --- receiving and publishing against Mosquitto -------------------------------------------


async def test_receives_retained_then_qos0_and_qos1_in_order(
        broker: BrokerInfo, base_topic: str) -> None:
    await publish_all(broker, [(f"{base_topic}/kept", b"retained\x00", 1, True)])
    async with Client(broker.host, broker.port) as client:
        assert client.connected
        assert client.session_present is False
        granted = await client.subscribe([Subscription(f"{base_topic}/#", qos=1)])
        assert granted == (1,)
        # A retained message comes on subscribe, flagged retained (section 3.3.1.3).
        kept = await next_message(client)
        assert (kept.topic, kept.payload, kept.qos, kept.retain) == (
            f"{base_topic}/kept", b"retained\x00", 1, True)
        client.ack(kept)

        sent = [(f"{base_topic}/m/{i}", bytes((i, 0, 0xFF)) + b"\r\n" * i, i % 2, False)
                for i in range(20)]
        await publish_all(broker, sent)
        got = [await next_message(client) for _ in sent]
        assert [(m.topic, m.payload, m.qos, m.retain, m.dup) for m in got] == [
            (topic, payload, qos, False, False) for topic, payload, qos, _ in sent]
        assert all((m.packet_id > 0) == (m.qos == 1) for m in got)
        for message in got:
            client.ack(message)


async def test_publishes_qos0_and_qos1(broker: BrokerInfo, base_topic: str) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as peer:
        await peer.subscribe(f"{base_topic}/#", qos=1)
        async with Client(broker.host, broker.port) as client:
            await client.publish(f"{base_topic}/one", b"\x00\xffone", qos=1)
            await client.publish(f"{base_topic}/zero", b"zero", qos=0)
            await client.publish(f"{base_topic}/kept", b"kept", qos=1, retain=True)
            with pytest.raises(ValueError):
                await client.publish(f"{base_topic}/two", b"", qos=2)
        got = await collect(peer, 3)
    assert [(str(m.topic), m.payload, m.qos) for m in got] == [
        (f"{base_topic}/one", b"\x00\xffone", 1),
        (f"{base_topic}/zero", b"zero", 0),
        (f"{base_topic}/kept", b"kept", 1),
    ]
    # The retain flag arrived: a later subscriber gets the message as retained.
    async with aiomqtt.Client(broker.host, broker.port) as late:
        await late.subscribe(f"{base_topic}/kept", qos=1)
        [kept] = await collect(late, 1)
    assert (kept.payload, kept.retain) == (b"kept", True)


async def test_publish_after_disconnect_raises(broker: BrokerInfo, base_topic: str) -> None:
    async with Client(broker.host, broker.port) as client:
        pass
    assert not client.connected
    with pytest.raises(MqttError):
        await client.publish(f"{base_topic}/late", b"x", qos=1)
    with pytest.raises(MqttError):
        await client.subscribe([f"{base_topic}/late"])


async def test_subscription_options_and_unsubscribe(broker: BrokerInfo, base_topic: str) -> None:
    own, kept = f"{base_topic}/own", f"{base_topic}/kept"
    await publish_all(broker, [(kept, b"old", 1, True)])
    async with Client(broker.host, broker.port) as client:
        await client.subscribe([
            Subscription(kept, retain_handling=2),  # no retained message at subscribe
            Subscription(own, no_local=True),  # not our own publications
        ])
        await client.publish(own, b"mine", qos=1)
        await publish_all(broker, [(own, b"theirs", 1, False)])
        first = await next_message(client)
        assert (first.topic, first.payload, first.retain) == (own, b"theirs", False)

        await client.unsubscribe([own])
        await publish_all(broker, [(own, b"after", 1, False), (kept, b"sentinel", 1, False)])
        # Only the sentinel: nothing on the dropped filter, no retained "old".
        second = await next_message(client)
        assert (second.topic, second.payload) == (kept, b"sentinel")
        assert len(client.messages) == 0


# --- acknowledgement and persistent sessions --------------------------------------------


async def test_unacked_messages_are_redelivered_acked_ones_are_not(
        broker: BrokerInfo, base_topic: str) -> None:
    topic = f"{base_topic}/data"

    def session(clean_start: bool = False) -> Client:
        return Client(broker.host, broker.port, client_id=f"{base_topic}-store",
                      clean_start=clean_start, session_expiry_s=0 if clean_start else 60)

    async with session() as client:
        assert client.session_present is False
        await client.subscribe([topic])
        await publish_all(broker, [(topic, b"m%d" % i, 1, False) for i in range(6)])
        got = [await next_message(client) for _ in range(6)]
        assert [m.payload for m in got] == [b"m%d" % i for i in range(6)]
        assert not any(m.dup for m in got)
        for message in got[::2]:  # m0, m2, m4: committed; m1, m3, m5: not
            client.ack(message)
    # Acknowledging on a closed client does nothing (the broker will redeliver).
    client.ack(got[1])

    async with session() as client:
        assert client.session_present is True
        # No SUBSCRIBE: the session kept the subscription and the unacknowledged messages.
        again = [await next_message(client) for _ in range(3)]
        assert [(m.payload, m.dup, m.qos) for m in again] == [
            (b"m1", True, 1), (b"m3", True, 1), (b"m5", True, 1)]
        assert await stays_true(lambda: len(client.messages) == 0, 0.5)
        for message in again:
            client.ack(message)

    async with session() as client:
        assert client.session_present is True
        assert await stays_true(lambda: len(client.messages) == 0, 0.5)
        # The subscription is still live.
        await publish_all(broker, [(topic, b"new", 1, False)])
        fresh = await next_message(client)
        assert (fresh.payload, fresh.dup) == (b"new", False)
        client.ack(fresh)

    async with session(clean_start=True) as client:  # and leave no session behind
        assert client.session_present is False


async def test_acks_sent_just_before_leaving_survive_an_immediate_reconnect(
        broker: BrokerInfo, base_topic: str) -> None:
    # A new connection under the same client id takes the session over at once; PUBACKs
    # still unread on the old socket would be lost and their messages sent again.
    # ``disconnect`` waits for the broker to close the old connection, which it does only
    # after reading everything before the DISCONNECT.
    topic = f"{base_topic}/data"

    def session() -> Client:
        return Client(broker.host, broker.port, client_id=f"{base_topic}-s",
                      clean_start=False, session_expiry_s=60, receive_maximum=1000)

    async with session() as client:
        await client.subscribe([topic])
    for round_ in range(30):
        batch = [b"r%d-%d" % (round_, i) for i in range(300)]
        await publish_all(broker, [(topic, payload, 1, False) for payload in batch])
        async with session() as client:
            got = [await next_message(client) for _ in batch]
            # a redelivery of the previous round would come first, before these
            assert [(m.payload, m.dup) for m in got] == [(p, False) for p in batch]
            for message in got:  # one committed batch: its PUBACKs leave in one write
                client.ack(message)


async def test_ack_after_the_connection_dropped_is_a_noop(
        broker: BrokerInfo, base_topic: str) -> None:
    async with Client(broker.host, broker.port) as client:
        await client.subscribe([f"{base_topic}/x"])
        await publish_all(broker, [(f"{base_topic}/x", b"1", 1, False)])
        message = await next_message(client)
        assert client._transport is not None
        client._transport.abort()
        await wait_until(lambda: not client.connected)
        client.ack(message)  # no exception, nothing written


async def test_receive_maximum_holds_back_until_acked(
        broker: BrokerInfo, base_topic: str) -> None:
    topic = f"{base_topic}/flow"
    async with Client(broker.host, broker.port, receive_maximum=5) as client:
        await client.subscribe([topic])
        await publish_all(broker, [(topic, b"%d" % i, 1, False) for i in range(20)])
        await wait_until(lambda: len(client.messages) >= 5)
        assert await stays_true(lambda: len(client.messages) == 5, 0.7)

        # Acknowledging lets the rest flow.
        got = await take_acking(client, 20)
        assert [m.payload for m in got] == [b"%d" % i for i in range(20)]


async def test_the_client_holds_to_its_receive_maximum_when_the_broker_does_not(
        broker: BrokerInfo, base_topic: str) -> None:
    # Mosquitto 2.0 sends past the receive maximum once acknowledgements flow (its issue
    # #2301): the client stops reading instead, leaving the rest queued at the broker.
    topic, window, total = f"{base_topic}/flow", 50, 1500
    payloads = [b"%04d" % i + b"x" * 2000 for i in range(total)]
    async with Client(broker.host, broker.port, receive_maximum=window) as client:
        await client.subscribe([topic])
        async with aiomqtt.Client(broker.host, broker.port, max_inflight_messages=500) as peer:
            for start in range(0, total, 500):
                await asyncio.gather(*(peer.publish(topic, p, qos=1)
                                       for p in payloads[start:start + 500]))
        first = [await next_message(client) for _ in range(window)]
        for message in first:  # one committed batch
            client.ack(message)
        await asyncio.sleep(0.5)  # plenty for the broker to push everything it would
        # what may still come: the rest of one socket read (256 KiB) past the window
        assert window <= len(client.messages) <= window + 2 * 256 * 1024 // 2000
        got = first + await take_acking(client, total - window)
        assert [m.payload for m in got] == payloads


async def test_requests_get_their_replies_whatever_the_window(
        broker: BrokerInfo, base_topic: str) -> None:
    # A resumed session's backlog comes before the replies to the first requests (the
    # store announces itself and subscribes before it reads a message); and a request
    # made while reading is paused must not wait for acknowledgements that never come.
    topic, window, total = f"{base_topic}/backlog", 20, 400

    def session() -> Client:
        return Client(broker.host, broker.port, client_id=f"{base_topic}-w",
                      clean_start=False, session_expiry_s=60, receive_maximum=window)

    async with session() as client:
        await client.subscribe([topic])
    payloads = [b"%04d" % i + b"x" * 2000 for i in range(total)]
    await publish_all(broker, [(topic, p, 1, False) for p in payloads])
    async with session() as client:
        async with asyncio.timeout(5):
            await client.publish(f"{base_topic}/hello", b"online", qos=1)
            await client.subscribe([topic])
        got = [await next_message(client) for _ in range(window)]
        for message in got:
            client.ack(message)  # Mosquitto now sends past the window; reading pauses
        await wait_until(lambda: client._reading_paused)
        async with asyncio.timeout(5):
            await client.publish(f"{base_topic}/hello", b"still here", qos=1)
        got += await take_acking(client, total - len(got))
    assert [m.payload for m in got] == payloads


async def test_max_packet_size_makes_the_broker_drop_larger_messages(
        broker: BrokerInfo, base_topic: str) -> None:
    topic = f"{base_topic}/size"
    async with Client(broker.host, broker.port, max_packet_size=1024) as client:
        await client.subscribe([topic])
        await publish_all(broker, [(topic, b"x" * 2000, 1, False), (topic, b"small", 1, False)])
        message = await next_message(client)
        assert message.payload == b"small"
        client.ack(message)
        assert client.connected


async def test_max_packet_size_is_announced_and_enforced() -> None:
    connects: list[bytes] = []

    async def oversize(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(CONNACK)
        # A broker that ignores the announced maximum: a 2007-byte PUBLISH.
        writer.write(packet(0x30, mqtt_string("t") + b"\x00" + b"x" * 2000))
        await reader.read()

    class Recording(Client):
        def _write(self, data: bytes) -> None:
            if data[:1] == b"\x10":
                connects.append(data)
            super()._write(data)

    async with fake_broker(oversize) as port, Recording(HOST, port, max_packet_size=1024) as client:
        with pytest.raises(MqttError) as caught:
            await next_message(client)
    assert one_line(caught.value) == (
        "malformed packet from the broker: a packet of 2007 bytes, over the maximum of 1024")
    # CONNECT properties follow the 2-byte fixed header and 10 bytes (name, version,
    # flags, keep-alive).
    [connect] = connects
    properties = Properties(PacketTypes.CONNECT)
    properties.unpack(connect[12:])
    assert properties.MaximumPacketSize == 1024


# --- the Will ----------------------------------------------------------------------------


async def test_will_is_published_when_the_connection_drops(
        broker: BrokerInfo, base_topic: str) -> None:
    will_topic = f"{base_topic}/status"
    async with aiomqtt.Client(broker.host, broker.port) as peer:
        await peer.subscribe(will_topic, qos=1)
        client = Client(broker.host, broker.port, will=Will(will_topic, b"offline\x00"))
        async with client:
            assert client._transport is not None
            client._transport.abort()  # vanish without DISCONNECT
        [will] = await collect(peer, 1)
    assert (str(will.topic), will.payload, will.qos) == (will_topic, b"offline\x00", 1)
    # The Will's defaults ask for it retained.
    async with aiomqtt.Client(broker.host, broker.port) as late:
        await late.subscribe(will_topic, qos=1)
        [kept] = await collect(late, 1)
    assert (kept.payload, kept.retain) == (b"offline\x00", True)


async def test_will_is_not_published_on_clean_disconnect(
        broker: BrokerInfo, base_topic: str) -> None:
    will_topic = f"{base_topic}/status"
    async with aiomqtt.Client(broker.host, broker.port) as peer:
        await peer.subscribe(will_topic, qos=1)
        will = Will(will_topic, b"offline", retain=False)
        async with Client(broker.host, broker.port, will=will):
            pass
        # Give a wrongly sent Will time to arrive, then a sentinel that must come first.
        await asyncio.sleep(0.5)
        await publish_all(broker, [(will_topic, b"sentinel", 1, False)])
        [first] = await collect(peer, 1)
    assert first.payload == b"sentinel"


# --- keep-alive ----------------------------------------------------------------------------


async def test_keepalive_pings_keep_the_connection(broker: BrokerInfo, base_topic: str) -> None:
    # Mosquitto drops a client silent for 1.5 keep-alives; pings must prevent that.
    async with Client(broker.host, broker.port, keepalive_s=1) as client:
        await client.subscribe([f"{base_topic}/k"])
        await asyncio.sleep(3.2)
        assert client.connected
        await publish_all(broker, [(f"{base_topic}/k", b"still here", 1, False)])
        assert (await next_message(client)).payload == b"still here"


async def test_keepalive_fails_when_pings_go_unanswered() -> None:
    seen: list[int] = []

    async def no_pingresp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(CONNACK)
        while True:
            first, _ = await read_packet(reader)
            seen.append(first)

    async with fake_broker(no_pingresp) as port, Client(HOST, port, keepalive_s=1) as client:
        started = time.monotonic()
        with pytest.raises(MqttError) as caught:
            await next_message(client)
        elapsed = time.monotonic() - started
    assert "keep-alive" in one_line(caught.value)
    assert 0xC0 in seen  # it did ping
    # Not before 1.5 intervals of silence; not much later either.
    assert 1.4 <= elapsed <= 5.0, elapsed
    assert not client.connected


# --- errors --------------------------------------------------------------------------------


async def test_connect_to_a_closed_port_fails_quickly(port_picker: Callable[[], int]) -> None:
    port = port_picker()
    started = time.monotonic()
    with pytest.raises(MqttError) as caught:
        await Client(HOST, port, timeout_s=10).connect()
    assert time.monotonic() - started < 3
    assert f"cannot connect to {HOST}:{port}" in one_line(caught.value)


async def test_connect_times_out_without_connack() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up

    async with fake_broker(mute) as port:
        client = Client(HOST, port, timeout_s=0.5)
        with pytest.raises(MqttError) as caught:
            await client.connect()
    assert one_line(caught.value) == f"no answer from {HOST}:{port} within 0.5 s"
    assert not client.connected


async def test_connect_refused_not_authorized() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x20\x03\x00\x87\x00")
        await reader.read()

    async with fake_broker(refuse) as port:
        client = Client(HOST, port)
        with pytest.raises(MqttError) as caught:
            await client.connect()
    assert one_line(caught.value) == "connection refused: 0x87 not authorized"
    assert not client.connected


async def test_invalid_filter_ends_the_connection_with_an_error(
        broker: BrokerInfo, base_topic: str) -> None:
    # Mosquitto 2.0 answers an invalid filter by DISCONNECT 0x81 rather than a SUBACK code.
    async with Client(broker.host, broker.port) as client:
        with pytest.raises(MqttError) as caught:
            await client.subscribe([f"{base_topic}/#/b"])
        assert "malformed packet" in one_line(caught.value)
        assert not client.connected


async def test_refused_subscription_names_the_filter() -> None:
    subscribe_bodies: list[bytes] = []

    async def refuse_second(reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        writer.write(CONNACK)
        first, body = await read_packet(reader)
        assert first == 0x82
        subscribe_bodies.append(body)
        # SUBACK: same packet id, no properties, granted QoS 1, then 0x8F.
        writer.write(packet(0x90, body[:2] + b"\x00\x01\x8f"))
        await reader.read()

    async with fake_broker(refuse_second) as port, Client(HOST, port) as client:
        with pytest.raises(MqttError) as caught:
            await client.subscribe(["ok/#", Subscription("a/#/b", qos=0)])
    text = one_line(caught.value)
    assert text == "subscription refused: 'a/#/b': 0x8F topic filter invalid"
    # What went out: packet id, no properties, each filter with its options byte.
    [body] = subscribe_bodies
    assert body[2:] == b"\x00" + mqtt_string("ok/#") + b"\x01" + mqtt_string("a/#/b") + b"\x00"


async def test_broker_going_away_ends_the_messages(own_broker: Any, base_topic: str) -> None:
    topic = f"{base_topic}/x"
    async with Client(own_broker.host, own_broker.port) as client:
        await client.subscribe([topic])
        await publish_all(own_broker, [(topic, b"%d" % i, 1, False) for i in range(3)])
        await wait_until(lambda: len(client.messages) == 3)
        await asyncio.to_thread(own_broker.local.stop)
        # What arrived is still handed out, then the error.
        got = [await next_message(client) for _ in range(3)]
        assert [m.payload for m in got] == [b"0", b"1", b"2"]
        with pytest.raises(MqttError) as caught:
            await next_message(client)
        one_line(caught.value)
        assert not client.connected
        client.ack(got[0])  # a no-op now


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (packet(0x36, mqtt_string("t") + b"\x00\x01\x00"), "PUBLISH with QoS 3"),
        (b"\x30\xff\xff\xff\xff\x7f", "variable byte integer longer than four bytes"),
        (packet(0x30, b"\x00\x02\xff\xfe\x00"), "string is not UTF-8"),
        (packet(0x10, b""), "unexpected packet type 1 from the broker"),
    ],
)
async def test_malformed_packet_ends_the_messages(bad: bytes, reason: str) -> None:
    async def send_bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A good message and the bad packet in one write.
        writer.write(CONNACK)
        writer.write(packet(0x30, mqtt_string("t/ok") + b"\x00" + b"fine") + bad)
        await reader.read()

    async with fake_broker(send_bad) as port, Client(HOST, port) as client:
        assert (await next_message(client)).payload == b"fine"
        with pytest.raises(MqttError) as caught:
            await next_message(client)
    assert one_line(caught.value) == f"malformed packet from the broker: {reason}"


async def test_server_disconnect_with_reason_ends_the_messages() -> None:
    async def shut_down(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(CONNACK)
        properties = b"\x1f" + mqtt_string("maintenance")  # reason string
        writer.write(packet(0xE0, b"\x8b" + bytes((len(properties),)) + properties))
        await reader.read()

    async with fake_broker(shut_down) as port, Client(HOST, port) as client:
        with pytest.raises(MqttError) as caught:
            await next_message(client)
    assert one_line(caught.value) == (
        "the broker disconnected: 0x8B server shutting down (maintenance)")


# --- a stream cut anywhere -------------------------------------------------------------------


async def test_many_messages_in_random_chunks_arrive_complete_and_in_order() -> None:
    rng = random.Random(20240601)
    expected: list[tuple[str, bytes, int, bool, bool, int]] = []
    stream = bytearray()
    for i in range(1000):
        qos = 0 if i % 3 == 0 else 1
        packet_id = i + 1 if qos else 0
        retain, dup = i % 5 == 0, bool(qos) and i % 7 == 0
        topic = f"farm/{i % 13}/miner-{i}"
        size = 20_000 if i % 250 == 0 else rng.choice((0, 1, 5, 126, 127, 128, 300))
        payload = rng.randbytes(size)
        # Some with properties (the full path), most without (the fast path).
        properties = (b"\x07\x26" + mqtt_string("k") + mqtt_string("v") if i % 11 == 0
                      else b"\x00")
        first = 0x30 | (0x08 if dup else 0) | qos << 1 | (0x01 if retain else 0)
        body = mqtt_string(topic) + (packet_id.to_bytes(2, "big") if qos else b"")
        stream += packet(first, body + properties + payload)
        if i % 97 == 0:
            stream += b"\xd0\x00"  # a PINGRESP in between
        expected.append((topic, payload, qos, retain, dup, packet_id))
    qos1_ids = [e[5] for e in expected if e[2] == 1]
    acked: list[int] = []
    all_acked = asyncio.Event()

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(CONNACK)
        await writer.drain()
        pos = 0
        while pos < len(stream):
            size = rng.choice((1, 2, 3, rng.randint(1, 64), rng.randint(1, 4096)))
            writer.write(stream[pos:pos + size])
            pos += size
            await writer.drain()
            await asyncio.sleep(0)  # let the client read this chunk before the next
        while len(acked) < len(qos1_ids):
            first, body = await read_packet(reader)
            if first == 0x40:
                acked.append(int.from_bytes(body[:2], "big"))
        all_acked.set()
        await reader.read()

    class CountingClient(Client):
        reads = 0

        def data_received(self, data: bytes) -> None:
            self.reads += 1
            super().data_received(data)

    async with fake_broker(trickle) as port, CountingClient(HOST, port) as client:
        got = await take_acking(client, len(expected))
        async with asyncio.timeout(10):
            await all_acked.wait()
    assert [(m.topic, m.payload, m.qos, m.retain, m.dup, m.packet_id) for m in got] == expected
    assert [m.properties for m in got[::11]] == [{"user_property": [("k", "v")]}] * 91
    assert acked == qos1_ids
    assert client.reads > 100  # the boundaries really fell in many places


# --- MQTT 5 strictness: what the client refuses to send ---------------------------------


def connack(properties: bytes = b"") -> bytes:
    """CONNACK, session not present, success, with these properties (already encoded)."""
    return packet(0x20, b"\x00\x00" + VariableByteIntegers.encode(len(properties)) + properties)


async def record_until_closed(reader: asyncio.StreamReader,
                              seen: list[tuple[int, bytes]]) -> None:
    """Append every packet the client sends to ``seen`` until it closes the connection."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            seen.append(await read_packet(reader))


async def test_a_qos2_subscription_is_refused_before_anything_is_sent() -> None:
    seen: list[tuple[int, bytes]] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(CONNACK)
        await record_until_closed(reader, seen)

    async with fake_broker(record) as port:
        async with Client(HOST, port) as client:
            with pytest.raises(ValueError, match="QoS 2"):
                await client.subscribe(["ok/#", Subscription("two/#", qos=2)])
            assert client.connected
        await wait_until(lambda: bool(seen))
    assert [first for first, _ in seen] == [0xE0]  # no SUBSCRIBE went out: only DISCONNECT


def will_publish(will: Will) -> tuple[int, bytes]:
    """The (first byte, body start) of the client's own copy of its Will: QoS 1, retained."""
    return 0x30 | will.qos << 1 | will.retain, mqtt_string(will.topic)


WILL = Will("svc/status", b"offline")


def assert_left_with(seen: list[tuple[int, bytes]], reason: int) -> None:
    """The client's last two packets: its Will (Mosquitto drops the broker's copy on
    any DISCONNECT reason but 0x04), then DISCONNECT with ``reason`` and no properties."""
    first, topic = will_publish(WILL)
    assert len(seen) >= 2, seen
    (will_first, will_body), last = seen[-2], seen[-1]
    assert will_first == first and will_body.startswith(topic)
    assert will_body.endswith(b"\x00" + WILL.payload)  # no properties, then the payload
    assert last == (0xE0, bytes((reason, 0)))


@pytest.mark.parametrize(
    ("codes", "filters", "text"),
    [
        (b"\x01", ["a", "b"], "SUBACK with 1 reason code(s) for 2 filter(s)"),
        (b"\x01\x01\x01", ["a", "b"], "SUBACK with 3 reason code(s) for 2 filter(s)"),
        (b"\x01\x01", ["a", Subscription("b", qos=0)], "SUBACK grants QoS 1 to 'b' (asked for "
                                                        "QoS 0)"),
    ],
)
async def test_a_suback_that_does_not_fit_the_request_ends_with_disconnect_0x82(
        codes: bytes, filters: list[str | Subscription], text: str) -> None:
    seen: list[tuple[int, bytes]] = []

    async def bad_suback(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(CONNACK)
        first, body = await read_packet(reader)
        assert first == 0x82
        writer.write(packet(0x90, body[:2] + b"\x00" + codes))
        await record_until_closed(reader, seen)

    async with fake_broker(bad_suback) as port, Client(HOST, port, will=WILL) as client:
        with pytest.raises(MqttError) as caught:
            await client.subscribe(filters)
        assert one_line(caught.value) == f"protocol error from the broker: {text}"
        assert not client.connected
    assert_left_with(seen, 0x82)


async def test_an_unsuback_with_the_wrong_count_ends_with_disconnect_0x82() -> None:
    seen: list[tuple[int, bytes]] = []

    async def bad_unsuback(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(CONNACK)
        first, body = await read_packet(reader)
        assert first == 0xA2
        writer.write(packet(0xB0, body[:2] + b"\x00\x00"))  # one code for three filters
        await record_until_closed(reader, seen)

    async with fake_broker(bad_unsuback) as port, Client(HOST, port, will=WILL) as client:
        with pytest.raises(MqttError) as caught:
            await client.unsubscribe(["a", "b", "c"])
    assert one_line(caught.value) == (
        "protocol error from the broker: UNSUBACK with 1 reason code(s) for 3 filter(s)")
    assert_left_with(seen, 0x82)


async def test_a_refused_unsubscribe_names_the_filter_and_0x11_is_not_a_refusal() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(CONNACK)
        _, body = await read_packet(reader)
        writer.write(packet(0xB0, body[:2] + b"\x00\x11\x00"))  # none existed; success
        _, body = await read_packet(reader)
        writer.write(packet(0xB0, body[:2] + b"\x00\x00\x87"))
        await reader.read()

    async with fake_broker(answer) as port, Client(HOST, port) as client:
        await client.unsubscribe(["a", "b"])
        with pytest.raises(MqttError) as caught:
            await client.unsubscribe(["a", "secret/#"])
        assert one_line(caught.value) == "unsubscribe refused: 'secret/#': 0x87 not authorized"
        assert client.connected


@pytest.mark.parametrize(
    ("bad", "reason", "text"),
    [
        (packet(0x30, b"\x00\x02\xff\xfe\x00"), 0x81, "string is not UTF-8"),
        # topic alias 1 in the properties: never allowed (no Topic Alias Maximum sent)
        (packet(0x30, mqtt_string("t") + b"\x03\x23\x00\x01" + b"x"), 0x94,
         "PUBLISH with a topic alias, which this client never allows"),
        (packet(0x30, mqtt_string("t") + b"\x00" + b"x" * 2000), 0x95,
         "a packet of 2007 bytes, over the maximum of 1024"),
        (packet(0x34, mqtt_string("t") + b"\x00\x07\x00x"), 0x82,
         "PUBLISH at QoS 2, which this client never subscribes to"),
        (packet(0x80 | 0x2, b"\x00\x01\x00"), 0x82, "unexpected packet type 8 from the broker"),
        (connack(), 0x82, "unexpected packet type 2 from the broker"),  # a second CONNACK
    ],
)
async def test_a_protocol_error_of_the_broker_is_answered_with_disconnect_and_reason(
        bad: bytes, reason: int, text: str) -> None:
    seen: list[tuple[int, bytes]] = []

    async def send_bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(CONNACK)
        writer.write(packet(0x30, mqtt_string("t/ok") + b"\x00" + b"fine") + bad)
        await record_until_closed(reader, seen)

    async with fake_broker(send_bad) as port, Client(HOST, port, will=WILL,
                                                      max_packet_size=1024) as client:
        assert (await next_message(client)).payload == b"fine"
        with pytest.raises(MqttError) as caught:
            await next_message(client)
        assert not client.connected
        assert await client.wait_closed() is caught.value
    assert one_line(caught.value) == f"malformed packet from the broker: {text}"
    assert_left_with(seen, reason)


@pytest.mark.parametrize(
    ("properties", "text"),
    [
        (b"\x21\x00\x00", "CONNACK with a receive maximum of 0"),
        (b"\x24\x02", "CONNACK with maximum QoS 2"),
        (b"\x25\x07", "CONNACK with retain available 7"),
        (b"\x27\x00\x00\x00\x00", "CONNACK with a maximum packet size of 0"),
    ],
)
async def test_a_connack_with_forbidden_limits_fails_the_connect_with_0x82(
        properties: bytes, text: str) -> None:
    seen: list[tuple[int, bytes]] = []

    async def bad_connack(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(connack(properties))
        await record_until_closed(reader, seen)

    async with fake_broker(bad_connack) as port:
        client = Client(HOST, port, will=WILL)
        with pytest.raises(MqttError) as caught:
            await client.connect()
        await wait_until(lambda: len(seen) >= 2)
    assert one_line(caught.value) == f"protocol error from the broker: {text}"
    assert_left_with(seen, 0x82)


# --- the broker's CONNACK limits -------------------------------------------------------------


def puback(packet_id: int, reason: int | None = None) -> bytes:
    code = b"" if reason is None else bytes((reason,))
    return packet(0x40, packet_id.to_bytes(2, "big") + code)


async def test_send_quota_follows_the_receive_maximum_and_puback_settles() -> None:
    published: list[int] = []
    release: asyncio.Queue[bytes] = asyncio.Queue()

    async def window_of_three(reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
        writer.write(connack(b"\x21\x00\x03"))  # receive maximum 3
        while True:
            reading = asyncio.ensure_future(read_packet(reader))
            releasing = asyncio.ensure_future(release.get())
            done, _ = await asyncio.wait((reading, releasing),
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in (reading, releasing):
                if task not in done:
                    task.cancel()
            if releasing in done:
                writer.write(releasing.result())
            if reading in done:
                first, body = reading.result()
                if first >> 4 == 3:
                    published.append(int.from_bytes(body[5:7], "big"))  # after "t/n"
                elif first == 0xE0:
                    return

    async with fake_broker(window_of_three) as port, Client(HOST, port) as client:
        settled: list[Any] = []
        client.on_settled = settled.append
        assert client.limits.receive_maximum == 3
        assert client.send_quota == 3
        deliveries = [client.publish_nowait(f"t/{i}", b"%d" % i) for i in range(3)]
        assert client.send_quota == 0
        with pytest.raises(BrokerLimitError, match="Receive Maximum"):
            client.publish_nowait("t/3", b"3")
        await wait_until(lambda: len(published) == 3)
        assert published == [d.packet_id for d in deliveries]
        assert not any(d.settled for d in deliveries)

        # The broker answers the second one (refused) and then the first one.
        await release.put(puback(deliveries[1].packet_id, 0x87))
        await release.put(puback(deliveries[0].packet_id))
        await wait_until(lambda: len(settled) == 2)
        assert settled == [deliveries[1], deliveries[0]]
        assert (deliveries[1].refused, deliveries[0].refused) == (True, False)
        assert deliveries[0].reason == 0 and not deliveries[2].settled
        assert client.send_quota == 2

        # An awaited publish waits for room while the window is full.
        client.publish_nowait("t/4", b"4")
        client.publish_nowait("t/5", b"5")
        waiting = asyncio.create_task(client.publish("t/6", b"6"))
        await wait_until(lambda: len(published) == 5)
        assert await stays_true(lambda: len(published) == 5, 0.3)
        await release.put(puback(deliveries[2].packet_id))
        await wait_until(lambda: len(published) == 6)
        assert not waiting.done()
        await release.put(puback(published[-1]))
        async with asyncio.timeout(5):
            await waiting
    assert len(published) == 6  # never a fourth unsettled one on the wire


async def test_what_the_broker_cannot_take_is_refused_before_sending() -> None:
    seen: list[tuple[int, bytes]] = []

    async def limited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # maximum packet size 100, maximum QoS 0, retain not available
        writer.write(connack(b"\x27\x00\x00\x00\x64" + b"\x24\x00" + b"\x25\x00"))
        await record_until_closed(reader, seen)

    async with fake_broker(limited) as port, Client(HOST, port) as client:
        with pytest.raises(BrokerLimitError) as caught:
            await client.publish("t", b"x" * 200, qos=0)
        assert one_line(caught.value) == (
            "publish to 't' refused: a packet of 207 bytes, over the broker's maximum of 100")
        with pytest.raises(BrokerLimitError, match="takes QoS 0 at most"):
            await client.publish("t", b"x", qos=1)
        with pytest.raises(BrokerLimitError, match="takes QoS 0 at most"):
            client.publish_nowait("t", b"x")
        with pytest.raises(BrokerLimitError, match=r"no retained messages \(Retain Available 0"):
            await client.publish("t", b"x", qos=0, retain=True)
        assert client.connected
        await client.publish("t", b"fits", qos=0)
    assert [first for first, _ in seen] == [0x30, 0xE0]  # only what fits went out
    assert seen[0][1].endswith(b"fits")


async def test_wait_closed_returns_when_the_broker_goes() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(CONNACK)
        await asyncio.sleep(0.2)

    async with fake_broker(hang_up) as port, Client(HOST, port) as client:
        delivery = client.publish_nowait("t", b"x")
        async with asyncio.timeout(5):
            error = await client.wait_closed()
        assert f"connection to {HOST}:{port} lost" in one_line(error)
        assert not delivery.settled and client.send_quota == 0
        with pytest.raises(MqttError):
            client.publish_nowait("t", b"y")


async def test_request_properties_reach_the_responder(broker: BrokerInfo, base_topic: str
                                                      ) -> None:
    """MQTT v5 request/response (section 4.10): the response topic and correlation data
    a requester sets arrive with the message, byte for byte."""
    async with Client(broker.host, broker.port) as responder, \
            Client(broker.host, broker.port) as requester:
        await responder.subscribe([Subscription(f"{base_topic}/ask", qos=1)])
        await requester.publish(f"{base_topic}/ask", b"{}", qos=1, properties={
            "response_topic": f"{base_topic}/replies/me", "correlation_data": b"\x00id-1"})
        asked = await next_message(responder)
        assert asked.properties["response_topic"] == f"{base_topic}/replies/me"
        assert asked.properties["correlation_data"] == b"\x00id-1"
