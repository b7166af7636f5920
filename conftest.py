"""Fixtures every test folder shares: a private Mosquitto broker and free ports.

The broker is the local ``mosquitto`` binary on a free port with a temporary config, never
the shared broker on 1883, and never a container: a Docker engine that happens to run here
(``make compose-test`` needs one) must not change what the suite tests against.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class LocalMosquitto:
    """The ``mosquitto`` binary on a free loopback port; restartable for outage tests."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError("mosquitto is not installed: run `make setup` (installs it via apt)")
        self.binary = binary
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 100000\n"
            "log_dest stderr\n"
            "log_type error\n"
            # Started as root, mosquitto would drop to a user who cannot read tmp dirs.
            f"user {getpass.getuser()}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)])
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


class Broker:
    def __init__(self, host: str, port: int, local: LocalMosquitto | None = None) -> None:
        self.host = host
        self.port = port
        self.url = f"mqtt://{host}:{port}"
        self.local = local


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    local = LocalMosquitto(tmp_path_factory.mktemp("mosquitto"))
    local.start()
    try:
        yield Broker("127.0.0.1", local.port, local)
    finally:
        local.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of the test's own, local binary, that the test may stop and start again."""
    local = LocalMosquitto(tmp_path)
    local.start()
    try:
        yield Broker("127.0.0.1", local.port, local)
    finally:
        local.stop()


@pytest.fixture(scope="session")
def port_picker():  # type: ignore[no-untyped-def]
    """``free_port`` for fixtures of any scope."""
    return free_port


@pytest.fixture(scope="session")
def port_waiter():  # type: ignore[no-untyped-def]
    """``wait_for_port`` for fixtures of any scope."""
    return wait_for_port


@pytest.fixture
def base_topic(request: pytest.FixtureRequest) -> str:
    """A base topic of the test's own, so tests on the shared session broker never meet."""
    name = request.node.name.lower()
    return "mwtest-" + "".join(c if c.isalnum() else "-" for c in name)[:40] + f"-{free_port()}"
