"""Errors of the serving API, shared by the clients and the development model server.

Each error carries TF Serving's canonical status code name (``NOT_FOUND``, ...) and the
server's message. The mapping to HTTP statuses is TF Serving's (``http_server.cc``).
"""
from __future__ import annotations

# TF Serving's status code -> HTTP status mapping for its REST API.
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400,
    "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}

# Numeric values of the canonical codes (grpc.StatusCode / tensorflow.error.Code).
CODE_NUMBERS = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
    "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}
CODE_NAMES = {number: name for name, number in CODE_NUMBERS.items()}


class ServingError(Exception):
    """A failed serving call: ``code`` (canonical name), ``message`` (the server's text)."""

    default_code = "UNKNOWN"

    def __init__(self, message: str, code: str | None = None, http_status: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.http_status = http_status or HTTP_STATUS.get(self.code, 500)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class NotFound(ServingError):
    """Unknown model, version or servable (gRPC NOT_FOUND, HTTP 404)."""

    default_code = "NOT_FOUND"


class InvalidArgument(ServingError):
    """The request is wrong: gRPC INVALID_ARGUMENT, FAILED_PRECONDITION or OUT_OF_RANGE
    (all HTTP 400 in TF Serving; e.g. an unknown signature is FAILED_PRECONDITION)."""

    default_code = "INVALID_ARGUMENT"


class Unavailable(ServingError):
    """The server cannot be reached or is not ready (gRPC UNAVAILABLE, HTTP 503)."""

    default_code = "UNAVAILABLE"


class DeadlineExceeded(ServingError):
    """The call did not finish within its deadline (gRPC DEADLINE_EXCEEDED, HTTP 504)."""

    default_code = "DEADLINE_EXCEEDED"


_CLASS_BY_CODE = {
    "NOT_FOUND": NotFound, "INVALID_ARGUMENT": InvalidArgument,
    "FAILED_PRECONDITION": InvalidArgument, "OUT_OF_RANGE": InvalidArgument,
    "UNAVAILABLE": Unavailable, "DEADLINE_EXCEEDED": DeadlineExceeded,
}
_CODE_BY_HTTP = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 503: "UNAVAILABLE",
                 504: "DEADLINE_EXCEEDED", 501: "UNIMPLEMENTED", 409: "ABORTED",
                 429: "RESOURCE_EXHAUSTED", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}


def error_for_code(code: str, message: str, http_status: int | None = None) -> ServingError:
    """The ServingError subclass for a canonical code name."""
    return _CLASS_BY_CODE.get(code, ServingError)(message, code=code, http_status=http_status)


def error_for_http(status: int, message: str) -> ServingError:
    """The ServingError subclass for a REST error response."""
    code = _CODE_BY_HTTP.get(status, "INTERNAL" if status >= 500 else "UNKNOWN")
    return error_for_code(code, message, http_status=status)
