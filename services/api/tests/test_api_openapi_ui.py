"""The OpenAPI docs (``/schema``, the footer's "API" link) served entirely by the api: in a
real browser (Debian's chromium driven by Playwright) every request stays on the api's own
origin and the page still renders the operations; the HTML names no absolute script or
stylesheet URL; renderers that are not vendored answer 404; the vendored files are the
ones their SOURCE pins."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Page, Route, expect

import minerwatch.api

StartApi = Callable[..., AbstractAsyncContextManager[Any]]

API_DIR = Path(minerwatch.api.__file__).parent
VENDORED = [API_DIR / "openapi_ui", API_DIR / "dashboard" / "vendor" / "uplot"]
DOCS_PAGES = ["/schema", "/schema/swagger"]
NOT_VENDORED = ["/schema/redoc", "/schema/elements", "/schema/rapidoc", "/schema/scalar"]


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Resources(HTMLParser):
    """Every URL a page loads by itself: scripts, stylesheets and icons, images, frames."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        name = {"script": "src", "link": "href", "img": "src", "iframe": "src"}.get(tag)
        if name and values.get(name):
            self.urls.append(str(values[name]))


def resources(html: str) -> list[str]:
    parser = Resources()
    parser.feed(html)
    return parser.urls


def pinned_files(folder: Path) -> dict[str, str]:
    """``{file name: sha256}`` from the folder's SOURCE (``file = name path-in-tarball sha``)."""
    pins = {}
    for line in (folder / "SOURCE").read_text().splitlines():
        if line.startswith("file = "):
            name, _inner, sha = line.removeprefix("file = ").split()
            pins[name] = sha
    return pins


async def open_isolated(browser: Browser, api_url: str) -> tuple[Page, list[str], list[str]]:
    """A page whose requests to any other origin are aborted and recorded, and whose
    same-origin responses that failed (4xx/5xx) are recorded too."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    foreign: list[str] = []
    failed: list[str] = []

    async def guard(route: Route) -> None:
        if origin(route.request.url) != api_url:
            foreign.append(route.request.url)
            await route.abort()
        else:
            await route.continue_()

    await context.route("**/*", guard)
    page = await context.new_page()
    page.on("requestfailed", lambda request: failed.append(f"{request.url} failed"))
    page.on("response", lambda response: failed.append(f"{response.url} {response.status}")
            if response.status >= 400 else None)
    return page, foreign, failed


@pytest.mark.parametrize("path", DOCS_PAGES)
async def test_docs_render_with_nothing_from_the_internet(
    start_api: StartApi, browser: Browser, path: str
) -> None:
    async with start_api() as api:
        page, foreign, failed = await open_isolated(browser, api.url)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(api.url + path)

        await expect(page).to_have_title("minerwatch api")
        await expect(page.locator(".swagger-ui .info .title")).to_contain_text("minerwatch api")
        summary = page.locator(".opblock-summary-path", has_text=re.compile(r"^/api/miners$"))
        await expect(summary).to_be_visible()
        # The stylesheet applied: an operation's method badge is a coloured block.
        badge = page.locator(".opblock-get .opblock-summary-method").first
        await expect(badge).to_have_css("display", "block")

        # The page works, not just shows: try the operation against this api.
        await summary.click()
        await page.locator(".opblock.is-open .try-out__btn").click()
        await page.locator(".opblock.is-open .execute").click()
        live = page.locator(".opblock.is-open .live-responses-table tbody .response-col_status")
        await expect(live).to_have_text("200")
        await page.wait_for_load_state("networkidle")

        assert foreign == [], f"{path} asked for files from elsewhere: {foreign}"
        assert failed == [], f"{path}: requests that failed: {failed}"
        assert errors == [], f"{path}: script errors: {errors}"


async def test_docs_html_names_no_absolute_url(start_api: StartApi) -> None:
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        for path in DOCS_PAGES:
            response = await http.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"].startswith("text/html")
            html = response.text
            urls = resources(html)
            assert any(url.endswith("/swagger-ui-bundle.js") for url in urls), urls
            assert any(url.endswith("/swagger-ui.css") for url in urls), urls
            for url in urls:
                parts = urlsplit(url)
                assert not parts.scheme and not parts.netloc, f"{path} loads {url}"
                served = await http.get(url)
                assert served.status_code == 200, f"{path} refers to {url}: {served.status_code}"
            assert "fonts.googleapis" not in html and "cdn." not in html, path


async def test_vendored_files_are_served_as_pinned(start_api: StartApi) -> None:
    folder = API_DIR / "openapi_ui"
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        for name in ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE"):
            response = await http.get(f"/schema/ui/{name}")
            assert response.status_code == 200, name
            assert response.content == (folder / name).read_bytes(), name
        bundle = await http.get("/schema/ui/swagger-ui-bundle.js")
        assert "javascript" in bundle.headers["content-type"]
        assert (await http.get("/schema/ui/no-such-file.js")).status_code == 404
        assert (await http.get("/schema/ui/%2e%2e/app.py")).status_code == 404


async def test_renderers_not_vendored_are_not_offered(start_api: StartApi) -> None:
    async with start_api() as api, httpx.AsyncClient(base_url=api.url) as http:
        for path in NOT_VENDORED:
            response = await http.get(path)
            assert response.status_code == 404, path
            assert not re.search(r"https?://", response.text), path
        schema = await http.get("/schema/openapi.json")
        assert schema.status_code == 200
        assert "/api/miners" in schema.json()["paths"]


@pytest.mark.parametrize("folder", VENDORED, ids=lambda folder: folder.name)
def test_vendored_files_match_their_pins(folder: Path) -> None:
    pins = pinned_files(folder)
    assert "LICENSE" in pins, f"{folder.name} ships no licence"
    source = (folder / "SOURCE").read_text()
    for key in ("package", "version", "tarball", "tarball_sha256"):
        assert re.search(rf"^{key} = \S+$", source, re.MULTILINE), f"{folder.name}: no {key}"
    for name, sha in pins.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == sha, name
