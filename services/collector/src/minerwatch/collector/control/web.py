"""HTTP for the write APIs (AxeOS, a stock Antminer's web CGI), over ``httpx``.

Not a hot path: a command now and then. Every request is bounded in time (the client's
timeout) and in size (``MAX_BODY`` bytes read at most), keeps no idle connection (small
devices have few sockets to spare) and fails only with a ``ControlError`` whose text is
one line: ``timeout after 5.0 s``, ``refused: nothing listens on port 80``...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from minerwatch.collector.control.driver import ControlError
from minerwatch.collector.drivers.reading import refused_reason, timeout_reason
from minerwatch.shared.errors import one_line

#: Replies larger than this are cut off unread (AxeOS's info is a few KB).
MAX_BODY = 1 << 20


def http_client(host: str, port: int, timeout_s: float,
                auth: httpx.Auth | None = None) -> httpx.AsyncClient:
    netloc = f"[{host}]" if ":" in host else host
    return httpx.AsyncClient(
        base_url=f"http://{netloc}:{port}", timeout=timeout_s, auth=auth,
        limits=httpx.Limits(max_connections=4, max_keepalive_connections=0),
        # No Origin header: AxeOS answers 401 to an Origin outside private ranges.
        headers={"Accept": "application/json"}, follow_redirects=False, trust_env=False)


async def send(client: httpx.AsyncClient, method: str, path: str, *,
               json: Any = None, headers: Mapping[str, str] | None = None,
               closed_ok: bool = False) -> tuple[int, bytes]:
    """(status, body) of one request; ControlError when there is no reply. With
    ``closed_ok`` a connection closed before the reply counts as (0, b""): a miner that
    reboots at once may not answer its reboot request."""
    try:
        async with client.stream(method, path, json=json, headers=headers) as reply:
            body = bytearray()
            async for chunk in reply.aiter_bytes():
                body += chunk
                if len(body) > MAX_BODY:
                    raise ControlError(f"bad reply: larger than {MAX_BODY} bytes")
            return reply.status_code, bytes(body)
    except httpx.TimeoutException:
        raise ControlError(timeout_reason(_timeout_s(client))) from None
    except httpx.ConnectError as exc:
        if "refused" in str(exc).lower():
            raise ControlError(refused_reason(client.base_url.port or 80)) from None
        raise ControlError(f"unreachable: {one_line(exc)}") from None
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        if closed_ok:
            return 0, b""
        raise ControlError(f"closed without a reply ({one_line(exc)})") from None
    except httpx.HTTPError as exc:
        raise ControlError(f"{type(exc).__name__}: {one_line(exc)}") from None


def _timeout_s(client: httpx.AsyncClient) -> float:
    return client.timeout.read or client.timeout.connect or 0.0


def reply_text(body: bytes, limit: int = 120) -> str:
    """A miner's error body as one short line."""
    return one_line(body.decode("utf-8", errors="replace"), limit) or "no message"
