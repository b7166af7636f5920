"""The lean client against a real Mosquitto that announces limits in its CONNACK (receive
maximum, maximum packet size, maximum QoS, retain available), and noticing a dead broker
while reads are paused: a broker killed outright, and a network that goes silent (a
private network namespace whose loopback is taken down under the connection)."""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from minerwatch.shared.mqtt.client import BrokerLimitError, Client, MqttError, Subscription

HOST = "127.0.0.1"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@pytest.fixture
def limited_broker(tmp_path: Path, port_picker: Any, port_waiter: Any
                   ) -> Iterator[Callable[[str], int]]:
    """Start a Mosquitto with extra settings; yields a function that returns its port."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(settings: str) -> int:
        port = port_picker()
        conf = tmp_path / f"mosquitto-{port}.conf"
        conf.write_text(f"listener {port} {HOST}\nallow_anonymous true\npersistence false\n"
                        f"log_dest stderr\nlog_type error\nuser {getpass.getuser()}\n"
                        f"{settings}\n")
        procs.append(subprocess.Popen([MOSQUITTO, "-c", str(conf)]))
        port_waiter(port)
        return port

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


async def collect(peer: aiomqtt.Client, count: int) -> list[bytes]:
    got: list[bytes] = []
    async with asyncio.timeout(10):
        async for message in peer.messages:
            assert isinstance(message.payload, bytes)
            got.append(message.payload)
            if len(got) == count:
                break
    return got


async def test_pipelined_publishing_keeps_to_the_brokers_receive_maximum(
        limited_broker: Callable[[str], int]) -> None:
    # (its queue for the slower subscriber must hold them all: 1000 by default)
    port = limited_broker("max_inflight_messages 5\nmax_queued_messages 10000")
    payloads = [b"%04d" % i for i in range(2000)]
    async with aiomqtt.Client(HOST, port) as peer, Client(HOST, port) as client:
        await peer.subscribe("lim/q", qos=1)
        reading = asyncio.create_task(collect(peer, len(payloads)))
        assert client.limits.receive_maximum == 5
        room = asyncio.Event()
        client.on_settled = lambda delivery: room.set()
        most = 0
        deliveries = []
        for payload in payloads:
            while client.send_quota == 0:
                room.clear()
                await room.wait()
            deliveries.append(client.publish_nowait("lim/q", payload))
            most = max(most, 5 - client.send_quota)
        # Past the quota the client refuses rather than overrun the broker (which would
        # disconnect it with 0x93, receive maximum exceeded).
        while client.send_quota:
            client.publish_nowait("lim/other", b"filler")
        with pytest.raises(BrokerLimitError):
            client.publish_nowait("lim/q", b"too many")
        assert most == 5
        got = await reading
        # The subscriber may get the last messages before their PUBACKs reach us.
        async with asyncio.timeout(10):
            while not all(d.settled for d in deliveries):
                room.clear()
                await room.wait()
        assert client.connected
    assert got == payloads  # all of them, once, in order
    assert all(d.settled and not d.refused for d in deliveries)


async def test_a_message_over_the_brokers_maximum_packet_size_is_refused_not_sent(
        limited_broker: Callable[[str], int]) -> None:
    port = limited_broker("max_packet_size 2000")
    async with aiomqtt.Client(HOST, port) as peer, Client(HOST, port) as client:
        await peer.subscribe("lim/size", qos=1)
        reading = asyncio.create_task(collect(peer, 1))
        assert client.limits.maximum_packet_size == 2000
        with pytest.raises(BrokerLimitError, match="over the broker's maximum of 2000"):
            await client.publish("lim/size", b"x" * 3000)
        with pytest.raises(BrokerLimitError, match="over the broker's maximum of 2000"):
            client.publish_nowait("lim/size", b"x" * 3000)
        await client.publish("lim/size", b"small")  # the connection is unharmed
        assert await reading == [b"small"]


async def test_maximum_qos_and_retain_available_are_honoured(
        limited_broker: Callable[[str], int]) -> None:
    port = limited_broker("max_qos 0\nretain_available false")
    async with Client(HOST, port) as client:
        assert (client.limits.maximum_qos, client.limits.retain_available) == (0, False)
        with pytest.raises(BrokerLimitError, match="QoS 0 at most"):
            await client.publish("lim/x", b"x", qos=1)
        with pytest.raises(BrokerLimitError, match="no retained messages"):
            await client.publish("lim/x", b"x", qos=0, retain=True)
        await client.publish("lim/x", b"x", qos=0)
        await client.subscribe(["lim/#"])  # a subscription is simply granted less
        assert client.connected


# --- a dead broker while reads are paused ------------------------------------------------------


async def paused_client(port: int, topic: str, *, keepalive_s: int) -> Client:
    """A client whose reading paused: Mosquitto 2.0 sends past a receive maximum of 5 once
    acknowledgements flow, and the client stops reading then (see ``client``)."""
    client = Client(HOST, port, receive_maximum=5, keepalive_s=keepalive_s)
    await client.connect()
    await client.subscribe([topic])
    async with aiomqtt.Client(HOST, port, max_inflight_messages=100) as peer:
        await asyncio.gather(*(peer.publish(topic, b"%04d" % i + b"x" * 2000, qos=1)
                               for i in range(100)))
    async with asyncio.timeout(5):
        for _ in range(5):
            client.ack(await anext(client.messages))
        while not client._reading_paused:
            await asyncio.sleep(0.01)
    return client


async def test_a_broker_killed_while_reads_are_paused_is_noticed(own_broker: Any) -> None:
    keepalive = 1
    client = await paused_client(own_broker.port, "dead/x", keepalive_s=keepalive)
    try:
        await asyncio.sleep(1.5 * keepalive)  # paused for longer than a keep-alive verdict
        assert client.connected
        started = time.monotonic()
        own_broker.local.proc.kill()  # SIGKILL: no DISCONNECT, the kernel closes the socket
        own_broker.local.proc.wait()
        own_broker.local.proc = None
        async with asyncio.timeout(10):
            error = await client.wait_closed()
        elapsed = time.monotonic() - started
        assert "lost" in str(error)
        assert elapsed <= 1.5 * keepalive, elapsed
        got = [message.payload async for message in _until_error(client)]
        assert got  # what arrived before is still handed out, then the error
    finally:
        await client.disconnect()


async def _until_error(client: Client):  # type: ignore[no-untyped-def]
    with pytest.raises(MqttError):
        async for message in client.messages:
            yield message


PARTITION = """
import asyncio, subprocess, sys, time
sys.path[:0] = {paths!r}
from minerwatch.shared.mqtt.client import Client

async def main():
    ready = asyncio.Event()

    async def broker(reader, writer):
        await reader.read(4096)  # the CONNECT
        writer.write(b"\\x20\\x03\\x00\\x00\\x00")  # CONNACK
        await reader.read(4096)  # the SUBSCRIBE
        writer.write(b"\\x90\\x04\\x00\\x01\\x00\\x01")  # SUBACK, granted QoS 1
        await asyncio.sleep(0.2)  # the client reads messages past its window only then
        for i in range(5):  # more than the window of 2: the client stops reading
            writer.write(b"\\x32\\x06\\x00\\x01t" + bytes((0, i + 1)) + b"\\x00")
        ready.set()
        try:
            await reader.read()
        except asyncio.CancelledError:
            pass  # the script is done

    server = await asyncio.start_server(broker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Client("127.0.0.1", port, receive_maximum=2, keepalive_s={keepalive})
    async with asyncio.timeout(10):
        await client.connect()
        await client.subscribe(["t"])
        await ready.wait()
        while not client._reading_paused:
            await asyncio.sleep(0.01)
    await asyncio.sleep(1.5 * {keepalive})  # paused past a keep-alive verdict
    # The network goes silent: nothing sent either way arrives, nothing is refused.
    subprocess.run(["ip", "link", "set", "lo", "down"], check=True)
    started = time.monotonic()
    try:
        async with asyncio.timeout(60):
            error = await client.wait_closed()
    except TimeoutError:
        print("not noticed within 60 s", flush=True)
        return
    print(f"noticed {{time.monotonic() - started:.2f}} {{error}}", flush=True)

asyncio.run(main())
"""


async def test_a_network_that_goes_silent_while_reads_are_paused_is_noticed() -> None:
    # A private network namespace (root, or unprivileged user namespaces): its loopback
    # can be taken down under a live connection without touching anyone else's.
    keepalive = 1
    script = PARTITION.format(paths=[p for p in sys.path if p], keepalive=keepalive)
    unshare = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "-r", "--net"]
    proc = await asyncio.create_subprocess_exec(
        *unshare, "sh", "-c", 'ip link set lo up && exec "$0" -c "$1"', sys.executable, script,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    words = out.decode().split()
    assert words[:1] == ["noticed"], out.decode() + err.decode()
    # TCP_USER_TIMEOUT (1.5 keep-alives) expires on the first unanswered ping, and the
    # next keep-alive tick finds the connection dropped. Without it: 15 minutes or more.
    assert float(words[1]) <= 1.5 * keepalive + 2 * keepalive, out.decode()


async def test_unread_qos0_messages_are_bounded_and_reading_resumes(broker: Any,
                                                                    base_topic: str) -> None:
    """No receive maximum covers QoS 0: past ``max_queued`` unread messages the client
    stops reading (the rest waits in the broker and TCP), and goes on once the session
    takes them."""
    topic = f"{base_topic}/flood"
    async with Client(broker.host, broker.port, max_queued=200) as reader, \
            Client(broker.host, broker.port) as writer:
        await reader.subscribe([Subscription(topic, qos=0)])
        for index in range(5_000):
            await writer.publish(topic, b"x" * 100 + str(index).encode(), qos=0)
        await writer.publish(topic, b"last", qos=1)  # the broker has everything now
        await asyncio.sleep(1.0)
        waiting = len(reader.messages)
        # One socket read may bring a few hundred small messages past the bound.
        assert 200 < waiting < 200 + 1500, waiting
        got = 0
        async with asyncio.timeout(20):
            async for message in reader.messages:
                got += 1
                assert len(reader.messages) < 200 + 1500
                if message.payload == b"last":
                    break
        assert got == 5_001
