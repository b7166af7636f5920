"""GET /api/miners and GET /api/miners/{id}/samples (raw) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from minerwatch.shared.schemas import MinerInfo, MinerStatus, Sample, format_ts

StartApi = Callable[..., Any]
Seed = Callable[..., Awaitable[None]]

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


@pytest.fixture
def db_url(any_db_url: str) -> str:
    return any_db_url


def ts(seconds: float) -> str:
    return format_ts(T0 + timedelta(seconds=seconds))


@pytest.fixture
def history(make_sample: Callable[..., Sample]) -> Callable[..., list[Sample]]:
    """``history(miner_id, count, step_s=10)``: samples from 10:00:00 on, hashrate rising."""

    def build(miner_id: str, count: int, *, step_s: float = 10) -> list[Sample]:
        return [
            make_sample(miner_id, ts(i * step_s), hashrate_ths=1 + i / 100) for i in range(count)
        ]

    return build


async def test_miners_lists_info_status_and_latest_sample(
    start_api: StartApi, db_url: str, seed: Seed, history: Callable[..., list[Sample]]
) -> None:
    info = MinerInfo(miner_id="bitaxe-1", driver="axeos", host="10.0.0.5", port=80, make="Bitaxe",
                     model="Gamma", firmware="v2.4.0", hostname="bitaxe", mac="aa:bb:cc:dd:ee:ff")
    status = MinerStatus(state="online", since=ts(0), last_seen=ts(20), failures=0)
    offline = MinerStatus(state="offline", reason="connection refused", since=ts(5), failures=3)
    await seed(
        db_url,
        sample_rows=[*history("bitaxe-1", 3), *history("s19", 2, step_s=7)],
        infos=[info],
        statuses=[("bitaxe-1", status), ("nerd-2", offline)],
    )
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        response = await http.get("/api/miners")

    assert response.status_code == 200
    body = response.json()
    assert [entry["miner_id"] for entry in body] == ["bitaxe-1", "nerd-2", "s19"]
    bitaxe, nerd, s19 = body
    assert bitaxe["info"] == {"miner_id": "bitaxe-1", "driver": "axeos", "host": "10.0.0.5",
                              "port": 80, "make": "Bitaxe", "model": "Gamma",
                              "firmware": "v2.4.0", "hostname": "bitaxe",
                              "mac": "aa:bb:cc:dd:ee:ff", "label": None}
    assert bitaxe["status"] == {"state": "online", "reason": None,
                                "since": "2026-11-22T10:00:00.000Z",
                                "last_seen": "2026-11-22T10:00:20.000Z", "failures": 0}
    # The latest sample, in exactly the schema-1 payload shape of the MQTT topic.
    assert bitaxe["sample"]["schema"] == 1
    assert bitaxe["sample"]["ts"] == "2026-11-22T10:00:20.000Z"
    assert bitaxe["sample"]["hashrate_ths"] == 1.02
    assert set(bitaxe["sample"]) == set(Sample.__struct_fields__)
    # A status without info, and samples without any miners row, are miners too.
    assert nerd["info"] is None and nerd["sample"] is None
    assert nerd["status"]["state"] == "offline" and nerd["status"]["reason"] == "connection refused"
    assert nerd["status"]["failures"] == 3 and nerd["status"]["last_seen"] is None
    assert s19["info"] is None and s19["status"] is None
    assert s19["sample"]["ts"] == "2026-11-22T10:00:07.000Z"


async def test_miners_is_empty_before_the_store_ever_ran(start_api: StartApi) -> None:
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        response = await http.get("/api/miners")
    assert response.status_code == 200
    assert response.json() == []


async def test_samples_default_to_the_latest_oldest_first(
    start_api: StartApi, db_url: str, seed: Seed, history: Callable[..., list[Sample]]
) -> None:
    await seed(db_url, sample_rows=history("bitaxe-1", 30) + history("other", 5))
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        everything = (await http.get("/api/miners/bitaxe-1/samples")).json()
        latest = (await http.get("/api/miners/bitaxe-1/samples", params={"limit": 5})).json()

    assert [s["ts"] for s in everything] == [ts(i * 10) for i in range(30)]
    assert {s["miner_id"] for s in everything} == {"bitaxe-1"}
    assert everything[0] == {
        "schema": 1, "miner_id": "bitaxe-1", "ts": "2026-11-22T10:00:00.000Z", "hashrate_ths": 1.0,
        "expected_hashrate_ths": None, "power_w": 15.0, "efficiency_jth": 15.0, "temp_c": 55.0,
        "vr_temp_c": None, "fan_rpm": [4200], "shares_accepted": 100, "shares_rejected": 1,
        "best_diff": None, "uptime_s": None, "pool_url": None, "is_mining": True,
        "pool_fallback": None, "pool_connected": None, "blocks_found": None,
    }
    # Without `since`: the LATEST `limit` samples, still oldest first.
    assert [s["ts"] for s in latest] == [ts(i * 10) for i in range(25, 30)]


async def test_samples_since_until_and_limit(
    start_api: StartApi, db_url: str, seed: Seed, history: Callable[..., list[Sample]]
) -> None:
    await seed(db_url, sample_rows=history("bitaxe-1", 30))  # 10:00:00 .. 10:04:50, every 10 s
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:

        async def times(**params: object) -> list[str]:
            response = await http.get("/api/miners/bitaxe-1/samples", params=params)
            assert response.status_code == 200, response.text
            return [s["ts"] for s in response.json()]

        # With `since` and more matches than `limit`: the FIRST `limit` from `since` on.
        assert await times(since="2026-11-22T10:01:00Z", limit=3) == [ts(60), ts(70), ts(80)]
        # Bounds are inclusive; an offset is honoured, naive means UTC.
        assert await times(since="2026-11-22T12:01:00+02:00", until="2026-11-22T10:01:20") == [
            ts(60), ts(70), ts(80)]
        assert await times(since="2026-11-22T10:01:00", until="2026-11-22T05:01:20-05:00") == [
            ts(60), ts(70), ts(80)]
        # Only `until`: the latest `limit` up to it.
        assert await times(until="2026-11-22T10:01:00.000Z", limit=2) == [ts(50), ts(60)]
        # A bound between two milliseconds does not pull in the sample before it.
        assert await times(since="2026-11-22T10:01:00.0005Z", limit=1) == [ts(70)]
        assert await times(since="2026-11-22T11:00:00Z") == []
        assert len(await times(limit=10000)) == 30


async def test_bad_parameters_get_400_naming_the_parameter(
    start_api: StartApi, db_url: str, seed: Seed, history: Callable[..., list[Sample]]
) -> None:
    await seed(db_url, sample_rows=history("bitaxe-1", 3))
    cases = {
        "since=yesterday": "since",
        "until=2026-13-01T00:00:00Z": "until",
        "since=2026-11-22T11:00:00Z&until=2026-11-22T10:00:00Z": "since",
        "limit=0": "limit",
        "limit=100000": "limit",
        "limit=ten": "limit",
    }
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        for query, parameter in cases.items():
            response = await http.get(f"/api/miners/bitaxe-1/samples?{query}")
            assert response.status_code == 400, query
            detail = response.json()["detail"]
            assert detail.startswith(parameter), (query, detail)
            assert "\n" not in detail
        bad_id = await http.get("/api/miners/Not%20A%20Miner/samples")
        unknown = await http.get("/api/miners/ghost/samples")

    assert bad_id.status_code == 400
    assert bad_id.json()["detail"].startswith("miner_id")
    assert unknown.status_code == 404
    assert "ghost" in unknown.json()["detail"]


async def test_known_miner_without_samples_in_range_is_an_empty_list(
    start_api: StartApi, db_url: str, seed: Seed, history: Callable[..., list[Sample]]
) -> None:
    await seed(db_url, statuses=[("nerd-2", MinerStatus(state="idle", since=ts(0)))])
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        response = await http.get("/api/miners/nerd-2/samples")
    assert response.status_code == 200
    assert response.json() == []


async def test_openapi_documents_the_endpoints(start_api: StartApi) -> None:
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        response = await http.get("/schema/openapi.json")
        config = await http.get("/api/config")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.")
    assert {"/api/miners", "/api/miners/{miner_id}/samples", "/healthz", "/api/config"} <= set(
        spec["paths"])
    sample = spec["components"]["schemas"]["Sample"]
    assert {"hashrate_ths", "ts", "fan_rpm", "is_mining"} <= set(sample["properties"])
    entry = spec["components"]["schemas"]["MinerEntry"]
    assert set(entry["properties"]) == {"miner_id", "label", "state", "state_since",
                                        "last_seen", "info", "status", "sample", "alerts"}
    assert config.json() == {"base_topic": api.base, "poll_interval_s": 10.0,
                             "stale_after_s": 30.0}
