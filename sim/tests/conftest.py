"""Fixtures of the simulator's tests: a controllable clock and a small running fleet."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from minerwatch.sim.control import ControlApi
from minerwatch.sim.fleet import Fleet

import waiting


class ManualClock:
    """Epoch seconds that move only when a test says so: exact, sleep-free time travel."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(float(int(time.time())))


@pytest.fixture
async def fleet(clock: ManualClock) -> AsyncIterator[Fleet]:
    async with Fleet(axeos=2, cgminer=2, seed=7, clock=clock) as running:
        yield running


@pytest.fixture
async def live_fleet() -> AsyncIterator[Fleet]:
    """A fleet on the real clock, for values that must move on their own."""
    async with Fleet(axeos=1, cgminer=1, seed=3) as running:
        yield running


CgCall = Callable[..., Awaitable[bytes]]
Eventually = Callable[..., Awaitable[object]]


@pytest.fixture
def eventually() -> Eventually:
    """Wait for a condition (a plain check), never for a fixed time: the one
    ``tests.waiting.eventually``, with the short limits an in-process fleet needs."""
    return functools.partial(waiting.eventually, timeout=5.0, interval=0.02)


async def _cgminer_call(port: int, request: bytes, timeout: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


@pytest.fixture
def cg_call() -> CgCall:
    """Send one request to a CGMiner port and read until the miner closes."""
    return _cgminer_call


@pytest.fixture
async def control_client(fleet: Fleet) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on a running control API of ``fleet``."""
    api = ControlApi(fleet, port=0)
    await api.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}") as client:
            yield client
    finally:
        await api.stop()
