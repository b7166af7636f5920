"""GET /api/miners tells the truth: stale when the collector is gone or a miner's samples
stopped, last_seen the latest of status and sample, retained state over a lagging store,
and firing alerts with each miner. Real broker, real SQLite, real HTTP."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from minerwatch.shared.schemas import (
    AlertEvent,
    MinerInfo,
    MinerStatus,
    Sample,
    encode,
    format_ts,
)

StartApi = Callable[..., Any]
Publish = Callable[..., Awaitable[None]]
Seed = Callable[..., Awaitable[None]]

#: A collector as far as MQTT can tell: the shared link announcing "collector" online,
#: with "offline" as its Will. Killed with SIGKILL, the broker publishes the Will.
COLLECTOR_STANDIN = """
import asyncio, sys
from minerwatch.shared.config import MqttConfig
from minerwatch.shared.mqtt import MqttLink

async def main() -> None:
    link = MqttLink(MqttConfig(url=sys.argv[1], base_topic=sys.argv[2]), "collector")

    async def session(client) -> None:
        print("online", flush=True)
        await asyncio.Event().wait()

    await link.run(session)

asyncio.run(main())
"""


def ago(seconds: float) -> str:
    return format_ts(datetime.now(UTC) - timedelta(seconds=seconds))


def info(miner_id: str, label: str | None = None) -> bytes:
    return encode(MinerInfo(miner_id=miner_id, driver="axeos", host="10.0.0.5", port=80,
                            make="Bitaxe", model="Gamma", label=label))


def status(state: str, since: str, last_seen: str | None = None, **fields: Any) -> bytes:
    return encode(MinerStatus(state=state, since=since, last_seen=last_seen,  # type: ignore[arg-type]
                              **fields))


def sample(miner_id: str, ts: str, **fields: Any) -> bytes:
    return encode(Sample(miner_id=miner_id, ts=ts, hashrate_ths=1.2, **fields))


async def miners(url: str) -> dict[str, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/api/miners")
    assert response.status_code == 200, response.text
    return {entry["miner_id"]: entry for entry in response.json()}


async def until_states(url: str, expected: dict[str, str], timeout: float = 10.0
                       ) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        fleet = await miners(url)
        states = {miner_id: entry["state"] for miner_id, entry in fleet.items()}
        if states == expected:
            return fleet
        assert time.monotonic() < deadline, f"/api/miners stayed {states}, expected {expected}"
        await asyncio.sleep(0.05)


async def announce_live_miner(publish: Publish, base: str, miner_id: str, *,
                              sample_age_s: float = 0.0) -> None:
    await publish(f"{base}/miners/{miner_id}/info", info(miner_id), retain=True)
    await publish(f"{base}/miners/{miner_id}/status",
                  status("online", ago(600), ago(sample_age_s)), retain=True)
    await publish(f"{base}/miners/{miner_id}/sample", sample(miner_id, ago(sample_age_s)),
                  retain=True)


async def say(publish: Publish, base: str, state: str, *services: str) -> None:
    for service in services:
        await publish(f"{base}/services/{service}/status", state, retain=True)


async def test_killing_the_collector_degrades_healthz_and_makes_every_miner_stale(
    start_api: StartApi, publish: Publish, broker: Any, base_topic: str
) -> None:
    await say(publish, base_topic, "online", "store", "alerts")
    for miner_id in ("bitaxe-1", "s19"):
        await announce_live_miner(publish, base_topic, miner_id)
    collector = await asyncio.create_subprocess_exec(
        sys.executable, "-c", COLLECTOR_STANDIN, broker.url, base_topic,
        stdout=asyncio.subprocess.PIPE)
    try:
        assert collector.stdout is not None
        assert await asyncio.wait_for(collector.stdout.readline(), 15) == b"online\n"
        async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
            fleet = await until_states(api.url, {"bitaxe-1": "online", "s19": "online"})
            assert fleet["s19"]["state_since"] == fleet["s19"]["status"]["since"]
            assert (await http.get("/healthz")).json()["status"] == "ok"

            collector.send_signal(signal.SIGKILL)
            await collector.wait()
            fleet = await until_states(api.url, {"bitaxe-1": "stale", "s19": "stale"})
            health = await http.get("/healthz")
    finally:
        if collector.returncode is None:
            collector.kill()
            await collector.wait()
    for entry in fleet.values():
        # Stale since the last time live data came; the numbers are still there to see.
        assert entry["state_since"] == entry["last_seen"] == entry["sample"]["ts"]
        assert entry["status"]["state"] == "online"
    assert health.status_code == 200  # the api itself is fine
    body = health.json()
    assert body["status"] == "degraded"
    assert body["services"]["collector"]["state"] == "offline"
    assert body["services"]["store"]["state"] == "online"


async def test_collector_publishing_offline_makes_miners_stale_and_online_again(
    start_api: StartApi, publish: Publish, base_topic: str
) -> None:
    await say(publish, base_topic, "online", "collector", "store", "alerts")
    await announce_live_miner(publish, base_topic, "bitaxe-1")
    await publish(f"{base_topic}/miners/nerd-2/status",
                  status("offline", ago(300), ago(320), reason="timeout after 5 s"),
                  retain=True)
    async with start_api() as api:
        fleet = await until_states(api.url, {"bitaxe-1": "online", "nerd-2": "offline"})
        # An offline miner stays offline, since its status's since, while the collector runs.
        assert fleet["nerd-2"]["state_since"] == fleet["nerd-2"]["status"]["since"]
        await say(publish, base_topic, "offline", "collector")
        fleet = await until_states(api.url, {"bitaxe-1": "stale", "nerd-2": "stale"})
        assert fleet["nerd-2"]["state_since"] == fleet["nerd-2"]["last_seen"]
        await say(publish, base_topic, "online", "collector")
        await until_states(api.url, {"bitaxe-1": "online", "nerd-2": "offline"})


async def test_a_miner_whose_samples_stopped_turns_stale_after_three_polls(
    start_api: StartApi, publish: Publish, base_topic: str
) -> None:
    await say(publish, base_topic, "online", "collector")
    await announce_live_miner(publish, base_topic, "bitaxe-1")
    await announce_live_miner(publish, base_topic, "old-one", sample_age_s=5.0)
    # poll 1 s: a sample is live for 3 s
    async with start_api(poll_interval_s=1.0) as api, httpx.AsyncClient(base_url=api.url) as http:
        config = (await http.get("/api/config")).json()
        assert (config["poll_interval_s"], config["stale_after_s"]) == (1.0, 3.0)
        first = await miners(api.url)
        assert first["old-one"]["state"] == "stale"
        assert first["old-one"]["state_since"] == first["old-one"]["sample"]["ts"]
        fleet = await until_states(api.url, {"bitaxe-1": "stale", "old-one": "stale"})
        assert first["bitaxe-1"]["state"] == "online"
        assert fleet["bitaxe-1"]["state_since"] == fleet["bitaxe-1"]["sample"]["ts"]
        # A new sample: live again, and in the status's state since the status's since.
        await publish(f"{base_topic}/miners/bitaxe-1/sample", sample("bitaxe-1", ago(0)),
                      retain=True)
        fleet = await until_states(api.url, {"bitaxe-1": "online", "old-one": "stale"})
        assert fleet["bitaxe-1"]["state_since"] == fleet["bitaxe-1"]["status"]["since"]


async def test_last_seen_label_and_the_newer_of_store_and_broker(
    start_api: StartApi, publish: Publish, base_topic: str, db_url: str, seed: Seed,
    make_sample: Callable[..., Sample],
) -> None:
    await say(publish, base_topic, "online", "collector")
    # The store lags: its newest sample is a minute old; the broker has a fresh one.
    stored = make_sample("bitaxe-1", ago(60), hashrate_ths=0.5)
    await seed(db_url, sample_rows=[stored, make_sample("archived", ago(3600))],
               infos=[MinerInfo(miner_id="bitaxe-1", driver="axeos", host="10.0.0.5",
                                port=80)],
               statuses=[("bitaxe-1", MinerStatus(state="online", since=ago(900),
                                                  last_seen=ago(60)))])
    fresh_ts, status_seen = ago(2), ago(1)
    await publish(f"{base_topic}/miners/bitaxe-1/sample", sample("bitaxe-1", fresh_ts),
                  retain=True)
    await publish(f"{base_topic}/miners/bitaxe-1/status",
                  status("online", ago(900), status_seen), retain=True)
    await publish(f"{base_topic}/miners/bitaxe-1/info", info("bitaxe-1", "Garage Bitaxe"),
                  retain=True)
    async with start_api() as api:
        fleet = await until_states(api.url, {"bitaxe-1": "online", "archived": "stale"})
    bitaxe = fleet["bitaxe-1"]
    assert bitaxe["sample"]["ts"] == fresh_ts and bitaxe["sample"]["hashrate_ths"] == 1.2
    # last_seen: the later of the status's last_seen and the sample's ts.
    assert bitaxe["last_seen"] == status_seen
    assert bitaxe["label"] == "Garage Bitaxe" == bitaxe["info"]["label"]
    # Known only from an old stored sample: no label of its own, and not live.
    archived = fleet["archived"]
    assert archived["label"] == "archived"
    assert archived["status"] is None and archived["state_since"] == archived["sample"]["ts"]


async def test_firing_alerts_come_with_their_miner(
    start_api: StartApi, publish: Publish, base_topic: str
) -> None:
    await say(publish, base_topic, "online", "collector")
    await announce_live_miner(publish, base_topic, "bitaxe-1")
    for rule, state in (("temp_high", "firing"), ("fan_failure", "resolved"),
                        ("hashrate_low", "firing")):
        await publish(f"{base_topic}/alerts/bitaxe-1/{rule}", encode(AlertEvent(
            miner_id="bitaxe-1", rule=rule, state=state, severity="warning",  # type: ignore[arg-type]
            value=1.0, threshold=2.0, message=f"{rule} {state}", ts=ago(5))), retain=True)
    async with start_api() as api:
        deadline = time.monotonic() + 10
        while len((fleet := await miners(api.url)).get("bitaxe-1", {}).get("alerts", [])) < 2:
            assert time.monotonic() < deadline, fleet
            await asyncio.sleep(0.05)
    alerts = fleet["bitaxe-1"]["alerts"]
    assert [(a["rule"], a["state"], a["muted"]) for a in alerts] == [
        ("hashrate_low", "firing", False), ("temp_high", "firing", False)]
