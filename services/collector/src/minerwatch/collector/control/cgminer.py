"""The CGMiner API's privileged commands (TCP 4028): generic cgminer, and Avalon.

Generic: ``restart``, and the ``pools`` setting as ``switchpool|N`` when the wanted
primary pool is one the miner has configured already (its URL and user): the API cannot
add pools or change their users, frequencies, voltages or fans. Avalon (Canaan) adds
``ascset``: ``0,softoff,1:<unix time>`` pauses, ``0,softon,1:<unix time>`` resumes,
``0,reboot,0`` restarts. A miner that does not let this host use privileged commands
answers STATUS E code 45: the reason then says to start it with ``--api-allow W:<this
host>``.

Reading asks ``summary`` (uptime: ``Elapsed``) and ``pools`` (primary: the pool of lowest
Priority, fallback: the next), and Avalon's ``estats`` (paused: ``SoftOFF``).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from minerwatch.collector.control.driver import ControlError, MinerAction, MinerFacts, ReadBack
from minerwatch.collector.control.settings import pool_key
from minerwatch.collector.drivers.cgminer import avalon
from minerwatch.collector.drivers.cgminer.replies import first_block, section
from minerwatch.collector.drivers.cgminer.transport import StatusError, request
from minerwatch.collector.drivers.reading import PollError
from minerwatch.collector.drivers.values import count, number, text
from minerwatch.shared.schemas import MinerSettings, Pool, Pools

#: cgminer's MSG_ACCDENY: "Access denied to '%s' command".
ACCESS_DENIED = 45
#: Replies a restarting miner may give instead of its answer: it quit at once.
GONE = ("bad reply: empty", "reset without a reply", "closed")


# --- replies (pure) -------------------------------------------------------------------


def status_code(reply: Mapping[str, Any]) -> int | None:
    status = reply.get("STATUS")
    if isinstance(status, list) and status and isinstance(status[0], Mapping):
        status = status[0]
    if not isinstance(status, Mapping):
        return None
    code = number(status.get("Code"))
    return None if code is None else int(code)


def configured_pools(reply: Mapping[str, Any]) -> list[tuple[int, str, str]]:
    """(POOL number, URL, user) of each configured pool, by Priority."""
    found: list[tuple[float, int, str, str]] = []
    for pool in section(reply, "POOLS"):
        url, index = text(pool.get("URL")), count(pool.get("POOL"))
        if url is None or index is None:
            continue
        priority = number(pool.get("Priority"))
        if "://" not in url:
            url = f"stratum+tcp://{url}"
        found.append((index if priority is None else priority, index, url,
                      text(pool.get("User")) or ""))
    return [(index, url, user) for _, index, url, user in sorted(found)]


def _pool(url: str, user: str) -> Pool | None:
    try:  # the contract's bounds: a miner's odd strings must not spoil the result
        return msgspec.convert({"url": url, "user": user}, Pool)
    except msgspec.ValidationError:
        return None


def pools_of(reply: Mapping[str, Any]) -> Pools | None:
    pools = [_pool(url, user) for _, url, user in configured_pools(reply)]
    if not pools:
        return None
    return Pools(primary=pools[0], fallback=pools[1] if len(pools) > 1 else None)


def switch_target(reply: Mapping[str, Any], wanted: Pool) -> int:
    """The POOL number of the configured pool ``wanted`` names; ControlError (unsupported)
    when there is none, or its user differs: the API only switches between pools."""
    configured = configured_pools(reply)
    for index, url, user in configured:
        if pool_key(url) == pool_key(wanted.url):
            if user != wanted.user:
                raise ControlError(
                    f"pool {index} ({url}) mines as {user!r}: the CGMiner API cannot change "
                    "a pool's user", unsupported=True)
            return index
    listed = ", ".join(url for _, url, _ in configured) or "none"
    raise ControlError(f"{wanted.url} is not configured on this miner (configured: "
                       f"{listed}): the CGMiner API only switches between its pools",
                       unsupported=True)


def local_address(host: str, port: int) -> str:
    """The address this host reaches ``host`` from (a routing lookup: a UDP socket is
    connected, nothing is sent), for the ``--api-allow`` hint."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.connect((host, port))
        return str(udp.getsockname()[0])
    return "<this host>"


# --- I/O ------------------------------------------------------------------------------


class CgminerControl:
    """A cgminer-API miner's privileged commands."""

    name = "cgminer"
    ACTIONS: frozenset[str] = frozenset({"restart", "configure"})

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s

    def supports(self, action: str) -> bool:
        return action in self.ACTIONS

    def settable(self) -> frozenset[str]:
        return frozenset({"pools"})

    async def command(self, command: str, parameter: str | None = None, *,
                      privileged: bool = False, gone_ok: bool = False) -> Mapping[str, Any]:
        """One API command's reply; ControlError with the miner's reason when it fails.
        ``gone_ok``: a miner that quits without answering (it restarts) answered."""
        try:
            return await request(self.host, self.port, command, self.timeout_s, parameter)
        except StatusError as exc:
            if privileged and status_code(exc.reply) == ACCESS_DENIED:
                raise ControlError(
                    f"the miner denies {command!r} to this host: start it with --api-allow "
                    f"W:{local_address(self.host, self.port)} (privileged API access)"
                ) from None
            raise ControlError(f"{command}: {exc.reason}") from None
        except PollError as exc:
            if gone_ok and exc.reason.startswith(GONE):
                return {}
            raise ControlError(f"{command}: {exc.reason}") from None

    async def read(self) -> ReadBack:
        summary = await self.command("summary")
        pools = await self.command("pools")
        return ReadBack(settings=MinerSettings(pools=pools_of(pools)), facts=MinerFacts(),
                        uptime_s=count(first_block(summary, "SUMMARY").get("Elapsed")))

    async def write(self, change: MinerSettings) -> None:
        others = [name for name in ("frequency_mhz", "core_voltage_mv", "fan_mode",
                                    "fan_percent", "temp_target_c")
                  if getattr(change, name) is not None]
        if others:
            raise ControlError(f"{', '.join(others)} cannot be set over the CGMiner API",
                               unsupported=True)
        if change.pools is None:
            return
        if change.pools.fallback is not None:
            raise ControlError("the CGMiner API cannot set a fallback pool", unsupported=True)
        wanted = change.pools.primary
        if wanted is None:
            return
        if wanted.password is not None:
            raise ControlError("the CGMiner API cannot set pool passwords", unsupported=True)
        index = switch_target(await self.command("pools"), wanted)
        await self.command("switchpool", str(index), privileged=True)

    async def act(self, action: MinerAction) -> None:
        if action != "restart":
            raise ControlError(f"the CGMiner API has no {action}", unsupported=True)
        await self.command("restart", privileged=True, gone_ok=True)

    async def aclose(self) -> None:
        return None


class AvalonControl(CgminerControl):
    """Canaan Avalon: the generic commands, plus pause, resume and reboot by ``ascset``."""

    name = "avalon"
    ACTIONS = frozenset({"restart", "pause", "resume", "configure"})

    async def read(self) -> ReadBack:
        back = await super().read()
        with contextlib.suppress(ControlError):  # a reading without it still says a lot
            estats = await self.command("estats")
            modules = avalon.modules(estats)
            if modules:
                back.paused = avalon.parse_estats(estats).paused
                identity = avalon.fields_version(modules[0])
                back.facts = MinerFacts(device_model=identity.model,
                                        firmware=identity.firmware)
        return back

    async def act(self, action: MinerAction) -> None:
        if action == "restart":
            await self.command("ascset", "0,reboot,0", privileged=True, gone_ok=True)
        elif action in ("pause", "resume"):
            verb = "softoff" if action == "pause" else "softon"
            await self.command("ascset", f"0,{verb},1:{int(time.time())}", privileged=True)
        else:
            raise ControlError(f"Avalon firmware has no {action} over its API",
                               unsupported=True)
