"""Home Assistant MQTT discovery as a user gets it: a real Mosquitto, the simulated fleet (an
AxeOS and a CGMiner-family miner), the real collector process, and every retained config
checked with Home Assistant's own discovery schemas and template engine (Home Assistant
2024.3.3 in .tools/ha, ``make ha-deps``; tests/tools/ha_validate.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from minerwatch.shared import fields
from minerwatch.shared.homeassistant import collector_topics, discovery_topics
from minerwatch.shared.schemas import MinerLabel, MinerStatus, Sample, encode, now_ts
from minerwatch.shared.topics import mac_miner_id, slugify
from minerwatch.sim.fleet import Fault, Fleet, SimMiner

from running import BIN
from waiting import eventually

ROOT = Path(__file__).resolve().parents[1]
HA_PYTHON = ROOT / ".tools" / "ha" / "bin" / "python"
VALIDATOR = ROOT / "tests" / "tools" / "ha_validate.py"
PREFIX = "homeassistant"
VERSION = version("minerwatch-collector")
POLL_S = 0.5


def miner_id(miner: SimMiner) -> str:
    if miner.mac:
        return mac_miner_id(miner.mac) or ""
    return slugify(f"{miner.host}-{miner.port}")



async def retained(broker: Any, topic_filter: str, quiet_s: float = 0.3) -> dict[str, bytes]:
    """Topic -> payload of every retained message under ``topic_filter`` now: what the
    broker sends on subscribing, before the first live message (or a pause)."""
    got: dict[str, bytes] = {}
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic_filter, qos=1)
        messages = aiter(client.messages)
        with contextlib.suppress(TimeoutError):
            while True:
                async with asyncio.timeout(quiet_s):
                    message = await anext(messages)
                if not message.retain:
                    break
                assert isinstance(message.payload, bytes)
                if message.payload:
                    got[message.topic.value] = message.payload
    return got


async def offline(broker: Any, status_topic: str) -> bool:
    status = (await retained(broker, status_topic)).get(status_topic, b"{}")
    assert json.loads(status).get("state") == "offline", status
    return True


class Watch:
    """Every message under some filters, as it arrives, for the whole test."""

    def __init__(self, broker: Any, filters: list[str]) -> None:
        self.broker = broker
        self.filters = filters
        self.events: list[tuple[str, bytes, bool]] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def _run(self) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port) as client:
            for topic_filter in self.filters:
                await client.subscribe(topic_filter, qos=1)
            self._ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                self.events.append((message.topic.value, message.payload, message.retain))

    def since(self, mark: int, prefix: str = "") -> list[tuple[str, bytes]]:
        return [(topic, payload) for topic, payload, _ in self.events[mark:]
                if topic.startswith(prefix)]

    async def __aenter__(self) -> Watch:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def ha_tool(*args: str, lines: list[dict[str, Any]]) -> tuple[int, str]:
    """Run tests/tools/ha_validate.py with Home Assistant's Python on JSON lines."""
    assert HA_PYTHON.exists(), f"{HA_PYTHON} is missing: `make ha-deps` makes it"
    process = await asyncio.create_subprocess_exec(
        str(HA_PYTHON), str(VALIDATOR), *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    text = "".join(json.dumps(line) + "\n" for line in lines).encode()
    out, err = await asyncio.wait_for(process.communicate(text), 60)
    assert process.returncode is not None
    assert "Traceback" not in err.decode(), err.decode()
    return process.returncode, out.decode()


async def render(pairs: list[tuple[str, bytes | str]]) -> list[str]:
    """What Home Assistant's template engine makes of each (template, payload)."""
    code, out = await ha_tool("--render", lines=[
        {"template": template, "payload": payload.decode() if isinstance(payload, bytes)
         else payload} for template, payload in pairs])
    assert code == 0
    answers = [json.loads(line) for line in out.splitlines()]
    assert len(answers) == len(pairs)
    assert all("rendered" in answer for answer in answers), answers
    return [answer["rendered"] for answer in answers]


def stack_env(broker: Any, base: str, fleet: Fleet, config: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "MINERWATCH_CONFIG": str(config),
            "MINERWATCH_MQTT_URL": broker.url, "MINERWATCH_BASE_TOPIC": base,
            "MINERWATCH_MINERS": ",".join(fleet.urls()),
            "MINERWATCH_POLL_INTERVAL_S": str(POLL_S), **extra}


@contextlib.asynccontextmanager
async def collector(env: dict[str, str], log: Path) -> AsyncIterator[None]:
    """The collector as a process; on the way out, SIGTERM, exit 0 and no traceback."""
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            BIN / "minerwatch-collector", env=env, cwd=log.parent, stderr=stderr)
        try:
            yield
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 15)
    text = read(log)
    assert code == 0, f"the collector exited {code}:\n{text}"
    assert "Traceback" not in text, text


def read(path: Path) -> str:
    return path.read_text()


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "minerwatch.toml"
    path.write_text('[collector]\ntimeout_s = 0.4\noffline_after = 3\n\n'
                    '[api]\npublic_url = "http://minerwatch.test:8000"\n')
    return path


def config_lines(configs: dict[str, bytes]) -> list[dict[str, Any]]:
    return [{"topic": topic, "payload": json.loads(payload)}
            for topic, payload in sorted(configs.items())]


async def test_every_config_passes_home_assistant_and_follows_the_fleet(
    own_broker: Any, port_picker: Callable[[], int], tmp_path: Path
) -> None:
    broker, base = own_broker, f"hae2e-{port_picker()}"
    async with Fleet(axeos=1, cgminer=1, host="127.0.0.1", seed=11) as fleet, \
            Watch(broker, [f"{PREFIX}/#"]) as watch:
        axe, cg = fleet.miners
        assert axe.kind == "axeos" and cg.kind == "cgminer"
        ids = {miner.kind: miner_id(miner) for miner in fleet.miners}
        mine = {kind: set(discovery_topics(PREFIX, base, ids[kind])) for kind in ids}
        everything = mine["axeos"] | mine["cgminer"] | set(collector_topics(PREFIX, base))
        env = stack_env(broker, base, fleet, write_config(tmp_path))

        async with collector(env, tmp_path / "collector.log"):
            async def all_retained() -> dict[str, bytes]:
                configs = await retained(broker, f"{PREFIX}/#")
                assert set(configs) == everything, sorted(set(configs) ^ everything)
                return configs

            configs = await eventually(all_retained)
            state = await retained(broker, f"{base}/#")

            # Home Assistant takes every one of them, with full key names.
            code, out = await ha_tool("--full-names", "--prefix", PREFIX,
                                      lines=config_lines(configs))
            assert (code, out) == (0, "")
            # ...and the check bites: two broken configs among the good ones are refused,
            # by name, and nothing else is.
            hashrate = f"{PREFIX}/sensor/{base}/{ids['axeos']}_hashrate_ths/config"
            temp = f"{PREFIX}/sensor/{base}/{ids['cgminer']}_temp_c/config"
            broken = config_lines(configs)
            for line in broken:
                if line["topic"] == hashrate:
                    line["payload"]["device_class"] = "hashrate"  # no such device class
                if line["topic"] == temp:  # misspelled: Home Assistant would drop it
                    line["payload"]["unit_of_measurment"] = line["payload"].pop(
                        "unit_of_measurement")
            code, out = await ha_tool("--full-names", "--prefix", PREFIX, lines=broken)
            assert code == 1
            assert {line.split(": ")[0] for line in out.splitlines()} == {hashrate, temp}
            assert "unit_of_measurment" in out and "device_class" in out

            decoded = {topic: json.loads(payload) for topic, payload in configs.items()}
            check_devices_and_ids(decoded, state, base, ids, axe)
            await check_rendering(decoded, state, base, ids)

            # A label set through the api renames the device: its configs go out again.
            label_topic = f"{base}/miners/{ids['cgminer']}/label"
            async with aiomqtt.Client(broker.host, broker.port) as client:
                await client.publish(label_topic, encode(
                    MinerLabel(label="Shed S19 ☀", ts=now_ts())), qos=1, retain=True)

            async def renamed() -> bool:
                now = await retained(broker, f"{PREFIX}/+/{base}/#")
                names = {json.loads(now[topic])["device"]["name"] for topic in mine["cgminer"]}
                assert names == {"Shed S19 ☀"}, names
                return True

            await eventually(renamed)

            # Nothing goes out again unasked...
            await asyncio.sleep(1.5)
            mark = len(watch.events)
            await asyncio.sleep(1.5)
            assert watch.since(mark) == []
            # ...until Home Assistant announces itself: then everything, at once.
            async with aiomqtt.Client(broker.host, broker.port) as client:
                await client.publish(f"{PREFIX}/status", b"online", qos=1)

            async def republished() -> bool:
                again = {topic for topic, payload in watch.since(mark) if payload}
                assert again - {f"{PREFIX}/status"} == everything, sorted(everything - again)
                return True

            await eventually(republished, timeout=10)

            # Forgotten with the CLI while it does not answer: its configs are cleared.
            await axe.set_fault(Fault.REFUSE)
            await eventually(lambda: offline(broker, f"{base}/miners/{ids['axeos']}/status"))
            mark = len(watch.events)
            forget = await asyncio.create_subprocess_exec(
                BIN / "minerwatch-collector", "forget", ids["axeos"], env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out_b, err_b = await asyncio.wait_for(forget.communicate(), 30)
            assert (forget.returncode, err_b) == (0, b"")
            assert mine["axeos"] <= set(out_b.decode().splitlines())
            emptied = {topic for topic, payload in watch.since(mark) if not payload}
            assert emptied == mine["axeos"]
            left = await retained(broker, f"{PREFIX}/#")
            assert set(left) == everything - mine["axeos"]

            # A miner forgotten elsewhere (its info cleared, nothing else): the collector
            # clears its configs itself.
            await cg.set_fault(Fault.REFUSE)
            await eventually(lambda: offline(broker, f"{base}/miners/{ids['cgminer']}/status"))
            mark = len(watch.events)
            async with aiomqtt.Client(broker.host, broker.port) as client:
                await client.publish(f"{base}/miners/{ids['cgminer']}/info", b"", qos=1,
                                     retain=True)

            async def cleared_by_the_collector() -> bool:
                gone = {topic for topic, payload in watch.since(mark) if not payload}
                assert gone == mine["cgminer"], sorted(mine["cgminer"] - gone)
                return True

            await eventually(cleared_by_the_collector, timeout=10)
            assert set(await retained(broker, f"{PREFIX}/#")) == set(
                collector_topics(PREFIX, base))

            # It answers again: it comes back, in Home Assistant too.
            await axe.set_fault(Fault.NONE)

            async def back() -> bool:
                now = set(await retained(broker, f"{PREFIX}/#"))
                assert mine["axeos"] <= now, sorted(mine["axeos"] - now)
                return True

            await eventually(back)


def check_devices_and_ids(configs: dict[str, dict[str, Any]], state: dict[str, bytes],
                          base: str, ids: dict[str, str], axe: SimMiner) -> None:
    """Each miner one device hanging off the collector's; ids unique; availability real."""
    collector_status = f"{base}/services/collector/status"
    assert state[collector_status] == b"online"
    [collector_topic] = collector_topics(PREFIX, base)
    collector_device = configs[collector_topic]["device"]
    assert collector_device["identifiers"] == [f"{base}:collector"]
    unique_ids = [config["unique_id"] for config in configs.values()]
    assert len(unique_ids) == len(set(unique_ids))
    for kind, mid in ids.items():
        info = json.loads(state[f"{base}/miners/{mid}/info"])
        status = json.loads(state[f"{base}/miners/{mid}/status"])
        assert status["state"] == "online"
        keys = [*fields.FIELD_NAMES, "connectivity"]
        for topic, key in zip(discovery_topics(PREFIX, base, mid), keys, strict=True):
            config = configs[topic]
            assert config["unique_id"] == f"{base}_{mid}_{key}"
            assert config["origin"] == {"name": "minerwatch", "sw_version": VERSION,
                                        "support_url": "http://minerwatch.test:8000"}
            device = config["device"]
            assert device["identifiers"] == [f"{base}_{mid}"]
            assert device["via_device"] == collector_device["identifiers"][0]
            assert device["name"] == (info["label"] or info["hostname"] or mid)
            assert device["manufacturer"] == info["make"] and device["model"] == info["model"]
            assert device.get("sw_version") == info["firmware"]
            assert config["state_topic"] in state  # what it reads is there
            availability = [entry["topic"] for entry in config["availability"]]
            if key == "connectivity":
                assert availability == [collector_status]
            else:
                assert availability[:2] == [collector_status, f"{base}/miners/{mid}/status"]
                assert config["availability_mode"] == "all"
                assert config["expire_after"] == 2  # 3 polls of 0.5 s, in whole seconds
        if kind == "axeos":
            assert device["connections"] == [["mac", axe.mac.lower()]]  # type: ignore[union-attr]
            assert device["configuration_url"] == f"http://127.0.0.1:{axe.port}"
        else:
            assert "connections" not in device and "configuration_url" not in device


def expected_state(field: fields.FieldDescription, sample: dict[str, Any]) -> str | float:
    value = sample[field.name]
    if field.type == "list[int]":
        value = min(value) if value else None
    if value is None:
        return "None"
    if field.type == "bool":
        return "ON" if value else "OFF"
    return value if field.type == "str" else float(value)


async def check_rendering(configs: dict[str, dict[str, Any]], state: dict[str, bytes],
                          base: str, ids: dict[str, str]) -> None:
    """Each template, rendered by Home Assistant against what the collector published (and
    against a sample with every optional field null, and statuses that say offline or are
    garbage), gives the value, or ``None`` (unknown), never a made-up number."""
    blank = encode(Sample(miner_id="x", ts=now_ts(), hashrate_ths=0.0, is_mining=False))
    offline = encode(MinerStatus(state="offline", since=now_ts(), reason="timed out"))
    pairs: list[tuple[str, bytes | str]] = []
    wanted: list[str | float] = []
    for mid in ids.values():
        topics = discovery_topics(PREFIX, base, mid)
        sample_payload = state[f"{base}/miners/{mid}/sample"]
        sample = json.loads(sample_payload)
        for field, topic in zip(fields.SAMPLE_FIELDS, topics[:-1], strict=True):
            config = configs[topic]
            if field.type not in ("bool", "str"):  # what makes Home Assistant's sensor
                assert "state_class" in config or "unit_of_measurement" in config  # numeric
            pairs += [(config["value_template"], sample_payload),
                      (config["value_template"], blank)]
            wanted += [expected_state(field, sample),
                       expected_state(field, json.loads(blank))]
            status_check = config["availability"][1]["value_template"]
            pairs += [(status_check, state[f"{base}/miners/{mid}/status"]),
                      (status_check, offline), (status_check, "garbage")]
            wanted += ["online", "offline", "offline"]
            if field.type == "list[int]":
                pairs.append((config["json_attributes_template"], sample_payload))
                wanted.append(json.dumps({"fans": sample["fan_rpm"]}))
        connectivity = configs[topics[-1]]
        for status, answer in ((state[f"{base}/miners/{mid}/status"], "ON"), (offline, "OFF"),
                               ("garbage", "None")):
            pairs.append((connectivity["value_template"], status))
            wanted.append(answer)
        pairs.append((connectivity["json_attributes_template"], offline))
        wanted.append(json.dumps({"reason": "timed out", "since": json.loads(offline)["since"],
                                  "last_seen": None, "failures": 0}))
    rendered = await render(pairs)
    for (template, payload), got, want in zip(pairs, rendered, wanted, strict=True):
        where = f"{template} on {payload!r}"
        if isinstance(want, float):
            assert float(got) == pytest.approx(want), where
        elif want.startswith("{"):
            assert json.loads(got) == json.loads(want), where
        else:
            assert got == want, where
    # The fleet says something real: a number where the firmware reports one, else None.
    assert "None" in rendered and any(isinstance(want, float) and want > 0 for want in wanted)


async def test_no_config_is_published_when_discovery_is_off(
    own_broker: Any, port_picker: Callable[[], int], tmp_path: Path
) -> None:
    broker, base = own_broker, f"haoff-{port_picker()}"
    async with Fleet(axeos=1, cgminer=1, host="127.0.0.1", seed=12) as fleet, \
            Watch(broker, ["#"]) as watch:
        env = stack_env(broker, base, fleet, write_config(tmp_path),
                        MINERWATCH_HA_DISCOVERY="false")
        async with collector(env, tmp_path / "collector.log"):
            ids = [miner_id(miner) for miner in fleet.miners]

            async def sampled() -> bool:
                now = await retained(broker, f"{base}/#")
                assert {f"{base}/miners/{mid}/sample" for mid in ids} <= set(now)
                return True

            await eventually(sampled)
            async with aiomqtt.Client(broker.host, broker.port) as client:
                await client.publish(f"{PREFIX}/status", b"online", qos=1)
            await asyncio.sleep(2.0)  # two of the collector's looks at its fleet
        assert await retained(broker, f"{PREFIX}/#") == {}
        assert watch.since(0, f"{PREFIX}/") == [(f"{PREFIX}/status", b"online")]
        assert watch.since(0, f"{base}/miners/")  # the collector did publish, elsewhere
