"""``GET /api/config``: the installation settings a client (the dashboard) needs."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency

from minerwatch.api.models import ClientConfig
from minerwatch.api.presence import stale_after_s
from minerwatch.shared.config import Config


@get("/api/config", summary="Settings the dashboard needs: base topic, poll interval, "
     "when a sample is stale")
async def client_config(config: NamedDependency[Config]) -> ClientConfig:
    poll = config.collector.poll_interval_s
    return ClientConfig(base_topic=config.mqtt.base_topic, poll_interval_s=poll,
                        stale_after_s=stale_after_s(poll))
