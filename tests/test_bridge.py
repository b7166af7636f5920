"""A remote site bridged to the central broker, with two real Mosquitto brokers: the site's
broker runs the shipped ``mosquitto/bridge.conf`` (its placeholders filled in as a user
would), the central one the production ``mosquitto/mosquitto.conf`` with its TLS listener
switched on and the ACL rendered with ``--site site-a``. The collector and a simulated fleet
are at the site, the store at the centre. The bridge's TCP connection goes through a proxy
on 127.0.0.1 that the test cuts for 60 s (connections closed, new ones refused): every
sample the collector published at the site must be in the central store's database, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from minerwatch.shared.db import ts_to_ms
from minerwatch.shared.schemas import Sample, decode, encode, format_ts
from minerwatch.sim.fleet import Fleet

from production_broker import (
    PASSWORDS,
    ROOT,
    RUN_AS,
    make_tls,
    production_mosquitto,
    start_mosquitto,
)
from running import BIN
from tcp_proxy import TcpProxy

BRIDGE_CONF = ROOT / "mosquitto" / "bridge.conf"
SITE = "site-a"
SITE_PASSWORD = "site-a-pw"
CUT_S = 60.0
COLLECTOR_STATUS = "minerwatch/services/collector/status"
BRIDGE_STATE = f"$SYS/broker/connection/{SITE}/state"
#: The miner of the samples that show the path through the bridge works before the fleet's.
WARM_UP = "warm-up"
HA_PASSWORD = "ha-pw"


def site_conf(text: str, *, port: int, central_port: int, cafile: Path, data: Path) -> str:
    """bridge.conf with its placeholders filled in, and its paths and port swapped."""
    text = (text.replace("@CENTRAL_HOST@", "127.0.0.1").replace("@SITE_PASSWORD@", SITE_PASSWORD)
            .replace("@SITE@", SITE))
    assert not re.findall(r"^[^#].*@\w+@", text, flags=re.M), "a placeholder is left"
    text = re.sub(r"^address 127\.0\.0\.1:8883$", f"address 127.0.0.1:{central_port}", text,
                  flags=re.M)
    text = re.sub(r"^listener 1883 127\.0\.0\.1$", f"listener {port} 127.0.0.1", text,
                  flags=re.M)
    text = text.replace("/mosquitto/config/central-ca.crt", str(cafile))
    text = text.replace("/mosquitto/data/", f"{data}/")
    # stderr is unbuffered: the test reads the log while the broker runs
    return text.replace("\nlog_dest stdout\n", "\nlog_dest stderr\n") + RUN_AS


def test_the_shipped_bridge_config_marks_every_value_to_fill_in() -> None:
    text = BRIDGE_CONF.read_text()
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    placeholders = {p for line in settings for p in re.findall(r"@\w+@", line)}
    assert placeholders == {"@CENTRAL_HOST@", "@SITE@", "@SITE_PASSWORD@"}
    for placeholder in placeholders:  # each is explained in the header
        assert re.search(rf"^#\s+{placeholder}\s", text, flags=re.M), placeholder


@dataclass
class Watched:
    """What a subscriber saw: samples as (miner_id, ts_ms), and other topics' payloads."""

    samples: list[tuple[str, int]] = field(default_factory=list)
    events: list[tuple[float, str, str, bool]] = field(default_factory=list)

    def payloads(self, topic: str, since: float = 0.0) -> list[str]:
        return [payload for at, seen, payload, _ in self.events if seen == topic and at >= since]


async def watch(client: aiomqtt.Client, topics: list[str], seen: Watched) -> None:
    for topic in topics:
        await client.subscribe(topic, qos=1)
    async for message in client.messages:
        topic = str(message.topic)
        payload = bytes(message.payload)
        if topic.endswith("/sample"):
            sample = decode(payload, Sample)
            if sample.miner_id == WARM_UP:
                continue
            seen.samples.append((sample.miner_id, ts_to_ms(sample.ts)))
        else:
            seen.events.append((time.monotonic(), topic, payload.decode(), message.retain))


def stored(db: Path, miner: str | None = None) -> list[tuple[str, int]]:
    """The samples in the central store's database: ``miner``'s, else the fleet's."""
    if not db.exists():
        return []
    where = "miner_id = ?" if miner else "miner_id != ?"
    with sqlite3.connect(db, timeout=5) as conn:
        try:
            return conn.execute(f"SELECT miner_id, ts_ms FROM samples WHERE {where}",
                                (miner or WARM_UP,)).fetchall()
        except sqlite3.OperationalError:  # the store has not made its tables yet
            return []


def warm_up_sample() -> Sample:
    return Sample(miner_id=WARM_UP, ts=format_ts(datetime.now(UTC)), hashrate_ths=1.0)


async def until(check: Callable[[], object], timeout: float, why: Callable[[], str]) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {why()}") from None


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> str | None:
        """SIGTERM; what went wrong (an unclean exit, a traceback), else None."""
        code = self.proc.poll()
        if code is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        text = self.log.read_text()
        if code != 0 or "Traceback" in text:
            return f"{self.name} exited {code}:\n{text}"
        return None


def service(name: str, workdir: Path, **variables: str) -> Process:
    log = workdir / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([BIN / f"minerwatch-{name}"], cwd=workdir, stderr=out,
                                env={**os.environ, **variables})
    return Process(name, proc, log)


async def discovery_configs(port: int) -> set[str]:
    """The retained Home Assistant configs under the base topic at the centre, as Home
    Assistant's account sees them."""
    topics: set[str] = set()
    async with aiomqtt.Client("127.0.0.1", port, username="homeassistant",
                              password=HA_PASSWORD) as client:
        await client.subscribe("homeassistant/+/minerwatch/#")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                async for message in client.messages:
                    if message.retain and message.payload:
                        topics.add(str(message.topic))
    return topics


@pytest.mark.timeout(CUT_S + 120)
async def test_samples_of_a_remote_site_cross_a_60_s_cut_of_the_bridge_and_none_is_lost(
    tmp_path: Path, port_picker: Callable[[], int], port_waiter: Callable[..., None]
) -> None:
    tls = make_tls(tmp_path / "certs", port_picker())
    config = tmp_path / "minerwatch.toml"
    config.write_text("[collector]\ntimeout_s = 0.4\noffline_after = 3\n\n"
                      "[store]\nbatch_interval_s = 0.1\n")
    db = tmp_path / "central.db"
    passwords = {**PASSWORDS, SITE: SITE_PASSWORD, "homeassistant": HA_PASSWORD}
    with production_mosquitto(tmp_path / "central", port_picker, port_waiter, tls=tls,
                              passwords=passwords, acl_args=["--site", SITE]) as central:
        assert central.tls_port is not None
        proxy = TcpProxy(central.tls_port)
        await proxy.start()
        site_port = port_picker()
        (tmp_path / "site-data").mkdir()
        conf = tmp_path / "site.conf"
        conf.write_text(site_conf(BRIDGE_CONF.read_text(), port=site_port,
                                  central_port=proxy.port, cafile=tls.cafile,
                                  data=tmp_path / "site-data"))
        site_log = tmp_path / "site-mosquitto.log"
        site = start_mosquitto(conf, site_log, [site_port], port_waiter)
        at_site, at_centre = Watched(), Watched()
        procs: list[Process] = []
        problems: list[str | None] = []
        watchers: list[asyncio.Task[None]] = []
        try:
            async with (
                aiomqtt.Client("127.0.0.1", site_port) as site_client,
                aiomqtt.Client("127.0.0.1", central.port, username="reader",
                               password="r-pw") as central_client,
                Fleet(axeos=2, cgminer=2, host="127.0.0.1", base_port=0, seed=5) as fleet,
            ):
                watchers.append(asyncio.create_task(watch(
                    site_client, ["minerwatch/miners/+/sample", BRIDGE_STATE], at_site)))
                watchers.append(asyncio.create_task(watch(
                    central_client, ["minerwatch/miners/+/sample", COLLECTOR_STATUS], at_centre)))
                await asyncio.sleep(0.5)  # subscribed before anything is published
                common = {"MINERWATCH_CONFIG": str(config), "MINERWATCH_DB_URL": f"sqlite:///{db}",
                          "MINERWATCH_BASE_TOPIC": "minerwatch"}
                procs.append(service("store", tmp_path, **common,
                                     MINERWATCH_MQTT_URL=central.url("store")))
                # over TLS, through the proxy: a sample published at the site is stored, so
                # the store's session is subscribed before the collector starts
                async with asyncio.timeout(30):
                    while not stored(db, WARM_UP):
                        await site_client.publish(f"minerwatch/miners/{WARM_UP}/sample",
                                                  encode(warm_up_sample()), qos=1)
                        await asyncio.sleep(0.2)
                at_site.samples.clear()
                at_centre.samples.clear()
                procs.append(service("collector", tmp_path, **common,
                                     MINERWATCH_MQTT_URL=f"mqtt://127.0.0.1:{site_port}",
                                     MINERWATCH_MINERS=",".join(fleet.urls()),
                                     MINERWATCH_POLL_INTERVAL_S="0.5"))
                miners = len(fleet.miners)

                def why() -> str:
                    missing = set(at_site.samples) - set(stored(db))
                    lost = set(at_site.samples) - set(at_centre.samples)
                    logs = "\n".join(f"--- {path.name}\n{path.read_text()[-2000:]}" for path in (
                        site_log, central.log, tmp_path / "store.log", tmp_path / "collector.log"))
                    return (f"{len(missing)} of {len(set(at_site.samples))} samples not stored, "
                            f"{len(lost)} of them never reached the central broker\n{logs}")

                await until(lambda: len({m for m, _ in stored(db)}) == miners, 30, why)
                site_miners = {m for m, _ in stored(db)} - {WARM_UP}
                wanted = {f"homeassistant/sensor/minerwatch/{m}_hashrate_ths/config"
                          for m in site_miners}
                async with asyncio.timeout(30):  # the site's Home Assistant configs too
                    while not wanted <= (configs := await discovery_configs(central.port)):
                        await asyncio.sleep(0.5)
                assert configs
                assert at_site.payloads(BRIDGE_STATE)[-1:] == ["1"]

                attempts = site_log.read_text().count("Connecting bridge (step 1)")
                await proxy.cut(refuse=True)
                cut_at = time.monotonic()
                sent_before_cut = len(at_site.samples)
                await asyncio.sleep(3)
                rows_in_cut = len(stored(db))
                await asyncio.sleep(CUT_S - 3)
                sent_in_cut = len(at_site.samples) - sent_before_cut
                assert len(stored(db)) == rows_in_cut, "samples crossed a cut bridge"
                assert at_site.payloads(BRIDGE_STATE, since=cut_at)[:1] == ["0"]
                attempts = site_log.read_text().count("Connecting bridge (step 1)") - attempts
                assert attempts >= 2, "the bridge did not try again during the cut"
                await proxy.restore()
                restored_at = time.monotonic()

                await until(lambda: set(at_site.samples) <= set(stored(db)), 45, why)
                caught_up_s = time.monotonic() - restored_at
                problems.append(procs[1].stop())  # its last samples, its offline status
                await until(lambda: at_centre.payloads(COLLECTOR_STATUS)[-1:] == ["offline"],
                            10, lambda: str(at_centre.events))
                await until(lambda: set(at_site.samples) <= set(stored(db)), 10, why)
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            problems.extend(proc.stop() for proc in reversed(procs))
            await proxy.close()
            site.terminate()
            site.wait(10)

    assert not [problem for problem in problems if problem], problems
    rows = stored(db)
    published = Counter(at_site.samples)
    assert set(rows) == set(published), "the store holds samples the collector never sent"
    assert len(rows) == len(set(rows)) == len(published), "a sample stored twice"
    # a poll every 0.5 s: about 2 samples a second per miner went into the site's queue
    assert sent_in_cut > CUT_S * miners, f"only {sent_in_cut} samples published in the cut"
    statuses = [(round(at - cut_at, 1), payload, retain) for at, topic, payload, retain
                in at_centre.events if topic == COLLECTOR_STATUS]
    print(f"{len(rows)} samples stored, {sent_in_cut} of them published during the "
          f"{CUT_S:.0f} s cut; all stored {caught_up_s:.1f} s after the link came back. "
          f"The collector's status at the centre (s from the cut, payload, retained): "
          f"{statuses}")
