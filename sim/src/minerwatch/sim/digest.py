"""HTTP Digest authentication (RFC 7616 / 2617, MD5, qop=auth), the server side, as the
lighttpd of a stock Antminer asks for it on its web CGI.

A guard remembers the nonces it handed out (the last ``MAX_NONCES``), so a client may reuse
its nonce for later requests, and a forgotten one is answered with a fresh ``stale``
challenge.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from enum import Enum

MAX_NONCES = 64
_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


class Verdict(Enum):
    OK = "ok"
    DENIED = "denied"  # missing or wrong credentials
    STALE = "stale"  # right form, but a nonce this guard no longer knows


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def parse_authorization(header: str | None) -> dict[str, str] | None:
    """The parameters of a ``Digest`` Authorization header (names lowercased), or None."""
    if header is None:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    for match in _PARAM.finditer(rest):
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params.setdefault(match.group(1).lower(), value)
    return params


def expected_response(params: dict[str, str], method: str, password: str) -> str | None:
    """The response a client that knows ``password`` sends; None for a form not accepted
    (another algorithm or qop, a missing field)."""
    try:
        ha1 = _md5(f"{params['username']}:{params['realm']}:{password}")
        ha2 = _md5(f"{method}:{params['uri']}")
        nonce = params["nonce"]
    except KeyError:
        return None
    if params.get("algorithm", "MD5").upper() != "MD5":
        return None
    qop = params.get("qop")
    if qop is None:
        return _md5(f"{ha1}:{nonce}:{ha2}")  # RFC 2069
    if qop != "auth" or "nc" not in params or "cnonce" not in params:
        return None
    return _md5(f"{ha1}:{nonce}:{params['nc']}:{params['cnonce']}:{qop}:{ha2}")


class DigestGuard:
    def __init__(self, realm: str) -> None:
        self.realm = realm
        self._nonces: OrderedDict[str, None] = OrderedDict()

    def challenge(self, stale: bool = False) -> str:
        """A WWW-Authenticate value with a fresh nonce."""
        nonce = secrets.token_hex(16)
        self._nonces[nonce] = None
        while len(self._nonces) > MAX_NONCES:
            self._nonces.popitem(last=False)
        extra = ", stale=true" if stale else ""
        return f'Digest realm="{self.realm}", qop="auth", nonce="{nonce}", algorithm=MD5{extra}'

    def check(
        self, header: str | None, method: str, uri: str, user: str, password: str
    ) -> Verdict:
        params = parse_authorization(header)
        if params is None:
            return Verdict.DENIED
        wanted = expected_response(params, method, password)
        if (
            wanted is None
            or params.get("username") != user
            or params.get("realm") != self.realm
            or params.get("uri") != uri
            or not hmac.compare_digest(wanted, params.get("response", "").lower())
        ):
            return Verdict.DENIED
        if params["nonce"] not in self._nonces:
            return Verdict.STALE
        return Verdict.OK
