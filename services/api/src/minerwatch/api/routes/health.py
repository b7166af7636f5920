"""``GET /healthz``: the api's own dependencies (broker, database) and every service's
liveness as seen on MQTT.

The HTTP status is about the api alone (503 when its broker link or database is down), so
a container healthcheck does not restart a healthy api because the collector died; the
body's ``status`` is ``degraded`` also while the collector, store or alerts is not online.
"""

from __future__ import annotations

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec

from minerwatch.api.database import Database
from minerwatch.api.models import Health, ServiceHealth, Up
from minerwatch.api.relay import SERVICES, Relay

#: The services whose being offline makes the installation degraded (the api is this one).
WATCHED = ("collector", "store", "alerts")


@get("/healthz", summary="Broker link, database and every service's state", cache=False,
     responses={503: ResponseSpec(data_container=Health, generate_examples=False,
                                  description="The api's broker link or database is down")})
async def healthz(db: NamedDependency[Database], relay: NamedDependency[Relay]
                  ) -> Response[Health]:
    broker: Up = "up" if relay.connected else "down"
    database: Up = "up" if await db.ping() else "down"
    services = {name: ServiceHealth(state=seen.state, since=seen.since)
                for name in SERVICES for seen in (relay.service(name),)}
    ok = broker == database == "up" and all(services[name].state == "online"
                                            for name in WATCHED)
    body = Health(status="ok" if ok else "degraded", broker=broker, database=database,
                  services=services)
    return Response(body, status_code=200 if broker == database == "up" else 503)
