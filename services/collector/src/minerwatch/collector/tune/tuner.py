"""``Tuner``: the autotune runs of a collector, one at a time per miner.

The command executor calls ``start`` for a ``tune`` command (it returns at once; the run
goes on as a task and publishes its progress) and ``abort`` for ``tune_abort``; ``busy``
tells it a miner is held by a run (every other command gets ``busy`` meanwhile).
"""

from __future__ import annotations

import asyncio
import logging

from minerwatch.collector.control.driver import ControlDriver
from minerwatch.collector.tune.engine import Publish, ReadMiner, TuneRun
from minerwatch.shared.config import Config
from minerwatch.shared.schemas import Command, TuneProgress

log = logging.getLogger(__name__)

#: The settings a run writes: a firmware that cannot write both cannot be tuned.
TUNED_FIELDS = frozenset({"frequency_mhz", "core_voltage_mv"})


class TuneRefused(Exception):
    """A run that was not started; ``reason`` is one line for the command's result."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def refusal(config: Config, command: Command, driver: ControlDriver) -> str | None:
    """Why ``command`` may not start a run on ``driver``'s miner, or None. The safe range
    is checked by the run itself (it needs the facts the miner reads): a miner without
    one ends ``failed`` with nothing changed."""
    if not config.control.enabled:
        return "control is disabled ([control] enabled = false)"
    if command.action != "tune":
        return f"{command.action} is not a tune command"
    if not driver.supports("tune"):
        return f"this firmware ({driver.name}) cannot be tuned"
    missing = TUNED_FIELDS - driver.settable()
    if missing:
        return f"this firmware ({driver.name}) cannot set {', '.join(sorted(missing))}"
    return None


class Tuner:
    def __init__(self, config: Config, publish: Publish) -> None:
        self.config = config
        self.publish = publish
        self._runs: dict[str, tuple[TuneRun, asyncio.Task[TuneProgress]]] = {}

    def busy(self, miner_id: str) -> bool:
        return miner_id in self._runs

    def progress(self, miner_id: str) -> TuneProgress | None:
        """The running run's progress for ``miner_id``, or None."""
        entry = self._runs.get(miner_id)
        return entry[0].progress if entry is not None else None

    def start(self, command: Command, driver: ControlDriver, read: ReadMiner) -> str:
        """Start a run for ``command.miner_id``; its run id (the command's id). TuneRefused
        when one runs for that miner already or this miner cannot be tuned."""
        miner_id = command.miner_id
        if miner_id in self._runs:
            running = self._runs[miner_id][0].command.id
            raise TuneRefused(f"an autotune run ({running}) holds {miner_id} already")
        reason = refusal(self.config, command, driver)
        if reason is not None:
            raise TuneRefused(reason)
        run = TuneRun(command, driver, read, self.config, self.publish)
        task = asyncio.get_running_loop().create_task(run.run(), name=f"tune-{miner_id}")
        self._runs[miner_id] = (run, task)

        def forget(done: asyncio.Task[TuneProgress]) -> None:
            if self._runs.get(miner_id, (None, None))[1] is done:
                del self._runs[miner_id]
            if not done.cancelled() and done.exception() is not None:
                log.error("tune %s: run ended by %r", miner_id, done.exception())

        task.add_done_callback(forget)
        return command.id

    async def abort(self, miner_id: str) -> bool:
        """Stop ``miner_id``'s run: True once its original settings are back (or could not
        be) and its final progress is published; False when none runs."""
        entry = self._runs.get(miner_id)
        if entry is None:
            return False
        task = entry[1]
        if task.done():  # ended on its own, just now
            return False
        if not task.cancelling():  # a second cancel would cut the restoring short
            task.cancel()
        await asyncio.wait({task})
        return True

    async def aclose(self) -> None:
        """Abort every run, restoring each miner."""
        entries = list(self._runs.values())
        for _, task in entries:
            if not task.cancelling():
                task.cancel()
        if entries:
            await asyncio.wait({task for _, task in entries})
