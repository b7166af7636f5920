"""The control routes end to end over HTTP and a real broker: what the api publishes on
``{base}/miners/{id}/command`` (with the MQTT v5 response topic and correlation data), and
how it answers each CommandResult. The collector is a small responder of the test's own
on the broker (the unit's edge; the acceptance tests run the real one): it answers on the
response topic with the correlation data, as the contract says."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import websockets

from minerwatch.api.commands import Commander, TooManyCommands
from minerwatch.api.relay import Relay
from minerwatch.shared.config import MqttConfig
from minerwatch.shared.mqtt import Subscription
from minerwatch.shared.mqtt.client import Client as LeanClient
from minerwatch.shared.schemas import (
    Command,
    CommandResult,
    MinerInfo,
    MinerSettings,
    Range,
    SettingsLimits,
    TuneProgress,
    decode,
    encode,
    now_ts,
)
from minerwatch.shared.topics import (
    command_result_topic,
    info_topic,
    service_status_topic,
    tune_topic,
)

from .conftest import bearer, make_token

StartApi = Callable[..., Any]
Publish = Callable[..., Awaitable[None]]
Answer = Callable[[Command], CommandResult | None]

MINER = "bitaxe-1"
LIMITS = SettingsLimits(frequency_mhz=Range(min=400, max=625),
                        core_voltage_mv=Range(min=1000, max=1250),
                        fan_percent=Range(min=0, max=100), temp_target_c=Range(min=35, max=66),
                        source="BM1370 (Gamma, GammaTurbo)")


def result(command: Command, status: str = "ok", message: str = "done", **fields: Any
           ) -> CommandResult:
    return CommandResult(id=command.id, miner_id=command.miner_id, action=command.action,
                         by=command.by, status=status, message=message,  # type: ignore[arg-type]
                         requested=command.ts, ts=now_ts(), **fields)


@dataclass
class Collector:
    """What the fake collector was asked, with the MQTT properties of each command."""

    commands: list[tuple[Command, dict[str, Any]]] = field(default_factory=list)

    async def asked(self, count: int) -> list[Command]:
        async with asyncio.timeout(5):
            while len(self.commands) < count:
                await asyncio.sleep(0.01)
        return [command for command, _properties in self.commands]


@asynccontextmanager
async def fake_collector(broker: Any, base: str, answer: Answer) -> AsyncIterator[Collector]:
    """Answers every command with ``answer(command)`` (None: no answer at all) on
    ``command/result`` and on the command's response topic with its correlation data."""
    seen = Collector()
    async with LeanClient(broker.host, broker.port) as client:
        await client.subscribe([Subscription(f"{base}/miners/+/command", qos=1)])
        # As the real one: the api sends commands only while the collector is online.
        await client.publish(service_status_topic(base, "collector"), b"online", retain=True)

        async def serve() -> None:
            async for message in client.messages:
                client.ack(message)
                command = decode(message.payload, Command)
                seen.commands.append((command, dict(message.properties)))
                answered = answer(command)
                if answered is None:
                    continue
                payload = encode(answered)
                await client.publish(command_result_topic(base, command.miner_id), payload)
                await client.publish(message.properties["response_topic"], payload,
                                     properties={"correlation_data":
                                                 message.properties["correlation_data"]})

        task = asyncio.create_task(serve())
        try:
            yield seen
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.publish(service_status_topic(base, "collector"), b"", retain=True)


async def known(api: Any, publish: Publish, miner_id: str = MINER) -> None:
    """A retained info for the miner, in the relay's cache (the api knows it)."""
    topic = info_topic(api.base, miner_id)
    await publish(topic, encode(MinerInfo(miner_id=miner_id, driver="axeos", host="10.0.0.5",
                                          port=80)), retain=True)
    async with asyncio.timeout(5):
        while topic not in api.relay.retained or (
                api.relay.service("collector").state != "online"):
            await asyncio.sleep(0.01)


def ok_answer(command: Command) -> CommandResult:
    if command.action == "settings":
        return result(command, settings=MinerSettings(frequency_mhz=525, core_voltage_mv=1150,
                                                      fan_mode="auto"), limits=LIMITS)
    if command.action == "configure":
        return result(command, changed=["frequency_mhz"],
                      before=MinerSettings(frequency_mhz=525),
                      after=MinerSettings(frequency_mhz=command.settings.frequency_mhz
                                          if command.settings else None))
    return result(command)


async def test_actions_settings_and_tune_round_trip(
    start_api: StartApi, broker: Any, base_topic: str, publish: Publish,
) -> None:
    async with start_api(auth="token") as api, \
            fake_collector(broker, base_topic, ok_answer) as collector, \
            httpx.AsyncClient(base_url=api.url, headers=api.headers) as http:
        await known(api, publish)
        who = (await http.get("/api/session")).json()["name"]
        restart = await http.post(f"/api/miners/{MINER}/actions/restart")
        assert restart.status_code == 200, restart.text
        body = restart.json()
        assert (body["status"], body["action"], body["by"]) == ("ok", "restart", f"token:{who}")

        command, properties = collector.commands[0]
        assert (command.miner_id, command.action, command.by) == (MINER, "restart",
                                                                  f"token:{who}")
        assert command.id == body["id"]
        assert properties["correlation_data"] == command.id.encode()
        assert properties["response_topic"].startswith(f"{base_topic}/replies/api-")

        settings = await http.get(f"/api/miners/{MINER}/settings")
        assert settings.status_code == 200, settings.text
        assert settings.json()["settings"]["frequency_mhz"] == 525
        assert settings.json()["limits"]["frequency_mhz"] == {"min": 400, "max": 625}

        change = await http.patch(f"/api/miners/{MINER}/settings",
                                  json={"frequency_mhz": 550, "pools": {"primary": {
                                      "url": "stratum+tcp://pool.example:3333",
                                      "user": "me.bitaxe", "password": "x"}}})
        assert change.status_code == 200, change.text
        assert change.json()["after"] == {**change.json()["after"], "frequency_mhz": 550}
        tune = await http.post(f"/api/miners/{MINER}/tune", json={"objective": "hashrate",
                                                                  "chip_temp_max_c": 60})
        assert tune.status_code == 200, tune.text
        default_tune = await http.post(f"/api/miners/{MINER}/tune")
        abort = await http.delete(f"/api/miners/{MINER}/tune")
        assert (default_tune.status_code, abort.status_code) == (200, 200)
        for action in ("identify", "pause", "resume"):
            assert (await http.post(f"/api/miners/{MINER}/actions/{action}")).status_code == 200

        asked = await collector.asked(9)
        assert [c.action for c in asked] == [
            "restart", "settings", "configure", "tune", "tune", "tune_abort", "identify",
            "pause", "resume"]
        configure = asked[2]
        assert configure.settings is not None and configure.settings.frequency_mhz == 550
        assert configure.settings.pools and configure.settings.pools.primary
        assert configure.settings.pools.primary.password == "x"
        assert asked[3].tune is not None and asked[3].tune.objective == "hashrate"
        assert asked[3].tune.chip_temp_max_c == 60
        assert asked[4].tune is not None and asked[4].tune.objective == "efficiency"
        assert len({c.id for c in asked}) == 9  # a new id per command
        # One response topic for the whole process.
        assert len({p["response_topic"] for _c, p in collector.commands}) == 1


async def test_result_status_becomes_the_http_status(
    start_api: StartApi, broker: Any, base_topic: str, publish: Publish,
) -> None:
    expected = {"ok": 200, "refused": 422, "disabled": 403, "busy": 409, "unknown": 404,
                "unsupported": 501, "failed": 502, "unverified": 502}
    wanted: list[str] = []

    def answer(command: Command) -> CommandResult:
        status = wanted[0]
        return result(command, status, message=f"it was {status}",
                      limits=LIMITS if status == "refused" else None)

    async with start_api() as api, fake_collector(broker, base_topic, answer), \
            httpx.AsyncClient(base_url=api.url, headers=api.headers) as http:
        await known(api, publish)
        for status, http_status in expected.items():
            wanted[:] = [status]
            answer_ = await http.patch(f"/api/miners/{MINER}/settings",
                                       json={"frequency_mhz": 900})
            assert answer_.status_code == http_status, (status, answer_.text)
            body = answer_.json()
            if status == "ok":
                assert body["status"] == "ok"
                continue
            assert body["status_code"] == http_status
            assert body["detail"] == f"{status}: it was {status}"
            assert body["result"]["status"] == status
            if status == "refused":
                assert body["limits"]["frequency_mhz"] == {"min": 400, "max": 625}
            else:
                assert body["limits"] is None


async def test_bad_requests_and_unknown_miners_publish_nothing(
    start_api: StartApi, broker: Any, base_topic: str, publish: Publish,
) -> None:
    async with start_api() as api, fake_collector(broker, base_topic, ok_answer) as collector, \
            httpx.AsyncClient(base_url=api.url, headers=api.headers) as http:
        await known(api, publish)
        url = f"/api/miners/{MINER}/settings"
        answers = {
            "bad id": await http.post("/api/miners/Not%20A%20Miner/actions/restart"),
            "bad action": await http.post(f"/api/miners/{MINER}/actions/explode"),
            "empty object": await http.patch(url, json={}),
            "empty pools": await http.patch(url, json={"pools": {}}),
            "unknown field": await http.patch(url, json={"frequency_mhz": 500, "turbo": True}),
            "wrong type": await http.patch(url, json={"frequency_mhz": "fast"}),
            "no body": await http.patch(url),
            "not json": await http.patch(url, content=b"{nope",
                                         headers={"content-type": "application/json"}),
            "bad tune": await http.post(f"/api/miners/{MINER}/tune",
                                        json={"objective": "speed"}),
        }
        for what, answer in answers.items():
            assert answer.status_code == 400, (what, answer.text)
            detail = answer.json()["detail"]
            assert detail and "\n" not in detail, what
        assert answers["bad id"].json()["detail"].startswith("miner_id")
        assert answers["bad action"].json()["detail"].startswith("action")
        assert "turbo" in answers["unknown field"].json()["detail"]

        ghost = await http.post("/api/miners/ghost/actions/restart")
        assert ghost.status_code == 404 and "ghost" in ghost.json()["detail"]
        # A command that does go out proves the responder listens: nothing came before it.
        assert (await http.post(f"/api/miners/{MINER}/actions/identify")).status_code == 200
        assert [c.action for c in await collector.asked(1)] == ["identify"]


async def test_control_needs_an_operator(
    start_api: StartApi, broker: Any, base_topic: str, publish: Publish,
) -> None:
    async with start_api() as api, fake_collector(broker, base_topic, ok_answer) as collector, \
            httpx.AsyncClient(base_url=api.url) as http:
        await known(api, publish)
        viewer = bearer(await make_token(api.db_url, "viewer", "wall-screen"))
        admin = bearer(await make_token(api.db_url, "admin", "root"))
        restart = f"/api/miners/{MINER}/actions/restart"
        settings = f"/api/miners/{MINER}/settings"
        # lan: reads are open, but control is not a read.
        nobody = [await http.post(restart), await http.get(settings)]
        assert [a.status_code for a in nobody] == [401, 401]
        assert all(a.headers["www-authenticate"].startswith("Bearer") for a in nobody)
        as_viewer = [await http.post(restart, headers=viewer),
                     await http.get(settings, headers=viewer),
                     await http.delete(f"/api/miners/{MINER}/tune", headers=viewer)]
        assert [a.status_code for a in as_viewer] == [403, 403, 403]
        assert "wall-screen" in as_viewer[0].json()["detail"]
        assert "operator" in as_viewer[0].json()["detail"]
        assert (await http.get(settings, headers=admin)).json()["by"] == "token:root"
        assert (await http.post(restart, headers=api.headers)).status_code == 200
        assert [c.action for c in await collector.asked(2)] == ["settings", "restart"]


async def test_the_dashboard_session_commands_with_its_csrf_token(
    start_api: StartApi, broker: Any, base_topic: str, publish: Publish,
) -> None:
    async with start_api(auth="token") as api, fake_collector(broker, base_topic, ok_answer), \
            httpx.AsyncClient(base_url=api.url) as http:
        await known(api, publish)
        assert api.token is not None
        signed_in = (await http.post("/api/session", json={"token": api.token})).json()
        restart = f"/api/miners/{MINER}/actions/restart"
        without = await http.post(restart)
        assert without.status_code == 403 and "CSRF" in without.json()["detail"]
        done = await http.post(restart, headers={"X-CSRF-Token": signed_in["csrf"]})
        assert done.status_code == 200, done.text
        assert done.json()["by"] == f"session:{signed_in['name']}"


async def test_no_answer_is_a_504_naming_the_collector(
    start_api: StartApi, broker: Any, base_topic: str, publish: Publish,
) -> None:
    async with start_api(api_options={"command_timeout_s": 0.5}) as api, \
            fake_collector(broker, base_topic, lambda _command: None) as collector, \
            httpx.AsyncClient(base_url=api.url, headers=api.headers) as http:
        await known(api, publish)
        answer = await http.post(f"/api/miners/{MINER}/actions/restart")
        assert answer.status_code == 504, answer.text
        detail = answer.json()["detail"]
        assert "collector" in detail and "0.5 s" in detail and "\n" not in detail
        assert len(await collector.asked(1)) == 1  # it was sent


async def test_late_forged_and_foreign_replies_are_ignored(
    start_api: StartApi, broker: Any, base_topic: str, publish: Publish,
) -> None:
    """A result with other correlation data, one naming another command, and one on the
    result topic only do not answer the request; the real reply does."""
    async with start_api() as api, \
            fake_collector(broker, base_topic, lambda _command: None) as collector, \
            LeanClient(broker.host, broker.port) as other, \
            httpx.AsyncClient(base_url=api.url, headers=api.headers) as http:
        await known(api, publish)
        request = asyncio.create_task(http.post(f"/api/miners/{MINER}/actions/identify"))
        [command] = await collector.asked(1)
        reply_to = collector.commands[0][1]["response_topic"]
        real = result(command, message="the real one")
        await other.publish(reply_to, encode(result(command, "failed")),
                            properties={"correlation_data": b"someone-else"})
        forged = result(command, "failed", message="forged")
        forged.id = "another-command"
        await other.publish(reply_to, encode(forged),
                            properties={"correlation_data": command.id.encode()})
        await other.publish(reply_to, b"{not json", properties={
            "correlation_data": command.id.encode()})
        await other.publish(command_result_topic(base_topic, MINER),
                            encode(result(command, "failed")))
        # Last, from the same client: the api handles it after all of the above, so had
        # any of them answered the request, the answer would not be this one.
        await other.publish(reply_to, encode(real),
                            properties={"correlation_data": command.id.encode()})
        answer = await asyncio.wait_for(request, 5)
        assert answer.status_code == 200 and answer.json()["message"] == "the real one"


async def test_a_collector_that_is_not_online_gets_no_command(
    start_api: StartApi, broker: Any, base_topic: str, publish: Publish,
) -> None:
    async with start_api() as api, fake_collector(broker, base_topic, ok_answer) as collector, \
            httpx.AsyncClient(base_url=api.url, headers=api.headers) as http:
        await known(api, publish)
        await publish(service_status_topic(base_topic, "collector"), b"offline", retain=True)
        async with asyncio.timeout(5):
            while api.relay.service("collector").state != "offline":
                await asyncio.sleep(0.01)
        answer = await http.get(f"/api/miners/{MINER}/settings")
        assert answer.status_code == 503, answer.text
        assert answer.json()["detail"].startswith("the collector is offline since ")
        await publish(service_status_topic(base_topic, "collector"), b"online", retain=True)
        async with asyncio.timeout(5):
            while api.relay.service("collector").state != "online":
                await asyncio.sleep(0.01)
        assert (await http.post(f"/api/miners/{MINER}/actions/identify")).status_code == 200
        assert [c.action for c in await collector.asked(1)] == ["identify"]


async def test_no_broker_is_a_503(start_api: StartApi, own_broker: Any) -> None:
    async with start_api(broker_url=own_broker.url) as api, \
            httpx.AsyncClient(base_url=api.url, headers=api.headers) as http:
        own_broker.local.stop()
        async with asyncio.timeout(5):
            while api.relay.connected:
                await asyncio.sleep(0.02)
        answer = await http.post(f"/api/miners/{MINER}/actions/restart")
    assert answer.status_code == 503, answer.text
    assert "broker" in answer.json()["detail"]


async def test_results_and_tune_progress_reach_websockets_but_commands_do_not(
    start_api: StartApi, broker: Any, base_topic: str, publish: Publish,
) -> None:
    async with start_api() as api, fake_collector(broker, base_topic, ok_answer), \
            httpx.AsyncClient(base_url=api.url, headers=api.headers) as http, \
            websockets.connect(api.ws_url) as ws:
        await known(api, publish)
        await ws.send(json.dumps({"subscribe": f"{base_topic}/miners/{MINER}/#"}))
        frames = [json.loads(await asyncio.wait_for(ws.recv(), 5))]
        assert frames[0] == {"subscribed": f"{base_topic}/miners/{MINER}/#"}
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["topic"].endswith("/info")
        restart = await http.post(f"/api/miners/{MINER}/actions/restart")
        assert restart.status_code == 200
        progress = TuneProgress(run_id="run-1", miner_id=MINER, objective="efficiency",
                                state="running", phase="settling 10/90 s at 500 MHz 1150 mV",
                                by="token:x", started=now_ts(), ts=now_ts(), progress=0.1)
        await publish(tune_topic(base_topic, MINER), encode(progress), retain=True)
        got = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
        assert [frame["topic"] for frame in got] == [
            command_result_topic(base_topic, MINER), tune_topic(base_topic, MINER)]
        assert got[0]["payload"]["id"] == restart.json()["id"]
        assert got[1]["payload"]["phase"].startswith("settling")
        # The tune topic is retained: a new client gets the run's state at once.
        async with websockets.connect(api.ws_url) as late:
            await late.send(json.dumps({"subscribe": f"{base_topic}/miners/+/tune"}))
            assert json.loads(await asyncio.wait_for(late.recv(), 5))["subscribed"]
            replay = json.loads(await asyncio.wait_for(late.recv(), 5))
            assert replay["payload"]["run_id"] == "run-1"
    await publish(tune_topic(base_topic, MINER), b"", retain=True)


async def test_commands_waiting_at_once_are_bounded(broker: Any, base_topic: str) -> None:
    relay = Relay(MqttConfig(url=broker.url, base_topic=base_topic))
    relay.start()
    try:
        async with asyncio.timeout(5):
            while not relay.listening:
                await asyncio.sleep(0.01)
        commander = Commander(relay, timeout_s=30, max_pending=2)
        waiting = [asyncio.create_task(commander.send(MINER, "identify", "token:t"))
                   for _ in range(2)]
        async with asyncio.timeout(5):
            while commander.pending < 2:
                await asyncio.sleep(0.01)
        with pytest.raises(TooManyCommands, match="2 commands are waiting"):
            await commander.send(MINER, "identify", "token:t")
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        assert commander.pending == 0  # a request that goes away takes its place along
    finally:
        await relay.stop()
