"""A private mosquitto for the benchmarks: a free loopback port of its own, never the
shared broker on 1883. Not a benchmark itself (``make bench`` skips it)."""

from __future__ import annotations

import contextlib
import getpass
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def private_broker(workdir: Path, settings: str = "") -> Iterator[int]:
    """mosquitto on a free loopback port (yielded), with extra config ``settings``."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        sys.exit("bench: mosquitto is not installed (make setup installs it)")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    # Started as root, mosquitto would drop to a user who cannot read temporary folders.
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"log_dest stderr\nlog_type error\nuser {getpass.getuser()}\n{settings}")
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
