"""GET /healthz: broker and database state, reported rather than crashed on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

StartApi = Callable[..., Any]


async def health(url: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/healthz")
    assert response.status_code == 200
    return response.json()


async def eventually(url: str, expected: dict[str, str], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (body := await health(url)) != expected:
        assert time.monotonic() < deadline, f"/healthz stayed {body}, expected {expected}"
        await asyncio.sleep(0.05)


async def test_everything_up(start_api: StartApi) -> None:
    async with start_api() as api:
        assert await health(api.url) == {"status": "ok", "broker": "up", "database": "up"}


async def test_broker_going_away_and_coming_back(start_api: StartApi, own_broker: Any) -> None:
    async with start_api(broker_url=own_broker.url) as api:
        assert (await health(api.url))["broker"] == "up"
        own_broker.local.stop()
        await eventually(api.url, {"status": "degraded", "broker": "down", "database": "up"})
        own_broker.local.start()
        await eventually(api.url, {"status": "ok", "broker": "up", "database": "up"})


async def test_unusable_database_path_is_reported(start_api: StartApi, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the database directory should be")
    async with start_api(db_url=f"sqlite:///{blocker}/sub/history.db") as api:
        assert await health(api.url) == {"status": "degraded", "broker": "up", "database": "down"}
        async with httpx.AsyncClient(base_url=api.url) as http:
            miners = await http.get("/api/miners")
            samples = await http.get("/api/miners/bitaxe-1/samples")
    for response in (miners, samples):
        assert response.status_code == 503
        assert "database" in response.json()["detail"]


async def test_deleted_database_file_is_reported(start_api: StartApi, db_url: str) -> None:
    path = Path(db_url.removeprefix("sqlite:///"))
    async with start_api() as api:
        assert (await health(api.url))["database"] == "up"
        for leftover in path.parent.iterdir():  # the file and its -wal / -shm companions
            leftover.unlink()
        assert await health(api.url) == {"status": "degraded", "broker": "up", "database": "down"}


async def test_database_created_later_is_picked_up(start_api: StartApi, tmp_path: Path) -> None:
    """The api retries: once the path becomes usable, the database is reported up."""
    parent = tmp_path / "later"
    parent.write_text("blocks the directory for now")
    async with start_api(db_url=f"sqlite:///{parent}/history.db") as api:
        assert (await health(api.url))["database"] == "down"
        parent.unlink()
        assert await health(api.url) == {"status": "ok", "broker": "up", "database": "up"}
        async with httpx.AsyncClient(base_url=api.url) as http:
            assert (await http.get("/api/miners")).json() == []
