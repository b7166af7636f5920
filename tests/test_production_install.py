"""Each service installed the way its image installs it, and the four run together end to end
against the production broker config.

``deploy/Dockerfile`` installs each service with exactly ``INSTALL``; here the same
command (uv of ``.tools/``, offline from the cache ``make setup`` filled) puts each service
into a fresh environment of its own: no dev dependencies, no editable links back to the
checkout. The four then run from those environments, with nothing of the dev venv on their
path, against Mosquitto with the shipped ``mosquitto/mosquitto.conf`` (passwords by
``mosquitto_passwd``, the ACL rendered by ``deploy/render-acl.sh`` for a base topic that is
not the default one), a simulated fleet (from the dev venv) and SQLite.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml

from minerwatch.shared.metrics import SERVICES
from minerwatch.shared.mqtt.client import Client, MqttError
from minerwatch.shared.topics import mac_miner_id
from minerwatch.sim.fleet import Fleet

from production_broker import ROOT, ProductionBroker, production_mosquitto
from waiting import eventually

#: The stack's tests share one event loop with its module-scoped fixture.
in_module_loop = pytest.mark.asyncio(loop_scope="module")

#: What deploy/Dockerfile runs to install its SERVICE (after a dependency-only layer).
INSTALL = "uv sync --frozen --no-dev --no-editable --package minerwatch-{service}"
UV = ROOT / ".tools" / "bin" / "uv"
#: Not the default base topic: the ACL must have been rendered for it.
BASE = "farm-7"
#: Packages a service's image must not hold: the dev group, and the other distributions.
FOREIGN = ("pytest", "aiomqtt", "ruff", "minerwatch.sim",
           *(f"minerwatch.{name}" for name in SERVICES))


def install_command(service: str) -> str:
    return INSTALL.format(service=service)


def test_the_image_installs_its_service_with_the_command_tested_here() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert install_command("${SERVICE}") in dockerfile


def test_compose_builds_each_service_from_that_image() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    builds = {name: service["build"] for name, service in compose["services"].items()
              if "build" in service}
    assert set(builds) == set(SERVICES)
    for name, build in builds.items():
        assert (build["dockerfile"], build["args"]["SERVICE"]) == ("deploy/Dockerfile", name)
        assert build["args"]["PYTHON_IMAGE"] == "${PYTHON_IMAGE:-python:3.12-slim}"


def build_context(folder: Path) -> Path:
    """What the images' build context holds (.dockerignore): the workspace's pyproject
    files, lock file and sources. A copy in a new folder, since uv keys the wheels it
    builds from a folder by its path and pyproject.toml alone: from the checkout, it would
    install a wheel built before the latest edits of the sources."""
    skip = shutil.ignore_patterns("tests", "__pycache__", "*.pyc", ".*", "data", "*.db*")
    for name in ("shared", "services", "sim"):
        shutil.copytree(ROOT / name, folder / name, ignore=skip)
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy2(ROOT / name, folder / name)
    return folder


def install(service: str, context: Path, environment: Path) -> None:
    """``INSTALL`` for ``service`` into the new ``environment``, as the image runs it."""
    command = shlex.split(install_command(service))
    assert command[0] == "uv"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("UV_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(UV_PROJECT_ENVIRONMENT=str(environment), UV_OFFLINE="1",
               UV_PYTHON=getattr(sys, "_base_executable", sys.executable),
               UV_PYTHON_DOWNLOADS="never")
    done = subprocess.run([str(UV), *command[1:]], cwd=context, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, (
        f"{install_command(service)} failed (offline: uv's cache comes from `make setup`):\n"
        f"{done.stderr}")


def clean_env(environment: Path, **variables: str) -> dict[str, str]:
    """A service's environment: its own bin first, nothing of the dev venv or of uv."""
    return {"PATH": f"{environment / 'bin'}:/usr/bin:/bin", "HOME": os.environ["HOME"],
            "LANG": "C.UTF-8", **variables}


@pytest.fixture(scope="module")
def environments(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    started = time.monotonic()
    context = build_context(root / "context")
    installed = {}
    for service in SERVICES:
        installed[service] = root / service
        install(service, context, installed[service])
    print(f"four production installs: {time.monotonic() - started:.1f} s")
    return installed


def test_each_environment_holds_its_service_alone(environments: dict[str, Path]) -> None:
    for service, environment in environments.items():
        assert (environment / "bin" / f"minerwatch-{service}").is_file()
        found = subprocess.run(
            [environment / "bin" / "python", "-c",
             "import importlib.util as u, sys; "
             "print(' '.join(m for m in sys.argv[1:] if u.find_spec(m)))", *FOREIGN],
            env=clean_env(environment), capture_output=True, text=True, check=True,
        ).stdout.split()
        assert found == [f"minerwatch.{service}"], f"{service}'s environment holds {found}"
        # installed, not linked: nothing of the checkout or the build context on its path
        where = subprocess.run(
            [environment / "bin" / "python", "-c",
             f"import minerwatch.{service}, minerwatch.shared as s; "
             f"print(minerwatch.{service}.__file__, s.__file__)"],
            env=clean_env(environment), capture_output=True, text=True, check=True,
        ).stdout.split()
        assert all(path.startswith(str(environment)) for path in where), where


# --- the four together -----------------------------------------------------------------


@dataclass
class Stack:
    broker: ProductionBroker
    fleet: Fleet
    db: Path
    api: str
    logs: Path
    #: What the installed api's own CLI needs (its environment and settings).
    api_env: dict[str, str] | None = None

    def miners_stored(self) -> set[str]:
        if not self.db.exists():
            return set()
        with sqlite3.connect(self.db, timeout=5) as conn:
            return {row[0] for row in conn.execute("SELECT DISTINCT miner_id FROM samples")}



@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(environments: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
                port_picker: Callable[[], int], port_waiter: Callable[..., None],
                ) -> AsyncIterator[Stack]:
    workdir = tmp_path_factory.mktemp("production")
    config = workdir / "minerwatch.toml"
    config.write_text("[collector]\ntimeout_s = 0.4\noffline_after = 3\n\n"
                      "[store]\nbatch_interval_s = 0.1\n")
    api_port = port_picker()
    with production_mosquitto(workdir / "broker", port_picker, port_waiter,
                              acl_args=["--base", BASE]) as broker:
        async with Fleet(axeos=2, cgminer=2, host="127.0.0.1", base_port=0, seed=11) as fleet:
            stack = Stack(broker, fleet, workdir / "history.db", f"http://127.0.0.1:{api_port}",
                          workdir)
            common = {
                "MINERWATCH_CONFIG": str(config),
                "MINERWATCH_BASE_TOPIC": BASE,
                "MINERWATCH_DB_URL": f"sqlite:///{stack.db}",
                "MINERWATCH_API_LISTEN": f"127.0.0.1:{api_port}",
                "MINERWATCH_API_AUTH": "lan",  # reads open, as these tests read
                "MINERWATCH_CONTROL_ENABLED": "true",
                "MINERWATCH_MINERS": ",".join(fleet.urls()),
                "MINERWATCH_POLL_INTERVAL_S": "0.5",
            }
            stack.api_env = clean_env(environments["api"], **common)
            procs: dict[str, asyncio.subprocess.Process] = {}
            for name in SERVICES:
                env = clean_env(environments[name], MINERWATCH_MQTT_URL=broker.url(name),
                                **common)
                procs[name] = await asyncio.create_subprocess_exec(
                    environments[name] / "bin" / f"minerwatch-{name}", env=env, cwd=workdir,
                    stderr=open(workdir / f"{name}.log", "wb"),  # noqa: SIM115 - the child's
                )
            try:
                yield stack
            finally:
                codes = {}
                for proc in procs.values():
                    if proc.returncode is None:
                        proc.send_signal(signal.SIGTERM)
                for name, proc in procs.items():
                    try:
                        codes[name] = await asyncio.wait_for(proc.wait(), 15)
                    except TimeoutError:
                        proc.kill()
                        codes[name] = await proc.wait()
                logs = {name: (workdir / f"{name}.log").read_text() for name in SERVICES}
                assert codes == dict.fromkeys(SERVICES, 0), f"unclean exits: {codes}\n{logs}"
                for name, text in logs.items():
                    assert "Traceback" not in text, f"{name} logged a traceback:\n{text}"
                    # a publish or subscription the rendered ACL refused would say so
                    assert "not authorized" not in text.lower(), f"{name}:\n{text}"


@in_module_loop
async def test_the_installed_services_run_together_on_the_production_broker(
    stack: Stack,
) -> None:
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=stack.api, timeout=5) as client:

        async def every_service_online() -> dict[str, Any]:
            health: dict[str, Any] = (await client.get("/healthz")).json()
            assert health["status"] == "ok", health
            assert health["broker"] == "up" and health["database"] == "up", health
            states = {name: seen["state"] for name, seen in health["services"].items()}
            assert states == dict.fromkeys(SERVICES, "online"), states
            return health

        await eventually(every_service_online)

        async def every_miner_stored() -> set[str]:
            stored = stack.miners_stored()
            assert len(stored) == len(stack.fleet.miners), f"stored: {sorted(stored)}"
            return stored

        await eventually(every_miner_stored)
        listed = (await client.get("/api/miners")).json()
        assert {m["miner_id"] for m in listed} == stack.miners_stored()
        # the dashboard's files came with the installed wheel
        for path in ("/", "/app.js", "/vendor/uplot/uPlot.iife.min.js"):
            assert (await client.get(path)).status_code == 200, path
    print(f"installed stack up and storing every miner in {time.monotonic() - started:.1f} s")


@in_module_loop
async def test_a_command_goes_through_the_installed_services_and_the_acl(stack: Stack) -> None:
    """A token from the installed api's CLI; the api publishes the command (its account
    may), the installed collector carries it out over httpx and answers (its account may
    publish results, not commands), the store audits it."""
    assert stack.api_env is not None
    proc = await asyncio.create_subprocess_exec(
        stack.api_env["PATH"].split(os.pathsep)[0] + "/minerwatch-api", "token", "create",
        "--role", "operator", "--name", "installed", env=stack.api_env, cwd=stack.logs,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    token = out.decode().strip()
    miner = stack.fleet.axeos_miners[0]
    miner_id = mac_miner_id(miner.mac or "") or ""
    async with httpx.AsyncClient(base_url=stack.api, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        async def identified() -> httpx.Response:
            reply = await client.post(f"/api/miners/{miner_id}/actions/identify")
            assert reply.status_code == 200, reply.text  # 503 until the collector is online
            return reply

        reply = await eventually(identified)
    assert reply.json()["status"] == "ok" and miner.identified_at is not None

    def audited() -> list[tuple[str, str]]:
        with sqlite3.connect(stack.db, timeout=5) as conn:
            return conn.execute("SELECT action, status FROM command_events WHERE miner_id = ?",
                                (miner_id,)).fetchall()

    assert await eventually(audited) == [("identify", "ok")]


@in_module_loop
async def test_the_production_broker_refuses_an_anonymous_client(stack: Stack) -> None:
    with pytest.raises(MqttError, match=r"^connection refused: 0x8[67] "):
        async with Client("127.0.0.1", stack.broker.port):
            pass
