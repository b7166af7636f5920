"""The shipped Mosquitto configs start, the production ACL (rendered from
mosquitto/acl.template by deploy/render-acl.sh) lets each service publish only what it owns,
client ids are bound to accounts so no account can take another's session, and the store's
own MQTT client logs in and works under it. Runs the real broker binary with the
repository's files (paths and port swapped for a temporary folder and a free port)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sqlite3
import ssl
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest
import pytest_asyncio

from minerwatch.shared.config import Config, MqttConfig, StoreConfig
from minerwatch.shared.mqtt.client import Client, MqttError
from minerwatch.shared.mqtt.packets import Subscription
from minerwatch.shared.mqtt.protocol import Message
from minerwatch.shared.schemas import Sample, encode, format_ts
from minerwatch.store.consumer import store_link, topic_filters

from production_broker import (
    CONF,
    MOSQUITTO,
    PASSWORDS,
    ROOT,
    RUN_AS,
    ProductionBroker,
    make_tls,
    production_mosquitto,
    render_acl,
)
from running import BIN
from tcp_proxy import TcpProxy


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
def production(tmp_path: Path, port_picker: Callable[[], int],
               port_waiter: Callable[..., None]) -> Iterator[ProductionBroker]:
    """The shipped mosquitto.conf with the ACL rendered for the default base topic."""
    with production_mosquitto(tmp_path / "broker", port_picker, port_waiter) as broker:
        yield broker


@pytest.fixture
def production_broker(production: ProductionBroker) -> int:
    port: int = production.port
    return port


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
    """Whether a message ``publisher`` sends on ``topic`` reaches a reader (of another
    account: two clients of one account are one client id)."""
    watcher = "admin" if publisher == "reader" else "reader"
    async with (
        aiomqtt.Client("127.0.0.1", port, username=watcher,
                       password=PASSWORDS[watcher]) as reader,
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
        # it answers commands but may not give one
        ("collector", "minerwatch/miners/m1/command/result", True),
        ("collector", "minerwatch/replies/api", True),
        ("collector", "minerwatch/miners/m1/tune", True),
        ("collector", "minerwatch/miners/m1/command", False),
        ("collector", "minerwatch/miners/m1/label", False),
        ("alerts", "minerwatch/miners/m1/command", True),  # [alerts.stalled] restart
        ("alerts", "minerwatch/miners/m1/command/result", False),
        ("api", "minerwatch/miners/m1/command", True),
        ("admin", "minerwatch/miners/m1/command", True),
        ("reader", "minerwatch/miners/m1/command", False),
        ("alerts", "minerwatch/alerts/m1/overheat", True),
        ("alerts", "minerwatch/mutes/m1", True),  # it clears expired mutes
        ("alerts", "minerwatch/miners/m1/sample", False),
        ("store", "minerwatch/services/store/status", True),
        ("store", "minerwatch/miners/m1/sample", False),
        ("store", "minerwatch/mutes/m1", False),
        # the api publishes labels and mutes, and forgets a miner by clearing its topics
        ("api", "minerwatch/miners/m1/label", True),
        ("api", "minerwatch/miners/m1/info", True),
        ("api", "minerwatch/alerts/m1/offline", True),
        ("api", "minerwatch/mutes/m1", True),
        ("api", "minerwatch/services/collector/status", False),
        # a person's `forget` has the api's rights under its own account, not its status
        ("admin", "minerwatch/miners/m1/info", True),
        ("admin", "minerwatch/services/api/status", False),
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


async def may_publish(broker: ProductionBroker, user: str, topic: str) -> bool:
    """Whether the broker takes ``user``'s QoS 1 publish on ``topic`` (its PUBACK)."""
    async with Client("127.0.0.1", broker.port, username=user,
                      password=broker.passwords[user]) as client:
        try:
            await client.publish(topic, b"{}", qos=1)
        except MqttError as exc:
            assert "not authorized" in str(exc).lower(), exc
            return False
    return True


async def test_the_acl_is_rendered_for_the_base_topic(
    tmp_path: Path, port_picker: Callable[[], int], port_waiter: Callable[..., None]
) -> None:
    passwords = {**PASSWORDS, "site-a": "site-pw"}
    with production_mosquitto(tmp_path, port_picker, port_waiter, passwords=passwords,
                              acl_args=["--base", "farm-2", "--site", "site-a"]) as broker:
        for user in ("collector", "site-a"):
            assert await may_publish(broker, user, "farm-2/miners/m1/sample")
            assert await may_publish(broker, user, "farm-2/services/collector/status")
            assert not await may_publish(broker, user, "minerwatch/miners/m1/sample")
            assert not await may_publish(broker, user, "farm-2/alerts/m1/overheat")
        assert await may_publish(broker, "store", "farm-2/services/store/status")
        assert not await may_publish(broker, "store", "minerwatch/services/store/status")
    acl = render_acl("--base", "farm-2", "--site", "site-a")
    assert "@" not in "".join(line for line in acl.splitlines() if not line.startswith("#"))


@pytest.mark.parametrize("args", [["--base", "a/b"], ["--base", "+"], ["--site", "api"],
                                  ["--site", "s1", "--site", "s1"], ["--site"], ["--what"]])
def test_render_acl_refuses_what_would_break_the_acl(args: list[str]) -> None:
    done = subprocess.run(["sh", str(ROOT / "deploy" / "render-acl.sh"), *args],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("render-acl.sh: ") and done.stderr.count("\n") == 1


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


# --- client ids bound to accounts (use_username_as_clientid) -------------------------

#: The store's client id when none is configured (``store_client_id``, default base).
STORE_CLIENT_ID = "minerwatch-store"
SAMPLE_TOPIC = "minerwatch/miners/m1/sample"
STORE_STATUS = "minerwatch/services/store/status"


def unbound(conf: str) -> str:
    """mosquitto.conf as it was before client ids were bound to accounts (the control)."""
    assert conf.count("\nuse_username_as_clientid true\n") == 1
    return conf.replace("\nuse_username_as_clientid true\n", "\n")


@dataclass
class StoreProcess:
    """``minerwatch-store`` as a process, on the production broker with its account."""

    broker: ProductionBroker
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    #: Where the store connects, when not straight to the broker (a proxy's port).
    port: int | None = None

    @property
    def db(self) -> Path:
        return self.workdir / "history.db"

    @property
    def log(self) -> Path:
        return self.workdir / "store.log"

    def start(self) -> None:
        config = self.workdir / "minerwatch.toml"
        config.write_text("[store]\nbatch_interval_s = 0.1\n")
        env = {**os.environ, "MINERWATCH_CONFIG": str(config),
               "MINERWATCH_MQTT_URL": self.broker.url("store", port=self.port),
               "MINERWATCH_DB_URL": f"sqlite:///{self.db}"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([BIN / "minerwatch-store"], env=env, cwd=self.workdir,
                                         stderr=log)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            assert code == 0, self.log.read_text()

    def stored(self) -> set[int]:
        """The ``ts_ms`` of m1's stored samples."""
        if not self.db.exists():
            return set()
        with sqlite3.connect(self.db, timeout=5) as conn:
            return {ts for (ts,) in conn.execute(
                "SELECT ts_ms FROM samples WHERE miner_id = 'm1'")}

    def connections(self) -> int:
        """How often the store connected to the broker (its log says each time)."""
        return self.log.read_text().count("store connected to broker")


@pytest_asyncio.fixture
async def store(tmp_path: Path, port_picker: Callable[[], int],
                port_waiter: Callable[..., None], request: pytest.FixtureRequest,
                ) -> AsyncIterator[StoreProcess]:
    """The store on the production broker; ``indirect`` False: with the control config."""
    bound = getattr(request, "param", True)
    conf = CONF.read_text() if bound else unbound(CONF.read_text())
    with production_mosquitto(tmp_path / "broker", port_picker, port_waiter,
                              conf_text=conf) as broker:
        process = StoreProcess(broker, tmp_path)
        try:
            yield process
        finally:
            process.stop()
            assert "Traceback" not in process.log.read_text(), process.log.read_text()


class Samples:
    """Valid samples of miner m1, a second apart, published by the collector's account."""

    def __init__(self, port: int) -> None:
        self.client = Client("127.0.0.1", port, username="collector",
                             password=PASSWORDS["collector"])
        self.start = datetime.now(UTC).replace(microsecond=0)
        self.count = 0
        self.sent: set[int] = set()

    async def publish(self, count: int, pause_s: float = 0.0) -> None:
        for _ in range(count):
            moment = self.start + timedelta(seconds=self.count)
            self.count += 1
            sample = Sample(miner_id="m1", ts=format_ts(moment), hashrate_ths=1.0)
            await self.client.publish(SAMPLE_TOPIC, encode(sample), qos=1, retain=True)
            self.sent.add(int(moment.timestamp() * 1000))
            await asyncio.sleep(pause_s)


async def until(check: Callable[[], object], timeout: float = 10.0,
                why: Callable[[], str] = str) -> None:
    """Wait until ``check()`` is true; AssertionError with ``why()`` after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not true within {timeout} s {why()}") from None


async def status_of_store(port: int) -> bytes | None:
    """The store's retained status, read by the reader account."""
    async with Client("127.0.0.1", port, username="reader", password="r-pw") as client:
        await client.subscribe([Subscription(STORE_STATUS, qos=1)])
        try:
            async with asyncio.timeout(1):
                async for message in client.messages:
                    return bytes(message.payload)
        except TimeoutError:
            return None
    return None


async def take_over(port: int, client_id: str, listen_s: float = 1.5
                    ) -> tuple[bool, list[Message]]:
    """Connect as the reader with ``client_id``, resuming the session of that id as the
    issue's client did, and acknowledge all it is sent: (session present, messages)."""
    client = Client("127.0.0.1", port, client_id=client_id, username="reader",
                    password="r-pw", clean_start=False)
    got: list[Message] = []
    async with client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(listen_s):
                async for message in client.messages:
                    got.append(message)
                    client.ack(message)
        return client.session_present, got


async def warm_up(store: StoreProcess, samples: Samples) -> None:
    """Start the store and wait until it stores what comes: its subscriptions are in."""
    store.start()
    await until(lambda: store.connections() >= 1)
    async with asyncio.timeout(15):
        while not store.stored():
            await samples.publish(1, pause_s=0.2)
    samples.sent.clear()


@pytest.mark.parametrize("store", [True, False], indirect=True, ids=["bound", "control"])
async def test_no_account_takes_the_queue_of_a_stopped_store(store: StoreProcess) -> None:
    """The issue: while the store is away, samples queue in its session, and the reader
    connects with the store's client id (the configured one, or its account name) to
    resume that session. With client ids bound to accounts the reader only ever gets a
    session of its own, and the store, back, stores every sample. The control is the
    shipped config without the binding: the reader takes the queue, and the history
    never gets it (the issue's 443 samples)."""
    bound = re.search(r"^use_username_as_clientid true$", store.broker.conf.read_text(),
                      flags=re.M) is not None
    port = store.broker.port
    samples = Samples(port)
    async with samples.client:
        await warm_up(store, samples)
        store.stop()
        await samples.publish(20)  # queued at the broker, for the store's session alone
        thefts = {client_id: await take_over(port, client_id)
                  for client_id in (STORE_CLIENT_ID, "store")}
        store.start()
        if bound:
            assert thefts == {STORE_CLIENT_ID: (False, []), "store": (False, [])}
            await until(lambda: samples.sent <= store.stored())
            return
        present, taken = thefts[STORE_CLIENT_ID]
        assert present and [m.topic for m in taken] == [SAMPLE_TOPIC] * 20
        await until(lambda: store.connections() == 2)
        await asyncio.sleep(1)
        assert len(samples.sent - store.stored()) >= 19  # all but the retained latest


async def test_no_account_takes_the_session_of_a_running_store(store: StoreProcess) -> None:
    """While the store runs and samples keep coming, the reader connecting with the
    store's client id neither ends the store's connection nor gets a message of it."""
    port = store.broker.port
    samples = Samples(port)
    async with samples.client:
        await warm_up(store, samples)
        publishing = asyncio.create_task(samples.publish(40, pause_s=0.05))
        thefts = [await take_over(port, client_id, listen_s=0.8)
                  for client_id in (STORE_CLIENT_ID, "store")]
        await publishing
        await until(lambda: samples.sent <= store.stored())
    assert thefts == [(False, []), (False, [])]
    assert store.connections() == 1, store.log.read_text()
    assert await status_of_store(port) == b"online"


async def test_two_connections_of_one_account_take_the_id_from_each_other(
    production_broker: int,
) -> None:
    """Why every consumer needs an account of its own: whatever ids they send, two clients
    of one account are one client id, and the second ends the first's connection."""
    first = Client("127.0.0.1", production_broker, client_id="home-assistant",
                   username="reader", password="r-pw")
    async with first, Client("127.0.0.1", production_broker, client_id="node-red",
                      username="reader", password="r-pw"):
        with pytest.raises(MqttError):
            async with asyncio.timeout(5):
                async for _ in first.messages:
                    pass


async def test_the_tls_listener_binds_client_ids_and_refuses_anonymous_clients_too(
    tmp_path: Path, port_picker: Callable[[], int], port_waiter: Callable[..., None]
) -> None:
    """mosquitto.conf's TLS lines switched on: the binding is a listener setting, so it
    must hold there too. A reader over TLS ends the plain reader's connection (one id),
    while a store connection is left alone; anonymous clients are refused."""
    tls = make_tls(tmp_path / "certs", port_picker())
    context = ssl.create_default_context()
    tls.ca.configure_trust(context)
    with production_mosquitto(tmp_path / "broker", port_picker, port_waiter,
                              tls=tls) as broker:
        assert broker.tls_port is not None
        with pytest.raises(MqttError, match="refused"):
            async with Client("127.0.0.1", broker.tls_port, tls_context=context):
                pass
        plain = Client("127.0.0.1", broker.port, client_id="x", username="reader",
                       password="r-pw")
        store = Client("127.0.0.1", broker.port, client_id="y", username="store",
                       password="s-pw")
        async with plain, store, Client("127.0.0.1", broker.tls_port, client_id="y",
                          username="reader", password="r-pw", tls_context=context):
            with pytest.raises(MqttError):
                async with asyncio.timeout(5):
                    async for _ in plain.messages:
                        pass
            await store.publish(STORE_STATUS, b"online", qos=1)  # still connected


async def test_a_store_whose_connection_drops_loses_nothing(store: StoreProcess) -> None:
    """The store's connection ends without a word from the broker (a network cut; and on
    Mosquitto before 2.0.15, a takeover) while the broker stays up: what was published
    meanwhile waits in its session and is stored once it is back. Nothing else may
    connect as `store` in between: a connection of that account, whatever its client
    id, is the store's session's client id."""
    proxy = TcpProxy(store.broker.port)
    await proxy.start()
    store.port = proxy.port
    samples = Samples(store.broker.port)
    try:
        async with samples.client:
            await warm_up(store, samples)
            before = set(store.stored())
            await proxy.cut(refuse=False)
            await samples.publish(60, pause_s=0.05)
            await until(lambda: store.connections() == 2)
            await samples.publish(5)
            await until(lambda: samples.sent <= store.stored(), timeout=20, why=lambda: (
                f"{len(samples.sent - store.stored())} of {len(samples.sent)} samples "
                f"never stored:\n{store.log.read_text()}"))
        assert before <= store.stored()
    finally:
        await proxy.close()


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
