"""Who is asking and what they may do: roles per route, dashboard sessions, the limit on
failed attempts, and the Origin and Host rules. Pure logic and in-memory state; the
middleware in ``access`` applies it to every request.

Roles: viewer < operator < admin. ``[api] auth = "token"``: every ``/api`` route, ``/ws``
and ``/metrics`` needs at least a viewer; ``"lan"``: reads are open, writes need an
operator. Control routes need an operator in both modes. ``/healthz``, the dashboard's
pages and files and the OpenAPI docs are open.

Sessions live in this process's memory (bounded, expiring): signing out or restarting the
api ends them at once, and no signing key has to be configured or kept secret. One api
process serves a home fleet, so nothing has to be shared between processes.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from minerwatch.api.tokens import Role

Via = Literal["token", "session"]
Mode = Literal["token", "lan"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Route ``opt`` keys: ``auth="open"`` skips the check (the route checks for itself);
#: ``role=...`` is the least role the route needs, whatever the method and mode.
OPEN_OPT = "auth"
ROLE_OPT = "role"

SESSION_COOKIE = "mw_session"
CSRF_HEADER = "x-csrf-token"
#: Sessions held at most; past it the oldest goes (they all last ``session_ttl_s``).
MAX_SESSIONS = 1000
#: How often a session checks that its token still exists (revoked: signed out).
SESSION_RECHECK_S = 60.0

#: Failed token attempts allowed per client address per window, then 429.
MAX_FAILURES = 10
FAILURE_WINDOW_S = 60.0
#: Client addresses remembered at most (the oldest is forgotten first).
MAX_TRACKED_CLIENTS = 4096


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: the token's name and role, and how they proved it."""

    name: str
    role: Role
    via: Via

    @property
    def requester(self) -> str:
        """``by`` of the commands they send: ``token:<name>`` or ``session:<name>``."""
        return f"{self.via}:{self.name}"


def required_role(mode: Mode, method: str, path: str,
                  opt: Mapping[str, object]) -> Role | None:
    """The least role a request needs, or None when it is open."""
    if opt.get(OPEN_OPT) == "open":
        return None
    explicit = opt.get(ROLE_OPT)
    if explicit in ("viewer", "operator", "admin"):
        return explicit
    if not (path.startswith("/api/") or path in ("/api", "/ws", "/metrics")):
        return None
    if method.upper() in SAFE_METHODS:
        return "viewer" if mode == "token" else None
    return "operator"


def bearer_token(authorization: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>``; "" for another scheme or none given
    after it (a credential that is there but wrong), None without the header."""
    if authorization is None:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return value.strip()


def cookie_value(cookie_header: str | None, name: str) -> str | None:
    """One cookie's value from a ``Cookie`` header (the first, if sent twice)."""
    for part in (cookie_header or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


# --- sessions ---------------------------------------------------------------------------


@dataclass(slots=True)
class Session:
    name: str
    role: Role
    token_hash: str
    csrf: str
    expires: float
    #: When the token was last seen to exist (monotonic).
    checked: float

    def principal(self) -> Principal:
        return Principal(self.name, self.role, "session")


class SessionStore:
    """Session ids (random, 256 bits) to sessions; expired ones are dropped on sight."""

    def __init__(self, ttl_s: float, max_sessions: int = MAX_SESSIONS) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max(max_sessions, 1)
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, name: str, role: Role, hashed: str, now: float | None = None
               ) -> tuple[str, Session]:
        now = time.monotonic() if now is None else now
        self._drop_expired(now)
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)  # the oldest: the first to expire anyway
        session_id = secrets.token_urlsafe(32)
        session = Session(name, role, hashed, secrets.token_urlsafe(32), now + self.ttl_s, now)
        self._sessions[session_id] = session
        return session_id, session

    def get(self, session_id: str | None, now: float | None = None) -> Session | None:
        if not session_id:
            return None
        now = time.monotonic() if now is None else now
        session = self._sessions.get(session_id)
        if session is not None and session.expires <= now:
            del self._sessions[session_id]
            return None
        return session

    def delete(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def end_for_token(self, hashed: str) -> None:
        """Sign out every session made with a token that no longer exists."""
        for session_id in [key for key, s in self._sessions.items() if s.token_hash == hashed]:
            del self._sessions[session_id]

    def _drop_expired(self, now: float) -> None:
        while self._sessions:
            oldest_id, oldest = next(iter(self._sessions.items()))
            if oldest.expires > now:
                return
            del self._sessions[oldest_id]


def csrf_matches(session: Session, presented: str | None) -> bool:
    return bool(presented) and secrets.compare_digest(
        session.csrf.encode(), (presented or "").encode("utf-8", errors="replace"))


# --- failed attempts --------------------------------------------------------------------


class FailureLimiter:
    """At most ``limit`` failed token attempts per client address in ``window_s``; then
    every attempt is refused (429) until the oldest failure leaves the window. Bounded:
    ``max_clients`` addresses, the least recently failing forgotten first."""

    def __init__(self, limit: int = MAX_FAILURES, window_s: float = FAILURE_WINDOW_S,
                 max_clients: int = MAX_TRACKED_CLIENTS) -> None:
        self.limit = max(limit, 1)
        self.window_s = window_s
        self.max_clients = max(max_clients, 1)
        self._clients: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def retry_after(self, client: str, now: float | None = None) -> float | None:
        """Seconds until ``client`` may try again, or None when it may now."""
        now = time.monotonic() if now is None else now
        times = self._clients.get(client)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._clients[client]
            return None
        if len(times) < self.limit:
            return None
        return max(times[0] + self.window_s - now, 0.001)

    def fail(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        times = self._clients.pop(client, None)
        if times is None:
            times = deque(maxlen=self.limit)
        times.append(now)
        self._clients[client] = times  # now the most recent
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)


# --- Origin and Host --------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _netloc(scheme: str, host: str, port: int | None) -> str:
    port = port if port is not None else _DEFAULT_PORTS.get(scheme)
    return f"{host.lower()}:{port}"


def origin_key(url: str) -> str | None:
    """``scheme://host:port`` with the default port written out, lower case; None when
    ``url`` is not an origin."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return f"{parts.scheme}://{_netloc(parts.scheme, parts.hostname, port)}"


def host_netloc(host_header: str, scheme: str) -> str | None:
    """``host:port`` of a Host header (the scheme's default port when none), or None."""
    try:
        parts = urlsplit(f"//{host_header.strip()}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    http_scheme = "https" if scheme in ("https", "wss") else "http"
    return _netloc(http_scheme, parts.hostname, port)


def origin_allowed(origin: str | None, host_header: str | None, scheme: str,
                   allowed: Iterable[str]) -> bool:
    """A WebSocket's Origin: absent (not a browser), the api's own (the same host and port
    as the Host header the browser sent, whichever the scheme: a proxy may end TLS), or
    one of ``allowed`` (exact origins: ``public_url`` and ``[api] allowed_origins``)."""
    if origin is None:
        return True
    key = origin_key(origin)
    if key is None:
        return False
    if key in {origin_key(url) for url in allowed}:
        return True
    own = host_netloc(host_header, scheme) if host_header else None
    return own is not None and key.partition("://")[2] == own


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def allowed_hosts(public_url: str | None, listen_host: str) -> frozenset[str] | None:
    """The host names requests may name once ``public_url`` is set (None: any host)."""
    if public_url is None:
        return None
    names = {"localhost", (urlsplit(public_url).hostname or "").lower()}
    if listen_host and not is_ip(listen_host):
        names.add(listen_host.lower())
    return frozenset(names)


def host_allowed(host_header: str | None, hosts: frozenset[str] | None) -> bool:
    """Whether a request's Host may be served. With ``public_url`` set: its host,
    ``localhost``, the listen host, or any IP address. DNS rebinding (a web page whose
    name points at the api making the browser read it) always names the attacker's host,
    never an IP address, so IP addresses are safe to allow and LAN access by IP keeps
    working."""
    if hosts is None:
        return True
    if not host_header:
        return False
    try:
        name = urlsplit(f"//{host_header.strip()}").hostname
    except ValueError:
        return False
    if not name:
        return False
    return is_ip(name) or name.lower() in hosts
