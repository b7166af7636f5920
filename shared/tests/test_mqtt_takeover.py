"""A session the broker gives to another client with the same client id: one ERROR line
naming the id, rate-limited, and the link keeps reconnecting.

The real Mosquitto here (Debian 12's 2.0.11) only closes the old connection; the link
tells that from a restart by the broker's uptime. A broker that says so with DISCONNECT
0x8E (Mosquitto 2.0.15 and later, the ``eclipse-mosquitto:2`` image) is played by a
scripted peer, since the one installed cannot send it.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from minerwatch.shared.config import MqttConfig
from minerwatch.shared.mqtt import MqttClient, MqttError, PersistentLink
from minerwatch.shared.mqtt.link import closed_without_reason, taken_over, takeover_text, uptime_s

LOG = "minerwatch.mqtt"


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def test_only_a_disconnect_0x8e_is_a_takeover() -> None:
    assert taken_over(MqttError("the broker disconnected: 0x8E session taken over",
                                reason=0x8E))
    assert not taken_over(MqttError("the broker disconnected: 0x8B server shutting down",
                                    reason=0x8B))
    assert not taken_over(MqttError("connection to 127.0.0.1:1883 lost"))
    # the words alone, from somewhere else, are not the broker's DISCONNECT
    assert not taken_over(MqttError("the broker disconnected: 0x8E session taken over"))


def test_the_takeover_line_names_the_client_id_and_what_it_stands_for() -> None:
    line = takeover_text("minerwatch-store", "store", 1.25, 0)
    assert line.startswith("session taken over: another client connected as client id "
                           "'minerwatch-store'; ")
    assert "store reconnecting in 1.2 s" in line and "more takeover" not in line
    assert "(3 more takeover(s) since the last report)" in (
        takeover_text("minerwatch-store", "store", 1.0, 3))


def test_a_close_without_reason_and_the_uptime_are_read_from_their_texts() -> None:
    assert closed_without_reason(MqttError("connection to h:1883 lost"), "h", 1883)
    assert not closed_without_reason(MqttError("the broker did not answer for 30 s "
                                               "(keep-alive)"), "h", 1883)
    assert uptime_s(b"1234 seconds") == 1234.0
    assert uptime_s(b"soon") is None and uptime_s(b"-1 seconds") is None


class SysBroker:
    """The real mosquitto with ``$SYS`` every second (the default is every 10 s)."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.port = port
        self.host = "127.0.0.1"
        self.url = f"mqtt://127.0.0.1:{port}"
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
            self.proc = None


@pytest.fixture
def sys_broker(tmp_path: Path, port_picker: Any, port_waiter: Any) -> Iterator[SysBroker]:
    broker = SysBroker(tmp_path, port_picker())
    broker.start(port_waiter)
    try:
        yield broker
    finally:
        broker.stop()


async def broker_up_for(broker: Any, seconds: float) -> None:
    """Wait until the broker's own ``$SYS/broker/uptime`` says it is up ``seconds``."""
    async with asyncio.timeout(10), aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe("$SYS/broker/uptime")
        async for message in client.messages:
            value = uptime_s(bytes(message.payload))
            if value is not None and value >= seconds:
                return


def records(caplog: pytest.LogCaptureFixture, level: str, phrase: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOG and r.levelname == level and phrase in r.getMessage()]


async def intrude(broker: Any, client_id: str) -> None:
    """Connect as ``client_id`` (MQTT v5, as any other client would), then leave."""
    async with aiomqtt.Client(broker.host, broker.port, identifier=client_id,
                              protocol=aiomqtt.ProtocolVersion.V5):
        pass


async def test_a_second_client_with_the_id_is_an_error_naming_it_and_the_link_comes_back(
        sys_broker: SysBroker, base_topic: str, caplog: pytest.LogCaptureFixture) -> None:
    broker = sys_broker
    caplog.set_level(logging.DEBUG, logger=LOG)
    await broker_up_for(broker, 2)  # a restart would show as an uptime shorter than that
    client_id = f"{base_topic}-store"
    config = MqttConfig(url=broker.url, base_topic=base_topic, reconnect_min_s=0.1,
                        reconnect_max_s=0.3)
    link = PersistentLink(config, "unit", client_id=client_id, receive_maximum=10)
    sessions = 0

    async def session(client: MqttClient) -> None:
        nonlocal sessions
        sessions += 1
        async for _message in client.messages:
            pass

    task = asyncio.create_task(link.run(session))
    try:
        await wait_until(lambda: sessions == 1 and link.connected)
        await intrude(broker, client_id)
        await wait_until(lambda: sessions == 2 and link.connected)
        [line] = records(caplog, "ERROR", "session taken over")
        assert line.startswith("session taken over: another client connected as client id "
                               f"{client_id!r}; ")
        # none of it as the generic warning of a lost connection
        assert not records(caplog, "WARNING", "0x8E")

        # taken over again and again (two processes sharing the id): no new error line
        # within the report interval, each one counted
        for expected in (3, 4):
            await intrude(broker, client_id)
            await wait_until(lambda n=expected: sessions == n and link.connected)
        assert len(records(caplog, "ERROR", "session taken over")) == 1
        assert len(records(caplog, "DEBUG", "session taken over again")) == 2

        # once the interval has passed, the next one is reported with the count
        link.takeover_report_s = 0.0
        await intrude(broker, client_id)
        await wait_until(lambda: sessions == 5 and link.connected)
        errors = records(caplog, "ERROR", "session taken over")
        assert len(errors) == 2
        assert "(2 more takeover(s) since the last report)" in errors[1]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_broker_restart_is_still_the_plain_warning(
        own_broker: Any, base_topic: str, caplog: pytest.LogCaptureFixture,
        port_waiter: Any) -> None:
    config = MqttConfig(url=own_broker.url, base_topic=base_topic, reconnect_min_s=0.1,
                        reconnect_max_s=0.3)
    link = PersistentLink(config, "unit", client_id=f"{base_topic}-store", receive_maximum=10)
    sessions = 0

    async def session(client: MqttClient) -> None:
        nonlocal sessions
        sessions += 1
        async for _message in client.messages:
            pass

    task = asyncio.create_task(link.run(session))
    try:
        await wait_until(lambda: link.connected)
        await asyncio.sleep(1.5)  # longer than the new broker will have been up
        own_broker.local.stop()
        own_broker.local.start()
        await wait_until(lambda: sessions == 2 and link.connected)
        assert records(caplog, "WARNING", "ended (connection to")
        assert not records(caplog, "ERROR", "session taken over")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


class TakeoverPeer:
    """A scripted MQTT v5 server for what the installed Mosquitto cannot do: it answers
    CONNECT and the first QoS 1 PUBLISH (the link's ``online``), then, on the first
    connection only, sends DISCONNECT 0x8E (session taken over) and closes."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def packet(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        kind = (await reader.readexactly(1))[0] >> 4
        length, shift = 0, 0
        while True:
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return kind, await reader.readexactly(length)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first = self.connections == 1
        try:
            kind, _body = await self.packet(reader)
            assert kind == 1  # CONNECT
            writer.write(b"\x20\x03\x00\x00\x00")  # CONNACK: success, no properties
            kind, body = await self.packet(reader)
            assert kind == 3  # PUBLISH, QoS 1: topic, then the packet id
            topic_length = int.from_bytes(body[:2], "big")
            packet_id = body[2 + topic_length:4 + topic_length]
            writer.write(b"\x40\x02" + packet_id)  # PUBACK
            if first:
                writer.write(b"\xe0\x02\x8e\x00")  # DISCONNECT 0x8E, no properties
                await writer.drain()
                writer.close()
                return
            while True:
                await self.packet(reader)  # pings, the DISCONNECT at the end
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_a_disconnect_0x8e_is_the_takeover_error_at_once(
        base_topic: str, caplog: pytest.LogCaptureFixture) -> None:
    peer = TakeoverPeer()
    port = await peer.start()
    config = MqttConfig(url=f"mqtt://127.0.0.1:{port}", base_topic=base_topic,
                        reconnect_min_s=0.1, reconnect_max_s=0.3)
    link = PersistentLink(config, "store", client_id="minerwatch-store", receive_maximum=10)

    async def session(client: MqttClient) -> None:
        async for _message in client.messages:
            pass

    task = asyncio.create_task(link.run(session))
    try:
        await wait_until(lambda: peer.connections == 2 and link.connected)
        [line] = records(caplog, "ERROR", "session taken over")
        assert line.startswith("session taken over: another client connected as client id "
                               "'minerwatch-store'; ")
        assert "store reconnecting in" in line
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await peer.stop()
