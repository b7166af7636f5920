"""The store's MQTT client over TLS (``mqtts://``), against a real Mosquitto with a
certificate from a throwaway certificate authority."""

from __future__ import annotations

import asyncio
import getpass
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from minerwatch.shared.config import MqttConfig
from minerwatch.shared.mqtt import PersistentLink
from minerwatch.shared.mqtt.client import Client, MqttError


class TlsBroker:
    def __init__(self, port: int, ca: trustme.CA, ca_file: Path) -> None:
        self.port = port
        self.ca = ca
        self.ca_file = ca_file


@pytest.fixture
def tls_broker(tmp_path: Path, port_picker: Any, port_waiter: Any) -> Iterator[TlsBroker]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = (tmp_path / name for name in ("cert.pem", "key.pem", "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    port = port_picker()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\ncertfile {cert_file}\nkeyfile {key_file}\n"
                    "allow_anonymous true\npersistence false\nlog_dest stderr\n"
                    f"log_type error\nuser {getpass.getuser()}\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)])
    try:
        port_waiter(port)
        yield TlsBroker(port, ca, ca_file)
    finally:
        proc.terminate()
        proc.wait(10)


def trusting(broker: TlsBroker) -> ssl.SSLContext:
    context = ssl.create_default_context()
    broker.ca.configure_trust(context)
    return context


async def test_a_message_goes_round_trip_over_tls(tls_broker: TlsBroker) -> None:
    async with Client("127.0.0.1", tls_broker.port, tls_context=trusting(tls_broker)) as client:
        await client.subscribe(["tls/echo"])
        await client.publish("tls/echo", b"over tls", qos=1)
        async with asyncio.timeout(5):
            message = await anext(client.messages)
        assert (message.topic, message.payload, message.qos) == ("tls/echo", b"over tls", 1)


async def test_a_certificate_the_client_does_not_trust_is_refused_in_one_line(
    tls_broker: TlsBroker,
) -> None:
    client = Client("127.0.0.1", tls_broker.port, tls_context=ssl.create_default_context())
    with pytest.raises(MqttError) as caught:
        await client.connect()
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert "\n" not in str(caught.value)


async def test_a_persistent_link_follows_an_mqtts_url(
    tls_broker: TlsBroker, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the link builds the default context, which takes its authorities from SSL_CERT_FILE
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_broker.ca_file))
    config = MqttConfig(url=f"mqtts://127.0.0.1:{tls_broker.port}", base_topic="tlstest")
    link = PersistentLink(config, "store", client_id="tls-store", receive_maximum=10)
    got: list[bytes] = []

    async def session(client: Client) -> None:
        await client.subscribe(["tlstest/services/+/status"])
        async for message in client.messages:
            got.append(message.payload)
            return

    async with asyncio.timeout(10):
        await link.run(session)
    assert got == [b"online"]  # the link's own retained announcement, read back over TLS
