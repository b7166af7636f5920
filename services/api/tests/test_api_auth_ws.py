"""WS /ws: the Origin check before the upgrade, and credentials in token mode (bearer
header or the dashboard's session cookie), through real WebSocket clients."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from minerwatch.api.access import CONTENT_SECURITY_POLICY

from .conftest import bearer, make_token

StartApi = Callable[..., Any]


def via(api: Any, host: str) -> dict[str, Any]:
    """Options that connect to the api (on 127.0.0.1) while naming ``host`` in the URL, so
    in the Host header: what a browser sends for a name that resolves to the api."""
    port = int(api.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    return {"uri": f"ws://{host}/ws", "sock": sock}


async def opens(url: str, **options: Any) -> bool:
    """Whether the upgrade succeeds (and the relay answers a subscription)."""
    url = options.pop("uri", url)
    async with websockets.connect(url, open_timeout=5, **options) as ws:
        await ws.send(json.dumps({"subscribe": "x/#"}))
        return "error" in json.loads(await ws.recv())  # outside the base: an error frame


async def refused(url: str, **options: Any) -> Any:
    url = options.pop("uri", url)
    with pytest.raises(InvalidStatus) as caught:
        async with websockets.connect(url, open_timeout=5, **options):
            pass
    return caught.value.response


async def test_origin_must_be_the_apis_own_or_allowed(start_api: StartApi) -> None:
    options = {"allowed_origins": ["https://dash.example"],
               "public_url": "https://minerwatch.example"}
    async with start_api(api_options=options) as api:
        own = api.url  # http://127.0.0.1:<port>, as the browser sends it
        assert await opens(api.ws_url)  # no Origin: not a browser
        assert await opens(api.ws_url, origin=own)
        assert await opens(api.ws_url, origin="https://dash.example")
        assert await opens(api.ws_url, origin="https://minerwatch.example",
                           **via(api, "minerwatch.example"))
        for origin in ("http://evil.example", "https://dash.example:8443", "null",
                       own.replace("127.0.0.1", "localhost")):
            response = await refused(api.ws_url, origin=origin)
            assert response.status_code == 403, origin
            assert "allowed_origins" in json.loads(response.body)["detail"]
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        # A page on another host name that resolves here (DNS rebinding) has a matching
        # Origin and Host, but public_url is set: that host is not served.
        response = await refused(api.ws_url, origin="http://rebind.example",
                                 **via(api, "rebind.example"))
        assert response.status_code == 421


async def test_token_mode_needs_a_token_or_the_session(start_api: StartApi) -> None:
    async with start_api(auth="token") as api:
        nobody = await refused(api.ws_url)
        assert nobody.status_code == 401
        assert nobody.headers["www-authenticate"].startswith("Bearer")
        assert (await refused(api.ws_url, additional_headers=bearer("mw_wrong"))
                ).status_code == 401
        viewer = await make_token(api.db_url, "viewer", "tv")
        assert await opens(api.ws_url, additional_headers=bearer(viewer))
        async with httpx.AsyncClient(base_url=api.url) as http:
            signed_in = await http.post("/api/session", json={"token": viewer})
            cookie = f"mw_session={signed_in.cookies['mw_session']}"
        assert await opens(api.ws_url, origin=api.url, additional_headers={"Cookie": cookie})
        # The session's cookie from a foreign page is still a foreign page.
        assert (await refused(api.ws_url, origin="http://evil.example",
                              additional_headers={"Cookie": cookie})).status_code == 403


async def test_lan_mode_opens_the_websocket_to_reads(start_api: StartApi) -> None:
    async with start_api() as api:
        assert await opens(api.ws_url, origin=api.url)
        assert (await refused(api.ws_url, additional_headers=bearer("mw_wrong"))
                ).status_code == 401
