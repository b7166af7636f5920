"""A simulated Antminer S19 Pro (stock bmminer) answering the CGMiner RPC on TCP.

One request per connection, as on the real thing: read a command (JSON ``{"command":...}``
or the plain-text form), write the JSON reply and a NUL byte, close. Stock firmware reports
no power figure, so neither does this.

Write commands as with ``--api-allow W:127.0.0.1``: ``restart``, ``switchpool|N``,
``privileged`` and the Avalon-style ``ascset|0,softoff|softon|reboot,...``; with the
``privileged`` quirk off they are denied (code 45). With ``web`` on, the miner also serves
the stock web CGI ``/cgi-bin/reboot.cgi`` behind HTTP Digest auth on a second port.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from typing import Any

from minerwatch.sim.digest import DigestGuard, Verdict
from minerwatch.sim.h11server import Reply, Request, protocol_factory
from minerwatch.sim.miner import Clock, SimMiner, close_listener, open_listener
from minerwatch.sim.model import ANTMINER_S19_PRO, Fault, MinerModel, Pool, hash_unit

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
POOL_PASSWORD = "x"
#: Commands of cgminer's write group: only with W access (``--api-allow W:...``), never in
#: a ``+`` join.
PRIVILEGED = frozenset({"restart", "switchpool", "privileged", "ascset"})
WEB_REALM = "antMiner Configuration"
REBOOT_PATH = "/cgi-bin/reboot.cgi"


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
    ideal = model.expected_now_ghs()
    frequency = round(model.settings.frequency_mhz)
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
        "frequency": str(frequency),
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
            "total_freqavg": float(frequency),
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
        data[f"freq{n}"] = frequency
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


def pool_states(condition: Fault, priority: tuple[int, ...]) -> tuple[list[str], int | None]:
    """Each pool's ``Status`` by number and the number of the one in use (None: no pool
    connection). ``priority`` lists the pool numbers, first priority first."""
    states = ["Alive"] * len(priority)
    if condition is Fault.POOL_DOWN:
        return ["Dead"] * len(priority), None
    if condition is Fault.FALLBACK_POOL:
        states[priority[0]] = "Dead"
        return states, priority[1]
    return states, priority[0]


def pools_reply(model: MinerModel, now: float) -> dict[str, Any]:
    accepted, rejected = model.shares(now)
    settings = model.settings
    states, in_use = pool_states(model.condition, settings.pool_priority)
    worked = settings.pool_priority[0] if in_use is None else in_use  # whose shares these are
    pools = []
    for number, pool in enumerate(settings.pools):
        counted = number == worked
        pools.append(
            {
                "POOL": number,
                "URL": pool.url,
                "Status": states[number],
                "Priority": settings.pool_priority.index(number),
                "Quota": 1,
                "Long Poll": "N",
                "Getworks": accepted + rejected + 7 if counted else 1,
                "Accepted": accepted if counted else 0,
                "Rejected": rejected if counted else 0,
                "Discarded": 3 * (accepted + rejected) if counted else 0,
                "Stale": 0,
                "Get Failures": 0,
                "Remote Failures": 0,
                "User": pool.user,
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
                "Stratum URL": pool.host,
                "Has GBT": False,
                "Best Share": int(model.best_ever(now)) if counted else 0,
                "Pool Rejected%": round(100.0 * rejected / max(1, accepted + rejected), 4)
                if counted
                else 0.0,
                "Pool Stale%": 0.0,
            }
        )
    return {
        "STATUS": [status("S", 7, f"{len(pools)} Pool(s)", now)],
        "POOLS": pools,
        "id": 1,
    }


def _reply(severity: str, code: int, msg: str, now: float) -> dict[str, Any]:
    return {"STATUS": [status(severity, code, msg, now)], "id": 1}


def switchpool_reply(miner: CGMinerMiner, parameter: str | None, now: float) -> dict[str, Any]:
    """Make pool N the first priority (the others keep their order), as cgminer does."""
    settings = miner.model.settings
    last = len(settings.pools) - 1
    if parameter is None or not parameter.strip():
        return _reply("E", 25, "Missing pool id parameter", now)
    try:
        number = int(parameter.strip())
    except ValueError:
        number = -1
    if not 0 <= number <= last:
        return _reply("E", 26, f"Invalid pool id {number} - range is 0 - {last}", now)
    order = (number, *(n for n in settings.pool_priority if n != number))
    miner.model.apply_settings(dataclasses.replace(settings, pool_priority=order), now)
    return _reply("S", 27, f"Switching to pool {number}:'{settings.pools[number].url}'", now)


def ascset_reply(miner: CGMinerMiner, parameter: str | None, now: float) -> dict[str, Any]:
    """The Avalon ``ascset|0,softoff,1:<ts>`` / ``softon`` (pause, resume; at once, whatever
    the time) and ``ascset|0,reboot,0`` (restart)."""
    if parameter is None or not parameter.strip():
        return _reply("E", 15, "Missing device id parameter", now)
    device, _, rest = parameter.partition(",")
    try:
        number = int(device.strip())
    except ValueError:
        number = -1
    if number != 0:
        return _reply("E", 107, f"Invalid ASC id {number} - range is 0 - 0", now)
    option = rest.partition(",")[0].strip().lower()
    if not option:
        return _reply("E", 116, "Missing option after ASC number", now)
    if option in ("softoff", "softon"):
        miner.set_paused(option == "softoff")
    elif option == "reboot":
        miner.request_restart()
    else:
        return _reply("E", 120, f"ASC 0 set failed: unknown option '{option}'", now)
    return _reply("S", 119, "ASC 0 set OK", now)


def privileged_reply(
    miner: CGMinerMiner, command: str, parameter: str | None, now: float
) -> dict[str, Any]:
    if not miner.quirks.privileged:
        return _reply("E", 45, f"Access denied to '{command}' command", now)
    if command == "privileged":
        return _reply("S", 46, "Privileged access OK", now)
    if command == "restart":
        miner.request_restart()
        return _reply("S", 0, "RESTART", now)
    if command == "switchpool":
        return switchpool_reply(miner, parameter, now)
    return ascset_reply(miner, parameter, now)


def answer(
    miner: CGMinerMiner, command: str, now: float, parameter: str | None = None
) -> dict[str, Any]:
    """The reply to one command, or a ``{"cmd":[reply],...}`` object for ``a+b``."""
    if "+" in command:
        return {
            part: [
                _reply("E", 45, f"Access denied to '{part}' command", now)
                if part in PRIVILEGED
                else answer(miner, part, now)
            ]
            for part in command.split("+")
            if part
        }
    model = miner.model
    if command == "version":
        return version_reply(model, now)
    if command == "summary":
        return summary_reply(model, now)
    if command == "stats":
        return stats_reply(model, now)
    if command == "pools":
        return pools_reply(model, now)
    if command in PRIVILEGED:
        return privileged_reply(miner, command, parameter, now)
    return error_reply(14, "Invalid command", now)


def parse_command(raw: bytes, complete: bool) -> tuple[str, str | None] | dict[str, Any] | None:
    """(command, parameter) in ``raw``; an error reply for input that cannot be one; None:
    wait. ``complete`` means no more bytes will come (NUL, newline or EOF seen, or time is
    up)."""
    text = raw.replace(b"\0", b"").strip().decode("utf-8", "replace")
    if not text:
        return {"code": 23, "msg": "Invalid JSON"} if complete else None
    if not text.startswith("{"):
        name, bar, parameter = text.partition("|")  # plain text: "summary", "cmd|param"
        return name.strip(), parameter if bar else None
    try:
        request = json.loads(text)
    except ValueError:
        return {"code": 23, "msg": "Invalid JSON"} if complete else None
    command = request.get("command") if isinstance(request, dict) else None
    if not isinstance(command, str) or not command:
        return {"code": 24, "msg": "Missing JSON 'command'"}
    value = request.get("parameter")
    usable = isinstance(value, str | int | float) and not isinstance(value, bool)
    return command.strip(), str(value) if usable else None


def parse_request(raw: bytes, complete: bool) -> str | dict[str, Any] | None:
    """The command alone in ``raw`` (see ``parse_command``)."""
    parsed = parse_command(raw, complete)
    return parsed[0] if isinstance(parsed, tuple) else parsed


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
        parsed = parse_command(bytes(self._buffer), complete)
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
            reply = answer(miner, parsed[0], now, parsed[1])
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
        self,
        index: int,
        host: str,
        port: int,
        clock: Clock,
        seed: int,
        t0: float,
        web: bool = False,
        web_port: int = 0,
    ) -> None:
        """``web``: also serve the stock web CGI on ``web_port`` (0: an ephemeral one)."""
        model = MinerModel.create(seed, "cgminer", index, ANTMINER_S19_PRO, t0)
        super().__init__(f"cgminer-{index}", index, host, port, model, clock, seed)
        self.pool_user = f"minerwatchsim.cgminer{index}"
        pools = []
        for url in POOLS:
            host_port = url.split("://", 1)[1]
            pool_host, _, pool_port = host_port.rpartition(":")
            pools.append(Pool(pool_host, int(pool_port), self.pool_user, POOL_PASSWORD))
        model.settings = dataclasses.replace(
            model.settings, pools=tuple(pools), pool_priority=tuple(range(len(pools)))
        )
        self.web = web
        self.web_port: int | None = web_port if web else None  # 0 until bound
        self.web_requests = 0
        self._web_server: asyncio.AbstractServer | None = None
        self._web_connections: set[asyncio.BaseTransport] = set()
        self._digest = DigestGuard(WEB_REALM)

    @property
    def connections(self) -> set[asyncio.BaseTransport]:
        return self._connections

    @property
    def web_url(self) -> str | None:
        """``http://host:port`` of the web CGI, once it listens (None: no web CGI)."""
        return f"http://{self.host}:{self.web_port}" if self.web and self.web_port else None

    def report(self, now: float) -> dict[str, Any]:
        return {
            command: answer(self, command, now)
            for command in ("version", "summary", "stats", "pools")
        }

    def normalize(self, report: dict[str, Any]) -> dict[str, Any]:
        return normalize(report)

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        return lambda: CGMinerProtocol(self)

    async def _listen_more(self) -> None:
        if self.web:
            self._web_server, self.web_port = await open_listener(
                f"{self.name} web",
                self.host,
                self.web_port or 0,
                protocol_factory(self.handle_web, self._web_connections),
            )

    async def _unlisten_more(self) -> None:
        server, self._web_server = self._web_server, None
        await close_listener(server, self._web_connections)

    def handle_web(self, request: Request) -> Reply | None:
        """The stock lighttpd: ``/cgi-bin/reboot.cgi`` behind Digest auth reboots."""
        if self.fault is Fault.TIMEOUT:
            return None
        self.web_requests += 1
        path = request.target.split("?", 1)[0]
        if path != REBOOT_PATH:
            return Reply(404, b"404 - Not Found", "text/html")
        if request.method not in ("GET", "POST"):
            return Reply(405, b"405 - Method Not Allowed", "text/html")
        verdict = self._digest.check(
            request.headers.get("authorization"),
            request.method,
            request.target,
            self.quirks.web_user,
            self.quirks.web_password,
        )
        if verdict is not Verdict.OK:
            challenge = self._digest.challenge(stale=verdict is Verdict.STALE)
            return Reply(401, b"401 - Unauthorized", "text/html",
                         (("WWW-Authenticate", challenge),))
        self.request_restart()
        return Reply(200, b"<html><body>Rebooting...</body></html>", "text/html")

    def control_state(self) -> dict[str, Any]:
        settings = self.model.settings
        return super().control_state() | {
            "pool_priority": list(settings.pool_priority),
            "pools_by_number": [pool.url for pool in settings.pools],
            "privileged": self.quirks.privileged,
            "web_port": self.web_port if self.web else None,
            "web_user": self.quirks.web_user if self.web else None,
        }


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
