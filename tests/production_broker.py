"""The production broker for tests, made of the repository's own files: the real Mosquitto
with ``mosquitto/mosquitto.conf`` (paths and port swapped for a temporary folder and a free
127.0.0.1 port), passwords made with ``mosquitto_passwd`` and the ACL rendered by
``deploy/render-acl.sh`` from ``mosquitto/acl.template``. With ``tls``, the TLS listener of
the config's commented lines is switched on as a user would, with the test's certificate.

Imported by name (tests/ is on pytest's ``pythonpath``).
"""

from __future__ import annotations

import contextlib
import getpass
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme

ROOT = Path(__file__).resolve().parents[1]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
CONF = ROOT / "mosquitto" / "mosquitto.conf"
RENDER_ACL = ROOT / "deploy" / "render-acl.sh"
#: Mosquitto started as root drops to the `mosquitto` user, who cannot read pytest's tmp dirs.
RUN_AS = f"\nuser {getpass.getuser()}\n"
#: One account per service and reader, as the README's production steps make them.
PASSWORDS = {"collector": "c-pw", "store": "s-pw", "alerts": "a-pw", "api": "api-pw",
             "reader": "r-pw", "admin": "adm-pw"}
#: The lines of mosquitto.conf's TLS listener, shipped commented out.
TLS_LINE = re.compile(r"^# ((?:listener 8883|certfile|keyfile|use_username_as_clientid)\b.*)$",
                      re.M)


def render_acl(*args: str) -> str:
    """``deploy/render-acl.sh ARGS``: the ACL file it prints."""
    done = subprocess.run(["sh", str(RENDER_ACL), *args], capture_output=True, text=True)
    if done.returncode:
        raise AssertionError(f"render-acl.sh {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def write_passwords(path: Path, passwords: Mapping[str, str]) -> None:
    """A Mosquitto password file of ``passwords``, made by ``mosquitto_passwd``."""
    path.touch()
    for user, password in passwords.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), user, password], check=True)


@dataclass(frozen=True)
class Tls:
    """The TLS listener to switch on: its port and the server's certificate and key, and
    the CA that signed them (what a client or a bridge trusts)."""

    port: int
    certfile: Path
    keyfile: Path
    ca: trustme.CA
    cafile: Path


def make_tls(folder: Path, port: int) -> Tls:
    """A test CA (trustme) and a certificate of it for 127.0.0.1, as files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile, cafile = folder / "server.crt", folder / "server.key", folder / "ca.crt"
    certfile.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    return Tls(port, certfile, keyfile, ca, cafile)


def production_conf(text: str, *, port: int, passwd: Path, acl: Path, data: Path,
                    tls: Tls | None = None) -> str:
    """``mosquitto.conf`` with its paths and ports swapped (and the TLS listener on)."""
    if tls is not None:
        text = TLS_LINE.sub(r"\1", text)
        text = re.sub(r"^listener 8883$", f"listener {tls.port} 127.0.0.1", text, flags=re.M)
        text = text.replace("/mosquitto/certs/server.crt", str(tls.certfile))
        text = text.replace("/mosquitto/certs/server.key", str(tls.keyfile))
    text = re.sub(r"^listener 1883$", f"listener {port} 127.0.0.1", text, flags=re.M)
    text = text.replace("/mosquitto/config/passwd", str(passwd))
    text = text.replace("/mosquitto/config/acl", str(acl))
    text = text.replace("/mosquitto/data/", f"{data}/")
    # stderr is unbuffered: the log is complete whenever a test reads it
    return text.replace("\nlog_dest stdout\n", "\nlog_dest stderr\n") + RUN_AS


@dataclass
class ProductionBroker:
    port: int
    conf: Path
    log: Path
    proc: subprocess.Popen[bytes]
    passwords: Mapping[str, str]
    tls_port: int | None = None

    def url(self, user: str, *, port: int | None = None) -> str:
        """``user``'s broker URL (through ``port`` instead, a proxy's)."""
        return f"mqtt://{user}:{self.passwords[user]}@127.0.0.1:{port or self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def start_mosquitto(conf: Path, log: Path, ports: Sequence[int],
                    port_waiter: Callable[..., None]) -> subprocess.Popen[bytes]:
    """Mosquitto with ``conf``, its output in ``log``, once it listens on every port."""
    with log.open("ab") as out:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        for port in ports:
            port_waiter(port, timeout=5)
    except TimeoutError:
        proc.kill()
        proc.wait()
        raise AssertionError(f"mosquitto did not start:\n{log.read_text()}") from None
    return proc


@contextlib.contextmanager
def production_mosquitto(
    workdir: Path, port_picker: Callable[[], int], port_waiter: Callable[..., None], *,
    acl_args: Sequence[str] = (), passwords: Mapping[str, str] = PASSWORDS,
    tls: Tls | None = None, conf_text: str | None = None,
) -> Iterator[ProductionBroker]:
    """The production broker in ``workdir``, stopped on the way out. ``acl_args`` go to
    render-acl.sh; ``conf_text`` replaces the shipped config (a test's variant of it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port_picker()
    passwd, acl, data = workdir / "passwd", workdir / "acl", workdir / "data"
    write_passwords(passwd, passwords)
    acl.write_text(render_acl(*acl_args))
    data.mkdir(exist_ok=True)
    conf = workdir / "mosquitto.conf"
    text = CONF.read_text() if conf_text is None else conf_text
    conf.write_text(production_conf(text, port=port, passwd=passwd, acl=acl, data=data,
                                    tls=tls))
    log = workdir / "mosquitto.log"
    proc = start_mosquitto(conf, log, [port] + ([tls.port] if tls else []), port_waiter)
    broker = ProductionBroker(port, conf, log, proc, passwords,
                              tls.port if tls else None)
    try:
        yield broker
    finally:
        broker.stop()
