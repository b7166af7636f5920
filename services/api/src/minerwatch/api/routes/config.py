"""``GET /api/config``: the installation settings a client (the dashboard) needs."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency

from minerwatch.api.models import ClientConfig
from minerwatch.api.relay import Relay


@get("/api/config", summary="Settings the dashboard needs (the MQTT base topic)")
async def client_config(relay: NamedDependency[Relay]) -> ClientConfig:
    return ClientConfig(base_topic=relay.base)
