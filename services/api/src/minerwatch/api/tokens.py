"""API tokens: who may use the api, with which role, kept in the api's own table.

A token is ``mw_`` and 32 random bytes (urlsafe base64), shown once when created. The
table ``api_tokens`` (in the history database, ``[database] url``) holds its SHA-256, not
the token: SHA-256 without salt or stretching is enough because a token carries 256 bits
of randomness, so there is no dictionary to try and no brute force that could finish;
slow password hashes exist for low-entropy secrets and would only add cost to every
request. An unsalted hash also lets a request find its token by an indexed lookup.

The api owns this table: it has its own MetaData (the store never touches it) and is
created, when missing, by the api and by ``minerwatch-api token``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import BigInteger, Column, MetaData, String, Table, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateTable

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
#: Each role may do what the roles before it may.
RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES)}

TOKEN_PREFIX = "mw_"
TOKEN_BYTES = 32
#: A presented token longer than this is not one of ours (and is not hashed).
MAX_TOKEN_CHARS = 200
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
NAME_HELP = "1-64 characters of A-Z, a-z, 0-9, '_', '.' and '-'"

metadata = MetaData()

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("last_used_ms", BigInteger, nullable=True),
)

#: The PostgreSQL advisory lock key of this table's creation ("mwtokens" in ASCII).
_SCHEMA_LOCK = 0x6D77746F6B656E73


class TokenError(ValueError):
    """A token operation that cannot be done; ``str()`` is one line for the person."""


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A token as listed: never the token itself."""

    name: str
    role: Role
    created_ms: int
    last_used_ms: int | None


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", errors="replace")).hexdigest()


def check_role(role: str) -> Role:
    if role not in RANK:
        raise TokenError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return cast(Role, role)


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise TokenError(f"token name {name[:80]!r} must be {NAME_HELP}")
    return name


def at_least(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may (an unknown role may nothing)."""
    return RANK.get(role, -1) >= RANK[needed]


async def create_table(engine: AsyncEngine) -> None:
    """CREATE TABLE IF NOT EXISTS, on SQLite and PostgreSQL (where the api and the CLI
    may both try at once: one after the other)."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
        await conn.execute(CreateTable(api_tokens, if_not_exists=True))


async def add_token(conn: AsyncConnection, name: str, role: str, now_ms: int) -> str:
    """A new token named ``name``; TokenError when the name is taken or bad."""
    check_name(name)
    checked_role = check_role(role)
    found = await conn.execute(select(api_tokens.c.name).where(api_tokens.c.name == name))
    if found.first() is not None:
        raise TokenError(f"a token named {name!r} exists already (revoke it first)")
    token = new_token()
    try:
        await conn.execute(api_tokens.insert().values(
            name=name, role=checked_role, token_hash=token_hash(token), created_ms=now_ms))
    except IntegrityError:  # created by someone else in between
        raise TokenError(f"a token named {name!r} exists already (revoke it first)") from None
    return token


async def list_tokens(conn: AsyncConnection) -> list[TokenRecord]:
    rows = await conn.execute(select(
        api_tokens.c.name, api_tokens.c.role, api_tokens.c.created_ms,
        api_tokens.c.last_used_ms).order_by(api_tokens.c.name))
    return [TokenRecord(row.name, cast(Role, row.role), row.created_ms, row.last_used_ms)
            for row in rows]


async def revoke_token(conn: AsyncConnection, name: str) -> None:
    """Delete the token ``name``; TokenError when there is none."""
    result = await conn.execute(delete(api_tokens).where(api_tokens.c.name == name))
    if not cast(Any, result).rowcount:
        raise TokenError(f"no token named {name[:80]!r}")


async def find_token(conn: AsyncConnection, hashed: str) -> tuple[str, Role] | None:
    """(name, role) of the token with this hash, if there is one."""
    found = await conn.execute(select(api_tokens.c.name, api_tokens.c.role)
                               .where(api_tokens.c.token_hash == hashed))
    row = found.first()
    if row is None or row.role not in RANK:
        return None
    return row.name, cast(Role, row.role)


async def mark_used(conn: AsyncConnection, name: str, now_ms: int) -> None:
    await conn.execute(update(api_tokens).where(api_tokens.c.name == name)
                       .values(last_used_ms=now_ms))


def looks_like_token(text: str) -> bool:
    """Cheap screening before any hashing: a bounded, printable string."""
    return 0 < len(text) <= MAX_TOKEN_CHARS and text.isprintable() and " " not in text
