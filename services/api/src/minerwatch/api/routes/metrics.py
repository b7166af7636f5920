"""``GET /metrics``: every miner's readings and every service's own health for Prometheus,
in the text exposition format (OpenMetrics when the scraper asks for it), see
``api.metrics``."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import MediaType, Request, Response, get
from litestar.di import NamedDependency
from prometheus_client.exposition import choose_encoder

from minerwatch.api.metrics import Scrape
from minerwatch.api.relay import Relay
from minerwatch.shared.config import Config


@get("/metrics", summary="Prometheus metrics: every miner's readings and every service's "
     "own health", cache=False, media_type=MediaType.TEXT,
     description=(
         "Per miner (label `miner`): `minerwatch_miner_up` (1 while online or idle), "
         "`minerwatch_miner_info` and, only while its data is live, one series per reading "
         "of its latest sample. Per service: `minerwatch_service_up` and the service's own "
         "health as it publishes it on `{base}/services/{service}/stats`. The names are "
         "listed in docs/contract.md."))
async def metrics_handler(request: Request[Any, Any, Any], relay: NamedDependency[Relay],
                          config: NamedDependency[Config]) -> Response[bytes]:
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    scrape = Scrape(relay, config)  # in the event loop: it reads the relay's state
    # Writing the text takes a fifth of a second at 2,000 miners: not on the event loop.
    body = await asyncio.to_thread(encode, scrape)
    # The header as prometheus-client names it (a media type alone gets a second charset).
    return Response(body, headers={"content-type": content_type})
