"""Errors of the HTTP API as RFC 9457 problem documents (`application/problem+json`).

The one place where exceptions become HTTP answers (`problem_from_exception`), as
STYLE.md asks: handlers raise `ProblemError` or let coordinator and engine errors through;
`ProblemRoute` answers every failure of a route, validation errors included, as a problem; an
unexpected exception is logged and answered 500, and the connection stays usable.

`type` is `urn:ringkv:problem:<slug>`, stable and listed in docs/http.md; `title` is the slug's
fixed text; `detail` says what was wrong with this request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from ringkv.errors import (
    AdminConflictError,
    AdminRequestError,
    ClosedError,
    CommandError,
    CorruptionError,
    InvalidContextError,
    LimitError,
    QuotaExceededError,
    RingkvError,
    StorageFullError,
    UnknownNamespaceError,
)

log = logging.getLogger("ringkv.http")

PROBLEM_JSON = "application/problem+json"
AUTH_CHALLENGE = 'Basic realm="ringkv", Bearer realm="ringkv"'  # the schemes api/http_auth.py takes


class Problem(BaseModel):
    """An error answer (RFC 9457). `type` is one of the URNs listed in docs/http.md."""

    type: str = Field(examples=["urn:ringkv:problem:key-not-found"])
    title: str = Field(examples=["Key not found"])
    status: int = Field(examples=[404])
    detail: str = Field(examples=["no value under key 'user:1'"])
    errors: list[dict[str, Any]] | None = Field(
        None, description="For validation errors (422): FastAPI's list of what failed, where."
    )
    current_version: int | None = Field(
        None,
        description="For a failed precondition (412): the key's version number now; null when the key has "
        "no live value.",
    )
    current_context: str | None = Field(
        None,
        description="For a failed precondition (412): the key's causal context now, base64 (also in the ETag "
        "header); null when the key has no live value.",
        json_schema_extra={"format": "byte", "contentEncoding": "base64"},
    )
    version: int | None = Field(None, description="For key-exists (409): the key's version number.")
    context: str | None = Field(
        None, description="For key-exists (409): the key's causal context, base64.",
        json_schema_extra={"format": "byte", "contentEncoding": "base64"})
    failed_keys: list[str] | None = Field(
        None, description="For an atomic batch refused as a whole: the keys that made it fail (nothing was written).")
    namespace: str | None = Field(None, description="For quota-exceeded (429): the namespace whose quota it is.")
    quota: str | None = Field(None, description="For quota-exceeded (429): the setting refused: max_keys, "
                                                "max_bytes or max_requests_per_s.")
    limit: int | None = Field(None, description="For quota-exceeded (429): the setting's value.")


# slug -> title. The slug is the last part of the problem's `type` URN.
_TITLES = {
    "bad-request": "Bad request",
    "invalid-base64": "Invalid base64",
    "invalid-consistency": "Invalid consistency level",
    "invalid-cursor": "Invalid cursor",
    "invalid-context": "Invalid causal context",
    "key-not-found": "Key not found",
    "unknown-namespace": "Unknown namespace",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "conflict": "Conflict",
    "key-exists": "Key exists",
    "precondition-failed": "Precondition failed",
    "not-an-integer": "Value is not an integer",
    "too-large": "Content too large",
    "unsupported-media-type": "Unsupported media type",
    "validation-error": "Request validation failed",
    "internal-error": "Internal server error",
    "bad-gateway": "Bad gateway",
    "unavailable": "Service unavailable",
    "result-unknown": "Outcome unknown",
    "insufficient-storage": "Insufficient storage",
    "unauthorized": "Authentication required",
    "forbidden": "Permission denied",
    "protected-mode": "Protected mode",
    "quota-exceeded": "Quota exceeded",  # a namespace's quota (node/quotas.py): 429
    "misdirected-request": "Misdirected request",  # a Host this node does not answer for (api/http_limits.py)
    # the collection routes (api/http_datatypes.py)
    "wrong-type": "Key holds another type",  # Redis's WRONGTYPE
    "field-not-found": "Field not found",
    "member-not-found": "Member not found",
}
_SLUG_BY_STATUS = {
    400: "bad-request",
    401: "unauthorized",  # no or bad credentials (api/http_auth.py), with a WWW-Authenticate challenge
    403: "forbidden",  # the user's ACL rules refuse the request
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    412: "precondition-failed",
    413: "too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    500: "internal-error",
    # A coordinator's own errors (CommandError statuses): a replica a request was forwarded to
    # failed (502); a write whose fate is unknown, e.g. a consensus round that did not finish
    # (504: it may or may not have been applied).
    502: "bad-gateway",
    503: "unavailable",
    504: "result-unknown",
    507: "insufficient-storage",
}


class ProblemError(Exception):
    """Raised by handlers to answer a problem document."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.errors = errors
        self.headers = headers
        self.extensions = extensions  # RFC 9457 extension members (documented on `Problem`)

    def response(self) -> Response:
        doc: dict[str, Any] = {
            "type": f"urn:ringkv:problem:{self.slug}",
            "title": _TITLES.get(self.slug, "Error"),
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            doc["errors"] = self.errors
        if self.extensions:
            doc.update(self.extensions)
        return Response(
            msgspec.json.encode(doc), status_code=self.status, media_type=PROBLEM_JSON, headers=self.headers
        )


def problem_from_exception(exc: Exception, request: Request | None = None) -> ProblemError:
    """The one place where exceptions become HTTP answers."""
    if isinstance(exc, ProblemError):
        return exc
    if isinstance(exc, QuotaExceededError):
        # 429 for all three quotas, as Google's APIs answer RESOURCE_EXHAUSTED (a rate or a
        # quota used up); `quota` says which. Only a rate refills by itself: Retry-After.
        retry = {"Retry-After": "1"} if exc.quota == "max_requests_per_s" else None
        return ProblemError(429, "quota-exceeded", str(exc), headers=retry,
                            extensions={"namespace": exc.namespace, "quota": exc.quota, "limit": exc.limit})
    if isinstance(exc, CommandError) and exc.kind == "WRONGTYPE":
        return ProblemError(409, "wrong-type", f"WRONGTYPE {exc}")
    if isinstance(exc, CommandError):
        challenge = {"WWW-Authenticate": AUTH_CHALLENGE} if exc.status == 401 else None
        return ProblemError(exc.status, _SLUG_BY_STATUS.get(exc.status, "bad-request"), str(exc), headers=challenge)
    if isinstance(exc, RequestValidationError):
        errors = [_jsonable_error(e) for e in exc.errors()]
        return ProblemError(422, "validation-error", _validation_summary(errors), errors=errors)
    if isinstance(exc, StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        slug = _SLUG_BY_STATUS.get(exc.status_code, "bad-request" if exc.status_code < 500 else "internal-error")
        return ProblemError(exc.status_code, slug, detail, headers=exc.headers)
    if isinstance(exc, InvalidContextError):
        return ProblemError(400, "invalid-context", str(exc))
    if isinstance(exc, UnknownNamespaceError):
        return ProblemError(400, "unknown-namespace", str(exc))
    if isinstance(exc, AdminRequestError):
        return ProblemError(400, "bad-request", str(exc))
    if isinstance(exc, AdminConflictError):
        return ProblemError(409, "conflict", str(exc))
    if isinstance(exc, LimitError):
        return ProblemError(413, "too-large", str(exc))
    if isinstance(exc, StorageFullError):
        return ProblemError(507, "insufficient-storage", str(exc))
    if isinstance(exc, ClosedError):
        return ProblemError(503, "unavailable", str(exc))
    if isinstance(exc, RingkvError) and not isinstance(exc, CorruptionError):
        # e.g. the engine turned read-only after a background error: the node is up but
        # cannot serve this request; /readyz says why too.
        return ProblemError(503, "unavailable", str(exc))
    where = f" on {request.method} {request.url.path}" if request is not None else ""
    log.error("HTTP request failed%s", where, exc_info=exc)
    return ProblemError(500, "internal-error", f"internal error: {type(exc).__name__}: {exc}")


def _jsonable_error(error: dict[str, Any]) -> dict[str, Any]:
    """A pydantic error entry without its `input`/`ctx` objects (not always JSON-safe, and an
    echo of a large input would make the answer as large)."""
    return {
        "type": error.get("type"),
        "loc": [p if isinstance(p, (int, str)) else str(p) for p in error.get("loc", ())],
        "msg": error.get("msg"),
    }


def _validation_summary(errors: list[dict[str, Any]]) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem answers a route can give."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {
            "description": _TITLES[_SLUG_BY_STATUS[status]] if status in _SLUG_BY_STATUS else "Error",
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return out


class ProblemRoute(APIRoute):
    """A route whose every failure, validation errors included, answers problem+json."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ClientDisconnect:
                # The client left before its body was complete: nobody reads this answer, and
                # it is the client's doing, so it is not logged.
                gone = ProblemError(400, "bad-request", "the client disconnected before sending the whole body")
                return gone.response()
            except Exception as exc:
                return problem_from_exception(exc, request).response()

        return handle
