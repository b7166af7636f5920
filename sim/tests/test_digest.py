"""HTTP Digest auth as the simulated Antminer web CGI checks it (pure)."""

from __future__ import annotations

import hashlib

from minerwatch.sim.digest import (
    MAX_NONCES,
    DigestGuard,
    Verdict,
    expected_response,
    parse_authorization,
)

# RFC 2617, section 3.5
RFC = {
    "username": "Mufasa", "realm": "testrealm@host.com",
    "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093", "uri": "/dir/index.html", "qop": "auth",
    "nc": "00000001", "cnonce": "0a4f113b",
}


def header(params: dict[str, str]) -> str:
    quoted = ", ".join(f'{k}="{v}"' if k not in ("nc", "qop") else f"{k}={v}"
                       for k, v in params.items())
    return f"Digest {quoted}"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def test_the_rfc_example() -> None:
    assert expected_response(RFC, "GET", "Circle Of Life") == "6629fae49393a05397450978507c4ef1"
    parsed = parse_authorization(header(RFC | {"response": "x"}))
    assert parsed is not None and parsed["cnonce"] == "0a4f113b" and parsed["nc"] == "00000001"
    assert parse_authorization("Basic cm9vdDpyb290") is None
    assert parse_authorization(None) is None
    assert expected_response(RFC | {"algorithm": "SHA-256"}, "GET", "x") is None
    assert expected_response({"username": "a"}, "GET", "x") is None


def test_guard_checks_user_password_uri_and_nonce() -> None:
    guard = DigestGuard("antMiner Configuration")
    challenge = guard.challenge()
    nonce = challenge.split('nonce="', 1)[1].split('"', 1)[0]
    params = RFC | {"username": "root", "realm": guard.realm, "nonce": nonce,
                    "uri": "/cgi-bin/reboot.cgi"}

    def signed(password: str, **changes: str) -> str:
        given = params | changes
        return header(given | {"response": expected_response(given, "GET", password) or ""})

    check = guard.check
    assert check(signed("root"), "GET", "/cgi-bin/reboot.cgi", "root", "root") is Verdict.OK
    assert check(signed("nope"), "GET", "/cgi-bin/reboot.cgi", "root", "root") is Verdict.DENIED
    assert check(signed("root"), "GET", "/other", "root", "root") is Verdict.DENIED
    assert check(signed("root"), "POST", "/cgi-bin/reboot.cgi", "root", "root") is Verdict.DENIED
    assert check(signed("root"), "GET", "/cgi-bin/reboot.cgi", "admin", "root") is Verdict.DENIED
    # RFC 2069 (no qop) is accepted too
    old = {k: v for k, v in params.items() if k not in ("qop", "nc", "cnonce")}
    response = md5(f"{md5('root:' + guard.realm + ':root')}:{nonce}:"
                   f"{md5('GET:/cgi-bin/reboot.cgi')}")
    assert check(header(old | {"response": response}), "GET", "/cgi-bin/reboot.cgi", "root",
                 "root") is Verdict.OK
    # a nonce the guard forgot (it keeps the last MAX_NONCES) is stale, not wrong
    for _ in range(MAX_NONCES):
        guard.challenge()
    assert check(signed("root"), "GET", "/cgi-bin/reboot.cgi", "root", "root") is Verdict.STALE
    assert "stale=true" in guard.challenge(stale=True)
