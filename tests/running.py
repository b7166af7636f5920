"""minerwatch's services as a user runs them, for the end-to-end tests: each its console
script in a process of its own, logging to ``<workdir>/<name>.log``, and stopped with
SIGTERM, which must end each one cleanly (exit 0, no traceback in its log)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

BIN = Path(sys.executable).parent


async def start_services(names: Iterable[str], env: Mapping[str, str], workdir: Path
                         ) -> dict[str, asyncio.subprocess.Process]:
    procs = {}
    for name in names:
        procs[name] = await asyncio.create_subprocess_exec(
            BIN / f"minerwatch-{name}", env=dict(env), cwd=workdir,
            stderr=open(workdir / f"{name}.log", "wb"),  # noqa: SIM115 - the child owns it
        )
    return procs


async def stop_services(procs: Mapping[str, asyncio.subprocess.Process], workdir: Path,
                        timeout_s: float = 15.0) -> None:
    """SIGTERM to each still running; assert each exited 0 and logged no traceback."""
    codes = {}
    for name, proc in procs.items():
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        codes[name] = await asyncio.wait_for(proc.wait(), timeout_s)
    logs = {name: (workdir / f"{name}.log").read_text(errors="replace") for name in procs}
    assert codes == dict.fromkeys(procs, 0), f"unclean exits: {codes}\n{logs}"
    for name, text in logs.items():
        assert "Traceback" not in text, f"{name} logged a traceback:\n{text}"
