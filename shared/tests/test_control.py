"""The safe ranges and the one check of a change: what may be written to a miner."""

from __future__ import annotations

import pytest

from minerwatch.shared.control import check_change, is_empty, limits_for, pool_address
from minerwatch.shared.messages import Received, Rejected, decode_message
from minerwatch.shared.schemas import (
    Command,
    CommandResult,
    MinerSettings,
    Pool,
    Pools,
    TuneProgress,
    TuneStep,
    encode,
)

TS = "2026-12-02T10:00:00.000Z"


@pytest.mark.parametrize(("asic", "board", "frequency", "voltage"), [
    ("BM1397", "Max", (400, 600), (1100, 1500)),
    ("BM1366", "Ultra", (400, 575), (1100, 1300)),
    ("BM1368", "Supra", (400, 575), (1100, 1300)),
    ("BM1370", "Gamma", (400, 625), (1000, 1250)),
    ("BM1370", "GammaDuo", (350, 410), (1000, 1250)),
    ("BM1370", "NerdQAxe++", (500, 600), (1120, 1200)),
])
def test_each_model_has_its_range(asic: str, board: str, frequency: tuple[int, int],
                                  voltage: tuple[int, int]) -> None:
    limits = limits_for(asic, board)
    assert limits.frequency_mhz is not None and limits.core_voltage_mv is not None
    assert (limits.frequency_mhz.min, limits.frequency_mhz.max) == frequency
    assert (limits.core_voltage_mv.min, limits.core_voltage_mv.max) == voltage
    assert not limits.overclock


def test_the_firmware_options_win_only_when_narrower() -> None:
    narrower = limits_for("BM1370", "Gamma", frequency_options=[490, 525, 550],
                          voltage_options=[1100, 1150, 1200])
    assert narrower.frequency_mhz is not None and narrower.core_voltage_mv is not None
    assert (narrower.frequency_mhz.min, narrower.frequency_mhz.max) == (490, 550)
    assert (narrower.core_voltage_mv.min, narrower.core_voltage_mv.max) == (1100, 1200)
    assert "narrowed by the firmware" in narrower.source
    wider = limits_for("BM1370", "Gamma", frequency_options=[100, 525, 900])
    assert wider.frequency_mhz is not None
    assert (wider.frequency_mhz.min, wider.frequency_mhz.max) == (400, 625)


def test_overclock_widens_to_the_absolute_bound_and_no_further() -> None:
    limits = limits_for("BM1370", "Gamma", allow_overclock=True,
                        frequency_options=[400, 500])
    assert limits.overclock and limits.frequency_mhz is not None
    assert (limits.frequency_mhz.min, limits.frequency_mhz.max) == (350, 1000)
    assert check_change(MinerSettings(frequency_mhz=1001), limits) == [
        "frequency_mhz 1001 is outside 350-1000 MHz (BM1370 overclock bound)"]


def test_a_change_out_of_range_names_the_range() -> None:
    limits = limits_for("BM1366", "Ultra")
    problems = check_change(MinerSettings(frequency_mhz=700, core_voltage_mv=1200,
                                          fan_percent=101), limits)
    assert problems == [
        "frequency_mhz 700 is outside 400-575 MHz (BM1366 (Ultra, Hex))",
        "fan_percent 101 is outside 0-100 % (BM1366 (Ultra, Hex))"]
    assert check_change(MinerSettings(frequency_mhz=575, core_voltage_mv=1100), limits) == []


def test_an_unknown_model_or_a_fixed_firmware_cannot_be_clocked() -> None:
    unknown = limits_for("BM9999", None)
    assert unknown.frequency_mhz is None
    assert check_change(MinerSettings(frequency_mhz=500), unknown) == [
        "frequency_mhz cannot be set on this miner (no safe range is known for BM9999)"]
    fixed = limits_for("BM1370", "Gamma", tunable=False, fan=False)
    assert check_change(MinerSettings(core_voltage_mv=1100, fan_percent=50), fixed)[0] \
        .startswith("core_voltage_mv cannot be set on this miner")


def test_pools_and_fan_mode_are_checked() -> None:
    limits = limits_for("BM1370", "Gamma")
    bad = MinerSettings(fan_mode="auto", fan_percent=50, pools=Pools(
        primary=Pool(url="not a url", user="me")))
    assert check_change(bad, limits) == [
        "fan_percent needs fan_mode manual",
        "pools.primary.url 'not a url' is not host:port or stratum+tcp://host:port"]
    assert pool_address("stratum+tcp://pool.example:3333") == ("stratum+tcp", "pool.example",
                                                               3333)
    assert pool_address("pool.example:3333") == ("stratum+tcp", "pool.example", 3333)
    assert pool_address("pool.example:99999") is None
    assert is_empty(MinerSettings()) and not is_empty(MinerSettings(fan_mode="auto"))
    assert is_empty(MinerSettings(pools=Pools()))
    assert not is_empty(MinerSettings(pools=Pools(fallback=Pool(url="p.example:3333", user="me"))))


def command(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {"id": "c-1", "miner_id": "gamma-1", "action": "restart",
                               "by": "token:ops", "ts": TS}
    body.update(changes)
    return body


def test_commands_decode_by_the_registry_and_are_checked() -> None:
    got = decode_message("mw", "mw/miners/gamma-1/command", encode(Command(**command())))
    assert isinstance(got, Received) and isinstance(got.message, Command)
    configure = Command(**command(action="configure"),  # type: ignore[arg-type]
                        settings=MinerSettings(frequency_mhz=550))
    assert isinstance(decode_message("mw", "mw/miners/gamma-1/command", encode(configure)),
                      Received)
    for body, says in [
        (command(miner_id="other"), "does not match the topic"),
        (command(action="configure"), "settings come with the configure action"),
        (command(action="self-destruct"), "Invalid enum value"),
        (command(settings={"frequency_mhz": 500, "turbo": True}, action="configure"),
         "unknown field"),
        (command(id="../../etc"), "id"),
    ]:
        rejected = decode_message("mw", "mw/miners/gamma-1/command", encode_raw(body))
        assert isinstance(rejected, Rejected) and says.lower() in rejected.reason.lower(), (
            body, rejected)


def encode_raw(body: dict[str, object]) -> bytes:
    import json

    return json.dumps(body).encode()


def test_results_and_tune_progress_round_trip() -> None:
    result = CommandResult(id="c-1", miner_id="gamma-1", action="configure", by="alerts",
                           status="refused", message="frequency_mhz 900 is outside",
                           requested=TS, ts=TS, limits=limits_for("BM1370", "Gamma"))
    for topic in ("mw/miners/gamma-1/command/result", "mw/replies/api-1"):
        got = decode_message("mw", topic, encode(result))
        assert isinstance(got, Received) and got.message == result, got
    assert not result.ok
    progress = TuneProgress(run_id="r-1", miner_id="gamma-1", objective="efficiency",
                            state="running", phase="settling", by="cli", started=TS, ts=TS,
                            steps=[TuneStep(index=0, frequency_mhz=525, core_voltage_mv=1150,
                                            ts=TS, stable=True)])
    got = decode_message("mw", "mw/miners/gamma-1/tune", encode(progress))
    assert isinstance(got, Received) and got.message == progress
    bad_step = encode(progress).replace(TS.encode(), b"2026-13-45T10:00:00.000Z")
    assert isinstance(decode_message("mw", "mw/miners/gamma-1/tune", bad_step), Rejected)
