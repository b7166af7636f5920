"""``minerwatch-api token create|list|revoke``: the api's tokens, in the database of
``[database] url`` (the same config as the service: ``MINERWATCH_CONFIG``,
``MINERWATCH_DB_URL``...).

``create --role viewer|operator|admin --name NAME`` prints the new token on stdout, once:
only its hash is stored. ``list`` shows name, role, created and last used (never a
token). ``revoke NAME`` deletes one; its dashboard sessions end within a minute.
Every error is one line on stderr; the exit code is 1 (2 for a usage or config error).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from minerwatch.api.tokens import (
    ROLES,
    TokenError,
    add_token,
    check_name,
    check_role,
    create_table,
    list_tokens,
    revoke_token,
)
from minerwatch.shared.config import Config, ConfigError, load_config
from minerwatch.shared.db import create_engine
from minerwatch.shared.errors import one_line
from minerwatch.shared.schemas import format_ts

PROGRAM = "minerwatch-api token"


class CliError(Exception):
    """One line for stderr; ``code`` the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see {PROGRAM} --help)", 2)


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog=PROGRAM, description="Create, list and revoke the api's tokens.")
    commands = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    create = commands.add_parser("create", help="make a token and print it (only this once)")
    create.add_argument("--role", required=True, help=" | ".join(ROLES))
    create.add_argument("--name", required=True, help="who or what uses it (unique)")
    commands.add_parser("list", help="name, role, created and last used of every token")
    revoke = commands.add_parser("revoke", help="delete a token")
    revoke.add_argument("name")
    return top


def shown_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "the configured database"


def when(ms: int | None) -> str:
    return "never" if ms is None else format_ts(datetime.fromtimestamp(ms / 1000, UTC))


def table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                         strict=True)).rstrip()
                     for row in rows)


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (None for other URLs and in-memory databases)."""
    try:
        parsed = make_url(url)
    except Exception:
        return None  # create_engine says what is wrong with it
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return None if database.startswith("file:") else Path(database)


async def _open(url: str, *, create: bool) -> AsyncEngine:
    """The engine with the tokens table; without ``create``, a SQLite file that does not
    exist is an error (and is not made)."""
    path = sqlite_path(url)
    if not create and path is not None and not path.exists():
        raise CliError(f"no database at {path} (no token was ever created there)")
    try:
        engine = create_engine(url)
    except ConfigError as exc:
        raise CliError(f"config: {exc}", 2) from None
    except OSError as exc:
        raise CliError(f"cannot open the database {shown_url(url)}: {one_line(exc)}") from None
    try:
        await create_table(engine)
    except (SQLAlchemyError, OSError) as exc:
        await engine.dispose()
        raise CliError(f"cannot open the database {shown_url(url)}: {one_line(exc)}") from None
    return engine


async def run(args: argparse.Namespace, config: Config) -> None:
    url = config.database.url
    if args.command == "create":  # check before touching the database
        check_role(args.role)
        check_name(args.name)
    engine = await _open(url, create=args.command == "create")
    try:
        async with engine.begin() as conn:
            if args.command == "create":
                token = await add_token(conn, args.name, args.role, int(time.time() * 1000))
            elif args.command == "list":
                found = await list_tokens(conn)
            else:
                await revoke_token(conn, args.name)
    except (SQLAlchemyError, OSError) as exc:
        raise CliError(f"database error ({shown_url(url)}): {one_line(exc)}") from None
    finally:
        await engine.dispose()
    if args.command == "create":
        print(token)
        print(f"{PROGRAM}: {args.role} token {args.name!r} created; it is shown only now, "
              "keep it somewhere safe", file=sys.stderr)
    elif args.command == "list":
        if not found:
            print(f"{PROGRAM}: no tokens yet ({PROGRAM} create --role ... --name ...)",
                  file=sys.stderr)
            return
        print(table([("NAME", "ROLE", "CREATED", "LAST USED"),
                     *((t.name, t.role, when(t.created_ms), when(t.last_used_ms))
                       for t in found)]))
    else:
        print(f"{PROGRAM}: token {args.name!r} revoked", file=sys.stderr)


def main(argv: Sequence[str]) -> int:
    """``minerwatch-api token ...``; the exit code."""
    try:
        args = parser().parse_args(list(argv))
        try:
            config = load_config()
        except ConfigError as exc:
            raise CliError(f"config: {exc}", 2) from None
        asyncio.run(run(args, config))
    except CliError as exc:
        print(f"{PROGRAM}: {exc}", file=sys.stderr)
        return exc.code
    except TokenError as exc:
        print(f"{PROGRAM}: {exc}", file=sys.stderr)
        return 1
    return 0
