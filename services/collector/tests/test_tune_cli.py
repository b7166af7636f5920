"""``minerwatch-collector tune`` as a real subprocess against the simulator (in this test's
event loop) and a real Mosquitto: a whole run, Ctrl-C in the middle, the miner found by
its retained info, and the one-line refusals."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from minerwatch.collector.tune.cli import run_tune
from minerwatch.shared.messages import Received, decode_message
from minerwatch.shared.schemas import MinerInfo, TuneProgress, encode
from minerwatch.sim.axeos import AxeOSMiner
from minerwatch.sim.fleet import Fleet

from waiting import eventually

COLLECTOR = str(Path(sys.executable).parent / "minerwatch-collector")
SEED = 1  # its first Gamma hashes at 99.6 % of expected (see test_tune_sim)


@pytest.fixture
async def gamma() -> AsyncIterator[AxeOSMiner]:
    async with Fleet(axeos=1, cgminer=0, seed=SEED) as fleet:
        miner = fleet.miners[0]
        assert isinstance(miner, AxeOSMiner)
        yield miner


def sim_settings(miner: AxeOSMiner) -> tuple[int, int]:
    state = miner.control_state()["settings"]
    return int(state["frequency_mhz"]), int(state["core_voltage_mv"])


async def set_sim(miner: AxeOSMiner, frequency_mhz: int, core_voltage_mv: int) -> None:
    """As a person would, through the miner's own API."""
    async with httpx.AsyncClient(base_url=f"http://{miner.host}:{miner.port}") as client:
        reply = await client.patch("/api/system", json={"frequency": frequency_mhz,
                                                        "coreVoltage": core_voltage_mv})
        reply.raise_for_status()
    assert sim_settings(miner) == (frequency_mhz, core_voltage_mv)


def write_config(tmp_path: Path, broker_url: str, base: str, miner: AxeOSMiner | None,
                 *, settle_s: float = 0.1, enabled: bool = True) -> Path:
    miners = (f'[[collector.miners]]\nurl = "axeos://{miner.host}:{miner.port}"\n'
              'name = "rig-1"\n') if miner is not None else ""
    path = tmp_path / "tune.toml"
    path.write_text(
        f'[mqtt]\nurl = "{broker_url}"\nbase_topic = "{base}"\n'
        f"[collector]\ntimeout_s = 2.0\n{miners}"
        f"[control]\nenabled = {'true' if enabled else 'false'}\ntimeout_s = 2.0\n"
        "restart_timeout_s = 3.0\n"
        f"[control.tune]\nsettle_s = {settle_s}\nwindow_s = 0.25\npoll_s = 0.05\n"
        "chip_temp_max_c = 80\n")
    return path


async def start(config: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        COLLECTOR, "tune", *args, "--config", str(config), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("MINERWATCH_")})


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def retained_tune(broker: Any, base: str, miner_id: str) -> TuneProgress:
    topic = f"{base}/miners/{miner_id}/tune"
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(5):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                decoded = decode_message(base, topic, message.payload)
                assert isinstance(decoded, Received), decoded
                assert isinstance(decoded.message, TuneProgress)
                return decoded.message
    raise AssertionError("no retained progress")


async def test_a_whole_run_prints_the_steps_applies_the_best_and_publishes(
    broker: Any, base_topic: str, tmp_path: Path, gamma: AxeOSMiner
) -> None:
    gamma.set_limit(610, 0.5)  # from 600 MHz 1150 mV: 625 MHz needs 1190 mV
    config = write_config(tmp_path, broker.url, base_topic, gamma)
    code, out, err = await finish(await start(config, "rig-1", "--objective", "hashrate"))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["step", "MHz", "mV", "TH/s"]
    steps = [[*line.split()[:3], line.split()[10]] for line in lines[1:5]]
    assert steps == [["1", "600", "1150", "stable"], ["2", "625", "1150", "unstable:"],
                     ["3", "625", "1170", "unstable:"], ["4", "625", "1190", "stable"]]
    assert lines[5] == "best (hashrate): step 4, 625 MHz 1190 mV"
    assert lines[6] == "now set: 625 MHz 1190 mV"
    assert lines[7].startswith("done: applied step 4: 625 MHz 1190 mV")
    assert sim_settings(gamma) == (625, 1190)
    # stderr is no terminal here: one line per step, no progress bar
    assert err.splitlines()[0] == "step 1: 600 MHz 1150 mV stable"
    final = await retained_tune(broker, base_topic, "rig-1")
    assert final.state == "done" and final.by == "cli" and len(final.steps) == 4
    assert final.run_id.startswith("cli-")


async def test_ctrl_c_restores_the_original_settings(
    broker: Any, base_topic: str, tmp_path: Path, gamma: AxeOSMiner
) -> None:
    await set_sim(gamma, 550, 1150)
    gamma.set_limit(900, 0.5)
    config = write_config(tmp_path, broker.url, base_topic, gamma, settle_s=1.0)
    process = await start(config, "rig-1")
    # step 1 measures 550 MHz as it is; step 2 sets 575 MHz and settles for 1 s
    await eventually(lambda: sim_settings(gamma) == (575, 1150), timeout=15, interval=0.02)
    process.send_signal(signal.SIGINT)
    code, out, err = await finish(process)
    assert code == 130, err
    assert err.splitlines()[-1] == ("minerwatch-collector: tune rig-1: stopped; the "
                                    "original settings were restored")
    assert sim_settings(gamma) == (550, 1150)
    assert out.splitlines()[-1] == ("aborted: aborted; original settings 550 MHz 1150 mV "
                                    "restored")
    final = await retained_tune(broker, base_topic, "rig-1")
    assert final.state == "aborted"


async def test_a_miner_not_in_the_config_is_found_by_its_retained_info(
    broker: Any, base_topic: str, tmp_path: Path, gamma: AxeOSMiner
) -> None:
    gamma.set_limit(900, 0.5)  # 600 and 625 MHz stable: two steps
    info_topic = f"{base_topic}/miners/0240570000aa/info"
    info = MinerInfo(miner_id="0240570000aa", driver="axeos", host=gamma.host,
                     port=gamma.port, make="Bitaxe", model="Gamma BM1370")
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.publish(info_topic, encode(info), qos=1, retain=True)
    try:
        config = write_config(tmp_path, broker.url, base_topic, None)
        code, out, err = await finish(await start(config, "0240570000aa", "--objective",
                                                  "hashrate"))
        assert code == 0, err
        assert "done: applied step 2: 625 MHz 1150 mV" in out
        assert sim_settings(gamma) == (625, 1150)
    finally:
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.publish(info_topic, b"", qos=1, retain=True)
            await client.publish(f"{base_topic}/miners/0240570000aa/tune", b"", qos=1,
                                 retain=True)


def test_what_cannot_be_tuned_is_one_line(
    broker: Any, base_topic: str, tmp_path: Path, dead_port: int,
    capsys: pytest.CaptureFixture[str]
) -> None:
    # in this process: the same code as the subprocess runs, without its start-up time
    def tune(config: Path, miner_id: str, chip_temp_max_c: float | None = None
             ) -> tuple[int, str]:
        code = run_tune(miner_id, "efficiency", str(config), chip_temp_max_c, None)
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1, err
        return code, err

    somewhere = f"mqtt://127.0.0.1:{dead_port}"
    off = write_config(tmp_path, somewhere, base_topic, None, enabled=False)
    assert tune(off, "rig-1") == (2, "minerwatch-collector: tune rig-1: control is disabled: "
                                     "set [control] enabled = true to let minerwatch change "
                                     "miners' settings\n")
    code, err = tune(off, "Rig 1")
    assert code == 2 and "'Rig 1' is not a miner id" in err
    code, err = tune(off, "rig-1", chip_temp_max_c=500)
    assert code == 2 and "chip_temp_max_c" in err
    code, err = tune(tmp_path / "missing.toml", "rig-1")
    assert code == 2 and "does not exist" in err
    nobody = tmp_path / "nobody"
    nobody.mkdir()
    code, err = tune(write_config(nobody, broker.url, base_topic, None), "rig-9")
    assert code == 1 and err.startswith("minerwatch-collector: tune rig-9: rig-9 is not in the "
                                        "config's [[collector.miners]] and the broker at")
    assert "holds no info for it" in err
    away = tmp_path / "away"
    away.mkdir()
    code, err = tune(write_config(away, somewhere, base_topic, None), "rig-9")
    assert code == 1 and "cannot be reached to look it up: cannot connect" in err
