"""The shop front's fragments: "recommended for you", search results and a product page with
similar items, each the API's own answer (the body ``/v1`` sends, same metrics) rendered as
HTML. Parameters follow the ``/v1`` routes' rules, so a client mistake is a 4xx naming the
field (the API's error format), never a 5xx."""
from __future__ import annotations

from typing import Literal

from fastapi import FastAPI, Path, Query, Request

from pipeline.contract import spec
from serving.api.app import not_blank, served_body
from serving.api.recommender import NotReady, UnknownItem
from serving.api.search_options import SORTS, SearchOptions
from serving.api.settings import Settings
from serving.web.rendering import render

# What a degraded stage means for the shopper (docs/api.md: degraded answers).
DEGRADED = {"retrieval": "the retrieval model did not answer: popular items or plain text "
                         "matches instead of personal picks",
            "ranking": "the ranking model did not answer: candidates in retrieval order"}


def add_shop_routes(app: FastAPI, settings: Settings, prefix: str) -> None:
    """The fragment routes under ``prefix``, with the limits of ``settings``. Added to the
    app itself: the access middleware finds a route's role by its path, which routes of an
    included router do not show it."""

    def user_param(required: bool):
        return Query(... if required else None, min_length=1, max_length=spec.MAX_ID_CHARS)

    def k_param(default: int):
        return Query(default, ge=1, le=settings.max_k,
                     description=f"number of items (1..{settings.max_k})")

    def answer_page(request: Request, template: str, answer: dict | None, **context):
        return render(template, request, answer=answer,
                      degraded=[DEGRADED.get(s, s) for s in (answer or {}).get("degraded", [])],
                      **context)

    async def computed(request: Request, function, *args):
        """``function(*args)`` in a worker thread once admitted (the API's bounded queue)."""
        return await request.app.state.admission.run(function, *args)

    @app.get(f"{prefix}/recommendations", include_in_schema=False)
    async def recommendations(request: Request, user_id: str = user_param(True),
                              k: int = k_param(8)):
        svc = request.app.state.services
        user_key = svc.user_key(user_id)
        recommender, assigned = svc.route(user_key, "recommend")
        result = await computed(request, recommender.recommend, user_key, k)
        answer = served_body(request, "recommend", result, user_key, assigned,
                             user_id=user_id, k=k)
        return answer_page(request, "shop/recommendations.html", answer, user_id=user_id)

    @app.get(f"{prefix}/search", include_in_schema=False)
    async def search(request: Request,
                     q: str = Query(..., min_length=1, max_length=settings.max_query_chars),
                     user_id: str | None = user_param(False), k: int = k_param(12),
                     sort: Literal[SORTS] = "relevance"):
        q = not_blank(q, "q")
        svc = request.app.state.services
        user_key = svc.user_key(user_id)
        recommender, assigned = svc.route(user_key, "search")
        result = await computed(request, recommender.search, q, user_key, k,
                                SearchOptions(sort=sort))
        answer = served_body(request, "search", result, user_key, assigned, q=q,
                             user_id=user_id, k=k, sort=sort)
        return answer_page(request, "shop/search.html", answer, user_id=user_id or "", q=q)

    @app.get(f"{prefix}/items/{{item_id:path}}", include_in_schema=False)
    async def product(request: Request,
                      item_id: str = Path(..., min_length=1, max_length=spec.MAX_ID_CHARS),
                      user_id: str | None = user_param(False), k: int = k_param(6)):
        """The item's page: its catalog fields and its similar items (without them, and
        saying why, while the catalog embeddings are not loaded)."""
        svc = request.app.state.services
        catalog = svc.catalog
        row = catalog.row(item_id)
        if row is None or not catalog.listed(row):
            raise UnknownItem(item_id)          # 404 naming path parameter 'item_id'
        answer, unavailable = None, ""
        user_key = svc.user_key(user_id)
        recommender, assigned = svc.route(user_key, "similar")
        try:
            result = await computed(request, recommender.similar, item_id, k)
            answer = served_body(request, "similar", result, user_key, assigned,
                                 item_id=item_id, k=k)
        except NotReady as e:
            unavailable = str(e)
        return answer_page(request, "shop/product.html", answer, user_id=user_id or "",
                           item={**catalog.describe(row),
                                 "description": _text(catalog.descriptions[row])},
                           unavailable=unavailable)


def _text(value) -> str:
    """A catalog text cell as text ("" for a missing one)."""
    return value if isinstance(value, str) else ""
