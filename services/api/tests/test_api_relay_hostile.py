"""The live relay under hostile MQTT input, through a real broker and real WebSocket clients:
nothing stops it, nothing invalid reaches a client, rejects are counted and logged, and the
retained-state cache stays bounded."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from minerwatch.api import relay as relay_module
from minerwatch.shared.schemas import AlertEvent, MinerInfo, MinerStatus, Sample, encode

StartApi = Callable[..., Any]
Publish = Callable[..., Awaitable[None]]
BulkPublish = Callable[..., Awaitable[None]]

TS = "2026-11-22T10:00:00.000Z"


def sample(miner_id: str, hashrate_ths: float, **fields: Any) -> bytes:
    return encode(Sample(miner_id=miner_id, ts=TS, hashrate_ths=hashrate_ths, **fields))


def hostile_payloads(miner_id: str) -> dict[str, bytes]:
    """Today's attacks, each of which once ended the relay for good."""
    head = f'{{"schema":1,"miner_id":"{miner_id}","ts":"{TS}","hashrate_ths":1.0'.encode()
    return {
        "surrogate": head + b',"pool_url":"\xed\xa0\x80"}',
        "brackets": b"[" * 5000 + b"]" * 5000,
        "deep extra field": head + b',"extra":' + b"[" * 1000 + b"]" * 1000 + b"}",
    }


def hostile_messages(base: str, miner_id: str) -> list[tuple[str, bytes]]:
    """Every hostile payload on every topic the relay reads, each on a topic of its own
    (so that, retained, all of them stay at the broker)."""
    messages = []
    for n, payload in enumerate(hostile_payloads(miner_id).values()):
        miner = f"{miner_id}-{n}"
        messages += [(f"{base}/miners/{miner}/sample", payload),
                     (f"{base}/miners/{miner}/status", payload),
                     (f"{base}/miners/{miner}/info", payload),
                     (f"{base}/alerts/{miner}/overheat", payload),
                     (f"{base}/services/{miner}/status", payload)]
    return messages


async def receive(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def subscribe(ws: ClientConnection, topic_filter: str) -> None:
    await ws.send(json.dumps({"subscribe": topic_filter}))
    assert await receive(ws) == {"subscribed": topic_filter}


async def health(url: str) -> dict[str, str]:
    """The api's own part of /healthz: its broker link and database."""
    async with httpx.AsyncClient(base_url=url) as http:
        body = (await http.get("/healthz")).json()
    return {"broker": body["broker"], "database": body["database"]}


async def wait_for(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.02)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_hostile_payloads_neither_stop_the_relay_nor_reach_clients(
    start_api: StartApi, publish: Publish, base_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="minerwatch.api.relay")
    base = base_topic
    # Retained before the api starts: the relay meets them on every (re)subscription.
    retained_hostile = hostile_messages(base, "evil")
    for topic, payload in retained_hostile:
        await publish(topic, payload, retain=True)
    good_retained = sample("good-0", 1.0)
    await publish(f"{base}/miners/good-0/sample", good_retained, retain=True)

    async with start_api() as api:
        relay = api.relay
        await wait_for(lambda: relay.rejects.total >= len(retained_hostile), what="the rejects")
        await wait_for(lambda: f"{base}/miners/good-0/sample" in relay.retained)
        assert await health(api.url) == {"broker": "up", "database": "up"}
        assert set(relay.retained) == {f"{base}/miners/good-0/sample",
                                       f"{base}/services/api/status"}

        async with websockets.connect(api.ws_url) as ws:
            await subscribe(ws, f"{base}/#")
            replay = [await receive(ws), await receive(ws)]
            assert sorted(replay, key=lambda m: m["topic"]) == [
                {"topic": f"{base}/miners/good-0/sample", "payload": json.loads(good_retained)},
                {"topic": f"{base}/services/api/status", "payload": "online"},
            ]
            # Live, retained and not, interleaved with valid samples of other miners.
            for i in range(1, 21):
                topic, payload = retained_hostile[i % len(retained_hostile)]
                await publish(topic, payload, retain=i % 2 == 0)
                await publish(f"{base}/miners/good-{i}/sample", sample(f"good-{i}", float(i)))
            received = [await receive(ws) for _ in range(20)]
            assert [m["topic"] for m in received] == [
                f"{base}/miners/good-{i}/sample" for i in range(1, 21)]
            assert [m["payload"]["hashrate_ths"] for m in received] == [
                float(i) for i in range(1, 21)]

        assert await health(api.url) == {"broker": "up", "database": "up"}
        assert relay.listening and relay.unforeseen == 0
        assert relay.rejects.total == len(retained_hostile) + 20
        assert set(relay.rejects.counts) == {"sample", "status", "info", "alert", "service"}
    warned = [r.getMessage() for r in caplog.records if r.name == "minerwatch.api.relay"]
    assert any(line.startswith("bad sample message ignored: ") for line in warned), warned
    assert all("\n" not in line for line in warned)

    # Clean the shared broker's retained store of what this test left there.
    for topic, _payload in retained_hostile:
        await publish(topic, b"", retain=True)


async def test_the_relay_survives_an_exception_raised_while_handling_a_message(
    start_api: StartApi, publish: Publish, base_topic: str,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The last-resort guard: an error nobody foresaw, raised from inside the handling of
    one message, drops that message (logged with its traceback) and nothing else."""
    frame = relay_module.message_frame

    def breaking_frame(topic: str, message: Any) -> str:
        if "/boom/" in topic:
            raise RuntimeError("an unforeseen bug")
        return frame(topic, message)

    monkeypatch.setattr(relay_module, "message_frame", breaking_frame)
    base = base_topic
    async with start_api() as api, websockets.connect(api.ws_url) as ws:
        await subscribe(ws, f"{base}/miners/+/sample")
        for _ in range(3):
            await publish(f"{base}/miners/boom/sample", sample("boom", 1.0))
        await publish(f"{base}/miners/fine/sample", sample("fine", 2.0))
        message = await receive(ws)
        assert message["topic"] == f"{base}/miners/fine/sample"
        assert message["payload"]["hashrate_ths"] == 2.0
        assert api.relay.unforeseen == 3
        assert api.relay.listening
        assert (await health(api.url))["broker"] == "up"
    errors = [r for r in caplog.records if r.getMessage().startswith("unexpected error relaying")]
    assert len(errors) == 1, "logged once per interval, not once per message"
    assert errors[0].exc_info is not None and "an unforeseen bug" in errors[0].getMessage()


async def test_junk_topics_leave_the_cache_bounded(
    start_api: StartApi, own_broker: Any, base_topic: str, bulk_publish: BulkPublish
) -> None:
    """100,000 distinct junk topics, a quarter of them retained: none is cached, the api's
    memory stays flat, and valid messages still come through."""
    base = base_topic
    count = 100_000
    junk_kinds = [
        lambda i: (f"{base}/junk/{i}", b'{"x": 1}'),  # not a registry topic
        lambda i: (f"{base}/miners/BAD{i}/sample", sample("bad", 1.0)),  # bad miner id
        lambda i: (f"{base}/miners/j{i}/info", b'{"miner_id": "j"}'),  # invalid payload
        lambda i: (f"{base}/miners/j{i}/sample", hostile_payloads(f"j{i}")["surrogate"]),
    ]
    junk = [(*junk_kinds[i % len(junk_kinds)](i), i % 4 == 1) for i in range(count)]
    async with start_api(broker_url=own_broker.url) as api, \
            websockets.connect(api.ws_url) as ws:
        relay = api.relay
        await subscribe(ws, f"{base}/miners/+/sample")
        before_mb = rss_mb()
        # The valid sample comes last, from the same connection: it arrives after the junk.
        await bulk_publish(own_broker, [*junk, (f"{base}/miners/real/sample",
                                                sample("real", 7.0), False)])
        message = await receive(ws, timeout=60)
        assert message["topic"] == f"{base}/miners/real/sample"
        assert relay.rejects.total == count
        grown_mb = rss_mb() - before_mb
        print(f"\njunk: {relay.rejects.total} rejected, {len(relay.retained)} topics cached "
              f"({relay.cached_bytes / 1e3:.1f} kB), memory grew {grown_mb:.1f} MB")
        assert set(relay.retained) == {f"{base}/miners/real/sample",
                                       f"{base}/services/api/status"}
        assert relay.uncached == 0
        assert grown_mb < 40, f"the api's memory grew {grown_mb:.1f} MB"
        assert (await health(api.url))["broker"] == "up"


async def test_past_its_bound_the_cache_keeps_known_topics_and_refuses_new_ones(
    start_api: StartApi, own_broker: Any, base_topic: str, bulk_publish: BulkPublish,
    caplog: pytest.LogCaptureFixture
) -> None:
    base = base_topic
    bound = 50
    async with start_api(broker_url=own_broker.url,
                         relay_options={"max_cached_topics": bound}) as api, \
            websockets.connect(api.ws_url) as ws:
        relay = api.relay
        await subscribe(ws, f"{base}/miners/+/sample")
        await bulk_publish(own_broker, [(f"{base}/miners/m{i}/sample",
                                         sample(f"m{i}", float(i)), True) for i in range(200)])
        seen = [await receive(ws) for _ in range(200)]
        # Every message was relayed live, cached or not.
        assert [m["payload"]["hashrate_ths"] for m in seen] == [float(i) for i in range(200)]
        assert len(relay.retained) == bound
        assert relay.uncached == 200 - (bound - 1)  # the api's own status took one place
        full = [r for r in caplog.records if "cache of retained state is full" in r.message]
        assert len(full) == 1, "said once"
        # A topic already cached still takes its newer state; a deletion makes room.
        await bulk_publish(own_broker, [
            (f"{base}/miners/m0/sample", sample("m0", 99.0), True),
            (f"{base}/miners/m1/sample", b"", True),
            (f"{base}/miners/new/sample", sample("new", 5.0), True)])
        assert (await receive(ws))["payload"]["hashrate_ths"] == 99.0
        assert (await receive(ws))["payload"] == ""
        assert (await receive(ws))["payload"]["hashrate_ths"] == 5.0
        assert len(relay.retained) == bound
        assert f"{base}/miners/m1/sample" not in relay.retained
        async with websockets.connect(api.ws_url) as late:
            await subscribe(late, f"{base}/miners/m0/sample")
            assert (await receive(late))["payload"]["hashrate_ths"] == 99.0
            await subscribe(late, f"{base}/miners/new/sample")
            assert (await receive(late))["payload"]["hashrate_ths"] == 5.0
        assert len(full) == 1


async def test_retained_junk_does_not_break_the_relay_at_any_start(
    start_api: StartApi, own_broker: Any, base_topic: str, bulk_publish: BulkPublish
) -> None:
    """Retained hostile messages come back at every (re)subscription: the relay starts
    through them, every time, and serves the valid state."""
    base = base_topic
    valid = [
        (f"{base}/miners/ok/info", encode(MinerInfo(
            miner_id="ok", driver="axeos", host="10.0.0.5", port=80)), True),
        (f"{base}/miners/ok/status", encode(MinerStatus(state="online", since=TS)), True),
        (f"{base}/alerts/ok/overheat", encode(AlertEvent(
            miner_id="ok", rule="overheat", state="firing", severity="warning", value=80.0,
            threshold=75.0, message="hot", ts=TS)), True),
    ]
    await bulk_publish(own_broker, [(topic, payload, True)
                                    for topic, payload in hostile_messages(base, "evil")]
                       + valid)
    async with start_api(broker_url=own_broker.url) as api:
        relay = api.relay
        expected = {f"{base}/miners/ok/info", f"{base}/miners/ok/status",
                    f"{base}/alerts/ok/overheat", f"{base}/services/api/status"}
        await wait_for(lambda: set(relay.retained) == expected, what="the valid state")
        first = relay.rejects.total
        assert first == len(hostile_messages(base, "evil"))
        # A new session (as after any reconnect) meets the retained junk again.
        await relay.stop()
        assert not relay.listening
        relay.start()
        await wait_for(lambda: relay.listening and relay.rejects.total == 2 * first,
                       what="the junk again")
        await wait_for(lambda: set(relay.retained) == expected, what="the valid state again")
        assert (await health(api.url))["broker"] == "up"
        async with websockets.connect(api.ws_url) as ws:
            await subscribe(ws, f"{base}/miners/ok/+")
            replay = [await receive(ws), await receive(ws)]
            assert sorted(m["topic"] for m in replay) == [f"{base}/miners/ok/info",
                                                           f"{base}/miners/ok/status"]
