"""A request id for every request: the client's ``X-Request-ID`` when it is a valid one
(1-64 of letters, digits and ``._:-``), else a new random one (32 hex digits). It goes back
in the ``X-Request-ID`` header of every answer (errors and refusals included) and in the
body of recommend, search and similar answers (``request_id``); the impressions of that
answer carry it (serving/api/feedback.py), so a client can quote it to tie an answer to what
happened next."""
from __future__ import annotations

import re
import uuid

HEADER = "X-Request-ID"
SCOPE_KEY = "shoprec.request_id"
VALID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id_of(scope) -> str:
    """The id the middleware gave this request (``scope`` or a Request); a new one outside
    the middleware."""
    scope = getattr(scope, "scope", scope)
    if SCOPE_KEY not in scope:
        scope[SCOPE_KEY] = uuid.uuid4().hex
    return scope[SCOPE_KEY]


class RequestIdMiddleware:
    """ASGI: reads or makes the request id, adds it to the answer's headers."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope.get("headers", ())
                      if k.lower() == b"x-request-id"), "")
        request_id = given if VALID.fullmatch(given) else uuid.uuid4().hex
        scope[SCOPE_KEY] = request_id

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
