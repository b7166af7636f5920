"""The Litestar application: fleet, history, alerts and mutes, control of the miners,
live WebSocket relay, dashboard and OpenAPI.

Every route goes through the access check (``access``: tokens, sessions, roles, Host and
Origin); every response carries the security headers (``access.SECURITY_HEADERS``).

Errors are answered as ``{"status_code", "detail"}``: 400 naming the parameter (``body``
for a request body that is not the expected object), 401/403/421/429 from the access
check, 404, 503 when the database or the broker cannot be used, and 500 for anything
unforeseen, whose details go to the log (one line and the traceback) and never to the
client.
"""

from __future__ import annotations

import html
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, MediaType, Request, Response, Router, get
from litestar.di import Provide
from litestar.exceptions import ValidationException
from litestar.file_system import BaseLocalFileSystem
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import PathType
from litestar.types.file_types import FileInfo
from sqlalchemy.ext.asyncio import AsyncEngine

from minerwatch.api.access import Access, AccessMiddleware, Denied, security_headers
from minerwatch.api.commands import Commander
from minerwatch.api.database import Database, DatabaseUnavailable
from minerwatch.api.relay import BrokerUnavailable, Relay
from minerwatch.api.routes.alerts import alerts_index, mute_handler, mutes_index, unmute_handler
from minerwatch.api.routes.config import client_config
from minerwatch.api.routes.control import miner_control
from minerwatch.api.routes.events import events_index
from minerwatch.api.routes.fleet_samples import energy_handler, fleet_samples_handler
from minerwatch.api.routes.health import healthz
from minerwatch.api.routes.metrics import metrics_handler
from minerwatch.api.routes.miners import miner_history, miners_index
from minerwatch.api.routes.pages import DASHBOARD_DIR, miner_page
from minerwatch.api.routes.session import sign_in, sign_out, who_am_i
from minerwatch.api.routes.tune_runs import tune_runs_handler
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


#: Starts Swagger UI on the docs page: a file, not an inline script, so the page works
#: under the Content-Security-Policy (``script-src 'self'``) every response carries.
SWAGGER_INIT = f"""window.ui = SwaggerUIBundle({{
  url: "{OPENAPI_PATH}/openapi.json",
  dom_id: "#swagger-container",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
}});
"""


@get("/swagger-init.js", media_type="text/javascript", include_in_schema=False,
     sync_to_thread=False)
def swagger_init() -> str:
    return SWAGGER_INIT


class LocalSwaggerUI(SwaggerRenderPlugin):
    """Swagger UI at ``/schema`` and ``/schema/swagger`` from the files vendored in
    ``openapi_ui/`` (see its SOURCE), served under ``/schema/ui/``: the docs work on a LAN
    without internet, and no page names a CDN (Litestar's defaults load from several).
    The page has no inline script or style (the Content-Security-Policy forbids them):
    Swagger UI starts from ``/schema/swagger-init.js`` and reads the schema from
    ``/schema/openapi.json``."""

    def __init__(self) -> None:
        files = OPENAPI_PATH + OPENAPI_UI_PATH
        super().__init__(
            path="/swagger",
            js_url=f"{files}/swagger-ui-bundle.js",
            css_url=f"{files}/swagger-ui.css",
            standalone_preset_js_url=f"{files}/swagger-ui-standalone-preset.js",
            favicon=f'<link rel="icon" type="image/png" href="{files}/favicon-32x32.png">',
        )

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        del request
        title = html.escape(str(openapi_schema["info"]["title"]))
        return (
            "<!DOCTYPE html><html><head>"
            f"<title>{title}</title>{self.favicon}<meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link href="{self.css_url}" rel="stylesheet">'
            f'<script src="{self.js_url}"></script>'
            f'<script src="{self.standalone_preset_js_url}"></script>'
            '</head><body><div id="swagger-container"></div>'
            f'<script src="{OPENAPI_PATH}/swagger-init.js"></script>'
            "</body></html>"
        ).encode()

    def receive_router(self, router: Router) -> None:
        super().receive_router(router)
        router.register(create_static_files_router(
            OPENAPI_UI_PATH, [OPENAPI_UI_DIR], file_system=DashboardFiles(), name="openapi-ui"))
        router.register(swagger_init)


def openapi_config() -> OpenAPIConfig:
    """The OpenAPI schema (``/schema/openapi.json``) and its one docs page, Swagger UI; the
    other renderers Litestar offers (redoc, elements, rapidoc...) are left out, so their
    paths answer 404 instead of a page that loads from a CDN."""
    return OpenAPIConfig(
        title="minerwatch api",
        version="1",
        description=("The fleet (with stale data marked), history of the miners, "
                     "alerts and mutes, labels and forgetting, control of the miners "
                     "(actions, settings, autotune), live MQTT relay over WebSocket, "
                     "health. Tokens: `minerwatch-api token create`; send "
                     "`Authorization: Bearer <token>`."),
        path=OPENAPI_PATH,
        render_plugins=[LocalSwaggerUI()],
        # "Authorize" in Swagger UI takes a token; the routes that need none ignore it.
        components=Components(security_schemes={"bearer": SecurityScheme(
            type="http", scheme="bearer",
            description="A token from `minerwatch-api token create`")}),
        security=[{"bearer": []}],
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


def _denied(_request: Request[Any, Any, Any], exc: Denied) -> Response[dict[str, object]]:
    """A refusal raised inside a route (sign-in): as the access check answers it."""
    response = _error(exc.status, exc.detail)
    response.headers.update(exc.headers)
    return response


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
    access = Access(config.api, db)
    commander = Commander(relay, config.api.command_timeout_s)

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
            miner_control,
            events_index,
            tune_runs_handler,
            fleet_samples_handler,
            energy_handler,
            alerts_index,
            mute_handler,
            mutes_index,
            unmute_handler,
            healthz,
            metrics_handler,
            client_config,
            sign_in,
            who_am_i,
            sign_out,
            live,
            miner_page,
            create_static_files_router("/", [DASHBOARD_DIR], file_system=DashboardFiles(),
                                       html_mode=True, name="dashboard"),
        ],
        dependencies={
            "db": Provide(lambda: db, sync_to_thread=False),
            "relay": Provide(lambda: relay, sync_to_thread=False),
            "config": Provide(lambda: config, sync_to_thread=False),
            "access": Provide(lambda: access, sync_to_thread=False),
            "commander": Provide(lambda: commander, sync_to_thread=False),
        },
        middleware=[DefineMiddleware(AccessMiddleware, access=access)],
        before_send=[security_headers],
        exception_handlers={
            ValidationException: _bad_request,
            Denied: _denied,
            DatabaseUnavailable: _unavailable,
            BrokerUnavailable: _unavailable,
            HTTP_500_INTERNAL_SERVER_ERROR: _internal_error,
        },
        lifespan=[lifespan],
        logging_config=None,  # run_service already set up logging for every service
        openapi_config=openapi_config(),
    )
