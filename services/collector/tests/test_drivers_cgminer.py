"""The CGMiner transport and envelope: joined commands and the fallback, family dispatch,
identity across restarts, and a poll that stays inside its timeout whatever the firmware."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from minerwatch.collector.drivers import PollError
from minerwatch.collector.drivers.cgminer.driver import CgminerDriver, Quirks
from minerwatch.collector.drivers.cgminer.families import (
    ANTMINER,
    AVALON,
    GENERIC,
    WHATSMINER,
    family_of,
)
from minerwatch.collector.drivers.cgminer.replies import Identity
from minerwatch.collector.drivers.cgminer.transport import StatusError, decode_reply, split_joined

StartServer = Callable[..., Awaitable[Any]]
LoadFixture = Callable[[str], bytes]

PLAIN_VERSION = b'{"STATUS":[{"STATUS":"S","Msg":"CGMiner versions"}],' \
                b'"VERSION":[{"CGMiner":"4.11.1","API":"3.7"}],"id":1}'
PLAIN_SUMMARY = b'{"STATUS":[{"STATUS":"S","Msg":"Summary"}],' \
                b'"SUMMARY":[{"Elapsed":600,"MHS 5s":1250000.5,"MHS av":1240000,' \
                b'"Accepted":10,"Rejected":0,"Best Share":4096}],"id":1}'
PLAIN_STATS = b'{"STATUS":[{"STATUS":"S"}],"STATS":[{"ID":"BM1","temp1":45,"temp2":47,' \
              b'"fan1":3000,"fan2":0}],"id":1}'


@pytest.mark.parametrize(
    ("reply", "family"),
    [
        ({"VERSION": [{"Type": "Antminer S21", "BMMiner": "1.0.0"}]}, ANTMINER),
        ({"VERSION": [{"BMMiner": "2.0.0", "Type": "S9 custom"}]}, ANTMINER),
        ({"STATUS": "E", "Msg": "invalid cmd", "Description": "whatsminer v1.1"}, WHATSMINER),
        ({"VERSION": [{"BTMiner": "3.1.0"}]}, WHATSMINER),
        ({"VERSION": [{"PROD": "Avalon Nano3s", "MODEL": "Nano3s"}]}, AVALON),
        ({"VERSION": [{"CGMiner": "4.11.1", "MODEL": "nano3s", "SWTYPE": "MM319"}]}, AVALON),
        ({"VERSION": [{"CGMiner": "4.11.1", "API": "3.7"}]}, GENERIC),
        ({"STATUS": [{"STATUS": "E", "Msg": "Invalid command"}]}, GENERIC),
        ({}, GENERIC),
    ],
)
def test_family_from_the_version_reply(reply: dict[str, Any], family: object) -> None:
    assert family_of(reply) is family


def test_joined_reply_split_each_part_checked() -> None:
    reply = decode_reply(
        b'{"summary":[{"STATUS":[{"STATUS":"S"}],"SUMMARY":[{"GHS 5s":"1"}]}],'
        b'"stats":[{"STATUS":[{"STATUS":"E","Msg":"Invalid command"}],"id":1}],'
        b'"pools":{"STATUS":[{"STATUS":"S"}],"POOLS":[]},"id":1}\x00'
    )
    parts = split_joined(reply, ["summary", "stats", "pools"])
    assert parts["summary"]["SUMMARY"] == [{"GHS 5s": "1"}]  # type: ignore[index]
    assert isinstance(parts["stats"], StatusError)
    assert parts["stats"].reason == "bad reply: STATUS E: Invalid command"
    assert isinstance(parts["pools"], dict)  # not wrapped in a list: accepted too
    with pytest.raises(PollError, match="no 'version' in the joined reply"):
        split_joined(reply, ["summary", "version"])


async def test_generic_cgminer_end_to_end(cgminer_miner: StartServer) -> None:
    miner = await cgminer_miner({"version": PLAIN_VERSION, "summary": PLAIN_SUMMARY,
                                 "stats": PLAIN_STATS}, joins=True)
    driver = CgminerDriver("127.0.0.1", miner.port, timeout_s=2.0)
    reading = await driver.fetch()
    assert driver.quirks.family is GENERIC
    assert reading.hashrate_ths == pytest.approx(1.2500005)
    assert (reading.temp_c, reading.fan_rpm) == (47.0, [3000])  # board temps: no chip ones
    assert reading.firmware == "CGMiner 4.11.1" and reading.make is None
    assert reading.pool_url is None  # "pools" refused inside the joined reply


async def test_joined_refusal_is_remembered_per_miner(
    cgminer_miner: StartServer, s19_replies: dict[str, bytes]
) -> None:
    refusing = await cgminer_miner(s19_replies)
    joining = await cgminer_miner(s19_replies, joins=True)
    first = CgminerDriver("127.0.0.1", refusing.port, timeout_s=2.0)
    second = CgminerDriver("127.0.0.1", joining.port, timeout_s=2.0)
    for _ in range(3):
        await first.fetch()
        await second.fetch()
    assert (first.quirks.joined, second.quirks.joined) == (False, True)
    joined = [r["command"] for r in refusing.requests if "+" in str(r["command"])]
    assert joined == ["summary+pools"]  # refused once, never asked again
    assert refusing.connections == 1 + 1 + 3 * 3  # version, the refused join, 3 per poll
    assert joining.connections == 1 + 2 + 2  # version, summary+pools, stats; 1 per poll


async def test_a_joined_reply_that_is_not_one_falls_back_at_once(
    cgminer_miner: StartServer, s19_replies: dict[str, bytes]
) -> None:
    # some firmwares answer "summary+stats+pools" with just the summary
    replies = {**s19_replies, "summary+pools": s19_replies["summary"]}
    miner = await cgminer_miner(replies)
    driver = CgminerDriver("127.0.0.1", miner.port, timeout_s=2.0)
    reading = await driver.fetch()
    assert driver.quirks.joined is False
    assert reading.pool_url == "stratum+tcp://btc.f2pool.com:3333"


async def test_identity_is_asked_again_after_a_restart_only(
    cgminer_miner: StartServer, load_fixture: LoadFixture
) -> None:
    replies = {command: load_fixture(f"whatsminer_m30s+_20210322_{command}.json")
               for command in ("version", "summary", "devdetails", "pools")}
    miner = await cgminer_miner(replies, joins=True)
    driver = CgminerDriver("127.0.0.1", miner.port, timeout_s=2.0)
    await driver.fetch()
    await driver.fetch()
    miner.replies["summary"] = replies["summary"].replace(b'"Elapsed":394368', b'"Elapsed":60')
    miner.replies["devdetails"] = replies["devdetails"].replace(b"M30S+V40", b"M30S++V20")
    restarted = await driver.fetch()
    assert restarted.model == "M30S+"  # noticed the restart; asks again next poll
    after = await driver.fetch()
    assert after.model == "M30S++"
    asked = [str(r["command"]) for r in miner.requests]
    assert asked.count("version") == 2
    assert sum("devdetails" in c for c in asked) == 2


async def test_a_version_that_never_answers_does_not_stop_polling(
    cgminer_miner: StartServer, s19_replies: dict[str, bytes]
) -> None:
    miner = await cgminer_miner({k: v for k, v in s19_replies.items() if k != "version"})

    silent_version = await _silent_for("version", miner.port)
    driver = CgminerDriver("127.0.0.1", silent_version.port, timeout_s=0.4)
    try:
        for _ in range(4):
            started = time.monotonic()
            reading = await driver.fetch()
            assert time.monotonic() - started < 0.4 + 0.3
            assert reading.hashrate_ths == pytest.approx(109.87654)
        assert driver.quirks.family is GENERIC  # gave up asking after 3 polls without an answer
    finally:
        await silent_version.close()


class _Proxy:
    """Forwards every command to ``port`` but never answers those holding ``silent``."""

    def __init__(self, server: asyncio.Server, tasks: set[asyncio.Task[None]]) -> None:
        self.server = server
        self.port = server.sockets[0].getsockname()[1]
        self.tasks = tasks

    async def close(self) -> None:
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _silent_for(silent: str, port: int) -> _Proxy:
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            request = await reader.read(4096)
            if not request or silent in str(json.loads(request).get("command")):
                await asyncio.sleep(3600)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            up_writer.write(request)
            await up_writer.drain()
            writer.write(await up_reader.read())
            await writer.drain()
            up_writer.close()
        except (ConnectionError, asyncio.CancelledError):
            pass  # closed: ending quietly keeps asyncio from logging the cancelled handler
        finally:
            writer.close()
            tasks.discard(task)

    return _Proxy(await asyncio.start_server(handle, "127.0.0.1", 0), tasks)


async def test_poll_timeout_covers_every_step(cgminer_miner: StartServer) -> None:
    miner = await cgminer_miner(mode="silent")
    driver = CgminerDriver("127.0.0.1", miner.port, timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(PollError, match=r"^timeout after 0\.3 s$"):
        await driver.fetch()
    assert time.monotonic() - started < 0.3 + 0.2


async def test_a_firmware_that_chokes_on_joined_commands_is_asked_one_at_a_time(
    cgminer_miner: StartServer, s19_replies: dict[str, bytes]
) -> None:
    miner = await cgminer_miner(s19_replies, joins=True)
    choking = await _silent_for("+", miner.port)  # joined: no reply, no refusal
    driver = CgminerDriver("127.0.0.1", choking.port, timeout_s=0.3)
    try:
        for _ in range(2):
            with pytest.raises(PollError, match="timeout"):
                await driver.fetch()
        assert driver.quirks.joined is False
        reading = await driver.fetch()
    finally:
        await choking.close()
    assert reading.temp_c == 77.0 and reading.pool_url is not None


async def test_a_miner_away_at_start_still_gets_its_family(
    cgminer_miner: StartServer, load_fixture: LoadFixture
) -> None:
    replies = {command: load_fixture(f"avalon_nano3s_25021401_{command}.json")
               for command in ("version", "summary", "estats", "pools")}
    miner = await cgminer_miner(replies, mode="close")  # answers nothing for a while
    driver = CgminerDriver("127.0.0.1", miner.port, timeout_s=1.0)
    for _ in range(5):
        with pytest.raises(PollError):
            await driver.fetch()
    miner.mode = "normal"
    reading = await driver.fetch()
    assert driver.quirks.family is AVALON
    assert (reading.temp_c, reading.power_w, reading.model) == (88.0, 133.0, "Nano3s")


def test_what_a_driver_learned_is_forgotten_when_the_miner_restarts() -> None:
    quirks = Quirks(family=ANTMINER, identity=Identity(model="S19 Pro"), joined=True)
    quirks.options["stats"] = {"new_api": True}
    quirks.richer_tried.add("stats")
    assert not quirks.identify
    assert quirks.noticed_uptime(100) is False
    assert quirks.noticed_uptime(160) is False
    assert quirks.noticed_uptime(5) is True  # the uptime went down: a restart
    assert quirks.identify and quirks.ask_version  # who is it now?
    assert (quirks.joined, quirks.options, quirks.richer_tried) == (None, {}, set())
    assert quirks.family is ANTMINER  # until version says otherwise


def test_joined_commands_are_given_up_after_silences_not_after_refused_connections() -> None:
    silent, away = Quirks(), Quirks()
    timeout = PollError("timeout after 1.0 s")
    assert silent.joined_silent(timeout) is False
    assert silent.joined_silent(timeout) is True  # the second in a row: one at a time now
    assert silent.joined is False
    for _ in range(5):  # a miner that is away says nothing about its firmware
        assert away.joined_silent(PollError("refused: nothing listens on port 4028")) is False
    assert away.joined is None
