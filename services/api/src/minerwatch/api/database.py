"""The api's handle on the history database (written by the store, read here; the api
writes only when a miner is forgotten, and its own table of tokens, ``tokens``).

The api must start and answer ``/healthz`` even when the database cannot be opened (a bad
path, a full disk, PostgreSQL down), so the engine and schema are set up lazily and retried
on the next use; until then every query raises DatabaseUnavailable with one readable line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from minerwatch.api.tokens import create_table
from minerwatch.shared.db import create_engine, create_schema
from minerwatch.shared.errors import one_line

log = logging.getLogger("minerwatch.api.database")

PING_TIMEOUT_S = 2.0


class DatabaseUnavailable(Exception):
    """The database cannot be used right now; the message is one line for the client."""


def sqlite_file(engine: AsyncEngine) -> Path | None:
    """The file behind a SQLite engine, or None for other engines and in-memory databases."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None  # URI filenames: the check below would not know how to read them
    return Path(database)


class Database:
    """Opens the engine on first use, creates the schema once, and retries after failures."""

    def __init__(self, url: str, engine: AsyncEngine | None = None) -> None:
        self.url = url
        self._engine = engine
        self._owns_engine = engine is None
        self._schema_ready = False
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Try to get ready at start; a failure is logged and retried on the next request."""
        try:
            await self._ready_engine()
        except DatabaseUnavailable as exc:
            log.warning("database not available yet: %s", exc)

    async def _ready_engine(self) -> AsyncEngine:
        async with self._lock:
            if self._engine is None:
                try:
                    self._engine = create_engine(self.url)
                except OSError as exc:  # the SQLite directory cannot be created
                    raise DatabaseUnavailable(f"cannot open the database: {one_line(exc)}") from exc
            if not self._schema_ready:
                try:
                    # The api may start before the store ever ran: the tables must exist;
                    # the api's own table of tokens too.
                    await create_schema(self._engine)
                    await create_table(self._engine)
                except (SQLAlchemyError, OSError) as exc:
                    raise DatabaseUnavailable(f"cannot open the database: {one_line(exc)}") from exc
                self._schema_ready = True
            return self._engine

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reading; driver errors become DatabaseUnavailable."""
        engine = await self._ready_engine()
        try:
            async with engine.connect() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            raise DatabaseUnavailable(f"database error: {one_line(exc)}") from exc

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction, committed at the end (the api's few writes)."""
        engine = await self._ready_engine()
        try:
            async with engine.begin() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            raise DatabaseUnavailable(f"database error: {one_line(exc)}") from exc

    async def ping(self, limit_s: float = PING_TIMEOUT_S) -> bool:
        """True when ``SELECT 1`` answers within ``limit_s`` and the SQLite file still exists."""
        try:
            async with asyncio.timeout(limit_s):
                engine = await self._ready_engine()
                path = sqlite_file(engine)
                # An open SQLite connection keeps answering from a deleted file, which
                # nobody else can see any more: that database is gone for the store too.
                if path is not None and not path.exists():
                    return False
                async with self.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except (DatabaseUnavailable, TimeoutError) as exc:
            log.debug("database ping failed: %s", exc)
            return False
        return True

    async def close(self) -> None:
        if self._engine is not None and self._owns_engine:
            await self._engine.dispose()
