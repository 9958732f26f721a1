"""The recommendation API (FastAPI): ``create_app(settings)``. Endpoints in docs/api.md,
keys, roles and limits in docs/security.md.

Errors are JSON ``{"error": "<what is wrong, naming the field>"}``; validation errors
(422) add ``"detail": [{"loc": [...], "msg": ..., "type": ...}]``. A client mistake is
always 4xx; 503 means the model server or event store cannot answer, or the API is
overloaded (with ``Retry-After``).
"""
from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from pipeline.contract import spec
from serving.api.access import ENDPOINT, AccessMiddleware, caller_of, unguarded_routes
from serving.api.access import error_response as _error
from serving.api.catalog_updates import CatalogUpdateError, parse_updates
from serving.api.experiments import load_experiments
from serving.api.health import Readiness
from serving.api.keys import EVENTS, OPERATOR, PUBLIC, open_key_ring
from serving.api.limits import Admission, Overloaded
from serving.api.metrics import ApiMetrics
from serving.api.recommender import NotReady, Recommendations, UnknownItem
from serving.api.request_ids import HEADER as REQUEST_ID_HEADER
from serving.api.request_ids import RequestIdMiddleware, request_id_of
from serving.api.search_options import (MAX_CURSOR_CHARS, SORTS, BadSearchOptions,
                                        SearchOptions, decode_cursor, encode_cursor)
from serving.api.segments import segment_answer
from serving.api.services import Services
from serving.api.settings import Settings
from serving.client.clients import ServingError
from serving.events.report import experiment_report
from serving.events.store import EventStoreError, now_seconds
from serving.events.validation import EventValidationError, FieldProblem, validate_events


log = logging.getLogger(__name__)
MAX_DETAIL = 100          # problems listed in a 422's detail (the message counts the rest)
MAX_REASON_CHARS = 2_000  # a reason quotes one title or the query, both capped by the contract
SIMILAR = "/v1/items/{item_id:path}/similar"
# the role each route needs; OPEN_PATHS are open to everyone (create_app checks that every
# route is one or the other)
USER = "/v1/users/{user_id:path}"
SEGMENT = "/v1/users/{user_id:path}/segment"
CATALOG_UPDATES = "/v1/catalog/updates"
EXPERIMENTS = "/v1/experiments"
EXPERIMENT_REPORT = "/v1/experiments/{name}/report"
ROUTE_ROLES = {"/v1/recommend": PUBLIC, "/v1/search": PUBLIC, SIMILAR: PUBLIC,
               "/v1/autocomplete": PUBLIC,
               "/v1/events": EVENTS, USER: OPERATOR, "/metrics": OPERATOR,
               CATALOG_UPDATES: OPERATOR, SEGMENT: OPERATOR,
               EXPERIMENTS: OPERATOR, EXPERIMENT_REPORT: OPERATOR}
OPEN_PATHS = {"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "Authorization: Bearer <API key> (docs/security.md)"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error answer: what is wrong, naming the field; 422 adds ``detail``."""

    error: str
    detail: list[ErrorDetail] | None = None


def _responses(*statuses: int) -> dict:
    """OpenAPI ``responses=`` for a route: the error statuses it answers, in the JSON format."""
    what = {400: "body is not JSON", 401: "no API key, or an invalid one (WWW-Authenticate)",
            403: "the API key lacks the role this route needs", 404: "unknown item",
            409: "a search cursor's models are no longer served (search again)",
            413: "body too large", 422: "a parameter or event field breaks a rule (detail "
            "lists them)", 429: "the API key's rate limit is exceeded (Retry-After)",
            503: "the model server or event store cannot answer, or the API is overloaded "
                 "(Retry-After)"}
    return {status: {"model": ErrorBody, "description": what[status]} for status in statuses}


def _guarded(path: str, *statuses: int, openapi_extra: dict | None = None) -> dict:
    """Route arguments of a route that needs a role: its error statuses (with 401, 403 and
    429) and its security requirement in the OpenAPI document."""
    extra = {"security": [{name: []} for name in SECURITY_SCHEMES],
             "x-shoprec-role": ROUTE_ROLES[path], **(openapi_extra or {})}
    return {"responses": _responses(401, 403, 429, *statuses), "openapi_extra": extra}


def _clip(text: str, limit: int) -> str:
    """Text cut to ``limit`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def answer_body(svc: Services, metrics: ApiMetrics, endpoint: str, result: Recommendations,
                **extra) -> dict:
    """The body of a recommend / search / similar answer (docs/api.md), counted in the
    metrics (answers per strategy, degraded stages); the web pages render the same body."""
    metrics.answers.labels(endpoint, result.strategy).inc()
    for stage in result.degraded:
        metrics.degraded.labels(stage).inc()
    items = [{**svc.catalog.describe(r.row), "score": round(r.score, 6),
              "reason": {k: _clip(v, MAX_REASON_CHARS) if isinstance(v, str) else v
                         for k, v in vars(r.reason).items() if v is not None}}
             for r in result.items]
    body = {**extra, "strategy": result.strategy, "items": items, "degraded": result.degraded,
            "model_versions": result.model_versions or svc.watcher.versions}
    if result.spelling is not None:         # search answers
        body.update(did_you_mean=result.did_you_mean, spelling=result.spelling)
    return body


def served_body(request: Request, endpoint: str, result: Recommendations,
                user_key: str | None, assigned, first_position: int = 0, **extra) -> dict:
    """``answer_body`` with the request's id and the user's experiment and variant (when
    they are in one), its items logged as impressions (positions from ``first_position``:
    a search page's offset)."""
    svc: Services = request.app.state.services
    request_id = request_id_of(request)
    fields = {"request_id": request_id}
    if assigned is not None:
        fields.update(experiment=assigned[0].name, variant=assigned[1].name)
    body = answer_body(svc, request.app.state.metrics, endpoint, result, **fields, **extra)
    svc.log_impressions(request_id, user_key, endpoint, assigned,
                        [item["item_id"] for item in body["items"]], first_position)
    return body


def query_error(name: str, message: str, value=None) -> RequestValidationError:
    """The 422 of a query parameter that breaks a rule (the error format names it)."""
    return RequestValidationError([{"loc": ("query", name), "type": "value_error",
                                    "msg": message, "input": value}])


def not_blank(value: str, name: str) -> str:
    """``value`` stripped; a 422 naming the query parameter when only spaces are left."""
    if not value.strip():
        raise query_error(name, "must contain a non-space character", value)
    return value.strip()


class CursorExpired(Exception):
    """A search cursor names model versions that are no longer the served ones."""


def _cursor_page(cursor: str, q: str, options: SearchOptions,
                 served: dict) -> tuple[int, dict]:
    """(offset, model versions) a search cursor pins; BadSearchOptions when it is no cursor
    of this search, CursorExpired when its models are no longer the served ones."""
    query, pinned, versions = decode_cursor(cursor)
    if query != q or pinned.page(0) != options:
        raise BadSearchOptions("cursor", "cursor belongs to another search (q, filters and "
                                         "sort must be those of the first page)")
    changed = {name: (version, served.get(name)) for name, version in versions.items()
               if served.get(name) != version}
    if changed:
        raise CursorExpired("cursor: the models changed since this search's first page ("
                            + ", ".join(f"{n} {a} -> {b}" for n, (a, b) in changed.items())
                            + "); search again without a cursor")
    return pinned.offset, versions


def _field_name(loc) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("query", "path", "header"):
        return f"{parts[0]} parameter '{'.'.join(parts[1:])}'"
    return f"field '{'.'.join(parts)}'"


def create_app(settings: Settings) -> FastAPI:
    """The API over the shop in ``settings.shop_dir`` and the models at
    ``settings.tfserving_grpc``; services start in the lifespan (bounded wait)."""
    metrics = ApiMetrics()
    if settings.experiments_file:         # a bad file fails here, before anything starts
        load_experiments(settings.experiments_file, settings)
    keys = open_key_ring(settings, lambda result: metrics.key_reloads.labels(result).inc())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        services = await run_in_threadpool(lambda: Services(settings, metrics).start())
        app.state.services = services
        app.state.readiness = Readiness(services, settings, metrics)
        metrics.watch_poll_failures(lambda: services.watcher.poll_failures)
        # admission control: requests beyond max_concurrent_requests wait here instead of
        # thrashing the CPU; beyond max_queued_requests they are shed (503) at once
        admission = app.state.admission = Admission(
            settings.max_concurrent_requests, settings.max_queued_requests,
            settings.max_queue_wait_s)
        metrics.queued.set_function(lambda: admission.waiting)
        metrics.active.set_function(lambda: admission.active)
        try:
            yield
        finally:
            app.state.readiness.close()
            await run_in_threadpool(services.close)

    app = FastAPI(title="shoprec API", version="1", lifespan=lifespan,
                  description="Recommendations, search and similar items for a shop.")
    app.state.settings, app.state.metrics, app.state.keys = settings, metrics, keys
    _install_error_handlers(app)
    _declare_security(app)
    from serving.web.pages import WEB_OPEN_PATHS, WEB_ROUTE_ROLES, mount_web  # imports us
    route_roles = {**ROUTE_ROLES, **WEB_ROUTE_ROLES}
    app.add_middleware(AccessMiddleware, router=app.router, route_roles=route_roles,
                       keys=keys, rate_limits=settings.role_rate_limits, metrics=metrics,
                       log_requests=settings.access_log)
    app.add_middleware(RequestIdMiddleware)   # outside access: refusals carry the id too
    if settings.cors_allowed_origins:     # outermost: preflights and refusals get its headers
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_allowed_origins,
                           allow_methods=["GET", "POST"],
                           expose_headers=["Retry-After", REQUEST_ID_HEADER],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type",
                                          REQUEST_ID_HEADER])

    def services() -> Services:
        return app.state.services

    async def limited(function, *args):
        """Run blocking recommender work in a worker thread once admitted (at most
        ``max_concurrent_requests`` at a time, a bounded queue before them)."""
        return await app.state.admission.run(function, *args)

    k_param = Query(settings.default_k, ge=1, le=settings.max_k,
                    description=f"number of items (1..{settings.max_k})")

    @app.get("/v1/recommend", **_guarded("/v1/recommend", 422, 503))
    async def recommend(request: Request,
                        user_id: str = Query(..., min_length=1, max_length=spec.MAX_ID_CHARS),
                        k: int = k_param):
        """``context`` (the user's history and session query) only for a key with the
        ``operator`` role: a shop front must not be able to read a user's history."""
        svc = services()
        user_key = svc.user_key(user_id)
        recommender, assigned = svc.route(user_key, "recommend")
        result = await limited(recommender.recommend, user_key, k)
        extra = {}
        if caller_of(request).can(OPERATOR):
            extra["context"] = {"history": result.history,
                                "query": _clip(result.query, spec.MAX_QUERY_CHARS)}
        return served_body(request, "recommend", result, user_key, assigned, user_id=user_id,
                           k=k, **extra)

    @app.get("/v1/search", **_guarded("/v1/search", 409, 422, 503))
    async def search(request: Request,
                     q: str = Query(..., min_length=1, max_length=settings.max_query_chars),
                     user_id: str | None = Query(None, min_length=1,
                                                 max_length=spec.MAX_ID_CHARS),
                     k: int = k_param,
                     category: str | None = Query(None, min_length=1,
                                                  max_length=spec.MAX_QUERY_CHARS,
                                                  description="category path or its first "
                                                              "levels, e.g. Beauty > Makeup"),
                     brand: str | None = Query(None, min_length=1,
                                               max_length=spec.MAX_QUERY_CHARS),
                     min_price: float | None = Query(None, ge=0),
                     max_price: float | None = Query(None, ge=0),
                     include_out_of_stock: bool = False,
                     sort: str = Query("relevance", description=" | ".join(SORTS)),
                     cursor: str | None = Query(None, min_length=1,
                                                max_length=MAX_CURSOR_CHARS,
                                                description="next_cursor of the page before")):
        """Filters, sort and pages: serving/api/search_options.py (docs/api.md)."""
        q = not_blank(q, "q")
        svc = services()
        try:
            options = SearchOptions(category, brand, min_price, max_price,
                                    include_out_of_stock, sort)
            versions = None
            if cursor is not None:
                offset, versions = _cursor_page(cursor, q, options, svc.watcher.versions)
                options = options.page(offset)
        except BadSearchOptions as e:
            raise query_error(e.field, str(e)) from None
        user_key = svc.user_key(user_id)
        recommender, assigned = svc.route(user_key, "search")
        result = await limited(recommender.search, q, user_key, k, options, versions)
        following = options.offset + len(result.items)
        next_cursor = (encode_cursor(q, options.page(following), result.model_versions)
                       if following < (result.total or 0) else None)
        return served_body(request, "search", result, user_key, assigned, options.offset,
                           q=q, user_id=user_id, k=k, filters=options.filters,
                           sort=options.sort, offset=options.offset, total=result.total,
                           next_cursor=next_cursor)

    @app.get("/v1/autocomplete", **_guarded("/v1/autocomplete", 422))
    async def autocomplete(prefix: str = Query(..., min_length=1,
                                               max_length=settings.max_query_chars),
                           k: int = k_param):
        """Past searches of at least ``autocomplete_min_users`` shoppers that start with
        ``prefix``, most searched first (serving/api/autocomplete.py)."""
        not_blank(prefix, "prefix")
        found = services().suggestions.suggest(prefix, k)
        return {"prefix": prefix, "k": k,
                "suggestions": [{"query": q, "users": n} for q, n in found]}

    @app.get(SIMILAR, **_guarded(SIMILAR, 404, 422, 503))
    async def similar(request: Request,
                      item_id: str = Path(..., min_length=1, max_length=spec.MAX_ID_CHARS),
                      k: int = k_param,
                      user_id: str | None = Query(None, min_length=1,
                                                  max_length=spec.MAX_ID_CHARS,
                                                  description="the shopper (optional): their "
                                                              "experiment, and impressions "
                                                              "their events are credited to")):
        svc = services()
        user_key = svc.user_key(user_id)
        recommender, assigned = svc.route(user_key, "similar")
        result = await limited(recommender.similar, item_id, k)
        extra = {"user_id": user_id} if user_id is not None else {}
        return served_body(request, "similar", result, user_key, assigned, item_id=item_id,
                           k=k, **extra)

    async def json_body(request: Request, what: str):
        """(payload, None) of a JSON body of at most ``max_body_bytes``, or (None, the 4xx
        answer)."""
        too_large = _error(413, f"body: larger than {settings.max_body_bytes} bytes; send "
                                f"fewer {what} per request")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > settings.max_body_bytes:
            return None, too_large
        body = bytearray()
        async for chunk in request.stream():     # bounded even without Content-Length
            body += chunk
            if len(body) > settings.max_body_bytes:
                return None, too_large
        try:
            return json.loads(body), None
        except RecursionError:
            return None, _error(400, "body: not valid JSON (nested too deeply)")
        except ValueError as e:     # syntax, encoding, a number of more than 4,300 digits
            return None, _error(400, f"body: not valid JSON ({str(e).split(';')[0]})")

    @app.post("/v1/events", **_guarded("/v1/events", 400, 413, 422, 503, openapi_extra={
        "requestBody": _events_body(settings)}))
    async def post_events(request: Request):
        payload, refused = await json_body(request, "events")
        if refused is not None:
            return refused
        svc = services()
        received = now_seconds()

        def validate_and_store():
            events = validate_events(payload, svc.catalog.index, received,
                                     settings.max_events_per_request)
            return svc.add_events(events, received)

        result = await limited(validate_and_store)
        # accepted: every event of the batch is in the store now (a retry of a batch whose
        # answer was lost gets the same answer); duplicates: events with a (user_id,
        # event_id) the store already held, not stored again.
        return {"accepted": result.accepted, "stored": result.stored,
                "duplicates": result.duplicates}

    @app.post(CATALOG_UPDATES, **_guarded(CATALOG_UPDATES, 400, 413, 422, 503))
    async def catalog_updates(request: Request):
        """Live catalog changes (operator): serving/api/catalog_updates.py. Body: one update
        object (``item_id`` and any of price, in_stock, title, description, brand,
        categories, or ``deleted: true``) or a list of them; all or nothing."""
        payload, refused = await json_body(request, "updates")
        if refused is not None:
            return refused
        svc = services()

        def validate_and_apply():
            updates = parse_updates(payload, svc.catalog, settings.max_events_per_request)
            svc.update_catalog(updates)
            catalog = svc.catalog
            return [{"item_id": u.item_id, "deleted": True} if u.deleted is True
                    else catalog.describe(catalog.row(u.item_id)) for u in updates]

        items = await limited(validate_and_apply)
        return {"updated": len(items), "items": items}

    @app.get(SEGMENT, **_guarded(SEGMENT, 404, 422))
    async def user_segment(user_id: str = Path(..., min_length=1,
                                               max_length=spec.MAX_ID_CHARS)):
        """The user's segment (operator): its aggregate description. Personal data about
        the shopper, so not for a shop front's key (docs/security.md). 404 when no segments
        are loaded or the segmentation did not see the user."""
        return await limited(segment_answer, services(), user_id)

    @app.delete(USER, **_guarded(USER, 422, 503))
    async def erase_user(user_id: str = Path(..., min_length=1, max_length=spec.MAX_ID_CHARS)):
        """Erasure request (operator): delete every stored event of the user and record a
        keyed hash of it so the next training run leaves the user out (docs/privacy.md).
        Idempotent: erasing again deletes nothing more."""
        deleted = await limited(services().erase_user, user_id)
        return {"erased": True, "events_deleted": deleted}

    @app.get(EXPERIMENTS, **_guarded(EXPERIMENTS))
    async def experiments():
        """The experiments of ``experiments_file`` (operator): names, salts, traffic,
        surfaces, control and variants with their weights and changes."""
        return {"experiments": [experiment_summary(e)
                                for e in services().experiments.experiments]}

    @app.get(EXPERIMENT_REPORT, **_guarded(EXPERIMENT_REPORT, 404, 422, 503))
    async def experiment_report_route(name: str = Path(..., min_length=1, max_length=64),
                                      confidence: float = Query(0.95, gt=0.5, lt=1)):
        """Per variant: users, impressions, clicks, CTR, conversion, revenue per user with
        confidence intervals, and each variant against the control with p-values
        (serving/events/report.py)."""
        svc = services()
        experiment = svc.experiments.get(name)
        if experiment is None:
            return _error(404, f"path parameter 'name': no experiment {name!r} (known: "
                               f"{', '.join(e.name for e in svc.experiments.experiments) or 'none'})")
        return await limited(experiment_report, svc.store, experiment, confidence)

    @app.get("/healthz")
    async def healthz():
        """Liveness: the process answers (on the event loop, no dependency is asked)."""
        return {"status": "ok"}

    @app.get("/readyz", responses=_responses(503))
    def readyz(request: Request):
        """Readiness: 200 when every check of serving/api/health.py passes, else 503 in the
        error format (answers within about ``readiness_deadline_s``). Open to everyone; the
        checks, models and catalog (``detail`` of a 503) only for the ``operator`` role."""
        svc = services()
        report = app.state.readiness.evaluate()
        if not caller_of(request).can(OPERATOR):
            return {"status": "ready"} if report.ok else _error(503, "not ready")
        if not report.ok:
            return _error(503, report.summary(), report.detail())
        tables = svc.catalog.item_to_item
        return {"status": "ready", "checks": report.as_dict(), "models": svc.watcher.versions,
                "catalog_items": len(svc.catalog),
                "embeddings_version": svc.catalog.embeddings_version,
                "item_to_item_version": tables.version if tables else None,
                "search_terms_version": svc.recommender.text_index.terms_version}

    @app.get("/metrics", **_guarded("/metrics"))
    def metrics_endpoint():
        return Response(metrics.exposition(), media_type=metrics.content_type)

    mount_web(app)      # the shop front and the operator console (serving/web, docs/web.md)
    unguarded = unguarded_routes(app.router.routes, route_roles, OPEN_PATHS | WEB_OPEN_PATHS)
    if unguarded:
        raise RuntimeError("routes the access middleware cannot guard: " + "; ".join(unguarded))
    return app


def experiment_summary(experiment) -> dict:
    """An experiment as GET /v1/experiments lists it."""
    return {"name": experiment.name, "description": experiment.description,
            "salt": experiment.salt, "traffic": experiment.traffic,
            "surfaces": sorted(experiment.surfaces), "control": experiment.control,
            "variants": [{"name": v.name, "weight": v.weight, "settings": v.settings,
                          "ranking_model": v.ranking_model,
                          "ranking_version": v.ranking_version,
                          "description": v.description} for v in experiment.variants]}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""),
                   "type": e.get("type", "")} for e in exc.errors()]
        message = "; ".join(f"{_field_name(d['loc'])}: {d['msg']}" for d in detail)
        return _error(422, message, detail)

    @app.exception_handler(EventValidationError)
    @app.exception_handler(CatalogUpdateError)
    async def invalid_events(request: Request, exc: EventValidationError | CatalogUpdateError):
        problems: list[FieldProblem] = exc.problems
        message = "; ".join(f"{_field_name(p.loc)}: {p.message}" for p in problems[:10])
        if len(problems) > 10:
            message += f"; ... and {len(problems) - 10} more"
            if len(problems) > MAX_DETAIL:
                message += f" ({len(problems)} problems, detail lists the first {MAX_DETAIL})"
        return _error(422, message, [p.as_dict() for p in problems[:MAX_DETAIL]])

    @app.exception_handler(CursorExpired)
    async def cursor_expired(request: Request, exc: CursorExpired):
        return _error(409, str(exc))

    @app.exception_handler(UnknownItem)
    async def unknown_item(request: Request, exc: UnknownItem):
        return _error(404, f"path parameter 'item_id': no item {exc.args[0]!r} in the catalog")

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded):
        request.app.state.metrics.rejected.labels(
            request.scope.get(ENDPOINT, "unmatched"), exc.reason,
            caller_of(request).label).inc()
        return _error(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, exc: NotReady):
        return _error(503, str(exc))

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError):
        return _error(503, f"model server: {exc}")

    @app.exception_handler(EventStoreError)
    async def store_error(request: Request, exc: EventStoreError):
        return _error(503, f"event store: {exc}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception):
        """A bug: answered in the JSON format, never as text. Starlette re-raises it after
        this answer, so the server logs the traceback."""
        log.error("unhandled %s in %s %s", type(exc).__name__, request.method,
                  request.scope.get(ENDPOINT, "unmatched"))     # never the URL: ids, queries
        return _error(500, "internal error; the API logged it")


def _declare_security(app: FastAPI) -> None:
    """The OpenAPI document names the two ways to send a key (the /docs "Authorize")."""
    document = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = document()
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        return app.openapi_schema

    app.openapi = openapi


def _events_body(settings: Settings) -> dict:
    """OpenAPI request body of POST /v1/events: one event or a list (the data contract's
    events table; the endpoint reads the raw body to check it with the contract's code)."""
    text = {name: {"type": "string", "maxLength": spec.MAX_CHARS[name]}
            for name in (spec.USER_ID, spec.ITEM_ID, spec.QUERY, spec.SESSION_ID)}
    text[spec.EVENT_ID] = {"type": "string", "maxLength": spec.MAX_CHARS[spec.EVENT_ID],
                           "description": "idempotency key: an event with a (user_id, "
                                          "event_id) already stored is not stored again"}
    event = {"type": "object", "additionalProperties": False,
             "required": [spec.USER_ID, spec.EVENT_TYPE],
             "properties": {**text,
                            spec.EVENT_TYPE: {"type": "string", "enum": list(spec.EVENT_TYPES)},
                            spec.VALUE: {"type": "number"},
                            spec.TIMESTAMP: {"type": ["string", "number"],
                                             "description": "ISO-8601 or epoch seconds; "
                                                            "absent = time received"}}}
    schema = {"oneOf": [event, {"type": "array", "items": event, "minItems": 1,
                                "maxItems": settings.max_events_per_request}]}
    return {"required": True, "content": {"application/json": {"schema": schema}},
            "description": f"at most {settings.max_body_bytes} bytes (docs/data.md, events)"}
