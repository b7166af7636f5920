"""The ``minerwatch-sim`` console script, run as a real process."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from minerwatch.sim.fleet import Fleet

SCRIPT = Path(sys.executable).with_name("minerwatch-sim")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=30, check=False
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_print_urls_matches_the_fleet() -> None:
    result = run("--axeos", "2", "--cgminer", "1", "--base-port", "15000", "--print-urls")
    assert result.returncode == 0, result.stderr
    printed = result.stdout.strip()
    assert printed == ("axeos://127.0.0.1:15000,axeos://127.0.0.1:15001,cgminer://127.0.0.1:15002")
    # what the Makefile gets is what a Fleet with the same arguments serves
    assert printed == ",".join(Fleet(axeos=2, cgminer=1, base_port=15000).urls())


def test_print_urls_defaults() -> None:
    result = run("--print-urls")
    assert result.returncode == 0
    urls = result.stdout.strip().split(",")
    assert urls[0] == "axeos://127.0.0.1:14000" and urls[-1] == "cgminer://127.0.0.1:14005"
    assert len(urls) == 6


@pytest.mark.parametrize(
    "args",
    [
        ("--host", "10.0.0.5", "--print-urls"),
        ("--host", "0.0.0.0"),
        ("--host", "localhost"),
        ("--base-port", "0", "--print-urls"),
        ("--base-port", "65535", "--axeos", "3"),
        ("--axeos", "-1"),
        ("--first-index", "-1"),
        ("--otp-secret", "not base32!"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minerwatch-sim: ")
    assert "Traceback" not in result.stderr


def test_port_in_use_is_one_line_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("--axeos", "1", "--cgminer", "0", "--base-port", str(port))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"axeos-0: cannot listen on 127.0.0.1:{port}" in result.stderr


async def test_serves_until_sigterm_with_control_api() -> None:
    control_port = free_port()
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT),
        "--axeos", "1",
        "--cgminer", "1",
        "--base-port", "0",
        "--seed", "3",
        "--control-port", str(control_port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        miners = None
        deadline = time.monotonic() + 15
        async with httpx.AsyncClient(timeout=1.0) as client:
            while miners is None:
                assert time.monotonic() < deadline, "control API never came up"
                try:
                    miners = (await client.get(f"http://127.0.0.1:{control_port}/miners")).json()
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            assert [m["name"] for m in miners] == ["axeos-0", "cgminer-0"]
            axeos_url = miners[0]["url"].replace("axeos://", "http://")
            info = (await client.get(axeos_url + "/api/system/info")).json()
            assert info["hostname"] == "bitaxe-0"
            await client.post(
                f"http://127.0.0.1:{control_port}/miners/axeos-0/fault", json={"fault": "paused"}
            )
            assert (await client.get(axeos_url + "/api/system/info")).json()["miningPaused"]
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    log = stderr.decode()
    assert "Traceback" not in log
    assert f"axeos-0 {miners[0]['url']}" in log and f"cgminer-0 {miners[1]['url']}" in log


async def test_another_host_index_and_firmware() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT), "--axeos", "1", "--cgminer", "0", "--host", "127.0.0.31",
        "--base-port", str(port), "--first-index", "7", "--axeos-version", "v2.14.0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        info = None
        deadline = time.monotonic() + 15
        async with httpx.AsyncClient(timeout=1.0) as client:
            while info is None:
                assert time.monotonic() < deadline, "the miner never came up"
                try:
                    info = (await client.get(f"http://127.0.0.31:{port}/api/system/info")).json()
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (info["hostname"], info["macAddr"]) == ("bitaxe-7", "02:4D:57:00:00:07")
    assert info["version"] == "v2.14.0"


async def test_web_cgi_and_otp_options() -> None:
    control_port = free_port()
    secret = "JBSWY3DPEHPK3PXPJBSWY3DP"
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT), "--axeos", "1", "--cgminer", "1", "--base-port", "0", "--web",
        "--otp-secret", secret, "--control-port", str(control_port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    control = f"http://127.0.0.1:{control_port}"
    try:
        state = None
        deadline = time.monotonic() + 15
        async with httpx.AsyncClient(timeout=1.0) as client:
            while state is None:
                assert time.monotonic() < deadline, "control API never came up"
                try:
                    state = (await client.get(f"{control}/miners/cgminer-0")).json()
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            reboot = f"http://127.0.0.1:{state['web_port']}/cgi-bin/reboot.cgi"
            assert (await client.get(reboot)).status_code == 401
            axeos = (await client.get(f"{control}/miners/axeos-0")).json()
            assert axeos["otp_secret"] == secret
            patch = await client.patch(axeos["url"].replace("axeos://", "http://")
                                       + "/api/system", json={"frequency": 500})
            assert patch.status_code == 401
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert f"cgminer-0 web CGI http://127.0.0.1:{state['web_port']}/cgi-bin/reboot.cgi" in (
        stderr.decode())
