"""``GET /miners/{miner_id}``: a miner's page. The static router serves the dashboard's
files by name; a page whose path carries the miner id needs this route (the page reads
the id from its own path)."""

from __future__ import annotations

from pathlib import Path

from litestar import MediaType, get
from litestar.params import FromPath
from litestar.response import File

#: The dashboard's files (the static router serves them, this module the miner page).
DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"


@get("/miners/{miner_id:str}", media_type=MediaType.HTML, include_in_schema=False,
     sync_to_thread=False, cache=False)
def miner_page(miner_id: FromPath[str]) -> File:
    # Any id gets the page: it asks the api for the miner and says so when it is unknown.
    del miner_id
    return File(DASHBOARD_DIR / "miner.html", content_disposition_type="inline")
