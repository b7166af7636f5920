"""The faults behind the alert rules, switched through the control API and read as a
collector reads them: AxeOS over HTTP, CGMiner over TCP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from minerwatch.sim.axeos import AxeOSMiner
from minerwatch.sim.control import ControlApi
from minerwatch.sim.fleet import Fleet, SimMiner
from minerwatch.sim.model import BURST_REJECT_RATIO

from .conftest import CgCall, ManualClock


async def switch(control: httpx.AsyncClient, name: str, fault: str) -> dict[str, Any]:
    response = await control.post(f"/miners/{name}/fault", json={"fault": fault})
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


async def info(miner: SimMiner) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=2.0) as client:
        response = await client.get(f"http://{miner.host}:{miner.port}/api/system/info")
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


async def cg(miner: SimMiner, cg_call: CgCall) -> dict[str, Any]:
    """summary, stats and pools of one CGMiner miner, in one request."""
    raw = await cg_call(miner.port, b'{"command":"summary+stats+pools"}')
    reply = json.loads(raw.rstrip(b"\x00"))
    return {
        "summary": reply["summary"][0]["SUMMARY"][0],
        "stats": reply["stats"][0]["STATS"][1],
        "pools": reply["pools"][0]["POOLS"],
    }


def cg_shares(reply: dict[str, Any]) -> tuple[int, int]:
    return reply["summary"]["Accepted"], reply["summary"]["Rejected"]


def ax_shares(data: dict[str, Any]) -> tuple[int, int]:
    return data["sharesAccepted"], data["sharesRejected"]


def in_use(pools: list[dict[str, Any]]) -> list[int]:
    return [pool["Priority"] for pool in pools if pool["Stratum Active"] is True]


async def test_healthy_miners_report_pool_and_block_fields(fleet: Fleet, cg_call: CgCall) -> None:
    axeos, cgminer = fleet.by_name("axeos-0"), fleet.by_name("cgminer-0")
    data = await info(axeos)
    assert data["isUsingFallbackStratum"] == 0 and data["blockFound"] == 0
    assert data["stratumURL"] and data["stratumPort"] > 0
    assert data["fallbackStratumURL"] and data["fallbackStratumPort"] > 0
    assert data["fallbackStratumURL"] != data["stratumURL"]
    reply = await cg(cgminer, cg_call)
    assert reply["summary"]["Found Blocks"] == 0
    pools = reply["pools"]
    assert [pool["Priority"] for pool in pools] == [0, 1, 2]
    assert all(pool["Status"] == "Alive" for pool in pools)
    assert in_use(pools) == [0]
    assert pools[0]["Accepted"] == reply["summary"]["Accepted"]
    for miner in (axeos, cgminer):
        snap = miner.snapshot()
        assert snap["pool_fallback"] is False and snap["blocks_found"] == 0
    assert axeos.snapshot()["pool_connected"] is None  # AxeOS cannot say
    assert cgminer.snapshot()["pool_connected"] is True


async def test_stalled_freezes_hashrate_and_shares_but_claims_to_mine(
    fleet: Fleet, clock: ManualClock, control_client: httpx.AsyncClient, cg_call: CgCall
) -> None:
    axeos, cgminer = fleet.by_name("axeos-0"), fleet.by_name("cgminer-0")
    clock.advance(60)
    before_ax, before_cg = await info(axeos), await cg(cgminer, cg_call)
    for name in ("axeos-0", "cgminer-0"):
        assert (await switch(control_client, name, "stalled"))["fault"] == "stalled"
    first_ax, first_cg = await info(axeos), await cg(cgminer, cg_call)
    assert first_ax["hashRate"] == before_ax["hashRate"]  # the clock has not moved yet
    ax_polls, cg_polls = [], []
    for _ in range(6):
        clock.advance(120)
        ax_polls.append(await info(axeos))
        cg_polls.append(await cg(cgminer, cg_call))
    for data in ax_polls:
        assert data["hashRate"] == first_ax["hashRate"] > 1000  # identical, still "mining"
        assert ax_shares(data) == ax_shares(first_ax)
        assert data["miningPaused"] is False
    assert ax_polls[-1]["uptimeSeconds"] == first_ax["uptimeSeconds"] + 720
    for reply in cg_polls:
        assert reply["summary"]["GHS 5s"] == first_cg["summary"]["GHS 5s"]
        assert reply["stats"]["GHS 5s"] == first_cg["stats"]["GHS 5s"]
        for n in (1, 2, 3):
            assert reply["stats"][f"chain_rate{n}"] == first_cg["stats"][f"chain_rate{n}"]
        assert cg_shares(reply) == cg_shares(first_cg)
        assert float(reply["summary"]["GHS 5s"]) > 100_000
        assert reply["pools"][0]["Accepted"] == first_cg["summary"]["Accepted"]
    assert cg_polls[-1]["summary"]["Elapsed"] == first_cg["summary"]["Elapsed"] + 720
    assert cgminer.snapshot()["is_mining"] is True and axeos.snapshot()["is_mining"] is True
    assert cg_shares(first_cg) >= cg_shares(before_cg)

    for name in ("axeos-0", "cgminer-0"):
        assert (await switch(control_client, name, "none"))["fault"] == "none"
    readings_ax, readings_cg = set(), set()
    for _ in range(3):
        clock.advance(30)
        data, reply = await info(axeos), await cg(cgminer, cg_call)
        readings_ax.add(data["hashRate"])
        readings_cg.add(reply["summary"]["GHS 5s"])
    assert len(readings_ax) == 3 and len(readings_cg) == 3  # moving again
    assert ax_shares(data)[0] > ax_shares(first_ax)[0]
    assert cg_shares(reply)[0] > cg_shares(first_cg)[0]


async def test_fan_stopped_reads_zero_for_one_fan(
    fleet: Fleet, control_client: httpx.AsyncClient, cg_call: CgCall
) -> None:
    axeos, cgminer = fleet.by_name("axeos-1"), fleet.by_name("cgminer-1")
    assert (await info(axeos))["fanrpm"] > 1000
    await switch(control_client, "axeos-1", "fan_stopped")
    await switch(control_client, "cgminer-1", "fan_stopped")
    data = await info(axeos)
    assert data["fanrpm"] == 0 and data["fan2rpm"] == 0  # the Gamma's only fan stopped
    assert data["fanspeed"] > 0 and data["hashRate"] > 1000  # still driven, still mining
    stats = (await cg(cgminer, cg_call))["stats"]
    assert stats["fan_num"] == 4 and stats["fan2"] == 0
    assert all(stats[f"fan{n}"] > 3000 for n in (1, 3, 4))
    assert float(stats["GHS 5s"]) > 100_000
    assert axeos.snapshot()["fan_rpm"] == [0]
    assert sorted(cgminer.snapshot()["fan_rpm"])[0] == 0

    await switch(control_client, "axeos-1", "none")
    await switch(control_client, "cgminer-1", "none")
    assert (await info(axeos))["fanrpm"] > 1000
    stats = (await cg(cgminer, cg_call))["stats"]
    assert all(stats[f"fan{n}"] > 3000 for n in (1, 2, 3, 4))


async def test_rejects_burst_rejects_a_fifth_of_new_shares(
    fleet: Fleet, clock: ManualClock, control_client: httpx.AsyncClient, cg_call: CgCall
) -> None:
    axeos, cgminer = fleet.by_name("axeos-0"), fleet.by_name("cgminer-1")

    async def counts() -> list[tuple[int, int]]:
        return [ax_shares(await info(axeos)), cg_shares(await cg(cgminer, cg_call))]

    def ratio(start: tuple[int, int], end: tuple[int, int]) -> float:
        accepted, rejected = end[0] - start[0], end[1] - start[1]
        return rejected / (accepted + rejected)

    start = await counts()
    clock.advance(1200)
    healthy = await counts()
    assert all(ratio(a, b) < 0.02 for a, b in zip(start, healthy, strict=True))

    for name in ("axeos-0", "cgminer-1"):
        assert (await switch(control_client, name, "rejects"))["fault"] == "rejects"
    history = [healthy]
    for _ in range(30):
        clock.advance(40)
        history.append(await counts())
    for kind in (0, 1):
        series = [point[kind] for point in history]
        assert [a for a, _ in series] == sorted(a for a, _ in series)  # only ever rising
        assert [r for _, r in series] == sorted(r for _, r in series)
        assert series[-1][0] > series[0][0]
        assert abs(ratio(series[0], series[-1]) - BURST_REJECT_RATIO) < 0.05
    assert (await info(axeos))["sharesRejectedReasons"][0]["count"] == history[-1][0][1]

    for name in ("axeos-0", "cgminer-1"):
        await switch(control_client, name, "none")
    after = history[-1]
    clock.advance(1200)
    calm = await counts()
    assert all(ratio(a, b) < 0.02 for a, b in zip(after, calm, strict=True))


async def test_fallback_pool(
    fleet: Fleet, clock: ManualClock, control_client: httpx.AsyncClient, cg_call: CgCall
) -> None:
    axeos, cgminer = fleet.by_name("axeos-1"), fleet.by_name("cgminer-0")
    await switch(control_client, "axeos-1", "fallback_pool")
    await switch(control_client, "cgminer-0", "fallback_pool")
    before_ax, before_cg = await info(axeos), await cg(cgminer, cg_call)
    assert before_ax["isUsingFallbackStratum"] == 1
    assert before_ax["fallbackStratumURL"] and before_ax["fallbackStratumPort"] > 0
    assert before_ax["stratumURL"] and before_ax["stratumPort"] > 0
    pools = before_cg["pools"]
    assert pools[0]["Priority"] == 0 and pools[0]["Status"] == "Dead"
    assert pools[0]["Stratum Active"] is False
    assert pools[1]["Priority"] == 1 and pools[1]["Status"] == "Alive"
    assert in_use(pools) == [1]
    assert pools[1]["Accepted"] == before_cg["summary"]["Accepted"]
    snap = axeos.snapshot()
    assert snap["pool_fallback"] is True
    assert snap["pool_url"] == "stratum+tcp://backup.minerwatch.test:3334"
    snap = cgminer.snapshot()
    assert snap["pool_fallback"] is True and snap["pool_connected"] is True
    assert snap["pool_url"] == pools[1]["URL"]

    clock.advance(300)  # shares still flow, to the fallback pool
    assert ax_shares(await info(axeos))[0] > ax_shares(before_ax)[0]
    assert cg_shares(await cg(cgminer, cg_call))[0] > cg_shares(before_cg)[0]

    await switch(control_client, "axeos-1", "none")
    await switch(control_client, "cgminer-0", "none")
    assert (await info(axeos))["isUsingFallbackStratum"] == 0
    pools = (await cg(cgminer, cg_call))["pools"]
    assert in_use(pools) == [0] and all(pool["Status"] == "Alive" for pool in pools)
    assert cgminer.snapshot()["pool_fallback"] is False


async def test_pool_down(
    fleet: Fleet, clock: ManualClock, control_client: httpx.AsyncClient, cg_call: CgCall
) -> None:
    axeos, cgminer = fleet.by_name("axeos-0"), fleet.by_name("cgminer-1")
    await switch(control_client, "axeos-0", "pool_down")
    await switch(control_client, "cgminer-1", "pool_down")
    first_ax, first_cg = await info(axeos), await cg(cgminer, cg_call)
    assert all(pool["Status"] == "Dead" for pool in first_cg["pools"])
    assert in_use(first_cg["pools"]) == []
    snap = cgminer.snapshot()
    assert snap["pool_connected"] is False and snap["pool_url"] is None
    assert snap["pool_fallback"] is None

    clock.advance(600)
    later_ax, later_cg = await info(axeos), await cg(cgminer, cg_call)
    assert ax_shares(later_ax) == ax_shares(first_ax)  # nothing to send shares to
    assert cg_shares(later_cg) == cg_shares(first_cg)
    # AxeOS has no pool-connection field: only the counters show it
    assert later_ax["isUsingFallbackStratum"] == 0 and later_ax["hashRate"] > 1000
    assert later_ax["uptimeSeconds"] == first_ax["uptimeSeconds"] + 600

    await switch(control_client, "axeos-0", "none")
    await switch(control_client, "cgminer-1", "none")
    clock.advance(300)
    assert ax_shares(await info(axeos))[0] > ax_shares(later_ax)[0]
    reply = await cg(cgminer, cg_call)
    assert in_use(reply["pools"]) == [0] and cg_shares(reply)[0] > cg_shares(later_cg)[0]


async def test_block_is_a_one_shot(
    fleet: Fleet, clock: ManualClock, control_client: httpx.AsyncClient, cg_call: CgCall
) -> None:
    axeos, cgminer = fleet.by_name("axeos-1"), fleet.by_name("cgminer-0")
    await switch(control_client, "axeos-1", "stalled")  # a one-shot ends any other fault
    state = await switch(control_client, "axeos-1", "block")
    assert state["fault"] == "none"
    assert (await control_client.get("/miners/axeos-1")).json()["fault"] == "none"
    assert (await switch(control_client, "cgminer-0", "block"))["fault"] == "none"
    data = await info(axeos)
    assert data["blockFound"] == 1
    assert (await cg(cgminer, cg_call))["summary"]["Found Blocks"] == 1
    clock.advance(600)  # the count stays
    data = await info(axeos)
    assert data["blockFound"] == 1
    assert (await cg(cgminer, cg_call))["summary"]["Found Blocks"] == 1
    await switch(control_client, "axeos-1", "block")
    assert (await info(axeos))["blockFound"] == 2
    assert axeos.snapshot()["blocks_found"] == 2 and cgminer.snapshot()["blocks_found"] == 1
    assert (await info(fleet.by_name("axeos-0")))["blockFound"] == 0  # others untouched


async def test_stall_ended_by_a_one_shot_moves_again(
    fleet: Fleet, clock: ManualClock, control_client: httpx.AsyncClient
) -> None:
    axeos = fleet.by_name("axeos-0")
    await switch(control_client, "axeos-0", "stalled")
    frozen = await info(axeos)
    await switch(control_client, "axeos-0", "best_diff")
    clock.advance(300)
    moved = await info(axeos)
    assert moved["hashRate"] != frozen["hashRate"]
    assert moved["sharesAccepted"] > frozen["sharesAccepted"]


async def test_best_diff_is_a_new_all_time_best(
    fleet: Fleet, clock: ManualClock, control_client: httpx.AsyncClient, cg_call: CgCall
) -> None:
    axeos, cgminer = fleet.by_name("axeos-0"), fleet.by_name("cgminer-1")
    seen_ax = [(await info(axeos))["bestDiff"]]
    seen_cg = [(await cg(cgminer, cg_call))["summary"]["Best Share"]]
    for _ in range(3):
        clock.advance(3600)
        seen_ax.append((await info(axeos))["bestDiff"])
        seen_cg.append((await cg(cgminer, cg_call))["summary"]["Best Share"])
    for _ in range(2):
        assert (await switch(control_client, "axeos-0", "best_diff"))["fault"] == "none"
        assert (await switch(control_client, "cgminer-1", "best_diff"))["fault"] == "none"
        data, reply = await info(axeos), await cg(cgminer, cg_call)
        assert data["bestDiff"] > max(seen_ax)
        assert data["bestSessionDiff"] == data["bestDiff"]  # found in this session
        assert reply["summary"]["Best Share"] > max(seen_cg)
        assert reply["pools"][0]["Best Share"] == reply["summary"]["Best Share"]
        seen_ax.append(data["bestDiff"])
        seen_cg.append(reply["summary"]["Best Share"])
    clock.advance(7200)  # and it stays the best: never below
    assert (await info(axeos))["bestDiff"] >= seen_ax[-1]
    assert (await cg(cgminer, cg_call))["summary"]["Best Share"] >= seen_cg[-1]
    assert axeos.snapshot()["best_diff"] >= seen_ax[-1]


def merge(state: dict[str, Any], changes: dict[str, Any]) -> None:
    """Fold one live update into the object it updates, as a live client does."""
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(state.get(key), dict):
            merge(state[key], value)
        else:
            state[key] = value


async def settle(socket: ClientConnection, state: dict[str, Any]) -> list[dict[str, Any]]:
    """Fold in updates until the miner has nothing more to push; the updates seen."""
    updates: list[dict[str, Any]] = []
    while True:
        try:
            raw = await asyncio.wait_for(socket.recv(), 0.4)
        except TimeoutError:
            return updates
        event = json.loads(raw)
        assert event["event"] == "update"
        merge(state, event["data"])
        updates.append(event["data"])


async def test_live_push_agrees_with_polling_under_every_new_fault(clock: ManualClock) -> None:
    async with Fleet(axeos=1, cgminer=0, seed=9, clock=clock, axeos_version="v2.14.0") as fleet:
        miner = fleet.miners[0]
        assert isinstance(miner, AxeOSMiner)
        miner.live_interval_s = 0.05
        api = ControlApi(fleet, port=0)
        await api.start()
        try:
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}") as control,
                connect(f"ws://127.0.0.1:{miner.port}/api/ws/live") as socket,
            ):
                state = json.loads(await socket.recv())["data"]
                assert state["blockFound"] == 0 and state["isUsingFallbackStratum"] == 0

                async def step(fault: str, seconds: float) -> list[dict[str, Any]]:
                    await switch(control, miner.name, fault)
                    clock.advance(seconds)
                    updates = await settle(socket, state)
                    assert state == await info(miner), fault  # pushed == polled
                    return updates

                stalled = await step("stalled", 0)
                for _ in range(3):
                    stalled += await step("stalled", 20)
                assert stalled  # uptime and temperatures still move...
                for update in stalled:  # ...the reading and the counters do not
                    assert not {"hashRate", "sharesAccepted", "sharesRejected"} & set(update)

                moving = await step("none", 20)
                assert any("hashRate" in update for update in moving)
                await step("fan_stopped", 5)
                assert state["fanrpm"] == 0
                await step("fallback_pool", 5)
                assert state["isUsingFallbackStratum"] == 1 and state["fanrpm"] > 0
                await step("pool_down", 5)
                assert state["isUsingFallbackStratum"] == 0
                await step("rejects", 600)
                best = state["bestDiff"]
                await step("block", 5)
                assert state["blockFound"] == 1
                await step("best_diff", 0)
                assert state["bestDiff"] > best
        finally:
            await api.stop()


async def test_slow_hashes_at_half_rate_and_recovers(
    fleet: Fleet, control_client: httpx.AsyncClient, cg_call: CgCall
) -> None:
    axeos, cgminer = fleet.by_name("axeos-1"), fleet.by_name("cgminer-1")
    normal_ax = (await info(axeos))["hashRate"]
    normal_cg = float((await cg(cgminer, cg_call))["summary"]["GHS 5s"])
    await switch(control_client, "axeos-1", "slow")
    await switch(control_client, "cgminer-1", "slow")
    slow_ax = (await info(axeos))["hashRate"]
    slow_cg = float((await cg(cgminer, cg_call))["summary"]["GHS 5s"])
    # Half of nominal, give or take the few percent of wobble both readings carry.
    assert 0.4 < slow_ax / normal_ax < 0.6 and 0.4 < slow_cg / normal_cg < 0.6
    assert (await info(axeos))["expectedHashrate"] > 1.5 * slow_ax  # it should do more
    await switch(control_client, "axeos-1", "none")
    await switch(control_client, "cgminer-1", "none")
    assert (await info(axeos))["hashRate"] > 0.9 * normal_ax
