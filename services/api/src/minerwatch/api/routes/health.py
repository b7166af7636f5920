"""``GET /healthz``: whether the api's dependencies (broker, database) answer."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency

from minerwatch.api.database import Database
from minerwatch.api.models import Health, Up
from minerwatch.api.relay import Relay


@get("/healthz", summary="The state of the broker link and the database", cache=False)
async def healthz(db: NamedDependency[Database], relay: NamedDependency[Relay]) -> Health:
    broker: Up = "up" if relay.connected else "down"
    database: Up = "up" if await db.ping() else "down"
    return Health(status="ok" if broker == database == "up" else "degraded",
                  broker=broker, database=database)
