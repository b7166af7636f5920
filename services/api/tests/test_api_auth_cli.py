"""``minerwatch-api token create|list|revoke`` as a real process against real SQLite and
PostgreSQL: the token is printed once and only its hash is stored; errors are one line;
a token it makes opens the running api (and shows as used)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from minerwatch.api import cli
from minerwatch.shared.db import create_engine

from .conftest import bearer, postgres_schema_url

SCRIPT = Path(sys.executable).with_name("minerwatch-api")
StartApi = Callable[..., Any]


@dataclass
class Run:
    code: int
    out: str
    err: str


async def token_cli(db_url: str, *args: str) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINERWATCH_")}
    env["MINERWATCH_DB_URL"] = db_url
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT), "token", *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def stored_rows(db_url: str) -> list[dict[str, Any]]:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT * FROM api_tokens ORDER BY name"))
            return [dict(row._mapping) for row in rows]
    finally:
        await engine.dispose()


def one_line_error(run: Run, code: int = 1) -> str:
    assert run.code == code, run
    assert run.out == ""
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minerwatch-api token: "), run.err
    return lines[0]


async def create_list_revoke(db_url: str, start_api: StartApi | None = None) -> None:
    """The life of a token, on whichever database ``db_url`` names; with ``start_api``,
    it is used on a running api in between."""
    made = await token_cli(db_url, "create", "--role", "viewer", "--name", "grafana")
    assert made.code == 0, made
    assert "shown only now" in made.err
    token = made.out.strip()
    assert token.startswith("mw_") and len(token) >= 40 and "\n" not in token
    [row] = [row for row in await stored_rows(db_url) if row["name"] == "grafana"]
    assert (row["name"], row["role"]) == ("grafana", "viewer")
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(row) and token[3:] not in repr(row)
    if start_api is not None:
        async with start_api(auth="token") as api, httpx.AsyncClient(base_url=api.url) as http:
            assert (await http.get("/api/miners")).status_code == 401
            assert (await http.get("/api/miners", headers=bearer(token))).status_code == 200

    listed = await token_cli(db_url, "list")
    assert listed.code == 0, listed
    lines = listed.out.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "CREATED", "LAST", "USED"]
    [line] = [line for line in lines[1:] if line.startswith("grafana ")]
    assert line.split()[:2] == ["grafana", "viewer"]
    assert (line.split()[3] == "never") == (start_api is None)
    assert token not in listed.out

    revoked = await token_cli(db_url, "revoke", "grafana")
    assert revoked.code == 0 and "revoked" in revoked.err
    assert "grafana" not in [row["name"] for row in await stored_rows(db_url)]


async def test_tokens_on_sqlite(start_api: StartApi, db_url: str) -> None:
    await create_list_revoke(db_url, start_api)


async def test_tokens_on_postgresql() -> None:
    async with postgres_schema_url() as url:
        await create_list_revoke(url)


def in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
               db_url: str, *args: str) -> tuple[int, str, str]:
    """``cli.main`` as the console script runs it (the errors need no process of their
    own: the tests above prove the script)."""
    for name in [k for k in os.environ if k.startswith("MINERWATCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MINERWATCH_DB_URL", db_url)
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'history.db'}"

    def error(code: int, *args: str, url: str = db) -> str:
        got, out, err = in_process(monkeypatch, capsys, url, *args)
        assert (got, out) == (code, ""), (got, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("minerwatch-api token: "), err
        return lines[0]

    assert "unknown role 'root': one of viewer, operator, admin" in error(
        1, "create", "--role", "root", "--name", "x")
    assert "token name 'has space'" in error(1, "create", "--role", "viewer", "--name",
                                             "has space")
    assert "--role" in error(2, "create", "--name", "x")
    assert not (tmp_path / "history.db").exists()  # nothing was made for bad arguments
    assert "no database at" in error(1, "list", url=f"sqlite:///{tmp_path / 'none' / 'h.db'}")
    assert not (tmp_path / "none").exists()  # a list does not make a database
    assert "cannot open the database postgresql://postgres@127.0.0.1:1/test" in error(
        1, "list", url="postgresql://postgres@127.0.0.1:1/test")
    assert "only sqlite:// and postgresql://" in error(2, "list", url="mysql://127.0.0.1/x")

    code, token, _err = in_process(monkeypatch, capsys, db, "create", "--role", "admin",
                                   "--name", "me")
    assert code == 0 and token.startswith("mw_")
    assert "exists already" in error(1, "create", "--role", "viewer", "--name", "me")
    assert "no token named 'nobody'" in error(1, "revoke", "nobody")
    code, listed, _err = in_process(monkeypatch, capsys, db, "list")
    assert code == 0 and [line.split()[:2] for line in listed.splitlines()[1:]] == [
        ["me", "admin"]]
