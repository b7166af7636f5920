"""GET /metrics: the real app with its relay on a real broker, scraped over HTTP and read
back with prometheus-client's own parser.

Per miner: readings only while the miner's data is live, in base units, under the names
and labels ``shared.fields`` gives them; ``minerwatch_miner_up`` and ``minerwatch_miner_info``
for every miner. Per service: ``minerwatch_service_up``, the stats each publishes (only
what the registry admits, only while fresh and the service online), the api's own
WebSocket numbers. And the descriptions themselves: every reading has a metric (or says
why not), names follow Prometheus' naming guide, and the contract lists them all.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from minerwatch.api.metrics import (
    INFO_LABELS,
    MINER_INFO,
    MINER_UP,
    SAMPLE_METRICS,
    STALE_INTERVALS,
    fresh_stats,
)
from minerwatch.api.relay import SERVICES, Relay
from minerwatch.shared import fields, metrics
from minerwatch.shared.schemas import (
    MinerInfo,
    MinerStatus,
    Sample,
    ServiceStats,
    encode,
    format_ts,
    now_ts,
)

StartApi = Callable[..., Any]
Publish = Callable[..., Awaitable[None]]
#: (sample name, sorted labels) -> value
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]

CONTRACT = Path(__file__).resolve().parents[3] / "docs" / "contract.md"
SCRAPE_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def scrape(url: str, accept: str | None = None) -> tuple[str, str]:
    headers = {"accept": accept} if accept else {}
    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.headers["content-type"], answer.text


def series(text: str) -> Series:
    found: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in found, f"duplicate series {key}"
            found[key] = sample.value
    return found


def of(found: Series, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def names(found: Series, miner: str) -> set[str]:
    """The sample names that carry ``miner=<miner>``."""
    return {name for name, labels in found if ("miner", miner) in labels}


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await check()
            if result:
                return result
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        await asyncio.sleep(0.05)


def sample(miner_id: str, **changes: object) -> Sample:
    values: dict[str, Any] = dict(
        miner_id=miner_id, ts=now_ts(), hashrate_ths=1.25, expected_hashrate_ths=1.5,
        power_w=18.5, efficiency_jth=14.8, temp_c=61.5, vr_temp_c=48.0,
        fan_rpm=[4100, 3900], shares_accepted=1234, shares_rejected=5, best_diff=2.5e9,
        uptime_s=3600, pool_url="stratum+tcp://pool.example:3333", is_mining=True,
        pool_fallback=False, pool_connected=True, blocks_found=0)
    values.update(changes)
    return Sample(**values)


def status(state: str = "online", **changes: object) -> MinerStatus:
    values: dict[str, Any] = dict(state=state, since="2026-01-01T00:00:00.000Z",
                                  last_seen=now_ts(), failures=0)
    values.update(changes)
    return MinerStatus(**values)


def info(miner_id: str, **changes: object) -> MinerInfo:
    values: dict[str, Any] = dict(miner_id=miner_id, driver="axeos", host="10.0.0.5", port=80,
                                  make="Bitaxe", model="Gamma", firmware="v2.4.1",
                                  label="Garage \"Bitaxe\"")
    values.update(changes)
    return MinerInfo(**values)


async def miner(publish: Publish, base: str, miner_id: str, *, state: str = "online",
                with_sample: Sample | None = None) -> None:
    await publish(f"{base}/miners/{miner_id}/info", encode(info(miner_id)), retain=True)
    await publish(f"{base}/miners/{miner_id}/status", encode(status(state)), retain=True)
    await publish(f"{base}/miners/{miner_id}/sample",
                  encode(with_sample or sample(miner_id)), retain=True)


async def services_online(publish: Publish, base: str, *names: str) -> None:
    for name in names:
        await publish(f"{base}/services/{name}/status", "online", retain=True)


def stats_payload(service: str, *values: dict[str, Any]) -> bytes:
    return json.dumps({"service": service, "ts": now_ts(), "metrics": list(values)}).encode()


async def test_a_live_miner_is_exposed_in_base_units_under_the_fields_names(
        start_api: StartApi, publish: Publish, base_topic: str) -> None:
    await services_online(publish, base_topic, "collector")
    await miner(publish, base_topic, "bitaxe-1")
    async with start_api() as api:
        found = await eventually(lambda: _scraped_with(api.url, "bitaxe-1", "minerwatch_fan_rpm"))
        content_type, text = await scrape(api.url)
    assert content_type == SCRAPE_TYPE
    m = "bitaxe-1"
    assert of(found, MINER_UP, miner=m) == 1.0
    assert of(found, MINER_INFO, miner=m, make="Bitaxe", model="Gamma", firmware="v2.4.1",
              label='Garage "Bitaxe"') == 1.0
    assert of(found, "minerwatch_hashrate_hashes_per_second", miner=m) == 1.25e12
    assert of(found, "minerwatch_expected_hashrate_hashes_per_second", miner=m) == 1.5e12
    assert of(found, "minerwatch_power_watts", miner=m) == 18.5
    assert of(found, "minerwatch_efficiency_joules_per_hash", miner=m) == 14.8e-12
    assert of(found, "minerwatch_temperature_celsius", miner=m, sensor="chip") == 61.5
    assert of(found, "minerwatch_temperature_celsius", miner=m, sensor="vr") == 48.0
    assert of(found, "minerwatch_fan_rpm", miner=m, fan="0") == 4100
    assert of(found, "minerwatch_fan_rpm", miner=m, fan="1") == 3900
    assert of(found, "minerwatch_shares_total", miner=m, result="accepted") == 1234
    assert of(found, "minerwatch_shares_total", miner=m, result="rejected") == 5
    assert of(found, "minerwatch_best_difficulty", miner=m) == 2.5e9
    assert of(found, "minerwatch_uptime_seconds", miner=m) == 3600
    assert of(found, "minerwatch_mining", miner=m) == 1.0
    assert of(found, "minerwatch_pool_fallback", miner=m) == 0.0
    assert of(found, "minerwatch_pool_connected", miner=m) == 1.0
    assert of(found, "minerwatch_blocks_found_total", miner=m) == 0.0
    # Counters as Prometheus' text format types them.
    assert "# TYPE minerwatch_shares_total counter" in text
    assert "# TYPE minerwatch_temperature_celsius gauge" in text
    assert "# TYPE minerwatch_miner_info gauge" in text


async def _scraped_with(url: str, miner_id: str, name: str) -> Series | None:
    found = series((await scrape(url))[1])
    return found if name in names(found, miner_id) else None


async def test_missing_readings_are_left_out_not_zero(
        start_api: StartApi, publish: Publish, base_topic: str) -> None:
    await services_online(publish, base_topic, "collector")
    sparse = sample("antminer", power_w=None, vr_temp_c=None, fan_rpm=[], shares_rejected=None,
                    efficiency_jth=None, pool_fallback=None)
    await miner(publish, base_topic, "antminer", with_sample=sparse)
    async with start_api() as api:
        found = await eventually(lambda: _scraped_with(
            api.url, "antminer", "minerwatch_hashrate_hashes_per_second"))
    shown = names(found, "antminer")
    for absent in ("minerwatch_power_watts", "minerwatch_fan_rpm",
                   "minerwatch_efficiency_joules_per_hash", "minerwatch_pool_fallback"):
        assert absent not in shown, absent
    assert of(found, "minerwatch_temperature_celsius", miner="antminer", sensor="chip") == 61.5
    assert of(found, "minerwatch_temperature_celsius", miner="antminer", sensor="vr") is None
    assert of(found, "minerwatch_shares_total", miner="antminer", result="accepted") == 1234
    assert of(found, "minerwatch_shares_total", miner="antminer", result="rejected") is None


async def test_miners_whose_data_is_not_live_are_down_with_no_readings(
        start_api: StartApi, publish: Publish, base_topic: str) -> None:
    """Offline, stale (a sample older than three polls) and unknown (info only): up 0,
    their info kept, not one reading; the live miner beside them keeps its own."""
    await services_online(publish, base_topic, "collector")
    old = format_ts(datetime.now(UTC) - timedelta(seconds=120))
    await miner(publish, base_topic, "live")
    await miner(publish, base_topic, "down", state="offline")
    await publish(f"{base_topic}/miners/stale/status",
                  encode(status(last_seen=old)), retain=True)
    await publish(f"{base_topic}/miners/stale/sample", encode(sample("stale", ts=old)),
                  retain=True)
    await publish(f"{base_topic}/miners/unseen/info", encode(info("unseen", label=None)),
                  retain=True)
    async with start_api(poll_interval_s=10.0) as api:
        found = await eventually(lambda: _scraped_with(
            api.url, "unseen", MINER_UP))
    assert of(found, MINER_UP, miner="live") == 1.0
    for dead in ("down", "stale", "unseen"):
        assert of(found, MINER_UP, miner=dead) == 0.0, dead
        assert names(found, dead) <= {MINER_UP, MINER_INFO}, (dead, names(found, dead))
    assert of(found, MINER_INFO, miner="unseen", make="Bitaxe", model="Gamma",
              firmware="v2.4.1", label="unseen") == 1.0
    assert "minerwatch_hashrate_hashes_per_second" in names(found, "live")


async def test_an_idle_miner_is_up_and_a_collector_that_stopped_makes_every_miner_down(
        start_api: StartApi, publish: Publish, base_topic: str) -> None:
    await services_online(publish, base_topic, "collector")
    await miner(publish, base_topic, "resting", state="idle",
                with_sample=sample("resting", hashrate_ths=0.0, is_mining=False))
    async with start_api() as api:
        found = await eventually(lambda: _scraped_with(api.url, "resting", "minerwatch_mining"))
        assert of(found, MINER_UP, miner="resting") == 1.0
        assert of(found, "minerwatch_mining", miner="resting") == 0.0
        assert of(found, "minerwatch_hashrate_hashes_per_second", miner="resting") == 0.0
        await publish(f"{base_topic}/services/collector/status", "offline", retain=True)

        async def down() -> Series | None:
            got = series((await scrape(api.url))[1])
            return got if of(got, MINER_UP, miner="resting") == 0.0 else None

        found = await eventually(down)
    assert names(found, "resting") == {MINER_UP, MINER_INFO}
    assert of(found, "minerwatch_service_up", service="collector") == 0.0


async def _publish_three(publish: Publish, base: str) -> None:
    """Stats are not retained: published once the api listens."""
    await publish(f"{base}/services/collector/stats", stats_payload(
        "collector",
        {"name": "minerwatch_collector_polls_total", "value": 120},
        {"name": "minerwatch_collector_poll_failures_total", "value": 7,
         "labels": {"reason": "timeout"}},
        {"name": "minerwatch_collector_poll_lateness_seconds", "value": 0.25, "count": 120},
        {"name": "minerwatch_collector_miners", "value": 4}))
    await publish(f"{base}/services/store/stats", stats_payload(
        "store", {"name": "minerwatch_store_messages_held", "value": 3},
        {"name": "minerwatch_store_batch_commit_seconds", "value": 1.5, "count": 30}))
    await publish(f"{base}/services/alerts/stats", stats_payload(
        "alerts", {"name": "minerwatch_alerts_firing", "value": 2}))


async def _all_three(url: str) -> Series | None:
    got = series((await scrape(url))[1])
    wanted = ("minerwatch_alerts_firing", "minerwatch_store_messages_held",
              "minerwatch_collector_miners")
    return got if all(of(got, name) is not None for name in wanted) else None


async def test_service_stats_are_exposed_as_the_registry_says(
        start_api: StartApi, publish: Publish, base_topic: str) -> None:
    await services_online(publish, base_topic, "collector", "store", "alerts")
    async with start_api() as api:
        await _publish_three(publish, base_topic)
        found = await eventually(lambda: _all_three(api.url))
        _, text = await scrape(api.url)
    assert of(found, "minerwatch_collector_polls_total") == 120
    assert of(found, "minerwatch_collector_poll_failures_total", reason="timeout") == 7
    assert of(found, "minerwatch_collector_poll_lateness_seconds_sum") == 0.25
    assert of(found, "minerwatch_collector_poll_lateness_seconds_count") == 120
    assert of(found, "minerwatch_store_batch_commit_seconds_count") == 30
    assert of(found, "minerwatch_alerts_firing") == 2
    assert "# TYPE minerwatch_collector_poll_lateness_seconds summary" in text
    assert "# TYPE minerwatch_collector_polls_total counter" in text
    for name in ("collector", "store", "alerts", "api"):
        assert of(found, "minerwatch_service_up", service=name) == 1.0, name
    assert of(found, "minerwatch_api_websocket_clients") == 0
    assert of(found, "minerwatch_api_websocket_dropped_frames_total") == 0


async def test_hostile_stats_expose_nothing_the_registry_does_not_admit(
        start_api: StartApi, publish: Publish, base_topic: str) -> None:
    await services_online(publish, base_topic, "collector", "store")
    stats = f"{base_topic}/services/collector/stats"
    hostile = [
        stats_payload("collector",
                      {"name": "minerwatch_evil_total", "value": 1},  # unknown
                      {"name": "minerwatch_store_messages_total", "value": 1},  # not its own
                      {"name": "minerwatch_collector_poll_failures_total", "value": 1,
                       "labels": {"reason": "x" * 100}},  # a value outside the set
                      {"name": "minerwatch_collector_poll_failures_total", "value": 1},
                      {"name": "minerwatch_collector_polls_total", "value": -5},
                      {"name": "minerwatch_collector_polls_total", "value": 3,
                       "labels": {"extra": "1"}},
                      {"name": "minerwatch_collector_poll_lateness_seconds", "value": 1.0},
                      {"name": "minerwatch_collector_miners", "value": 1},
                      {"name": "minerwatch_collector_miners", "value": 999}),  # duplicate
        stats_payload("store", {"name": "minerwatch_store_messages_held", "value": 9}),
        json.dumps({"service": "collector", "ts": now_ts(), "metrics": [
            {"name": "minerwatch_collector_outbox_messages", "value": 1}] * 300}).encode(),
        b'{"service": "collector", "ts": "2026-13-45T00:00:00.000Z", "metrics": []}',
        b'{"service": "collector", "ts": "' + now_ts().encode() + b'", "metrics": '
        b'[{"name": "minerwatch_collector_miners", "value": 1e999}]}',
        b"[" * 5000 + b"]" * 5000,
        b"\xff\xfe",
        b"",
    ]
    async with start_api() as api:
        await publish(stats, hostile[0])

        async def admitted() -> Series | None:
            got = series((await scrape(api.url))[1])
            return got if of(got, "minerwatch_collector_miners") is not None else None

        found = await eventually(admitted)
        exposed = {name for name, _labels in found if name.startswith("minerwatch_collector")}
        assert exposed == {"minerwatch_collector_miners"}, exposed
        assert of(found, "minerwatch_collector_miners") == 1
        for payload in hostile[1:]:
            await publish(stats, payload)
        await publish(stats, stats_payload(
            "collector", {"name": "minerwatch_collector_miners", "value": 2}))
        found = await eventually(lambda: _with_value(api.url, "minerwatch_collector_miners", 2))
        assert not {name for name, _ in found if name.startswith("minerwatch_store")}
        assert api.relay.listening and api.relay.unforeseen == 0


async def _with_value(url: str, name: str, value: float) -> Series | None:
    got = series((await scrape(url))[1])
    return got if of(got, name) == value else None


async def test_stats_of_a_service_not_online_or_too_old_are_left_out(
        start_api: StartApi, publish: Publish, base_topic: str) -> None:
    await services_online(publish, base_topic, "collector")
    await publish(f"{base_topic}/services/store/status", "offline", retain=True)
    async with start_api() as api:
        for name, metric in (("collector", "minerwatch_collector_miners"),
                             ("store", "minerwatch_store_messages_held")):
            await publish(f"{base_topic}/services/{name}/stats",
                          stats_payload(name, {"name": metric, "value": 1}))
        found = await eventually(lambda: _with_value(api.url, "minerwatch_collector_miners", 1))
        assert of(found, "minerwatch_store_messages_held") is None
        assert api.relay.stats("store") is not None  # it came: left out for being offline
        assert of(found, "minerwatch_service_up", service="store") == 0.0
        # The same stats, judged a little more than STALE_INTERVALS intervals later.
        interval = 10.0
        later = time.monotonic() + STALE_INTERVALS * interval + 1
        assert "collector" in fresh_stats(api.relay, now=time.monotonic(),
                                          max_age_s=STALE_INTERVALS * interval)
        assert fresh_stats(api.relay, now=later, max_age_s=STALE_INTERVALS * interval) == {}


async def test_websocket_clients_and_their_dropped_frames_are_counted(
        start_api: StartApi, publish: Publish, base_topic: str) -> None:
    async with start_api(backlog_limit=2) as api, websockets.connect(api.ws_url):
        found = await eventually(lambda: _with_value(
            api.url, "minerwatch_api_websocket_clients", 1))
        assert of(found, "minerwatch_api_websocket_dropped_frames_total") == 0
        for n in range(5):
            await publish(f"{base_topic}/miners/m{n}/status", encode(status()))
        await eventually(lambda: _cached(api.relay, f"{base_topic}/miners/", 5))
        # A client of the relay that never reads: its backlog of 2 holds the notice and
        # one of the five statuses replayed; the other four are dropped.
        slow = api.relay.attach()
        api.relay.subscribe(slow, f"{base_topic}/miners/+/status")
        found = await eventually(lambda: _with_value(
            api.url, "minerwatch_api_websocket_clients", 2))
        dropped = of(found, "minerwatch_api_websocket_dropped_frames_total")
        assert dropped == 4, dropped
        api.relay.detach(slow)
        found = await eventually(lambda: _with_value(
            api.url, "minerwatch_api_websocket_clients", 1))
        # The client is gone; what it lost still counts.
        assert of(found, "minerwatch_api_websocket_dropped_frames_total") == dropped


async def _cached(relay: Relay, prefix: str, count: int) -> bool:
    return len(list(relay.cached(prefix))) == count


async def test_openmetrics_is_served_when_the_scraper_asks_for_it(
        start_api: StartApi, publish: Publish, base_topic: str) -> None:
    await services_online(publish, base_topic, "collector")
    await miner(publish, base_topic, "om")
    async with start_api() as api:
        await eventually(lambda: _scraped_with(api.url, "om", "minerwatch_fan_rpm"))
        content_type, text = await scrape(
            api.url, "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert text.endswith("# EOF\n")
    assert 'minerwatch_shares_total{miner="om",result="accepted"} 1234.0' in text
    assert "# TYPE minerwatch_miner info" in text


# --- the descriptions -------------------------------------------------------------------

#: Readings deliberately not exported, and why. Text is never a metric (``kind`` text).
NOT_EXPORTED: dict[str, str] = {}


def test_every_reading_has_a_metric_or_says_why_not() -> None:
    missing = [f.name for f in fields.SAMPLE_FIELDS
               if f.kind != "text" and f.prometheus is None and f.name not in NOT_EXPORTED]
    assert not missing, f"fields without a metric and without a reason: {missing}"
    assert all(f.prometheus is None for f in fields.SAMPLE_FIELDS if f.kind == "text")
    assert set(NOT_EXPORTED) <= set(fields.FIELDS)


def test_fields_sharing_a_metric_agree_and_differ_only_in_their_labels() -> None:
    for metric in SAMPLE_METRICS:
        kinds = {f.kind == "counter" for f in metric.fields}
        keys = {tuple(k for k, _ in f.prometheus_labels) for f in metric.fields}
        items = {f.prometheus_item for f in metric.fields}
        assert len(kinds) == len(keys) == len(items) == 1, metric.name
        if len(metric.fields) > 1:
            assert keys != {()}, f"{metric.name}: shared without labels to tell apart"
        assert all(f.prometheus_item is None or f.type == "list[int]" for f in metric.fields)


def test_names_follow_prometheus_naming() -> None:
    counters = [m.name for m in SAMPLE_METRICS if m.counter]
    counters += [s.name for s in metrics.SERVICE_METRICS if s.type == "counter"]
    others = [m.name for m in SAMPLE_METRICS if not m.counter]
    others += [s.name for s in metrics.SERVICE_METRICS if s.type != "counter"]
    assert all(name.endswith("_total") for name in counters), counters
    assert not [name for name in others if name.endswith("_total")]
    every = counters + others + [MINER_UP, MINER_INFO]
    assert all(name.startswith("minerwatch_") for name in every)
    assert len(every) == len(set(every))
    for unit in ("_ms", "milliseconds", "minutes", "_th", "terahash", "_kw", "percent"):
        assert not [name for name in every if unit in name], unit
    assert metrics.SERVICES == SERVICES
    assert INFO_LABELS == ("make", "model", "firmware", "label")


def test_the_contract_lists_every_metric() -> None:
    text = CONTRACT.read_text()
    every = [m.name for m in SAMPLE_METRICS] + [s.name for s in metrics.SERVICE_METRICS]
    every += [MINER_UP, MINER_INFO]
    missing = [name for name in every if f"`{name}" not in text]
    assert not missing, f"docs/contract.md lacks {missing}"


def test_stats_round_trip_through_the_registry() -> None:
    """What a service builds with ``stat`` the decode path keeps as it was."""
    from minerwatch.shared.messages import Received, decode_message

    built = [metrics.stat("minerwatch_collector_poll_failures_total", 3, reason="refused"),
             metrics.stat("minerwatch_collector_poll_lateness_seconds", 1.5, count=4)]
    payload = encode(ServiceStats(service="collector", ts=now_ts(), metrics=built))
    decoded = decode_message("mw", "mw/services/collector/stats", payload)
    assert isinstance(decoded, Received) and isinstance(decoded.message, ServiceStats)
    assert decoded.message.metrics == built
    assert decoded.spec.qos == 0 and not decoded.spec.retained
    with pytest.raises(ValueError):
        metrics.stat("minerwatch_collector_polls_total", 1, reason="timeout")  # no labels
    with pytest.raises(ValueError):
        metrics.stat("minerwatch_collector_poll_lateness_seconds", 1.0)  # no count
    with pytest.raises(ValueError):
        metrics.stat("minerwatch_nope", 1)
