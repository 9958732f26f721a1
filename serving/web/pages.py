"""Routes of the web pages, mounted on the API by ``mount_web``.

Page shells (``/shop``, ``/console/<view>``) are open and hold no data; their script fetches
the page's HTML fragments (``/web/shop/...``: ``public`` role, ``/web/console/...``:
``operator`` role) with the API key kept in the browser tab, so the API's keys, roles, rate
limits and access log guard the pages exactly as they guard ``/v1``. Static assets are
committed files under ``serving/web/static``.
"""
from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse

from serving.api.keys import OPERATOR, PUBLIC
from serving.web.config import WebConfig

log = logging.getLogger("serving.web")
STATIC_DIR = Path(__file__).parent / "static"
SHOP_FRAGMENTS, CONSOLE_FRAGMENTS = "/web/shop", "/web/console"
CONSOLE_VIEWS = {"models": "Models", "runs": "Pipeline runs", "data": "Data checks",
                 "traffic": "Live traffic", "experiments": "Experiments"}
WEB_ROUTE_ROLES = {
    f"{SHOP_FRAGMENTS}/recommendations": PUBLIC, f"{SHOP_FRAGMENTS}/search": PUBLIC,
    f"{SHOP_FRAGMENTS}/items/{{item_id:path}}": PUBLIC,
    **{f"{CONSOLE_FRAGMENTS}/{view}": OPERATOR for view in CONSOLE_VIEWS}}
# page shells and committed assets: no data, open to everyone
WEB_OPEN_PATHS = {"/shop", "/console", "/console/{view}", "/web/static"}


def mount_web(app: FastAPI, config: WebConfig | None = None) -> None:
    """Add the shop front, the console and their assets to ``app`` (``config`` None: from the
    environment). Without Jinja2 installed the API runs without pages (logged)."""
    try:
        from fastapi.staticfiles import StaticFiles

        from serving.web.console import add_console_routes
        from serving.web.rendering import render
        from serving.web.shop import add_shop_routes
    except ImportError as e:        # an image built without the pages' dependencies
        log.warning("web pages off: %s", e)
        return
    config = config or WebConfig.from_env()
    app.mount("/web/static", StaticFiles(directory=STATIC_DIR), name="web-static")
    add_shop_routes(app, app.state.settings, SHOP_FRAGMENTS)
    add_console_routes(app, config, CONSOLE_FRAGMENTS)

    @app.get("/shop", include_in_schema=False)
    def shop_page(request: Request):
        """The shop front's shell; its script reads ?user=&q=&item= and loads the fragments."""
        return render("shop.html", request, page="shop",
                      max_query_chars=app.state.settings.max_query_chars)

    @app.get("/console", include_in_schema=False)
    def console_home(request: Request):
        return RedirectResponse(f"{request.scope.get('root_path', '')}/console/models")

    @app.get("/console/{view}", include_in_schema=False)
    def console_page(request: Request, view: str):
        """One console view's shell; its script loads /web/console/<view> with the key."""
        if view not in CONSOLE_VIEWS:
            return render("not_found.html", request, status=404, page="",
                          what=f"path parameter 'view': no console view {view[:40]!r}; "
                               f"the views are {', '.join(CONSOLE_VIEWS)}")
        return render("console.html", request, page="console", view=view, views=CONSOLE_VIEWS)
