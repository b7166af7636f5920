"""The access check of every request (an ASGI middleware around each route) and the
security headers of every response (a ``before_send`` hook).

In order, for every route but ``/healthz``:

1. Host: once ``[api] public_url`` is set, a request naming another host (not its host,
   ``localhost``, the listen host or an IP address) is refused with 421, unless it
   carries a valid bearer token (DNS rebinding works through a browser, which has none).
2. Origin, for ``/ws``: absent (not a browser), the api's own, or listed
   (``public_url``, ``[api] allowed_origins``); else 403 before the upgrade.
3. Credentials, on the routes that take them: ``Authorization: Bearer <token>`` (checked
   against the database; a wrong one is 401 and counts as a failed attempt: past
   ``auth.MAX_FAILURES`` a minute per client address, 429 with Retry-After), else the
   dashboard's session cookie; a state-changing request authenticated by the cookie
   must carry ``X-CSRF-Token`` (403 otherwise).
4. Role: 401 (``WWW-Authenticate: Bearer``) without credentials where they are needed,
   403 when the role is too low (see ``auth.required_role``).

Who passed is in ``scope["user"]`` (an ``auth.Principal``, or None on open reads).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from minerwatch.api.auth import (
    CSRF_HEADER,
    OPEN_OPT,
    ROLE_OPT,
    SAFE_METHODS,
    SESSION_COOKIE,
    SESSION_RECHECK_S,
    FailureLimiter,
    Mode,
    Principal,
    Session,
    SessionStore,
    allowed_hosts,
    bearer_token,
    cookie_value,
    csrf_matches,
    host_allowed,
    origin_allowed,
    required_role,
)
from minerwatch.api.database import Database, DatabaseUnavailable
from minerwatch.api.tokens import at_least, find_token, looks_like_token, mark_used, token_hash
from minerwatch.shared.config import ApiConfig, host_port
from minerwatch.shared.errors import one_line

log = logging.getLogger("minerwatch.api.access")

#: A token's ``last_used`` is written at most this often (not on every request).
LAST_USED_EVERY_S = 60.0
#: Tokens whose last write is remembered, at most (a home has a handful).
MAX_REMEMBERED_TOKENS = 1000

#: The dashboard loads only its own scripts, styles and images; nothing inline runs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
)
_json = msgspec.json.Encoder()


class Denied(Exception):
    """A request refused: its status, one line, and headers (WWW-Authenticate...)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def unauthorized(detail: str, *, invalid: bool = False) -> Denied:
    challenge = 'Bearer realm="minerwatch"' + (', error="invalid_token"' if invalid else "")
    return Denied(401, detail, {"www-authenticate": challenge})


@dataclass(frozen=True, slots=True)
class Facts:
    """What the check reads of a request."""

    websocket: bool
    method: str
    path: str
    scheme: str
    client: str
    headers: dict[str, str]
    opt: dict[str, Any]

    @property
    def write(self) -> bool:
        return not self.websocket and self.method not in SAFE_METHODS


def facts_of(scope: Scope) -> Facts:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        if name not in headers:  # the first of repeated headers
            headers[name] = raw_value.decode("latin-1")
    handler = scope.get("route_handler")
    opt = getattr(handler, "opt", None) or {}
    client = scope.get("client")
    websocket = scope["type"] == ScopeType.WEBSOCKET
    return Facts(
        websocket=websocket,
        method="GET" if websocket else str(scope.get("method", "GET")).upper(),
        path=str(scope.get("path", "/")),
        scheme=str(scope.get("scheme", "http")),
        client=str(client[0]) if client else "unknown",
        headers=headers,
        opt=dict(opt),
    )


class Access:
    """The api's auth state: mode, sessions, failed attempts, and the token lookups."""

    def __init__(self, config: ApiConfig, db: Database) -> None:
        self.mode: Mode = config.auth
        self.db = db
        self.public_url = config.public_url
        self.sessions = SessionStore(config.session_ttl_s)
        self.limiter = FailureLimiter()
        self.origins = [*config.allowed_origins, *([config.public_url] if config.public_url
                                                   else [])]
        self.hosts = allowed_hosts(config.public_url, host_port(config.listen)[0])
        self._written: dict[str, float] = {}

    # --- tokens and sessions ------------------------------------------------------------

    async def check_token(self, token: str) -> tuple[Principal, str] | None:
        """The principal of a valid token and its hash; None when it is not valid.
        DatabaseUnavailable when it cannot be checked."""
        if not looks_like_token(token):
            return None
        hashed = token_hash(token)
        async with self.db.connect() as conn:
            found = await find_token(conn, hashed)
        if found is None:
            return None
        name, role = found
        await self._note_used(name)
        return Principal(name, role, "token"), hashed

    async def _note_used(self, name: str) -> None:
        now = time.monotonic()
        if now - self._written.get(name, -math.inf) < LAST_USED_EVERY_S:
            return
        if len(self._written) >= MAX_REMEMBERED_TOKENS:
            self._written.clear()
        self._written[name] = now
        try:
            async with self.db.begin() as conn:
                await mark_used(conn, name, int(time.time() * 1000))
        except DatabaseUnavailable as exc:  # the request itself may still be served
            log.warning("could not note when token %r was used: %s", name, exc)

    async def session(self, session_id: str | None) -> Session | None:
        """The live session of this id. Once a minute it checks that its token still
        exists: revoking a token signs its sessions out (a database that cannot be read
        keeps them: an outage is not a revocation)."""
        session = self.sessions.get(session_id)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.checked >= SESSION_RECHECK_S:
            try:
                async with self.db.connect() as conn:
                    found = await find_token(conn, session.token_hash)
            except DatabaseUnavailable:
                return session
            if found is None:
                self.sessions.end_for_token(session.token_hash)
                return None
            session.checked = now
        return session

    async def principal_of_token(self, facts: Facts, token: str) -> tuple[Principal, str]:
        """The principal of a presented token and the token's hash; Denied (401, 429,
        503) when there is none."""
        wait = self.limiter.retry_after(facts.client)
        if wait is not None:
            raise Denied(429, f"too many failed attempts from {facts.client}: try again in "
                         f"{math.ceil(wait)} s", {"retry-after": str(math.ceil(wait))})
        try:
            found = await self.check_token(token)
        except DatabaseUnavailable as exc:
            raise Denied(503, f"the token cannot be checked now: {exc}") from None
        if found is None:
            self.limiter.fail(facts.client)
            raise unauthorized("the token is not valid (mistyped, or revoked)", invalid=True)
        return found

    # --- the check ----------------------------------------------------------------------

    async def admit(self, facts: Facts) -> Principal | None:
        """Who may make this request (None: nobody needs to be known); Denied if nobody."""
        if facts.path == "/healthz":
            return None
        bearer = bearer_token(facts.headers.get("authorization"))
        host_ok = host_allowed(facts.headers.get("host"), self.hosts)
        wrong_host = Denied(421, f"this api does not serve the host "
                            f"{facts.headers.get('host', '')[:100]!r} (see [api] public_url)")
        if not host_ok and (bearer is None or facts.opt.get(OPEN_OPT) == "open"):
            raise wrong_host
        if facts.websocket and not origin_allowed(
                facts.headers.get("origin"), facts.headers.get("host"), facts.scheme,
                self.origins):
            raise Denied(403, f"WebSocket connections from "
                         f"{facts.headers.get('origin', '')[:100]!r} are not allowed "
                         "(see [api] allowed_origins)")
        if facts.opt.get(OPEN_OPT) == "open":
            return None
        needed = required_role(self.mode, facts.method, facts.path, facts.opt)
        takes_credentials = needed is not None or facts.path.startswith("/api/") or (
            facts.path in ("/ws", "/metrics"))
        principal = None
        cookie_sent = False
        if takes_credentials and bearer is not None:
            principal = (await self.principal_of_token(facts, bearer))[0]
        elif takes_credentials:
            session_id = cookie_value(facts.headers.get("cookie"), SESSION_COOKIE)
            cookie_sent = session_id is not None
            session = await self.session(session_id)
            if session is not None:
                if facts.write and not csrf_matches(session, facts.headers.get(CSRF_HEADER)):
                    raise Denied(403, "this change needs the X-CSRF-Token header of the "
                                 "session (GET /api/session gives it)")
                principal = session.principal()
        if not host_ok and (principal is None or principal.via != "token"):
            raise wrong_host
        if needed is None:
            return principal
        if principal is None:
            if cookie_sent:
                raise unauthorized("the session has ended: sign in again")
            raise unauthorized("this needs a token (Authorization: Bearer <token>) or a "
                               "dashboard sign-in")
        if not at_least(principal.role, needed):
            raise Denied(403, f"{principal.name!r} is a {principal.role}: this needs "
                         f"{needed} or higher")
        return principal


def route_role(role: str) -> dict[str, Any]:
    """``opt=`` of a route that needs at least ``role``, whatever the method and mode."""
    return {ROLE_OPT: role}


#: ``opt=`` of a route that checks credentials itself (sign-in).
OPEN_ROUTE: dict[str, Any] = {OPEN_OPT: "open"}


class AccessMiddleware:
    """Runs ``Access.admit`` before every HTTP request and WebSocket upgrade."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in (ScopeType.HTTP, ScopeType.WEBSOCKET):
            await self.app(scope, receive, send)
            return
        facts = facts_of(scope)
        try:
            principal = await self.access.admit(facts)
        except Denied as denied:
            await deny(scope, send, denied)
            return
        except Exception as exc:  # a check that failed unforeseen: refuse, never let through
            log.error("access check of %s %s failed: %s", facts.method, facts.path[:200],
                      one_line(exc), exc_info=exc)
            await deny(scope, send, Denied(500, "Internal Server Error"))
            return
        scope["user"] = principal
        scope["auth"] = principal.via if principal is not None else None
        await self.app(scope, receive, send)


async def deny(scope: Scope, send: Send, denied: Denied) -> None:
    """The refusal as ``{"status_code", "detail"}``; for a WebSocket, as the answer to its
    upgrade request (or a plain 403 where the server cannot send one)."""
    body = _json.encode({"status_code": denied.status, "detail": denied.detail})
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()),
               *((name.encode(), value.encode("latin-1", errors="replace"))
                 for name, value in denied.headers.items())]
    out = cast(Callable[[dict[str, Any]], Awaitable[None]], send)
    if scope["type"] == ScopeType.WEBSOCKET:
        if "websocket.http.response" not in (scope.get("extensions") or {}):
            await out({"type": "websocket.close", "code": 1008})
            return
        await out({"type": "websocket.http.response.start", "status": denied.status,
                   "headers": headers})
        await out({"type": "websocket.http.response.body", "body": body})
        return
    await out({"type": "http.response.start", "status": denied.status, "headers": headers})
    await out({"type": "http.response.body", "body": body})


async def security_headers(message: Message, _scope: Scope) -> None:
    """``before_send``: the security headers on every response that has not set them."""
    if message["type"] not in ("http.response.start", "websocket.http.response.start"):
        return
    headers = list(message.get("headers") or [])
    present = {bytes(name).lower() for name, _value in headers}
    headers.extend(item for item in SECURITY_HEADERS if item[0] not in present)
    message["headers"] = headers
