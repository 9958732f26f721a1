"""Who may call what, how often, and what is written down about each request.

``AccessMiddleware`` (ASGI) runs before routing reads anything of the request: it finds the
route template, authenticates the API key (``Authorization: Bearer <key>`` or ``X-API-Key``),
checks the role the route needs (401 / 403), takes a token from the caller's bucket (429 with
``Retry-After``), then times the request (latency histogram) and writes one access-log line
of method, route template, status, latency and key name: never the URL, so never a user id,
item id or query text. docs/security.md.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from starlette.routing import Match

from serving.api.keys import ROLES, ApiKey, KeyRing
from serving.api.limits import Rate, RateLimiter
from serving.api.metrics import ApiMetrics

access_log = logging.getLogger("serving.api.access")
CALLER, ENDPOINT = "shoprec.caller", "shoprec.endpoint"     # where the middleware puts them
REALM = 'Bearer realm="shoprec"'


@dataclass(frozen=True)
class Caller:
    """Who sent a request: a key's name and roles; ``anonymous`` (auth=off: every role) or
    ``none`` (no valid key)."""

    name: str
    roles: frozenset[str]
    label: str            # for metrics: the roles joined by "+", or anonymous / none

    def can(self, role: str) -> bool:
        return role in self.roles


NOBODY = Caller("-", frozenset(), "none")
ANONYMOUS = Caller("anonymous", frozenset(ROLES), "anonymous")


def caller_of(scope) -> Caller:
    """The caller the middleware found for this request (``scope`` or a Request)."""
    scope = getattr(scope, "scope", scope)
    return scope.get(CALLER, NOBODY)


def error_response(status: int, message: str, detail: list | None = None,
                   headers: dict | None = None) -> JSONResponse:
    """An answer in the API's error format ``{"error": ..., "detail"?: [...]}``."""
    body = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


def key_rate(key: ApiKey, limits: dict[str, Rate | None]) -> Rate | None:
    """A key's limit: its own ``rate=`` if given, else the most generous of its roles'."""
    if key.unlimited or key.rate is not None:
        return key.rate
    rates = [limits[role] for role in sorted(key.roles)]
    if any(rate is None for rate in rates):
        return None
    return Rate(max(r.per_s for r in rates), max(r.burst for r in rates))


def presented_secret(scope) -> str | None:
    """The key in ``Authorization: Bearer <key>`` or else ``X-API-Key`` (None if neither)."""
    authorization = api_key = None
    for name, value in scope.get("headers", ()):
        if name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1").strip()
    if authorization is not None:
        scheme, _, secret = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and secret.strip():
            return secret.strip()
    return api_key or None


def unguarded_routes(routes, route_roles: dict[str, str], open_paths: set[str]) -> list[str]:
    """Routes the middleware could not guard as meant: a route without a template (an included
    router, whose requests would look unmatched and pass as open) or a template that is
    neither given a role nor declared open. ``create_app`` refuses to start with any."""
    problems = []
    for route in routes:
        path = getattr(route, "path", None)
        if path is None:
            problems.append(f"{type(route).__name__} without a path template")
        elif path not in route_roles and path not in open_paths:
            problems.append(f"{path}: neither a role nor declared open")
    return problems


class AccessMiddleware:
    """Authentication, roles, rate limits, latency metric and access log (module doc).

    ``route_roles``: route template -> the role it needs (routes not listed are open, e.g.
    /healthz; an open route still learns the caller, so /readyz can show detail to an
    operator). ``keys`` None = auth off: every caller is ``ANONYMOUS`` and is rate-limited
    by client address with the ``anonymous`` limit."""

    def __init__(self, app, router, route_roles: dict[str, str], keys: KeyRing | None,
                 rate_limits: dict[str, Rate | None], metrics: ApiMetrics,
                 log_requests: bool = True, limiter: RateLimiter | None = None):
        self.app, self.router, self.route_roles, self.keys = app, router, route_roles, keys
        self.rate_limits, self.metrics, self.log_requests = rate_limits, metrics, log_requests
        self.limiter = limiter or RateLimiter()
        self._rates: dict[ApiKey, Rate | None] = {}     # key_rate of each key seen

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        endpoint = scope[ENDPOINT] = self._endpoint(scope)
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            refused = self._admit(scope, endpoint)
            if refused is not None:
                await refused(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.request_latency.labels(endpoint, scope["method"],
                                                str(status[0])).observe(seconds)
            if self.log_requests:
                access_log.info("%s %s %d %.1f ms key=%s", scope["method"], endpoint,
                                status[0], seconds * 1000, caller_of(scope).name)

    def _admit(self, scope, endpoint: str) -> JSONResponse | None:
        """None when the request may go on, else the refusal to send."""
        role = self.route_roles.get(endpoint)
        if self.keys is None:
            caller = scope[CALLER] = ANONYMOUS
            client = scope.get("client")
            bucket, rate = f"address:{client[0] if client else 'unknown'}", \
                self.rate_limits["anonymous"]
        else:
            secret = presented_secret(scope)
            key = None
            if secret is not None:
                self.keys.refresh()
                key = self.keys.authenticate(secret)
            caller = scope[CALLER] = NOBODY if key is None else Caller(
                key.name, key.roles, "+".join(sorted(key.roles)))
            if role is None:
                return None
            if key is None:
                return self._refuse(scope, endpoint, "unauthenticated", 401,
                                    "invalid API key" if secret else
                                    "authentication required: send Authorization: Bearer "
                                    "<API key> (or X-API-Key: <API key>)",
                                    {"WWW-Authenticate": REALM + (', error="invalid_token"'
                                                                  if secret else "")})
            if not caller.can(role):
                return self._refuse(scope, endpoint, "forbidden", 403,
                                    f"API key {key.name!r} lacks the role {role!r} that "
                                    f"{scope['method']} {endpoint} needs")
            if key not in self._rates:
                self._rates[key] = key_rate(key, self.rate_limits)
            bucket, rate = f"key:{key.name}", self._rates[key]
        if role is None:
            return None
        retry_after = self.limiter.retry_after(bucket, rate)
        if retry_after:
            who = f"API key {caller.name!r}" if self.keys is not None else "this address"
            return self._refuse(scope, endpoint, "rate_limited", 429,
                                f"rate limit of {who} exceeded ({rate.per_s:g} requests/s, "
                                f"burst {rate.burst}); retry after {retry_after} s",
                                {"Retry-After": str(retry_after)})
        return None

    def _refuse(self, scope, endpoint: str, reason: str, status: int, message: str,
                headers: dict | None = None) -> JSONResponse:
        self.metrics.rejected.labels(endpoint, reason, caller_of(scope).label).inc()
        return error_response(status, message, headers=headers)

    def _endpoint(self, scope) -> str:
        for route in self.router.routes:
            if route.matches(scope)[0] == Match.FULL:
                return getattr(route, "path", "unmatched")
        return "unmatched"
