"""``minerwatch-collector scan``: a real process scanning 127.78.x.0/28 ranges where
simulated miners listen (served by this test's event loop meanwhile)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import sys
from collections.abc import AsyncIterator, Callable

import pytest

from minerwatch.sim.fleet import Fleet


@pytest.fixture
def ports(port_picker: Callable[[], int]) -> tuple[int, int]:
    first = port_picker()
    second = port_picker()
    while second == first:
        second = port_picker()
    return first, second


@contextlib.asynccontextmanager
async def two_hosts(prefix: str, ports: tuple[int, int]) -> AsyncIterator[list[Fleet]]:
    async with Fleet(axeos=1, cgminer=0, host=f"{prefix}.2", base_port=ports[0],
                     first_index=60) as one, \
            Fleet(axeos=0, cgminer=1, host=f"{prefix}.3", base_port=ports[1],
                  first_index=61) as two, \
            Fleet(axeos=1, cgminer=0, host=f"{prefix}.20", base_port=ports[0],
                  first_index=62) as outside:
        yield [one, two, outside]


async def run_scan(*args: str, stderr_fd: int | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "minerwatch.collector", "scan", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr_fd if stderr_fd is not None else asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), (err or b"").decode()


async def test_scan_prints_one_line_per_miner_in_range(ports: tuple[int, int]) -> None:
    async with two_hosts("127.78.1", ports) as (one, _two, _outside):
        code, out, err = await run_scan("127.78.1.0/28", "--ports", f"{ports[0]},{ports[1]}",
                                        "--timeout", "1")
    assert code == 0
    lines = sorted(out.splitlines())
    bitaxe = one.miners[0]
    assert len(lines) == 2
    assert lines[0].split() == [f"127.78.1.2:{ports[0]}", "axeos", "Bitaxe", "Gamma",
                                "BM1370", bitaxe.mac, "bitaxe-60"]
    assert lines[1].split() == [f"127.78.1.3:{ports[1]}", "cgminer", "Antminer", "S19", "Pro",
                                "-", "-"]
    # piped: a plain summary line, no progress display
    assert err.splitlines() == [err.strip()]
    assert "2 miner(s) found, 28 probes" in err
    assert "\r" not in err and "\x1b" not in err


async def test_scan_json_lines(ports: tuple[int, int]) -> None:
    async with two_hosts("127.78.2", ports) as (one, _two, _outside):
        code, out, _ = await run_scan("127.78.2.0/28", "--ports", str(ports[0]), "--json",
                                      "--concurrency", "4")
    assert code == 0
    [line] = out.splitlines()
    found = json.loads(line)
    assert found == {"host": "127.78.2.2", "port": ports[0], "driver": "axeos",
                     "make": "Bitaxe", "model": "Gamma BM1370", "firmware": "v2.11.0",
                     "hostname": "bitaxe-60", "mac": one.miners[0].mac, "via": "scan"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["10.0.0.0/8"], "scan: '10.0.0.0/8' is larger than a /16 (16777216 addresses)"),
        (["127.78.3.0/28", "lan"], "scan: 'lan' is not an address range"),
        (["127.78.3.0/28", "--ports", "80,http"], "'http' is not a TCP port"),
        (["127.78.3.0/28", "--concurrency", "0"], "must be a whole number from 1 to 4096"),
    ],
)
async def test_bad_arguments_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    code, out, err = await run_scan(*args)
    assert code == 2 and out == ""
    assert message in err
    assert "Traceback" not in err


async def test_nothing_found_exits_1(ports: tuple[int, int]) -> None:
    code, out, err = await run_scan("127.78.4.0/30", "--ports", str(ports[0]))
    assert (code, out) == (1, "")
    assert "0 miner(s) found, 2 probes" in err


async def test_progress_shows_on_a_terminal(ports: tuple[int, int]) -> None:
    primary, secondary = pty.openpty()
    try:
        async with two_hosts("127.78.5", ports):
            code, out, _ = await run_scan("127.78.5.0/28", "--ports", str(ports[0]),
                                          stderr_fd=secondary)
        os.close(secondary)
        secondary = -1
        shown = b""
        with contextlib.suppress(OSError):  # EIO once the terminal's last writer is gone
            while chunk := os.read(primary, 4096):
                shown += chunk
    finally:
        os.close(primary)
        if secondary != -1:
            os.close(secondary)
    assert code == 0 and len(out.splitlines()) == 1
    text = shown.decode()
    assert "\r\x1b[Kscanning 127.78.5.0/28:" in text
    assert "/14 probes" in text  # the running count of the 14 addresses on one port
    # cleared before the summary, so the terminal ends with plain lines
    assert "\r\x1b[Kminerwatch-collector: scan: 1 miner(s) found, 14 probes" in text
