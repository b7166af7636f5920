"""``minerwatch-collector forget`` as a real subprocess against a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import aiomqtt

from minerwatch.shared.homeassistant import discovery_topics

COLLECTOR = str(Path(sys.executable).parent / "minerwatch-collector")


async def forget_cli(config: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        COLLECTOR, "forget", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "MINERWATCH_CONFIG": str(config)})
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def write_config(tmp_path: Path, url: str, base: str) -> Path:
    path = tmp_path / "minerwatch.toml"
    path.write_text(f'[mqtt]\nurl = "{url}"\nbase_topic = "{base}"\n')
    return path


async def retained(broker: Any, topic_filter: str, wait_s: float = 0.5) -> dict[str, bytes]:
    got: dict[str, bytes] = {}
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic_filter, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    got[message.topic.value] = message.payload
    return got


async def test_forget_clears_every_retained_topic_of_the_miner(
    broker: Any, base_topic: str, tmp_path: Path
) -> None:
    keep = f"{base_topic}/miners/other/info"
    present = [f"{base_topic}/miners/rig-1/info", f"{base_topic}/miners/rig-1/status",
               f"{base_topic}/alerts/rig-1/offline", f"{base_topic}/alerts/rig-1/temp_high"]
    async with aiomqtt.Client(broker.host, broker.port) as client:
        for topic in [*present, keep]:
            await client.publish(topic, b'{"x": 1}', qos=1, retain=True)
    code, out, err = await forget_cli(write_config(tmp_path, broker.url, base_topic), "rig-1")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    every_kind = {f"{base_topic}/miners/rig-1/{kind}"
                  for kind in ("sample", "status", "info", "label", "tune")}
    every_kind |= set(discovery_topics("homeassistant", base_topic, "rig-1"))
    assert set(lines) == every_kind | set(present) and len(lines) == len(set(lines))
    assert lines[-1] == f"{base_topic}/miners/rig-1/info"
    assert set(await retained(broker, f"{base_topic}/#")) == {keep}  # only the other miner
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.publish(keep, b"", qos=1, retain=True)


async def test_forget_refuses_a_bad_id_and_a_missing_broker(
    broker: Any, base_topic: str, tmp_path: Path, dead_port: int
) -> None:
    config = write_config(tmp_path, broker.url, base_topic)
    code, out, err = await forget_cli(config, "Garage Bitaxe")
    assert (code, out) == (1, "")
    assert err == ("minerwatch-collector: forget Garage Bitaxe: 'Garage Bitaxe' is not a "
                   "miner id (1-64 characters of [a-z0-9_-])\n")
    away = write_config(tmp_path, f"mqtt://127.0.0.1:{dead_port}", base_topic)
    code, out, err = await forget_cli(away, "rig-1")
    assert (code, out) == (1, "") and err.count("\n") == 1
    assert err.startswith(f"minerwatch-collector: forget rig-1: cannot connect to 127.0.0.1:"
                          f"{dead_port}")
