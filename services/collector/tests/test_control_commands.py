"""The command queue: bounded per miner, answered when full, redeliveries run once, and a
result with no broker to take it is counted as lost, not kept. A recording stand-in takes
the place of the MQTT session (the edge of the unit); the miner is a local HTTP server
that never answers, so commands wait on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from minerwatch.collector.control.commands import MAX_QUEUED, Commands
from minerwatch.collector.fleet import FleetRegistry
from minerwatch.collector.outbox import Outbox
from minerwatch.shared import schemas
from minerwatch.shared.config import (
    CollectorConfig,
    Config,
    ControlConfig,
    MinerConfig,
    MqttConfig,
)
from minerwatch.shared.mqtt import Message, MqttClient
from minerwatch.shared.schemas import Command, CommandResult


class Session:
    """What Commands publishes, as (topic, result, properties)."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, CommandResult, dict[str, Any] | None]] = []

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                      properties: dict[str, Any] | None = None) -> None:
        assert qos == 1 and not retain
        self.sent.append((topic, schemas.decode(payload, CommandResult), properties))

    def of(self, command_id: str) -> list[CommandResult]:
        return [result for topic, result, _ in self.sent
                if result.id == command_id and topic.endswith("/command/result")]


def command(number: int, action: str = "identify") -> Command:
    return Command(id=f"q{number}", miner_id="slow", action=action,  # type: ignore[arg-type]
                   by="test", ts=schemas.format_ts(datetime.now(UTC)))


def message(cmd: Command, *, dup: bool = False, **properties: Any) -> Message:
    return Message(topic=f"b/miners/{cmd.miner_id}/command", payload=schemas.encode(cmd),
                   qos=1, retain=False, packet_id=1, dup=dup, properties=properties)


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.01)


async def test_queue_bound_redelivery_and_lost_results(http_miner: Any) -> None:
    silent = await http_miner(mode="silent")
    config = Config(
        mqtt=MqttConfig(base_topic="b"),
        collector=CollectorConfig(
            miners=[MinerConfig(url=f"axeos://127.0.0.1:{silent.port}", name="slow")],
            timeout_s=0.1),
        control=ControlConfig(enabled=True, timeout_s=0.1))
    commands = Commands(config, FleetRegistry(config.collector, Outbox()))
    session = Session()
    commands.attach(cast(MqttClient, session))
    try:
        for number in range(MAX_QUEUED + 2):
            commands.submit(command(number), message(command(number)))
        # the two over the bound are answered busy at once, while the first still waits
        await until(lambda: bool(session.of(f"q{MAX_QUEUED + 1}")))
        assert [r.status for r in session.of(f"q{MAX_QUEUED}")] == ["busy"]
        assert not session.of("q0")
        await until(lambda: bool(session.of(f"q{MAX_QUEUED - 1}")), timeout=20)
        assert all(session.of(f"q{n}")[0].status == "failed" for n in range(MAX_QUEUED))
        assert "timeout" in session.of("q0")[0].message

        # a redelivery (DUP) of a command carried out already is not carried out again
        first = len(session.sent)
        commands.submit(command(0), message(command(0), dup=True))
        commands.submit(command(99, "settings"), message(
            command(99, "settings"), response_topic="b/replies/me", correlation_data=b"k"))
        await until(lambda: bool(session.of("q99")))
        assert [r.id for _, r, _ in session.sent[first:]] == ["q99", "q99"]
        topic, reply, properties = session.sent[-1]
        assert (topic, reply.id, properties) == ("b/replies/me", "q99",
                                                 {"correlation_data": b"k"})

        # no session: the result is lost, counted and logged, never queued
        commands.detach(cast(MqttClient, session))
        commands.submit(command(100, "settings"))
        await until(lambda: commands.lost == 1)
        assert not session.of("q100")
    finally:
        await commands.aclose()
