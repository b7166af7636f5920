"""``minerwatch-collector probe`` as a real subprocess against tiny local miners."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from minerwatch.collector.probe import candidates, parse_target
from minerwatch.shared import schemas
from minerwatch.shared.schemas import Sample

StartServer = Callable[..., Awaitable[Any]]
COLLECTOR = str(Path(sys.executable).parent / "minerwatch-collector")
GAMMA = "bitaxe_gamma_v2.11.0_system_info.json"


async def probe(*args: str) -> tuple[int, str, str, float]:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        COLLECTOR, "probe", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode(), time.monotonic() - started


async def test_probe_axeos_prints_one_sample(
    http_miner: StartServer, load_fixture: Callable[[str], bytes]
) -> None:
    miner = await http_miner(load_fixture(GAMMA))
    code, out, err, _ = await probe(f"127.0.0.1:{miner.port}", "--driver", "axeos")
    assert (code, err) == (0, "")
    assert out.endswith("\n") and out.count("\n") == 1
    sample = schemas.decode(out, Sample)
    assert sample.schema == 1
    assert sample.miner_id == "24dcc34a1b2c"
    assert sample.hashrate_ths == pytest.approx(1.2093785)
    assert sample.best_diff == 4294967296.0
    assert '"vr_temp_c":51.0' in out and '"expected_hashrate_ths":1.254' in out


async def test_probe_auto_finds_cgminer_on_an_unusual_port(
    cgminer_miner: StartServer, s19_replies: dict[str, bytes]
) -> None:
    miner = await cgminer_miner(s19_replies)
    code, out, err, _ = await probe(f"127.0.0.1:{miner.port}", "--timeout", "2")
    assert (code, err) == (0, "")
    sample = schemas.decode(out, Sample)
    assert sample.miner_id == f"127-0-0-1-{miner.port}"  # no MAC over CGMiner: host-port
    assert sample.hashrate_ths == pytest.approx(109.87654)
    assert sample.power_w is None


@pytest.mark.parametrize(
    ("prefix", "commands", "expected"),
    [
        ("whatsminer_m30s+_20210322", ("version", "summary", "devdetails", "pools"),
         {"miner_id": "c60720001a2b", "power_w": 3344.0, "temp_c": 72.0,
          "fan_rpm": [4860, 4830]}),
        ("avalon_nano3s_25021401", ("version", "summary", "estats", "pools"),
         {"miner_id": "e0e1a93f3053", "power_w": 133.0, "temp_c": 88.0, "fan_rpm": [2460]}),
    ],
)
async def test_probe_auto_reads_each_cgminer_family(
    cgminer_miner: StartServer, load_fixture: Callable[[str], bytes], prefix: str,
    commands: tuple[str, ...], expected: dict[str, Any],
) -> None:
    replies = {command: load_fixture(f"{prefix}_{command}.json") for command in commands}
    miner = await cgminer_miner(replies, joins=True)
    code, out, err, _ = await probe(f"127.0.0.1:{miner.port}", "--timeout", "2")
    assert (code, err) == (0, "")
    sample = schemas.decode(out, Sample)
    for name, value in expected.items():
        assert getattr(sample, name) == value, name


async def test_probe_dead_port_fails_with_one_line(dead_port: int) -> None:
    code, out, err, elapsed = await probe(f"127.0.0.1:{dead_port}", "--driver", "axeos",
                                          "--timeout", "2")
    assert code == 1 and out == ""
    assert err == (f"minerwatch-collector: probe 127.0.0.1:{dead_port}: "
                   f"refused: nothing listens on port {dead_port}\n")
    assert elapsed < 2 + 3  # the timeout, plus start-up of the interpreter


async def test_probe_garbage_server_fails_with_one_line(http_miner: StartServer) -> None:
    miner = await http_miner(mode="garbage")
    code, out, err, elapsed = await probe(f"127.0.0.1:{miner.port}", "--driver", "axeos",
                                          "--timeout", "2")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "bad reply: not HTTP" in err
    assert elapsed < 2 + 3


async def test_probe_silent_server_fails_within_the_timeout(cgminer_miner: StartServer) -> None:
    miner = await cgminer_miner(mode="silent")
    code, out, err, elapsed = await probe(f"127.0.0.1:{miner.port}", "--driver", "cgminer",
                                          "--timeout", "1")
    assert code == 1 and out == ""
    assert err == f"minerwatch-collector: probe 127.0.0.1:{miner.port}: timeout after 1.0 s\n"
    assert 1.0 <= elapsed < 1 + 3


async def test_probe_auto_names_every_failure(dead_port: int) -> None:
    code, _, err, _ = await probe(f"127.0.0.1:{dead_port}", "--timeout", "1")
    assert code == 1 and err.count("\n") == 1
    assert f"axeos on port {dead_port}: refused: nothing listens on port {dead_port}" in err
    assert f"cgminer on port {dead_port}: refused: nothing listens on port {dead_port}" in err


async def test_probe_bad_target_is_one_line() -> None:
    code, out, err, _ = await probe("127.0.0.1:99999")
    assert (code, out) == (1, "")
    assert err == "minerwatch-collector: probe 127.0.0.1:99999: '127.0.0.1:99999' has a bad port\n"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("10.0.0.5", (None, "10.0.0.5", None)),
        ("10.0.0.5:4028", (None, "10.0.0.5", 4028)),
        ("[::1]:8080", (None, "::1", 8080)),
        ("::1", (None, "::1", None)),
        ("cgminer://10.0.0.6", ("cgminer", "10.0.0.6", 4028)),
    ],
)
def test_parse_target(target: str, expected: tuple[str | None, str, int | None]) -> None:
    assert parse_target(target) == expected


@pytest.mark.parametrize("target", ["", ":80", "host:port", "[::1]x", "ftp://x"])
def test_parse_target_rejects(target: str) -> None:
    with pytest.raises(ValueError):
        parse_target(target)


def test_candidates() -> None:
    assert candidates("auto", None) == [("axeos", 80), ("cgminer", 4028)]
    assert candidates("auto", 4028) == [("cgminer", 4028)]
    assert candidates("auto", 80) == [("axeos", 80)]
    assert candidates("auto", 8080) == [("axeos", 8080), ("cgminer", 8080)]
    assert candidates("cgminer", None) == [("cgminer", 4028)]
    assert candidates("axeos", 81) == [("axeos", 81)]
