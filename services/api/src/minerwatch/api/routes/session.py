"""The dashboard's sign-in: ``POST /api/session`` (a token in, a session cookie out),
``GET /api/session`` (who am I) and ``DELETE /api/session`` (sign out).

The cookie ``mw_session`` holds a random session id (the session itself lives in the
api's memory, see ``auth``): ``HttpOnly``, ``SameSite=Strict``, ``Path=/``, lasting
``[api] session_ttl_s``, and ``Secure`` when the request came over https or for the host
of an https ``public_url`` (a TLS proxy in front). A wrong token counts as a failed
attempt, as it does in the Authorization header.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from litestar import Request, Response, delete, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.params import JSONBody

from minerwatch.api.access import OPEN_ROUTE, Access, Denied, Facts, facts_of, unauthorized
from minerwatch.api.auth import (
    CSRF_HEADER,
    SESSION_COOKIE,
    bearer_token,
    cookie_value,
    csrf_matches,
)
from minerwatch.api.models import SessionInfo, SignedOut, SignIn
from minerwatch.api.routes.params import answer

_NO_STORE = {"cache-control": "no-store"}
_SIGNED_OUT = answer("Not signed in (the body also says the `auth` mode)")
_BAD_TOKEN = answer("The token is not valid")
_TOO_MANY = answer("Too many failed attempts from this address: see Retry-After")


def secure_cookie(facts: Facts, public_url: str | None) -> bool:
    """Whether the cookie gets ``Secure``: https seen by the api, or https in front of it
    (``public_url`` is https and the request names its host)."""
    if facts.scheme == "https":
        return True
    if public_url is None or not public_url.startswith("https://"):
        return False
    host = urlsplit(f"//{facts.headers.get('host', '')}").hostname
    return host is not None and host == urlsplit(public_url).hostname


def _info(access: Access, name: str, role: Any, via: Any, csrf: str | None) -> SessionInfo:
    return SessionInfo(name=name, role=role, via=via, csrf=csrf, auth=access.mode)


@post("/api/session", opt=OPEN_ROUTE, status_code=200, summary="Sign in: a token for a "
      "session cookie", responses={401: _BAD_TOKEN, 429: _TOO_MANY},
      description=(
          "Give `{\"token\": \"mw_...\"}`; the answer sets the `mw_session` cookie "
          "(HttpOnly, SameSite=Strict) and carries `csrf`: state-changing requests "
          "authenticated by the cookie must send it as `X-CSRF-Token`."))
async def sign_in(data: JSONBody[SignIn], request: Request[Any, Any, Any],
                  access: NamedDependency[Access]) -> Response[SessionInfo]:
    facts = facts_of(request.scope)
    principal, hashed = await access.principal_of_token(facts, data.token.strip())
    old = cookie_value(facts.headers.get("cookie"), SESSION_COOKIE)
    access.sessions.delete(old)  # a new sign-in replaces the session it came with
    session_id, session = access.sessions.create(principal.name, principal.role, hashed)
    cookie = Cookie(key=SESSION_COOKIE, value=session_id, path="/", httponly=True,
                    samesite="strict", secure=secure_cookie(facts, access.public_url),
                    max_age=max(1, math.ceil(access.sessions.ttl_s)))
    return Response(_info(access, session.name, session.role, "session", session.csrf),
                    cookies=[cookie], headers=_NO_STORE)


@get("/api/session", opt=OPEN_ROUTE, cache=False, summary="Who is signed in",
     responses={401: _SIGNED_OUT},
     description=("The session of the cookie (with its `csrf`), or the bearer token's "
                  "owner; 401 when neither, with `auth` saying whether reads are open "
                  "(`lan`) or need a sign-in (`token`)."))
async def who_am_i(request: Request[Any, Any, Any], access: NamedDependency[Access]
                   ) -> Response[SessionInfo | SignedOut]:
    facts = facts_of(request.scope)
    bearer = bearer_token(facts.headers.get("authorization"))
    if bearer is not None:
        principal, _hashed = await access.principal_of_token(facts, bearer)
        return Response(_info(access, principal.name, principal.role, "token", None),
                        headers=_NO_STORE)
    session = await access.session(cookie_value(facts.headers.get("cookie"), SESSION_COOKIE))
    if session is None:
        denied = unauthorized("not signed in")
        return Response(SignedOut(status_code=401, detail=denied.detail, auth=access.mode),
                        status_code=401, headers={**_NO_STORE, **denied.headers})
    return Response(_info(access, session.name, session.role, "session", session.csrf),
                    headers=_NO_STORE)


@delete("/api/session", opt=OPEN_ROUTE, summary="Sign out",
        description=("Ends the cookie's session (its `X-CSRF-Token` required) and clears "
                     "the cookie; without a live session there is nothing to end (204)."))
async def sign_out(request: Request[Any, Any, Any], access: NamedDependency[Access]
                   ) -> Response[None]:
    facts = facts_of(request.scope)
    session_id = cookie_value(facts.headers.get("cookie"), SESSION_COOKIE)
    session = access.sessions.get(session_id)
    if session is not None:
        if not csrf_matches(session, facts.headers.get(CSRF_HEADER)):
            raise Denied(403, "signing out needs the X-CSRF-Token header of the session")
        access.sessions.delete(session_id)
    gone = Cookie(key=SESSION_COOKIE, value="", path="/", httponly=True, samesite="strict",
                  secure=secure_cookie(facts, access.public_url), max_age=0)
    return Response(None, status_code=204, cookies=[gone], headers=_NO_STORE)
