"""A stock Antminer (Bitmain firmware): reboot through its web interface, nothing else.

Stock firmware keeps the CGMiner API read-only, so the one thing minerwatch can do is
what the web page's Reboot button does: ``GET /cgi-bin/reboot.cgi`` with HTTP digest auth
(``[control] antminer_user`` / ``antminer_password``, the web port per miner or
``antminer_web_port``). Without a password configured, restart is unsupported and says
why. Reading (to confirm the reboot by the uptime) uses the API's ``summary`` and
``pools``, which any host may ask.
"""

from __future__ import annotations

import httpx

from minerwatch.collector.control.cgminer import CgminerControl
from minerwatch.collector.control.driver import ControlError, MinerAction, ReadBack
from minerwatch.collector.control.web import http_client, reply_text, send
from minerwatch.collector.drivers.reading import http_reason
from minerwatch.shared.schemas import MinerSettings

REBOOT_PATH = "/cgi-bin/reboot.cgi"


class AntminerWebControl:
    name = "antminer"

    def __init__(self, host: str, api_port: int, web_port: int, timeout_s: float, *,
                 user: str, password: str | None) -> None:
        self.host = host
        self.port = api_port
        self.web_port = web_port
        self._api = CgminerControl(host, api_port, timeout_s)
        self._password = password
        self._http = (None if password is None else
                      http_client(host, web_port, timeout_s, httpx.DigestAuth(user, password)))

    def supports(self, action: str) -> bool:
        return action == "restart"

    def settable(self) -> frozenset[str]:
        return frozenset()

    async def read(self) -> ReadBack:
        return await self._api.read()

    async def write(self, change: MinerSettings) -> None:
        raise ControlError("stock Antminer firmware changes no settings through minerwatch",
                           unsupported=True)

    async def act(self, action: MinerAction) -> None:
        if action != "restart":
            raise ControlError(f"stock Antminer firmware has no {action} for minerwatch",
                               unsupported=True)
        if self._http is None:
            raise ControlError(
                "a stock Antminer reboots through its web interface: set [control] "
                "antminer_password (and antminer_user, by default root)", unsupported=True)
        status, body = await send(self._http, "GET", REBOOT_PATH, closed_ok=True)
        if status == 401:
            raise ControlError(f"the web interface on port {self.web_port} refused "
                               "antminer_user/antminer_password (HTTP digest)")
        if status not in (0, 200, 204):
            raise ControlError(f"{REBOOT_PATH}: {http_reason(status)}: {reply_text(body)}")

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
