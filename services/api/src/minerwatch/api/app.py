"""The Litestar application: fleet, history, alerts and mutes, live WebSocket relay,
dashboard and OpenAPI.

Errors are answered as ``{"status_code", "detail"}``: 400 naming the parameter (``body``
for a request body that is not the expected object), 404, 503 when the database or the
broker cannot be used, and 500 for anything unforeseen, whose details go to the log (one
line and the traceback) and never to the client.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, MediaType, Request, Response, Router
from litestar.di import Provide
from litestar.exceptions import ValidationException
from litestar.file_system import BaseLocalFileSystem
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import PathType
from litestar.types.file_types import FileInfo
from sqlalchemy.ext.asyncio import AsyncEngine

from minerwatch.api.database import Database, DatabaseUnavailable
from minerwatch.api.relay import BrokerUnavailable, Relay
from minerwatch.api.routes.alerts import alerts_index, mute_handler, mutes_index, unmute_handler
from minerwatch.api.routes.config import client_config
from minerwatch.api.routes.events import events_index
from minerwatch.api.routes.fleet_samples import energy_handler, fleet_samples_handler
from minerwatch.api.routes.health import healthz
from minerwatch.api.routes.metrics import metrics_handler
from minerwatch.api.routes.miners import miner_history, miners_index
from minerwatch.api.routes.pages import DASHBOARD_DIR, miner_page
from minerwatch.api.routes.ws import live
from minerwatch.shared.config import Config
from minerwatch.shared.errors import one_line

log = logging.getLogger("minerwatch.api")

OPENAPI_UI_DIR = Path(__file__).parent / "openapi_ui"
OPENAPI_PATH = "/schema"
OPENAPI_UI_PATH = "/ui"  # below OPENAPI_PATH: Swagger UI's own files


class DashboardFiles(BaseLocalFileSystem):
    """The dashboard's files; a path the OS cannot even look up (a NUL byte, a name too
    long, a file used as a directory) is a file that is not there: 404, not 500."""

    async def info(self, path: PathType, **kwargs: Any) -> FileInfo:
        try:
            return await super().info(path, **kwargs)
        except FileNotFoundError:
            raise
        except (ValueError, OSError) as exc:
            raise FileNotFoundError(str(path)) from exc


class LocalSwaggerUI(SwaggerRenderPlugin):
    """Swagger UI at ``/schema`` and ``/schema/swagger`` from the files vendored in
    ``openapi_ui/`` (see its SOURCE), served under ``/schema/ui/``: the docs work on a LAN
    without internet, and no page names a CDN (Litestar's defaults load from several)."""

    def __init__(self) -> None:
        files = OPENAPI_PATH + OPENAPI_UI_PATH
        super().__init__(
            path="/swagger",
            js_url=f"{files}/swagger-ui-bundle.js",
            css_url=f"{files}/swagger-ui.css",
            standalone_preset_js_url=f"{files}/swagger-ui-standalone-preset.js",
            favicon=f'<link rel="icon" type="image/png" href="{files}/favicon-32x32.png">',
        )

    def receive_router(self, router: Router) -> None:
        super().receive_router(router)
        router.register(create_static_files_router(
            OPENAPI_UI_PATH, [OPENAPI_UI_DIR], file_system=DashboardFiles(), name="openapi-ui"))


def openapi_config() -> OpenAPIConfig:
    """The OpenAPI schema (``/schema/openapi.json``) and its one docs page, Swagger UI; the
    other renderers Litestar offers (redoc, elements, rapidoc...) are left out, so their
    paths answer 404 instead of a page that loads from a CDN."""
    return OpenAPIConfig(
        title="minerwatch api",
        version="1",
        description=("The fleet (with stale data marked), history of the miners, "
                     "alerts and mutes, labels and forgetting, live MQTT relay over "
                     "WebSocket, health."),
        path=OPENAPI_PATH,
        render_plugins=[LocalSwaggerUI()],
    )


def _error(status: int, detail: str) -> Response[dict[str, object]]:
    return Response({"status_code": status, "detail": detail}, status_code=status,
                    media_type=MediaType.JSON)


def parameter_problems(extra: object, query: Mapping[str, str]) -> list[str]:
    """``limit: Expected int >= 1 (got '0')`` from Litestar's validation details."""
    problems = []
    for item in extra if isinstance(extra, list) else []:
        if not isinstance(item, dict) or not item.get("key"):
            continue
        key = str(item["key"])
        if key == "data" and item.get("source") == "body":
            key = "body"  # Litestar's name for the whole request body
        message = str(item.get("message") or "invalid").replace("`", "")
        if key in query and "got" not in message:
            message += f" (got {query[key]!r})"
        problems.append(f"{key}: {message}")
    return problems


def _bad_request(request: Request[Any, Any, Any], exc: ValidationException
                 ) -> Response[dict[str, object]]:
    """One line naming the parameter, also for Litestar's own parameter validation (whose
    detail is generic, with the specifics in ``extra``)."""
    problems = parameter_problems(exc.extra, request.query_params)
    return _error(400, "; ".join(problems) if problems else exc.detail)


def _unavailable(_request: Request[Any, Any, Any], exc: DatabaseUnavailable | BrokerUnavailable
                 ) -> Response[dict[str, object]]:
    return _error(503, str(exc))


def _internal_error(request: Request[Any, Any, Any], exc: Exception
                    ) -> Response[dict[str, object]]:
    """Anything unforeseen: logged with its traceback, answered without details."""
    log.error("%s %s failed: %s: %s", request.method, request.url.path[:200],
              type(exc).__name__, one_line(exc), exc_info=exc)
    return _error(HTTP_500_INTERNAL_SERVER_ERROR, "Internal Server Error")


def create_app(
    config: Config, *, relay: Relay | None = None, engine: AsyncEngine | None = None
) -> Litestar:
    """The api for ``config``. ``relay`` and ``engine`` may be given (tests, embedding);
    a given engine stays the caller's to dispose of."""
    relay = relay if relay is not None else Relay(config.mqtt)
    db = Database(config.database.url, engine)

    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        await db.open()
        relay.start()
        try:
            yield
        finally:
            await relay.stop()
            await db.close()

    return Litestar(
        route_handlers=[
            miners_index,
            miner_history,
            events_index,
            fleet_samples_handler,
            energy_handler,
            alerts_index,
            mute_handler,
            mutes_index,
            unmute_handler,
            healthz,
            metrics_handler,
            client_config,
            live,
            miner_page,
            create_static_files_router("/", [DASHBOARD_DIR], file_system=DashboardFiles(),
                                       html_mode=True, name="dashboard"),
        ],
        dependencies={
            "db": Provide(lambda: db, sync_to_thread=False),
            "relay": Provide(lambda: relay, sync_to_thread=False),
            "config": Provide(lambda: config, sync_to_thread=False),
        },
        exception_handlers={
            ValidationException: _bad_request,
            DatabaseUnavailable: _unavailable,
            BrokerUnavailable: _unavailable,
            HTTP_500_INTERNAL_SERVER_ERROR: _internal_error,
        },
        lifespan=[lifespan],
        logging_config=None,  # run_service already set up logging for every service
        openapi_config=openapi_config(),
    )
