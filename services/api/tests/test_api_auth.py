"""Authentication over real HTTP: roles in ``token`` and ``lan`` mode, 401 / 403 / 429, the
dashboard's session cookie and its CSRF token, the Host check, and the security headers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from minerwatch.api import access
from minerwatch.api.auth import MAX_FAILURES, FailureLimiter, SessionStore
from minerwatch.api.tokens import revoke_token
from minerwatch.shared.db import create_engine

from .conftest import bearer, make_token

StartApi = Callable[..., Any]

MUTE = {"miner_id": "m1", "for_s": 60}
SECURITY = {
    "content-security-policy": access.CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
}


def is_challenge(response: httpx.Response) -> bool:
    challenge: str = response.headers.get("www-authenticate", "")
    return challenge.startswith("Bearer")


async def test_token_mode_needs_a_viewer_for_api_ws_and_metrics(start_api: StartApi) -> None:
    async with start_api(auth="token") as api, httpx.AsyncClient(base_url=api.url) as http:
        viewer = bearer(await make_token(api.db_url, "viewer", "tv"))
        for path in ("/api/miners", "/api/config", "/api/alerts", "/metrics",
                     "/api/miners/bitaxe-1/samples"):
            nobody = await http.get(path)
            assert nobody.status_code == 401, path
            assert is_challenge(nobody), path
            assert "token" in nobody.json()["detail"]
            assert (await http.get(path, headers=viewer)).status_code in (200, 404), path
        # Open: health, the dashboard's pages and files, the docs.
        for path in ("/healthz", "/", "/miners/bitaxe-1", "/app.js", "/schema/openapi.json"):
            assert (await http.get(path)).status_code == 200, path

        assert (await http.post("/api/alerts/mute", json=MUTE, headers=viewer)).status_code == 403
        assert (await http.post("/api/alerts/mute", json=MUTE)).status_code == 401
        assert (await http.post("/api/alerts/mute", json=MUTE,
                                headers=api.headers)).status_code == 201

        wrong = await http.get("/api/miners", headers=bearer("mw_not-a-token"))
        assert wrong.status_code == 401
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
        basic = await http.get("/api/miners", headers={"Authorization": "Basic dXNlcjpwdw=="})
        assert basic.status_code == 401
        me = await http.get("/api/session", headers=viewer)
        assert me.json() == {"name": "tv", "role": "viewer", "via": "token", "csrf": None,
                             "auth": "token"}


async def test_lan_mode_opens_reads_and_keeps_writes_for_operators(start_api: StartApi) -> None:
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        viewer = bearer(await make_token(api.db_url, "viewer"))
        admin = bearer(await make_token(api.db_url, "admin"))
        for path in ("/api/miners", "/api/alerts/mutes", "/metrics", "/api/config"):
            assert (await http.get(path)).status_code == 200, path
        writes = [("POST", "/api/alerts/mute", MUTE),
                  ("PATCH", "/api/miners/bitaxe-1", {"label": "x"}),
                  ("DELETE", "/api/miners/bitaxe-1", None),
                  ("DELETE", "/api/alerts/mutes/some-mute", None)]
        for method, path, body in writes:
            nobody = await http.request(method, path, json=body)
            assert nobody.status_code == 401 and is_challenge(nobody), (method, path)
            as_viewer = await http.request(method, path, json=body, headers=viewer)
            assert as_viewer.status_code == 403, (method, path)
            assert "viewer" in as_viewer.json()["detail"]
        muted = await http.post("/api/alerts/mute", json=MUTE, headers=api.headers)
        assert muted.status_code == 201
        lifted = await http.delete(f"/api/alerts/mutes/{muted.json()['id']}", headers=admin)
        assert lifted.status_code == 200
        # A credential given is checked, even where none is needed.
        assert (await http.get("/api/miners", headers=bearer("mw_wrong"))).status_code == 401
        signed_out = await http.get("/api/session")
        assert signed_out.status_code == 401 and signed_out.json()["auth"] == "lan"


async def test_failed_attempts_are_limited_per_address(start_api: StartApi) -> None:
    async with start_api(auth="token") as api, httpx.AsyncClient(base_url=api.url) as http:
        assert api.token is not None
        for attempt in range(MAX_FAILURES):
            answer = await http.get("/api/miners", headers=bearer(f"mw_guess-{attempt}"))
            assert answer.status_code == 401, attempt
        limited = await http.get("/api/miners", headers=bearer("mw_guess-again"))
        assert limited.status_code == 429
        assert 0 < int(limited.headers["retry-after"]) <= 60
        assert "try again" in limited.json()["detail"]
        # While limited, even the right token waits: attempts are what is limited.
        assert (await http.get("/api/miners", headers=api.headers)).status_code == 429
        signing_in = await http.post("/api/session", json={"token": api.token})
        assert signing_in.status_code == 429 and "retry-after" in signing_in.headers
        # Not attempts: no credential at all is a 401, not a 429.
        assert (await http.get("/api/miners")).status_code == 401


def test_the_failure_limit_forgets_old_failures_and_old_addresses() -> None:
    limiter = FailureLimiter(limit=3, window_s=60.0, max_clients=100)
    for second in range(3):
        limiter.fail("10.0.0.1", now=float(second))
    assert limiter.retry_after("10.0.0.1", now=3.0) == pytest.approx(57.0)
    assert limiter.retry_after("10.0.0.2", now=3.0) is None
    assert limiter.retry_after("10.0.0.1", now=60.5) is None  # the first left the window
    for n in range(1000):
        limiter.fail(f"10.1.{n // 256}.{n % 256}", now=100.0)
    assert len(limiter) == 100


def test_sessions_expire_and_stay_bounded() -> None:
    store = SessionStore(ttl_s=10.0, max_sessions=50)
    first, _session = store.create("a", "viewer", "hash-a", now=0.0)
    assert store.get(first, now=9.9) is not None
    assert store.get(first, now=10.0) is None
    ids = [store.create(f"n{n}", "viewer", f"h{n}", now=20.0)[0] for n in range(200)]
    assert len(store) == 50
    assert store.get(ids[0], now=20.0) is None and store.get(ids[-1], now=20.0) is not None


def set_cookie(response: httpx.Response) -> str:
    [header] = response.headers.get_list("set-cookie")
    return header


async def test_session_cookie_and_csrf(start_api: StartApi) -> None:
    async with start_api(auth="token") as api, httpx.AsyncClient(base_url=api.url) as http:
        assert api.token is not None
        signed_in = await http.post("/api/session", json={"token": api.token})
        assert signed_in.status_code == 200, signed_in.text
        body = signed_in.json()
        assert body["role"] == "operator" and body["via"] == "session"
        assert len(body["csrf"]) >= 32
        cookie = set_cookie(signed_in)
        flags = [part.strip().lower() for part in cookie.split(";")]
        assert flags[0].startswith("mw_session=") and len(flags[0]) > 40
        assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
        assert f"max-age={7 * 24 * 3600}" in flags and "secure" not in flags
        assert api.token not in cookie
        assert signed_in.headers["cache-control"] == "no-store"

        assert (await http.get("/api/session")).json() == body
        assert (await http.get("/api/miners")).status_code == 200  # reads as the token's role
        without = await http.post("/api/alerts/mute", json=MUTE)
        wrong = await http.post("/api/alerts/mute", json=MUTE, headers={"X-CSRF-Token": "x"})
        right = await http.post("/api/alerts/mute", json=MUTE,
                                headers={"X-CSRF-Token": body["csrf"]})
        assert (without.status_code, wrong.status_code, right.status_code) == (403, 403, 201)
        assert "X-CSRF-Token" in without.json()["detail"]
        # A bearer token needs no CSRF token, with or without the cookie.
        assert (await http.post("/api/alerts/mute", json=MUTE,
                                headers=api.headers)).status_code == 201

        assert (await http.delete("/api/session")).status_code == 403
        out = await http.delete("/api/session", headers={"X-CSRF-Token": body["csrf"]})
        assert out.status_code == 204
        assert "max-age=0" in set_cookie(out).lower()
        http.cookies.clear()
        ended = await http.get("/api/miners", headers={"Cookie": flags[0]})
        assert ended.status_code == 401 and "sign in again" in ended.json()["detail"]
        gone = await http.get("/api/session")
        assert gone.status_code == 401 and gone.json()["auth"] == "token"

        bad = await http.post("/api/session", json={"token": "mw_nope"})
        assert bad.status_code == 401 and "set-cookie" not in bad.headers
        extra = await http.post("/api/session", json={"token": api.token, "remember": True})
        assert extra.status_code == 400


async def test_secure_cookie_behind_https(start_api: StartApi) -> None:
    async with start_api(auth="token", api_options={
            "public_url": "https://minerwatch.example"}) as api, \
            httpx.AsyncClient(base_url=api.url) as http:
        assert api.token is not None
        by_name = await http.post("/api/session", json={"token": api.token},
                                  headers={"Host": "minerwatch.example"})
        by_ip = await http.post("/api/session", json={"token": api.token})
        proxied = await http.post("/api/session", json={"token": api.token},
                                  headers={"X-Forwarded-Proto": "https"})
        assert "secure" in set_cookie(by_name).lower().split("; ")
        assert "secure" not in set_cookie(by_ip).lower().split("; ")
        assert "secure" in set_cookie(proxied).lower().split("; ")


async def test_sessions_expire(start_api: StartApi) -> None:
    async with start_api(auth="token", api_options={"session_ttl_s": 0.3}) as api, \
            httpx.AsyncClient(base_url=api.url) as http:
        signed_in = await http.post("/api/session", json={"token": api.token})
        assert "max-age=1" in set_cookie(signed_in).lower()  # whole seconds, at least one
        cookie = {"Cookie": f"mw_session={signed_in.cookies['mw_session']}"}
        deadline = time.monotonic() + 5
        while (await http.get("/api/session", headers=cookie)).status_code == 200:
            assert time.monotonic() < deadline, "the session did not expire"
            await asyncio.sleep(0.05)


async def test_revoking_a_token_ends_its_sessions(start_api: StartApi,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access, "SESSION_RECHECK_S", 0.0)
    async with start_api(auth="token") as api, httpx.AsyncClient(base_url=api.url) as http:
        token = await make_token(api.db_url, "viewer", "kiosk")
        assert (await http.post("/api/session", json={"token": token})).status_code == 200
        assert (await http.get("/api/miners")).status_code == 200
        engine = create_engine(api.db_url)
        try:
            async with engine.begin() as conn:
                await revoke_token(conn, "kiosk")
        finally:
            await engine.dispose()
        assert (await http.get("/api/miners")).status_code == 401
        assert (await http.get("/api/miners", headers=bearer(token))).status_code == 401


async def test_host_is_checked_once_public_url_is_set(start_api: StartApi) -> None:
    async with start_api(api_options={"public_url": "http://minerwatch.lan:8000"}) as api, \
            httpx.AsyncClient(base_url=api.url) as http:
        for host in ("minerwatch.lan:8000", "localhost", "192.168.1.10:8000", "[fe80::1]:8000",
                     "127.0.0.1"):
            for path in ("/", "/api/miners"):
                answer = await http.get(path, headers={"Host": host})
                assert answer.status_code == 200, (host, path)
        for path in ("/", "/api/miners", "/metrics"):
            evil = await http.get(path, headers={"Host": "rebind.attacker.example"})
            assert evil.status_code == 421, path
            assert "public_url" in evil.json()["detail"]
        # What a rebinding page cannot have: a bearer token. Health is always open.
        assert (await http.get("/api/miners", headers={
            "Host": "minerwatch-api", **api.headers})).status_code == 200
        assert (await http.get("/healthz", headers={"Host": "minerwatch-api"})).status_code \
            == 200
        signing_in = await http.post("/api/session", json={"token": api.token}, headers={
            "Host": "rebind.attacker.example", **api.headers})
        assert signing_in.status_code == 421  # sign-in is for pages: a browser's host
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        answer = await http.get("/api/miners", headers={"Host": "anything.example"})
        assert answer.status_code == 200  # no public_url: any host


async def test_security_headers_on_every_response(start_api: StartApi) -> None:
    async with start_api(auth="token") as api, httpx.AsyncClient(base_url=api.url) as http:
        answers = [await http.get(path) for path in (
            "/", "/index.html", "/miners/bitaxe-1", "/style.css", "/healthz", "/schema",
            "/no-such-page", "/api/miners")]
        answers.append(await http.get("/api/miners", headers=api.headers))
        for answer in answers:
            for name, value in SECURITY.items():
                assert answer.headers.get(name) == value, (answer.url, name)
        assert [a.status_code for a in answers] == [200, 200, 200, 200, 200, 200, 404, 401,
                                                    200]
        assert "'unsafe-inline'" not in access.CONTENT_SECURITY_POLICY
        assert "'unsafe-eval'" not in access.CONTENT_SECURITY_POLICY
