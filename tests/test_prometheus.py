"""GET /metrics scraped by a real Prometheus: simulated fleet -> collector -> Mosquitto ->
store, alerts, api, each a real process with its console script, and Debian's
``prometheus`` (a temporary data directory, a free loopback port, a scrape every second)
scraping the api; ``promtool check metrics`` judges the text the api serves.

Prometheus must see one hashrate series per simulated miner with the simulator's values,
every service's own health with sane values, and a miner taken offline go down with its
hashrate series gone (and come back when it answers again).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import websockets

from minerwatch.shared.metrics import SERVICES
from minerwatch.shared.topics import mac_miner_id, slugify
from minerwatch.sim.fleet import Fault, Fleet, SimMiner

from running import start_services, stop_services
from waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

POLL_S = 0.5
STATS_S = 1.0
AXEOS, CGMINER = 3, 2
MINERS = AXEOS + CGMINER


def tool(name: str) -> str:
    found = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(found).exists():
        pytest.fail(f"{name} is not installed: `make test` installs Debian's prometheus "
                    "package (make prometheus-deps)", pytrace=False)
    return found


def miner_id(miner: SimMiner) -> str:
    if miner.mac:
        return mac_miner_id(miner.mac) or ""
    return slugify(f"{miner.host}-{miner.port}")



@dataclass
class Stack:
    base: str
    fleet: Fleet
    workdir: Path
    api: str
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(broker, port_picker, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[Stack]:
    workdir = tmp_path_factory.mktemp("prometheus-stack")
    api_port = port_picker()
    config = workdir / "minerwatch.toml"
    config.write_text(f"""
[collector]
# Roomy: the test says no poll failed, and the simulator shares the test's busy
# event loop (a miner that refuses still fails at once).
timeout_s = 2.0
offline_after = 3

[store]
batch_interval_s = 0.1
client_id = "prom-store-{api_port}"

[metrics]
stats_interval_s = {STATS_S}
""")
    base = f"prom-{api_port}"
    async with Fleet(axeos=AXEOS, cgminer=CGMINER, host="127.0.0.1", base_port=0,
                     seed=11) as fleet:
        env = {
            **os.environ,
            "MINERWATCH_CONFIG": str(config),
            "MINERWATCH_MQTT_URL": broker.url,
            "MINERWATCH_BASE_TOPIC": base,
            "MINERWATCH_DB_URL": f"sqlite:///{workdir / 'history.db'}",
            "MINERWATCH_API_LISTEN": f"127.0.0.1:{api_port}",
            "MINERWATCH_API_AUTH": "lan",  # reads open, as these tests read
            "MINERWATCH_MINERS": ",".join(fleet.urls()),
            "MINERWATCH_POLL_INTERVAL_S": str(POLL_S),
        }
        stack = Stack(base, fleet, workdir, f"http://127.0.0.1:{api_port}")
        stack.procs = await start_services(SERVICES, env, workdir)
        try:
            async with httpx.AsyncClient(base_url=stack.api) as client:
                await eventually(lambda: client.get("/healthz"), timeout=20)
            yield stack
        finally:
            await stop_services(stack.procs, workdir)


@dataclass
class Prometheus:
    url: str
    workdir: Path

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector of ``promql`` now: [{"metric": {...}, "value": [ts, "v"]}]."""
        async with httpx.AsyncClient(base_url=self.url) as http:
            answer = await http.get("/api/v1/query", params={"query": promql})
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def values(self, promql: str, label: str) -> dict[str, float]:
        """``label`` -> value of each series of ``promql``."""
        return {item["metric"].get(label, ""): float(item["value"][1])
                for item in await self.query(promql)}


@pytest.fixture(scope="module")
def prometheus(stack: Stack, port_picker, port_waiter,  # type: ignore[no-untyped-def]
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    workdir = tmp_path_factory.mktemp("prometheus")
    port = port_picker()
    target = stack.api.removeprefix("http://")
    (workdir / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: minerwatch
    static_configs:
      - targets: ["{target}"]
""")
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [tool("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
         f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=log, cwd=workdir)
    try:
        port_waiter(port, timeout=30)
        yield Prometheus(f"http://127.0.0.1:{port}", workdir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def fetch_metrics(stack: Stack) -> str:
    async with httpx.AsyncClient(base_url=stack.api) as http:
        answer = await http.get("/metrics")
    assert answer.status_code == 200
    return answer.text


#: A series of each of the four services that only shows once it is running and reporting.
EVERY_SERVICE = ("minerwatch_collector_polls_total", "minerwatch_store_messages_total",
                 "minerwatch_alerts_evaluations_total", "minerwatch_api_websocket_clients")


async def test_promtool_finds_the_exposition_clean(stack: Stack) -> None:
    ids = {miner_id(m) for m in stack.fleet.miners}

    async def complete() -> str:
        text = await fetch_metrics(stack)
        missing = [name for name in EVERY_SERVICE if f"\n{name}" not in text]
        missing += [i for i in ids if f'minerwatch_hashrate_hashes_per_second{{miner="{i}"}}'
                    not in text]
        assert not missing, f"not yet in /metrics: {missing}\n{text[-3000:]}"
        return text

    text = await eventually(complete)
    checker = await asyncio.create_subprocess_exec(
        tool("promtool"), "check", "metrics", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    said, _ = await asyncio.wait_for(checker.communicate(text.encode()), 30)
    problems = said.decode().strip()
    assert checker.returncode == 0 and not problems, f"promtool check metrics:\n{problems}"


async def test_prometheus_sees_one_hashrate_series_per_simulated_miner(
        stack: Stack, prometheus: Prometheus) -> None:
    ids = {miner_id(m): m for m in stack.fleet.miners}
    assert len(ids) == MINERS

    async def scraped() -> dict[str, float]:
        found = await prometheus.values("minerwatch_hashrate_hashes_per_second", "miner")
        assert set(found) == set(ids), f"series of {sorted(found)}"
        return found

    hashrates = await eventually(scraped, timeout=45)
    assert len(await prometheus.query("minerwatch_hashrate_hashes_per_second")) == MINERS
    for mid, value in hashrates.items():
        truth = ids[mid].snapshot()["hashrate_ths"] * 1e12
        assert value == pytest.approx(truth, rel=0.2), mid
    assert await prometheus.values('up{job="minerwatch"}', "job") == {"minerwatch": 1.0}
    assert await prometheus.values("minerwatch_miner_up", "miner") == dict.fromkeys(ids, 1.0)
    makes = await prometheus.values('count by (make) (minerwatch_miner_info)', "make")
    assert sum(makes.values()) == MINERS and all(makes), makes
    fans = await prometheus.values('count by (miner) (minerwatch_fan_rpm)', "miner")
    assert set(fans) == set(ids) and all(count >= 1 for count in fans.values())
    temps = await prometheus.values("minerwatch_temperature_celsius", "sensor")
    assert "chip" in temps and all(0 < t < 150 for t in temps.values()), temps


async def test_prometheus_sees_every_services_own_health(
        stack: Stack, prometheus: Prometheus) -> None:
    async with websockets.connect(stack.api.replace("http://", "ws://") + "/ws") as ws:
        await ws.send(json.dumps({"subscribe": f"{stack.base}/miners/+/sample"}))

        async def reported() -> bool:
            up = await prometheus.values("minerwatch_service_up", "service")
            assert up == dict.fromkeys(SERVICES, 1.0), up
            for name in EVERY_SERVICE:
                assert await prometheus.query(name), f"{name} not scraped yet"
            clients = await prometheus.values("minerwatch_api_websocket_clients", "")
            assert clients == {"": 1.0}, clients
            # Rates need a window's worth of scrapes of the services' counters.
            for name in EVERY_SERVICE[:3]:
                scrapes = await prometheus.values(f"count_over_time({name}[6s])", "")
                assert scrapes.get("", 0) >= 6, (name, scrapes)
            return True

        await eventually(reported, timeout=45)

    async def one(promql: str) -> float:
        found = await prometheus.query(promql)
        assert len(found) == 1, (promql, found)
        return float(found[0]["value"][1])

    # The collector: every miner polled at about 1 / POLL_S, on time, none failing.
    assert await one("minerwatch_collector_miners") == MINERS
    polls = await one("rate(minerwatch_collector_polls_total[5s])")
    assert MINERS / POLL_S * 0.5 < polls < MINERS / POLL_S * 1.5, polls
    assert await one("sum(minerwatch_collector_poll_failures_total)") == 0
    lateness = await one("rate(minerwatch_collector_poll_lateness_seconds_sum[5s]) / "
                         "rate(minerwatch_collector_poll_lateness_seconds_count[5s])")
    assert 0 <= lateness < 0.5, lateness
    assert await one("minerwatch_collector_outbox_messages") < 100
    # The store: taking messages in about as fast as the collector sends them, committing.
    ingest = await one("rate(minerwatch_store_messages_total[5s])")
    assert ingest > MINERS / POLL_S * 0.5, ingest
    assert await one("minerwatch_store_rows_written_total") > 0
    assert await one("minerwatch_store_samples_written_total") > 0
    commit = await one("minerwatch_store_batch_commit_seconds_sum / "
                       "minerwatch_store_batch_commit_seconds_count")
    assert 0 < commit < 1, commit
    assert 0 <= await one("minerwatch_store_messages_held") < 1000
    # Alerts: judging every sample; a healthy simulated fleet fires nothing.
    evaluations = await one("rate(minerwatch_alerts_evaluations_total[5s])")
    assert evaluations > MINERS / POLL_S * 0.5, evaluations
    assert await one("minerwatch_alerts_firing") == 0
    assert await one("minerwatch_api_websocket_dropped_frames_total") == 0


async def test_a_miner_taken_offline_goes_down_and_its_hashrate_series_goes(
        stack: Stack, prometheus: Prometheus) -> None:
    dead = stack.fleet.by_name("cgminer-0")
    dead_id = miner_id(dead)
    others = {miner_id(m) for m in stack.fleet.miners} - {dead_id}
    await eventually(lambda: _up(prometheus, dead_id, 1.0), timeout=45)
    await dead.set_fault(Fault.REFUSE)
    try:
        async def gone() -> bool:
            await _up(prometheus, dead_id, 0.0)
            found = await prometheus.values("minerwatch_hashrate_hashes_per_second", "miner")
            assert set(found) == others, sorted(found)
            return True

        await eventually(gone, timeout=30)
        async def refused() -> bool:  # the stats come a stats interval and a scrape later
            failures = await prometheus.values("minerwatch_collector_poll_failures_total",
                                               "reason")
            assert failures.get("refused", 0) >= 3, failures
            return True

        await eventually(refused, timeout=15)
        # Its identity stays known; the others' readings go on.
        assert await prometheus.query(f'minerwatch_miner_info{{miner="{dead_id}"}}')
        assert not await prometheus.query(f'{{miner="{dead_id}", __name__!~'
                                          f'"minerwatch_miner_(up|info)"}}')
    finally:
        await dead.set_fault(Fault.NONE)
    await eventually(lambda: _up(prometheus, dead_id, 1.0), timeout=30)
    await eventually(lambda: _hashrate_of(prometheus, dead_id), timeout=30)


async def _up(prometheus: Prometheus, miner: str, value: float) -> bool:
    found = await prometheus.values(f'minerwatch_miner_up{{miner="{miner}"}}', "miner")
    assert found == {miner: value}, found
    return True


async def _hashrate_of(prometheus: Prometheus, miner: str) -> bool:
    found = await prometheus.query(
        f'minerwatch_hashrate_hashes_per_second{{miner="{miner}"}}')
    assert len(found) == 1, found
    return True
