"""``eventually``: how the end-to-end tests wait for a stack of real processes to get there."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

#: What a check may raise while the stack is still on its way: retried, and the last one
#: is the message when time runs out.
NOT_YET = (AssertionError, KeyError, httpx.HTTPError, sqlite3.Error)


async def eventually(check: Callable[[], Awaitable[Any] | Any], timeout: float = 30.0,
                     interval: float = 0.1) -> Any:
    """Retry ``check`` (plain or async) until it returns something truthy without raising
    one of ``NOT_YET``; return that, else AssertionError naming the last problem."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            problem: object = f"returned {result!r}"
        except NOT_YET as exc:
            problem = exc
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout} s: {problem}")
        await asyncio.sleep(interval)
