"""``minerwatch-alerts test-notify`` run as a process against a config file, with a real
receiver and a refusing port; and the CLI's ``run`` dispatch."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .test_notify import closed_port, delivered

if TYPE_CHECKING:
    from .conftest import Receiver


@dataclass
class Run:
    code: int
    out: str
    err: str


async def cli(tmp_path: Path, toml: str | None, *args: str) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINERWATCH_")}
    command = [sys.executable, "-m", "minerwatch.alerts.cli"]
    if toml is not None:
        config = tmp_path / "minerwatch.toml"
        config.write_text(toml, encoding="utf-8")
        command += ["--config", str(config)]
    process = await asyncio.create_subprocess_exec(
        *command, *args, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def test_every_target_gets_a_test_and_a_line(tmp_path: Path, receiver: Receiver) -> None:
    secret_url = receiver.url.replace("json://", "json://me:hunter2-token@")
    rule_url = receiver.url.replace("/hook", "/offline")
    toml = f"""
[api]
public_url = "http://minerwatch.lan:8000/"

[alerts]
notify = ["{secret_url}", {{ url = "{receiver.url}", min_severity = "critical" }}]

[alerts.offline]
notify = ["{rule_url}", "{secret_url}"]
"""
    run = await cli(tmp_path, toml, "test-notify")
    assert run.code == 0, run.err
    assert run.out.splitlines() == [
        "json://127.0.0.1 (alerts.notify[0], alerts.offline.notify[1]): ok",
        "json://127.0.0.1 (alerts.notify[1].url): ok",
        "json://127.0.0.1 (alerts.offline.notify[0]): ok",
    ]
    assert "hunter2" not in run.out + run.err
    posts = delivered(receiver)
    assert sorted(post.path for post in posts) == ["/hook", "/hook", "/offline"]
    for post in posts:
        payload = post.json()
        assert payload["title"] == "[info] minerwatch test notification"
        assert payload["message"].endswith("\nhttp://minerwatch.lan:8000/")
    messages = sorted(post.json()["message"] for post in posts)
    assert any("(critical and above), configured as alerts.notify[1].url" in m
               for m in messages)


async def test_a_failing_target_is_named_and_the_exit_code_is_1(
    tmp_path: Path, receiver: Receiver,
) -> None:
    port = closed_port()
    toml = f"""
[alerts]
notify = ["{receiver.url}"]
[[alerts.rules]]
name = "hot"
field = "temp_c"
threshold = 80
notify = ["json://user:t0psecret@127.0.0.1:{port}/abcdefghijkl"]
"""
    run = await cli(tmp_path, toml, "test-notify", "--timeout", "5")
    assert run.code == 1
    ok, failed = run.out.splitlines()
    assert ok == "json://127.0.0.1 (alerts.notify[0]): ok"
    assert failed.startswith("json://127.0.0.1 (alerts.rules[0].notify[0]): JSON failure: ")
    assert "Connection error" in failed
    for secret in ("t0psecret", "abcdefghijkl", str(port)):
        assert secret not in run.out + run.err
    assert len(delivered(receiver)) == 1


async def test_a_config_error_exits_2_with_one_line(tmp_path: Path) -> None:
    run = await cli(tmp_path, '[alerts]\nnotify = ["nosuchscheme://x"]\n', "test-notify")
    assert run.code == 2
    assert run.out == ""
    assert run.err == ("minerwatch-alerts: config: alerts.notify[0]: not a usable Apprise URL "
                       "(scheme 'nosuchscheme')\n")


async def test_no_targets_is_said_and_exits_1(tmp_path: Path) -> None:
    run = await cli(tmp_path, "[alerts]\ngroup_s = 5\n", "test-notify")
    assert run.code == 1
    assert run.err.startswith("minerwatch-alerts: no notification targets configured")


async def test_run_is_the_default_command(tmp_path: Path) -> None:
    # The service itself is tested elsewhere; a bad config shows the dispatch reached it.
    for args in ((), ("run",)):
        run = await cli(tmp_path, "[alerts]\nbogus = 1\n", *args)
        assert run.code == 2
        assert run.err.startswith("minerwatch-alerts: config: ")
        assert "bogus" in run.err
