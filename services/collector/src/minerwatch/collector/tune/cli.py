"""``minerwatch-collector tune MINER_ID``: an autotune run from a terminal.

The miner is found in the config's ``[[collector.miners]]`` (by name), else by its
retained info on the broker (``{base}/miners/{id}/info``: driver, host and port). The run
shows one updating progress line on stderr (one line per step when stderr is not a
terminal), publishes its progress to ``{base}/miners/{id}/tune`` while the broker is
reachable (best effort: a run never needs it), and prints the steps and the result.

Exit 0: done (the best step applied, or the original settings kept when none was stable);
1: failed (the message says whether the original settings were restored); 2: bad
arguments, a bad config or ``[control] enabled`` off; 130 (SIGINT) or 143 (SIGTERM): the
run was stopped and the original settings restored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
import time
import uuid
from dataclasses import dataclass
from typing import TextIO

import msgspec

from minerwatch.collector.control import ControlDriver, create_control
from minerwatch.collector.control.drivers import control_kind
from minerwatch.collector.drivers import Driver, PollError, Reading, create_driver
from minerwatch.collector.identity import host_port_id
from minerwatch.collector.tune.engine import TuneRun
from minerwatch.collector.tune.tuner import refusal
from minerwatch.shared.config import (
    Config,
    ConfigError,
    MinerConfig,
    endpoint,
    load_config,
    parse_mqtt_url,
    redact,
)
from minerwatch.shared.errors import one_line
from minerwatch.shared.messages import Received, decode_message
from minerwatch.shared.mqtt import MAX_PACKET_SIZE, Client, MqttError, Subscription
from minerwatch.shared.schemas import (
    Command,
    MinerInfo,
    TuneProgress,
    TuneRequest,
    TuneStep,
    encode,
    now_ts,
)
from minerwatch.shared.topics import INFO, is_miner_id, tune_topic

PROGRAM = "minerwatch-collector"
#: How long the broker may take to connect, and to hand over a retained info.
BROKER_TIMEOUT_S = 3.0
INFO_WAIT_S = 2.0
#: Exit codes by how the run was stopped.
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class CannotTune(Exception):
    """The miner cannot be found, reached or tuned; ``str()`` is the one line to show."""


@dataclass(frozen=True, slots=True)
class Target:
    driver: str
    host: str
    port: int
    miner: MinerConfig | None = None
    make: str | None = None


def from_config(config: Config, miner_id: str) -> Target | None:
    """The configured miner called ``miner_id`` (its ``name``, the URL's ``?name=``, or
    the host-port id of a miner without either)."""
    for miner in config.collector.miners:
        where = endpoint(miner.url)
        name = miner.name or where.name
        if name == miner_id or (not name and host_port_id(where.host, where.port) == miner_id):
            return Target(where.driver, where.host, where.port, miner)
    return None


async def connect_broker(config: Config) -> tuple[Client | None, str]:
    """A connected client, or None and why not (one line)."""
    address = parse_mqtt_url(config.mqtt.url)
    client = Client(address.host, address.port, username=address.username,
                    password=address.password,
                    tls_context=ssl.create_default_context() if address.tls else None,
                    keepalive_s=config.mqtt.keepalive_s, max_packet_size=MAX_PACKET_SIZE,
                    timeout_s=BROKER_TIMEOUT_S)
    try:
        async with asyncio.timeout(BROKER_TIMEOUT_S):
            await client.connect()
    except (MqttError, OSError, TimeoutError) as exc:
        return None, one_line(exc) if str(exc) else "no answer"
    return client, ""


async def info_from_broker(client: Client, base: str, miner_id: str,
                           wait_s: float = INFO_WAIT_S) -> MinerInfo | None:
    """The miner's retained info, or None when the broker holds none (within ``wait_s``)."""
    topic = INFO.topic(base, miner_id=miner_id)
    await client.subscribe([Subscription(topic, qos=1)])
    messages = aiter(client.messages)
    try:
        async with asyncio.timeout(wait_s):
            while True:
                message = await anext(messages)
                client.ack(message)
                decoded = decode_message(base, message.topic, message.payload)
                if (isinstance(decoded, Received) and isinstance(decoded.message, MinerInfo)
                        and message.topic == topic):
                    return decoded.message
                if not message.payload:
                    return None
    except TimeoutError:
        return None
    finally:
        with contextlib.suppress(MqttError):
            await client.unsubscribe([topic])


async def find_target(config: Config, miner_id: str, client: Client | None,
                      broker_problem: str) -> Target:
    found = from_config(config, miner_id)
    if found is not None:
        return found
    where = redact(config.mqtt.url)
    if client is None:
        raise CannotTune(f"{miner_id} is not in the config's [[collector.miners]] and the "
                           f"broker at {where} cannot be reached to look it up: "
                           f"{broker_problem}")
    info = await info_from_broker(client, config.mqtt.base_topic, miner_id)
    if info is None:
        raise CannotTune(f"{miner_id} is not in the config's [[collector.miners]] and the "
                           f"broker at {where} holds no info for it (is a collector polling "
                           "it?)")
    return Target(info.driver, info.host, info.port, None, info.make)


def control_for(config: Config, target: Target, reader: Driver, reading: Reading
                ) -> ControlDriver:
    quirks = getattr(reader, "quirks", None)
    family = getattr(getattr(quirks, "family", None), "name", None)
    kind = control_kind(target.driver, target.make or reading.make, family)
    return create_control(kind, target.host, target.port, control=config.control,
                          miner=target.miner, timeout_s=config.control.timeout_s)


# --- showing it -----------------------------------------------------------------------


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def step_line(step: TuneStep) -> str:
    ratio = "-" if step.reject_ratio is None else f"{step.reject_ratio:.2%}"
    verdict = "stable" if step.stable else f"unstable: {step.reason or '?'}"
    return (f"{step.index + 1:>4} {step.frequency_mhz:>5} {step.core_voltage_mv:>5} "
            f"{_number(step.hashrate_ths, 3):>7} {_number(step.expected_ths, 3):>7} "
            f"{_number(step.power_w, 1):>6} {_number(step.efficiency_jth, 2):>6} "
            f"{_number(step.temp_c, 1):>6} {_number(step.vr_temp_c, 1):>6} {ratio:>7}  "
            f"{verdict}")


STEPS_HEADER = (f"{'step':>4} {'MHz':>5} {'mV':>5} {'TH/s':>7} {'expect':>7} {'W':>6} "
                f"{'J/TH':>6} {'chip°C':>6} {'VR°C':>6} {'rejects':>7}  result")


def report(progress: TuneProgress) -> list[str]:
    """The steps table and the outcome, for stdout."""
    lines = [STEPS_HEADER, *(step_line(step) for step in progress.steps)]
    if progress.best is not None:
        best = progress.steps[progress.best]
        lines.append(f"best ({progress.objective}): step {best.index + 1}, "
                     f"{best.frequency_mhz} MHz {best.core_voltage_mv} mV")
    applied = progress.applied
    if applied is not None:
        lines.append(f"now set: {applied.frequency_mhz} MHz {applied.core_voltage_mv} mV")
    lines.append(f"{progress.state}: {progress.message or ''}")
    return lines


class ProgressLine:
    """One self-rewriting progress line on a terminal; elsewhere, one line per step."""

    EVERY_S = 0.1
    WIDTH = 24

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self._shown_steps = 0
        self._last = 0.0

    def update(self, progress: TuneProgress) -> None:
        if not self.live:
            for step in progress.steps[self._shown_steps:]:
                self.stream.write(f"step {step.index + 1}: {step.frequency_mhz} MHz "
                                  f"{step.core_voltage_mv} mV "
                                  + ("stable" if step.stable else f"unstable ({step.reason})")
                                  + "\n")
            self._shown_steps = len(progress.steps)
            self.stream.flush()
            return
        now = time.monotonic()
        if now - self._last < self.EVERY_S and progress.state == "running":
            return
        self._last = now
        filled = round(progress.progress * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.stream.write(f"\r\033[K[{bar}] {progress.progress:4.0%} step "
                          f"{len(progress.steps) + 1}: {progress.phase}"[:200])
        self.stream.flush()

    def say(self, text: str) -> None:
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()


# --- the run --------------------------------------------------------------------------


async def tune_miner(config: Config, miner_id: str, request: TuneRequest) -> int:
    line = ProgressLine(sys.stderr)
    client, broker_problem = await connect_broker(config)
    reader: Driver | None = None
    control: ControlDriver | None = None
    try:
        target = await find_target(config, miner_id, client, broker_problem)
        reader = create_driver(target.driver, target.host, target.port,
                               config.collector.timeout_s)
        try:
            first = await reader.fetch()
        except PollError as exc:
            raise CannotTune(f"the miner does not answer at {target.host}:{target.port}: "
                             f"{exc.reason}") from None
        control = control_for(config, target, reader, first)
        command = Command(id=f"cli-{uuid.uuid4().hex[:12]}", miner_id=miner_id,
                          action="tune", by="cli", ts=now_ts(), tune=request)
        refused = refusal(config, command, control)
        if refused is not None:
            raise CannotTune(refused)
        if client is None:
            line.say(f"{PROGRAM}: tune {miner_id}: progress not published (broker: "
                     f"{broker_problem})")
        return await _run(config, command, control, reader, client, line)
    except (CannotTune, ValueError, MqttError) as exc:
        line.say(f"{PROGRAM}: tune {miner_id}: {one_line(exc)}")
        return 1
    finally:
        for closing in (control, reader):
            if closing is not None:
                with contextlib.suppress(Exception):
                    await closing.aclose()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.disconnect()


async def _run(config: Config, command: Command, control: ControlDriver, reader: Driver,
               client: Client | None, line: ProgressLine) -> int:
    topic = tune_topic(config.mqtt.base_topic, command.miner_id)
    broker = [client] if client is not None else []

    async def publish(progress: TuneProgress) -> None:
        line.update(progress)
        if broker:
            try:
                await broker[0].publish(topic, encode(progress), qos=1, retain=True)
            except MqttError as exc:  # the run goes on without it
                broker.clear()
                line.say(f"{PROGRAM}: tune {command.miner_id}: progress no longer "
                         f"published: {one_line(exc)}")

    run = TuneRun(command, control, reader.fetch, config, publish)
    task = asyncio.get_running_loop().create_task(run.run())
    stopped_by: list[signal.Signals] = []

    def stop(signum: signal.Signals) -> None:
        if not stopped_by:
            stopped_by.append(signum)
            line.say(f"{PROGRAM}: tune {command.miner_id}: stopping: restoring the original "
                     "settings...")
            task.cancel()

    loop = asyncio.get_running_loop()
    for signum in SIGNAL_EXIT:
        loop.add_signal_handler(signum, stop, signum)
    try:
        await asyncio.wait({task})
    finally:
        for signum in SIGNAL_EXIT:
            loop.remove_signal_handler(signum)
    final = run.progress
    line.clear()
    sys.stdout.write("\n".join(report(final)) + "\n")
    sys.stdout.flush()
    if stopped_by:
        restored = final.applied is not None
        print(f"{PROGRAM}: tune {command.miner_id}: stopped; "
              + ("the original settings were restored" if restored else
                 f"the original settings were NOT restored: {final.message}"),
              file=sys.stderr)
        return SIGNAL_EXIT[stopped_by[0]] if restored else 1
    return 0 if final.state == "done" else 1


def run_tune(miner_id: str, objective: str, config_path: str | None,
             chip_temp_max_c: float | None, vr_temp_max_c: float | None) -> int:
    """The ``tune`` subcommand: its exit code."""
    logging.basicConfig(level=os.environ.get("MINERWATCH_LOG_LEVEL", "ERROR").upper(),
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    shown = miner_id[:80]

    def fail(text: str) -> int:
        print(f"{PROGRAM}: tune {shown}: {text}", file=sys.stderr)
        return 2

    if not is_miner_id(miner_id):
        return fail(f"{shown!r} is not a miner id (1-64 characters of [a-z0-9_-])")
    try:
        request = msgspec.convert({"objective": objective, "chip_temp_max_c": chip_temp_max_c,
                                   "vr_temp_max_c": vr_temp_max_c}, TuneRequest)
    except msgspec.ValidationError as exc:
        return fail(str(exc).replace(" - at `$.", " (").replace("`", ")"))
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        return fail(str(exc))
    if not config.control.enabled:
        return fail("control is disabled: set [control] enabled = true to let minerwatch "
                    "change miners' settings")
    try:
        return asyncio.run(tune_miner(config, miner_id, request))
    except KeyboardInterrupt:  # before the run began: nothing was changed
        print(f"{PROGRAM}: tune {shown}: interrupted before any change", file=sys.stderr)
        return 130
