"""The shipped Mosquitto configs start, the production ACL lets each service publish only
what it owns, and the store's own MQTT client logs in and works under it. Runs the real
broker binary with the repository's files (paths and port swapped for a temporary folder
and a free port)."""

from __future__ import annotations

import asyncio
import getpass
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from minerwatch.shared.config import Config, MqttConfig, StoreConfig
from minerwatch.shared.mqtt.client import Client, MqttError
from minerwatch.store.consumer import store_link, topic_filters

ROOT = Path(__file__).resolve().parents[1]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
# Mosquitto started as root drops to the `mosquitto` user, who cannot read pytest's tmp dirs.
RUN_AS = f"\nuser {getpass.getuser()}\n"
PASSWORDS = {"collector": "c-pw", "store": "s-pw", "alerts": "a-pw", "api": "api-pw",
             "reader": "r-pw"}


@pytest.fixture
def start(port_waiter):  # type: ignore[no-untyped-def]
    """Start mosquitto with a config; stopped at the end of the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def run(conf: Path, port: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.PIPE)
        procs.append(proc)
        try:
            port_waiter(port, timeout=5)
        except TimeoutError:
            proc.kill()
            raise AssertionError(proc.communicate()[1].decode()) from None
        return proc

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


@pytest.fixture
def production_broker(tmp_path: Path, port_picker, start) -> Iterator[int]:  # type: ignore[no-untyped-def]
    port = port_picker()
    passwd = tmp_path / "passwd"
    passwd.touch()
    for user, password in PASSWORDS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
    (tmp_path / "data").mkdir()
    conf = (ROOT / "mosquitto" / "mosquitto.conf").read_text()
    conf = re.sub(r"^listener 1883$", f"listener {port} 127.0.0.1", conf, flags=re.M)
    conf = conf.replace("/mosquitto/config/passwd", str(passwd))
    conf = conf.replace("/mosquitto/config/acl", str(ROOT / "mosquitto" / "acl"))
    conf = conf.replace("/mosquitto/data/", f"{tmp_path / 'data'}/")
    (tmp_path / "mosquitto.conf").write_text(conf + RUN_AS)
    start(tmp_path / "mosquitto.conf", port)
    yield port


def test_dev_config_starts(tmp_path: Path, port_picker, start) -> None:  # type: ignore[no-untyped-def]
    port = port_picker()
    conf = (ROOT / "mosquitto" / "dev.conf").read_text()
    conf = conf.replace("listener 1883 ", f"listener {port} ").replace(
        "persistence_location .demo/", f"persistence_location {tmp_path}/"
    )
    (tmp_path / "dev.conf").write_text(conf + RUN_AS)
    proc = start(tmp_path / "dev.conf", port)
    proc.terminate()
    assert proc.wait(10) == 0


async def delivered(port: int, publisher: str, topic: str) -> bool:
    """Whether a message ``publisher`` sends on ``topic`` reaches a reader."""
    async with (
        aiomqtt.Client("127.0.0.1", port, username="reader", password="r-pw") as reader,
        aiomqtt.Client("127.0.0.1", port, username=publisher,
                       password=PASSWORDS[publisher]) as client,
    ):
        await reader.subscribe("minerwatch/#", qos=1)
        await client.publish(topic, b"{}", qos=1)
        try:
            async with asyncio.timeout(1):
                async for message in reader.messages:
                    if str(message.topic) == topic:
                        return True
        except TimeoutError:
            return False
    return False


@pytest.mark.parametrize(
    ("user", "topic", "allowed"),
    [
        ("collector", "minerwatch/miners/m1/sample", True),
        ("collector", "minerwatch/services/collector/status", True),
        ("collector", "minerwatch/alerts/m1/overheat", False),
        ("collector", "minerwatch/services/store/status", False),
        ("collector", "minerwatch/mutes/m1", False),
        ("alerts", "minerwatch/alerts/m1/overheat", True),
        ("alerts", "minerwatch/mutes/m1", True),  # it clears expired mutes
        ("alerts", "minerwatch/miners/m1/sample", False),
        ("store", "minerwatch/miners/m1/sample", False),
        ("store", "minerwatch/mutes/m1", False),
        # the api publishes labels and mutes, and forgets a miner by clearing its topics
        ("api", "minerwatch/miners/m1/label", True),
        ("api", "minerwatch/miners/m1/info", True),
        ("api", "minerwatch/alerts/m1/offline", True),
        ("api", "minerwatch/mutes/m1", True),
        ("api", "minerwatch/services/collector/status", False),
        ("reader", "minerwatch/miners/m1/sample", False),
        ("reader", "minerwatch/mutes/m1", False),
    ],
)
async def test_acl_limits_each_service(
    production_broker: int, user: str, topic: str, allowed: bool
) -> None:
    assert await delivered(production_broker, user, topic) is allowed


@pytest.mark.parametrize(
    ("reader", "publisher", "topic"),
    [
        ("alerts", "collector", "minerwatch/services/collector/status"),
        ("alerts", "api", "minerwatch/mutes/m1"),
        ("collector", "api", "minerwatch/miners/m1/label"),
    ],
)
async def test_each_service_reads_what_it_follows(
    production_broker: int, reader: str, publisher: str, topic: str
) -> None:
    async with (
        aiomqtt.Client("127.0.0.1", production_broker, username=reader,
                       password=PASSWORDS[reader]) as follower,
        aiomqtt.Client("127.0.0.1", production_broker, username=publisher,
                       password=PASSWORDS[publisher]) as client,
    ):
        await follower.subscribe(topic, qos=1)
        await client.publish(topic, b"{}", qos=1)
        async with asyncio.timeout(2):
            async for message in follower.messages:
                assert str(message.topic) == topic
                break


async def test_anonymous_and_wrong_passwords_are_refused(production_broker: int) -> None:
    for username, password in [(None, None), ("collector", "wrong")]:
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", production_broker, username=username,
                                      password=password):
                pass


async def test_the_store_logs_in_reads_and_announces_itself_on_the_production_broker(
    production_broker: int,
) -> None:
    # the store runs on its own MQTT client: its login, subscriptions (ACL "read") and
    # QoS 1 status (ACL "write", refused in the PUBACK otherwise) against the real config
    config = Config(mqtt=MqttConfig(url=f"mqtt://store:s-pw@127.0.0.1:{production_broker}",
                                    reconnect_min_s=0.1, reconnect_max_s=0.2),
                    store=StoreConfig(client_id="acl-store"))
    topics: list[str] = []

    async def session(client: Client) -> None:
        await client.subscribe(topic_filters(config.mqtt.base_topic, None))
        async with aiomqtt.Client("127.0.0.1", production_broker, username="collector",
                                  password=PASSWORDS["collector"]) as collector:
            await collector.publish("minerwatch/miners/m1/sample", b"{}", qos=1)
        async for message in client.messages:
            topics.append(message.topic)
            client.ack(message)
            return

    link = store_link(config)
    async with asyncio.timeout(10):
        await link.run(session)
    assert topics == ["minerwatch/miners/m1/sample"]

    with pytest.raises(MqttError, match=r"^connection refused: 0x8[67] "):
        async with Client("127.0.0.1", production_broker, username="store",
                          password="wrong"):
            pass


# --- the demo broker's state (deploy/local-stack.sh broker-conf) ---------------------

LOCAL_STACK = ROOT / "deploy" / "local-stack.sh"
IS_ROOT = os.geteuid() == 0


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user can reach (pytest's own are root's alone), as a checkout is."""
    path = Path(tempfile.mkdtemp(prefix="mw-demo-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_user(user: str | None, command: list[str]) -> list[str]:
    """``command`` as ``user`` (setpriv execs it: a SIGTERM reaches the command itself)."""
    if user is None:
        return command
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *command]


async def retained_payload(port: int, topic: str) -> bytes | None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(2):
                async for message in client.messages:
                    return bytes(message.payload)
        except TimeoutError:
            return None
    return None


def write_demo_conf(user: str | None, port: int, demo: Path) -> str:
    """Run ``local-stack.sh broker-conf`` as ``user``; the config it wrote."""
    if user is not None:
        demo.parent.chmod(0o777)  # the user's checkout is theirs
    subprocess.run(as_user(user, ["bash", str(LOCAL_STACK), "broker-conf", str(port),
                                  str(demo)]), check=True)
    return (demo / "mosquitto.conf").read_text()


@pytest.mark.parametrize("case", ["root, folder reachable", "root, folder private",
                                  "normal user"])
async def test_the_demo_broker_keeps_its_state_across_a_restart(  # type: ignore[no-untyped-def]
    case: str, open_dir: Path, tmp_path: Path, port_picker, port_waiter,
) -> None:
    """The config ``make demo`` writes, run by the real mosquitto: persistence writes its
    file (autosave on shutdown) and a retained message survives a restart. As root, the
    broker drops to `mosquitto`, who is given the persistence folder, or stays root where
    it could not reach it; as a normal user nothing changes."""
    user = None
    if case == "normal user" and IS_ROOT:
        user = "mosquitto"  # a user of no privilege (the package's), as a developer is
    demo = tmp_path / "demo" if case == "root, folder private" else open_dir / ".demo"
    port = port_picker()
    conf = write_demo_conf(user, port, demo)
    assert f"listener {port} 127.0.0.1" in conf
    assert f"persistence_location {demo}/broker/" in conf
    expected_user = None
    if IS_ROOT and user is None:
        expected_user = "root" if case == "root, folder private" else "mosquitto"
    assert re.findall(r"^user (\S+)$", conf, flags=re.M) == (
        [expected_user] if expected_user else [])

    def broker() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(as_user(user, [MOSQUITTO, "-c", str(demo / "mosquitto.conf")]),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        port_waiter(port, timeout=5)
        return proc

    def stop(proc: subprocess.Popen[bytes]) -> str:
        proc.terminate()  # SIGTERM: mosquitto saves its persistence file on the way out
        out = proc.communicate(timeout=10)[0].decode()
        assert proc.returncode == 0, out
        return out

    topic = "minerwatch/miners/rig-1/status"
    first = broker()
    try:
        async with aiomqtt.Client("127.0.0.1", port) as client:
            await client.publish(topic, b'{"state": "online"}', qos=1, retain=True)
    finally:
        log = stop(first)
    assert "Permission denied" not in log and "Error" not in log, log
    saved = demo / "broker" / "mosquitto.db"
    assert saved.is_file() and saved.stat().st_size > 0
    if expected_user == "mosquitto":  # written by the user it dropped to
        assert saved.owner() == "mosquitto"
    second = broker()
    try:
        assert await retained_payload(port, topic) == b'{"state": "online"}'
    finally:
        log = stop(second)
    assert "Permission denied" not in log, log
