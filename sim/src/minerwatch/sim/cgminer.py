"""A simulated Antminer S19 Pro (stock bmminer) answering the CGMiner RPC on TCP.

One request per connection, as on the real thing: read a command (JSON ``{"command":...}``
or the plain-text form), write the JSON reply and a NUL byte, close. Stock firmware reports
no power figure, so neither does this.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from minerwatch.sim.miner import Clock, SimMiner
from minerwatch.sim.model import ANTMINER_S19_PRO, Fault, MinerModel, hash_unit

DESCRIPTION = "bmminer 1.0.0"
MODEL_TYPE = "Antminer S19 Pro"
CHAINS = 3
CHIPS_PER_CHAIN = 114
FREQUENCY_MHZ = 675
POOL_DIFFICULTY = 65536
POOLS = (
    "stratum+tcp://pool.minerwatch.test:3333",
    "stratum+tcp://backup.minerwatch.test:3334",
    "stratum+tcp://backup2.minerwatch.test:443",
)
MAX_REQUEST = 64 * 1024
JSON_WAIT_S = 0.5  # how long a half-sent JSON command may take to complete


def status(severity: str, code: int, msg: str, now: float) -> dict[str, Any]:
    return {
        "STATUS": severity,
        "When": int(now),
        "Code": code,
        "Msg": msg,
        "Description": DESCRIPTION,
    }


def error_reply(code: int, msg: str, now: float) -> dict[str, Any]:
    return {"STATUS": [status("E", code, msg, now)], "id": 1}


# -- the miner's values ------------------------------------------------------------------


def chain_weights(key: int) -> list[float]:
    """How the hashrate splits over the three boards: never quite evenly."""
    raw = [1.0 + 0.03 * hash_unit(key, 2_000 + chain) for chain in range(CHAINS)]
    total = sum(raw)
    return [weight / total for weight in raw]


def chain_rates_ghs(model: MinerModel, now: float) -> list[float]:
    if model.paused:
        return [0.0] * CHAINS
    return [
        model.hashrate_ghs(now, channel=1 + chain) * weight
        for chain, weight in enumerate(chain_weights(model.key))
    ]


def chip_temps(model: MinerModel, now: float) -> list[list[int]]:
    """Four chip sensors per board; the hottest one on board 1 is exactly the model's temp.

    Offsets are never negative, so an override of 85 °C reads 85 as the maximum.
    """
    hottest = model.temp_c(now)
    boards = []
    for chain in range(CHAINS):
        chain_offset = 0.0 if chain == 0 else chain + abs(model.noise(now, 80 + chain, 45.0))
        spread = abs(model.noise(now, 90 + chain, 15.0))
        offsets = (5.0 + spread, 3.5 + spread, 1.5 + spread / 2, 0.0)
        boards.append([round(hottest - chain_offset - offset) for offset in offsets])
    return boards


def pcb_temps(model: MinerModel, now: float, chips: list[list[int]]) -> list[list[int]]:
    return [
        [
            round(chip - 14.0 + 1.5 * model.noise(now, 100 + 4 * chain + i, 25.0))
            for i, chip in enumerate(board)
        ]
        for chain, board in enumerate(chips)
    ]


STOPPED_FAN = 1  # the fan FAN_STOPPED stops: fan2 of fan1..fan4


def fan_rpms(model: MinerModel, now: float) -> list[int]:
    hottest = model.temp_c(now)
    base = max(3_600.0, min(6_000.0, 4_200.0 + (hottest - 65.0) * 120.0))
    stopped = STOPPED_FAN if model.condition is Fault.FAN_STOPPED else None
    return [
        0
        if fan == stopped
        else round(
            base
            + 120.0 * hash_unit(model.key, 4_000 + fan)  # each fan has its own speed
            + 60.0 * model.noise(now, 110 + fan, 8.0)
        )
        for fan in range(4)
    ]


def chip_status(key: int, chain: int) -> str:
    """bmminer's ``chain_acs``: groups of eight 'o' (good chip), an 'x' for a dead one."""
    chips = ["o"] * CHIPS_PER_CHAIN
    if hash_unit(key, 3_000 + chain) > 0.8:
        chips[int((hash_unit(key, 3_100 + chain) + 1.0) / 2.0 * CHIPS_PER_CHAIN)] = "x"
    groups = ["".join(chips[i : i + 8]) for i in range(0, CHIPS_PER_CHAIN, 8)]
    return " " + " ".join(groups)


def hardware_errors(model: MinerModel, now: float) -> int:
    rate = 0.004 * (1.0 + hash_unit(model.key, 5_000))
    return int(rate * model.mining_s(now))


def _ghs_text(value: float) -> str:
    return f"{value:.2f}"


# -- the commands ------------------------------------------------------------------------


def version_reply(model: MinerModel, now: float) -> dict[str, Any]:
    return {
        "STATUS": [status("S", 22, "BMMiner versions", now)],
        "VERSION": [
            {
                "BMMiner": "1.0.0",
                "API": "3.1",
                "Miner": "uart_trans.1.3",
                "CompileTime": "Thu Jul 16 10:47:16 CST 2020",
                "Type": MODEL_TYPE,
            }
        ],
        "id": 1,
    }


def summary_reply(model: MinerModel, now: float) -> dict[str, Any]:
    uptime = model.uptime_s(now)
    rate = sum(chain_rates_ghs(model, now))
    average = 0.0 if model.paused else model.average_ghs(now)
    accepted, rejected = model.shares(now)
    minutes = max(uptime, 1) / 60.0
    hw_errors = hardware_errors(model, now)
    return {
        "STATUS": [status("S", 11, "Summary", now)],
        "SUMMARY": [
            {
                "Elapsed": uptime,
                "GHS 5s": _ghs_text(rate),
                "GHS av": _ghs_text(average),
                "GHS 30m": _ghs_text(average),
                "Found Blocks": model.blocks_found,
                "Getwork": accepted + rejected + 7,
                "Accepted": accepted,
                "Rejected": rejected,
                "Hardware Errors": hw_errors,
                "Utility": round(accepted / minutes, 2),
                "Discarded": 3 * (accepted + rejected),
                "Stale": 0,
                "Get Failures": 0,
                "Local Work": 40 * uptime,
                "Remote Failures": 0,
                "Network Blocks": uptime // 600,
                "Total MH": round(average * 1000.0 * uptime, 0),
                "Work Utility": round(average * 60.0 / 4.295, 2),
                "Difficulty Accepted": float(accepted * POOL_DIFFICULTY),
                "Difficulty Rejected": float(rejected * POOL_DIFFICULTY),
                "Difficulty Stale": 0.0,
                "Best Share": int(model.best_ever(now)),
                "Device Hardware%": round(100.0 * hw_errors / max(1, hw_errors + 40 * uptime), 4),
                "Device Rejected%": round(100.0 * rejected / max(1, accepted + rejected), 4),
                "Pool Rejected%": round(100.0 * rejected / max(1, accepted + rejected), 4),
                "Pool Stale%": 0.0,
                "Last getwork": int(now),
            }
        ],
        "id": 1,
    }


def stats_reply(model: MinerModel, now: float) -> dict[str, Any]:
    rates = chain_rates_ghs(model, now)
    chips = chip_temps(model, now)
    pcbs = pcb_temps(model, now, chips)
    fans = fan_rpms(model, now)
    ideal = ANTMINER_S19_PRO.expected_ghs
    data: dict[str, Any] = {
        "STATS": 0,
        "ID": "BC50",
        "Elapsed": model.uptime_s(now),
        "Calls": 0,
        "Wait": 0.0,
        "Max": 0.0,
        "Min": 99999999.0,
        "GHS 5s": _ghs_text(sum(rates)),
        # a number here while summary sends a string: exactly what bmminer does
        "GHS av": round(0.0 if model.paused else model.average_ghs(now), 2),
        "miner_count": CHAINS,
        "frequency": str(FREQUENCY_MHZ),
        "fan_num": len(fans),
    }
    for fan, rpm in enumerate(fans, start=1):
        data[f"fan{fan}"] = rpm
    data["temp_num"] = CHAINS
    for chain in range(CHAINS):
        data[f"temp{chain + 1}"] = max(pcbs[chain])
    for chain in range(CHAINS):
        data[f"temp2_{chain + 1}"] = max(chips[chain])
    for chain in range(CHAINS):
        data[f"temp_pcb{chain + 1}"] = "-".join(str(t) for t in pcbs[chain])
        data[f"temp_chip{chain + 1}"] = "-".join(str(t) for t in chips[chain])
    data.update(
        {
            "total_rateideal": ideal,
            "rate_unit": "GH",
            "total_freqavg": float(FREQUENCY_MHZ),
            "total_acn": CHAINS * CHIPS_PER_CHAIN,
            "total rate": round(sum(rates), 2),
            "temp_max": max(max(board) for board in chips),
            "no_matching_work": 0,
        }
    )
    for chain in range(CHAINS):
        n = chain + 1
        data[f"chain_rateideal{n}"] = round(ideal / CHAINS, 2)
        data[f"chain_acn{n}"] = CHIPS_PER_CHAIN
        data[f"chain_acs{n}"] = chip_status(model.key, chain)
        data[f"chain_hw{n}"] = hardware_errors(model, now) // CHAINS
        data[f"chain_rate{n}"] = _ghs_text(rates[chain])
        data[f"freq{n}"] = FREQUENCY_MHZ
    data["miner_version"] = "uart_trans.1.3"
    data["miner_id"] = f"{model.key & ((1 << 64) - 1):016x}"
    return {
        "STATUS": [status("S", 70, "BMMiner stats", now)],
        "STATS": [
            {
                "BMMiner": "1.0.0",
                "Miner": "uart_trans.1.3",
                "CompileTime": "Thu Jul 16 10:47:16 CST 2020",
                "Type": MODEL_TYPE,
            },
            data,
        ],
        "id": 1,
    }


def pool_states(condition: Fault) -> tuple[list[str], int | None]:
    """Each pool's ``Status`` and the number of the one in use (None: no pool connection).

    Pools are listed in priority order, so number and ``Priority`` are the same.
    """
    if condition is Fault.POOL_DOWN:
        return ["Dead"] * len(POOLS), None
    if condition is Fault.FALLBACK_POOL:
        return ["Dead"] + ["Alive"] * (len(POOLS) - 1), 1
    return ["Alive"] * len(POOLS), 0


def pools_reply(model: MinerModel, now: float, user: str) -> dict[str, Any]:
    accepted, rejected = model.shares(now)
    states, in_use = pool_states(model.condition)
    worked = 0 if in_use is None else in_use  # the pool the share counts belong to
    pools = []
    for number, url in enumerate(POOLS):
        counted = number == worked
        pools.append(
            {
                "POOL": number,
                "URL": url,
                "Status": states[number],
                "Priority": number,
                "Quota": 1,
                "Long Poll": "N",
                "Getworks": accepted + rejected + 7 if counted else 1,
                "Accepted": accepted if counted else 0,
                "Rejected": rejected if counted else 0,
                "Discarded": 3 * (accepted + rejected) if counted else 0,
                "Stale": 0,
                "Get Failures": 0,
                "Remote Failures": 0,
                "User": user,
                "Last Share Time": "0:00:01" if counted else "0",
                "Diff": "65.5K",
                "Diff1 Shares": 0,
                "Proxy Type": "",
                "Proxy": "",
                "Difficulty Accepted": float(accepted * POOL_DIFFICULTY) if counted else 0.0,
                "Difficulty Rejected": float(rejected * POOL_DIFFICULTY) if counted else 0.0,
                "Difficulty Stale": 0.0,
                "Last Share Difficulty": float(POOL_DIFFICULTY) if counted else 0.0,
                "Has Stratum": True,
                "Stratum Active": number == in_use,
                "Stratum URL": url.split("://", 1)[1].rsplit(":", 1)[0],
                "Has GBT": False,
                "Best Share": int(model.best_ever(now)) if counted else 0,
                "Pool Rejected%": round(100.0 * rejected / max(1, accepted + rejected), 4)
                if counted
                else 0.0,
                "Pool Stale%": 0.0,
            }
        )
    return {
        "STATUS": [status("S", 7, f"{len(POOLS)} Pool(s)", now)],
        "POOLS": pools,
        "id": 1,
    }


def answer(miner: CGMinerMiner, command: str, now: float) -> dict[str, Any]:
    """The reply to one command, or a ``{"cmd":[reply],...}`` object for ``a+b``."""
    if "+" in command:
        return {part: [answer(miner, part, now)] for part in command.split("+") if part}
    model = miner.model
    if command == "version":
        return version_reply(model, now)
    if command == "summary":
        return summary_reply(model, now)
    if command == "stats":
        return stats_reply(model, now)
    if command == "pools":
        return pools_reply(model, now, miner.pool_user)
    return error_reply(14, "Invalid command", now)


def parse_request(raw: bytes, complete: bool) -> str | dict[str, Any] | None:
    """The command in ``raw``; an error reply for input that cannot be one; None: wait.

    ``complete`` means no more bytes will come (NUL, newline or EOF seen, or time is up).
    """
    text = raw.replace(b"\0", b"").strip().decode("utf-8", "replace")
    if not text:
        return {"code": 23, "msg": "Invalid JSON"} if complete else None
    if not text.startswith("{"):
        return text.split("|", 1)[0].strip()  # plain-text form: "summary" or "cmd|param"
    try:
        request = json.loads(text)
    except ValueError:
        return {"code": 23, "msg": "Invalid JSON"} if complete else None
    command = request.get("command") if isinstance(request, dict) else None
    if not isinstance(command, str) or not command:
        return {"code": 24, "msg": "Missing JSON 'command'"}
    return command.strip()


def garbage_reply(reply: bytes, number: int, key: int) -> bytes:
    """Broken replies seen in the field: cut short (no NUL), or noise."""
    if number % 2:
        return reply[: max(1, len(reply) // 2)]
    noise = bytes(int((hash_unit(key, number * 64 + i) + 1.0) * 128) & 255 for i in range(48))
    return b"\xff\xfe" + noise + b"\0"


class CGMinerProtocol(asyncio.Protocol):
    """One connection: gather one command, answer it with a NUL, close."""

    def __init__(self, miner: CGMinerMiner) -> None:
        self._miner = miner
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._done = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._miner.connections.add(transport)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._buffer += data
        if len(self._buffer) > MAX_REQUEST:
            self._finish(json.dumps(error_reply(23, "Invalid JSON", self._miner.clock())))
            return
        complete = b"\0" in data or data.endswith(b"\n")
        self._try(complete)

    def eof_received(self) -> bool:
        if not self._done:
            self._try(complete=True)
        return True  # the reply, if any, still has to go out before we close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._miner.connections.discard(self._transport)
        self._cancel_timer()

    def _try(self, complete: bool) -> None:
        parsed = parse_request(bytes(self._buffer), complete)
        if parsed is None:
            # half a JSON object: give the rest a moment, then answer what we have
            if self._timer is None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(JSON_WAIT_S, self._try, True)
            return
        self._cancel_timer()
        self._done = True
        miner = self._miner
        if miner.fault is Fault.TIMEOUT:
            return  # swallow the request; the client waits until it gives up
        now = miner.clock()
        if isinstance(parsed, dict):
            reply: dict[str, Any] = error_reply(parsed["code"], parsed["msg"], now)
        else:
            reply = answer(miner, parsed, now)
        self._finish(json.dumps(reply, separators=(",", ":")))

    def _finish(self, text: str) -> None:
        self._done = True
        if self._transport is None or self._transport.is_closing():
            return
        payload = text.encode() + b"\0"
        if self._miner.fault is Fault.GARBAGE:
            payload = garbage_reply(payload, self._miner.next_reply_number(), self._miner.model.key)
        self._transport.write(payload)
        self._transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class CGMinerMiner(SimMiner):
    kind = "cgminer"
    scheme = "cgminer"

    def __init__(
        self, index: int, host: str, port: int, clock: Clock, seed: int, t0: float
    ) -> None:
        model = MinerModel.create(seed, "cgminer", index, ANTMINER_S19_PRO, t0)
        super().__init__(f"cgminer-{index}", index, host, port, model, clock, seed)
        self.pool_user = f"minerwatchsim.cgminer{index}"

    @property
    def connections(self) -> set[asyncio.BaseTransport]:
        return self._connections

    def report(self, now: float) -> dict[str, Any]:
        return {
            command: answer(self, command, now)
            for command in ("version", "summary", "stats", "pools")
        }

    def normalize(self, report: dict[str, Any]) -> dict[str, Any]:
        return normalize(report)

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        return lambda: CGMinerProtocol(self)


def normalize(report: dict[str, Any]) -> dict[str, Any]:
    """The Sample-unit view of version/summary/stats/pools replies taken together."""
    summary = report["summary"]["SUMMARY"][0]
    stats = report["stats"]["STATS"][1]
    pools = report["pools"]["POOLS"]
    active = next(
        (pool for pool in pools if pool["Stratum Active"] and pool["Status"] == "Alive"), None
    )
    first = min(pool["Priority"] for pool in pools)
    hashrate_ths = float(summary["GHS 5s"]) / 1000.0
    return {
        "hashrate_ths": hashrate_ths,
        "expected_hashrate_ths": stats["total_rateideal"] / 1000.0,
        "power_w": None,
        "efficiency_jth": None,
        "temp_c": float(max(stats[f"temp2_{n}"] for n in range(1, CHAINS + 1))),
        "vr_temp_c": None,
        "fan_rpm": [stats[f"fan{n}"] for n in range(1, stats["fan_num"] + 1)],
        "shares_accepted": summary["Accepted"],
        "shares_rejected": summary["Rejected"],
        "best_diff": float(summary["Best Share"]),
        "uptime_s": summary["Elapsed"],
        "pool_url": None if active is None else active["URL"],
        "is_mining": hashrate_ths > 0,
        "pool_fallback": None if active is None else active["Priority"] > first,
        "pool_connected": active is not None,
        "blocks_found": summary["Found Blocks"],
    }
