"""The REST/JSON API of a node: FastAPI routes over the coordinator, served by uvicorn.

Every data request is one coroutine call on `node.coordinator` (a `LocalCoordinator` today);
this module only translates HTTP to those calls and their results (or errors) back to HTTP.
docs/http.md is the user's reference; `/openapi.json` is the machine-readable one. Beside it:
`http_models` (JSON bodies), `http_problems` (errors as problem+json), `http_metrics`.

Contracts:
- `create_app(node)` builds the app without touching the node, so the OpenAPI spec can be
  generated from an unstarted node (or `None`); data routes answer 503 until the node runs.
- `start_http(node, host, port)` serves the app with uvicorn inside the running event loop (the
  node's uvloop) and returns `(handle, (host, port))`; `await handle.close()` stops it. The node
  keeps its own SIGTERM/SIGINT handlers: the embedded uvicorn installs none.
- Values are binary-safe: base64 in JSON, or raw with `application/octet-stream`. Keys are
  UTF-8 text unless the request says `key_encoding=base64`, which applies to every key in the
  request and in its answer (path, bodies, prefixes, listings).
- Every error is `application/problem+json` (RFC 9457), mapped from exceptions in one place
  (`http_problems.problem_from_exception`); an unexpected exception is logged and answered
  500, and the connection and the node stay up.
- Bodies are bounded (`BodyLimitMiddleware`): a single value's request may hold a base64
  value of `max_value_bytes` plus 64 KiB, a batch `MAX_BATCH_BODY_BYTES`.

Handlers are `async def` and never block: the coordinator is loop-bound and runs on a single
node without suspending (see node/coordinator.py). Nothing is logged per request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import math
import re
import socket
from collections.abc import Callable, Iterator
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

import msgspec
import uvicorn
from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import ValidationError
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ringkv import __version__
from ringkv.api.http_metrics import HttpMetrics, RequestMetricsMiddleware
from ringkv.api.http_models import (
    MAX_TTL_S,
    BatchGetRequest,
    BatchGetResponse,
    BatchPutRequest,
    BatchPutResponse,
    ConsistencyLevel,
    ContextResponse,
    DeleteKeyResponse,
    GetKeyResponse,
    IncrRequest,
    IncrResponse,
    JoinRequest,
    KeyEncoding,
    KeyListResponse,
    PutKeyRequest,
    PutKeyResponse,
    PutVersionRequest,
    ScanResponse,
    StatusResponse,
    TtlRequest,
    TtlResponse,
    VersionsResponse,
)
from ringkv.api.http_problems import (
    PROBLEM_JSON,
    Problem,
    ProblemError,
    ProblemRoute,
    problem_from_exception,
    problem_responses,
)
from ringkv.node.config import NodeConfig
from ringkv.node.coordinator import MAX_TOKEN, CommandError
from ringkv.node.namespaces import bind
from ringkv.node.replica import now_ms

API = "/api/v1"
MAX_BATCH_BODY_BYTES = 16 * 1024 * 1024  # larger batches are split by the client
BODY_SLACK_BYTES = 64 * 1024  # JSON around a single base64 value: key, ttl, flags
MAX_LIST_LIMIT = 10_000
MAX_SCAN_COUNT = 100_000  # as RESP SCAN bounds COUNT
# A prefix listing is a filtered scan (docs/architecture.md). A sparse prefix
# would make one request read the whole keyspace on the event loop, so one request examines
# at most `limit + LIST_SCAN_BUDGET` records in at most LIST_MAX_SCAN_CALLS engine scans, and
# may answer fewer than `limit` keys with a cursor to continue.
LIST_SCAN_BUDGET = 20_000
LIST_MAX_SCAN_CALLS = 32
MAX_HTTP_HEAD_BYTES = 128 * 1024  # request line + headers: room for a 64 KiB key in the path
# The engine bounds its keys at 64 KiB, and a stored key is the user's key after a 9-byte
# prefix (token, namespace length; node/replica.py). Checked here so that a batch is refused
# before any of it is written, with the user's own key length in the message.
MAX_KEY_BYTES = 64 * 1024 - 9

OCTET_STREAM = "application/octet-stream"
_GLOB_SPECIAL = re.compile(rb"([\\*?\[\]])")
_CURSOR = re.compile(r"[0-9]{1,20}")


class KeyConvertor(Convertor[str]):
    """A key in the path: any characters, `/` and newlines included (Starlette's `path`
    convertor is `.*`, which stops at a newline, so such keys would find no route)."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("ringkv_key", KeyConvertor())


# ---------------------------------------------------------------------- request parameters

KeyPath = Annotated[
    str,
    Path(
        min_length=1,
        description="The key: UTF-8 text, percent-encoded (`/` allowed), or base64 with key_encoding=base64.",
    ),
]
KeyEncodingQuery = Annotated[
    KeyEncoding,
    Query(description="How keys travel in this request and its answer: UTF-8 text, or base64 of the bytes."),
]


async def consistency_level(
    # Typed `str`, not `str | None`, so the spec shows a plain enum of strings.
    header: Annotated[
        str,  # noqa: RUF013
        Header(
            alias="Consistency-Level",
            description="ONE, QUORUM or ALL (case-insensitive): the request's R and W.",
            json_schema_extra={"enum": [c.value for c in ConsistencyLevel]},
        ),
    ] = None,  # type: ignore[assignment]
    query: Annotated[
        str,  # noqa: RUF013
        Query(
            alias="consistency",
            description="Same as the Consistency-Level header (both may be given if they agree).",
            json_schema_extra={"enum": [c.value for c in ConsistencyLevel]},
        ),
    ] = None,  # type: ignore[assignment]
    strict: Annotated[
        bool,
        Query(description="Refuse stand-in nodes (sloppy quorum): only the key's own replicas count toward W."),
    ] = False,
    namespace: Annotated[
        str,  # noqa: RUF013
        Query(description="The namespace the keys are in (GET /api/v1/namespaces lists them); "
                          "the default namespace if absent."),
    ] = None,  # type: ignore[assignment]
) -> RequestLevel | None:
    """Validated here (400, not FastAPI's 422)."""
    levels = []
    for source, raw in (("Consistency-Level header", header), ("consistency query parameter", query)):
        if raw is None:
            continue
        try:
            levels.append(ConsistencyLevel(raw.upper()))
        except ValueError:
            raise ProblemError(
                400, "invalid-consistency", f"{source} is {raw[:64]!r}; expected ONE, QUORUM or ALL"
            ) from None
    if len(levels) == 2 and levels[0] != levels[1]:
        raise ProblemError(
            400,
            "invalid-consistency",
            f"Consistency-Level header says {levels[0].value} but the consistency query parameter says {levels[1].value}",
        )
    if not levels and not strict and namespace is None:
        return None
    return RequestLevel(levels[0] if levels else None, strict, namespace)


class RequestLevel:
    """A request's consistency level (None: the node's default), strictness and namespace."""

    __slots__ = ("level", "namespace", "strict")

    def __init__(self, level: ConsistencyLevel | None, strict: bool, namespace: str | None = None):
        self.level = level
        self.strict = strict
        self.namespace = namespace


Consistency = Annotated[RequestLevel | None, Depends(consistency_level)]


# ---------------------------------------------------------------------- encoding helpers


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode_value(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProblemError(
            400, "invalid-base64", f"{field} is not valid base64 (standard alphabet A-Z a-z 0-9 + /, padded with =)"
        ) from None


def _decode_key(text: str, encoding: KeyEncoding, field: str) -> bytes:
    if encoding == "base64":
        # Keys often travel in URLs: accept the URL-safe alphabet and missing padding too.
        try:
            padded = text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)
            key = base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError):
            raise ProblemError(400, "invalid-base64", f"{field} is not valid base64 (key_encoding=base64)") from None
    else:
        try:
            key = text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates, which JSON's \ud800 escapes can carry
            raise ProblemError(
                400, "bad-request", f"{field} is not valid UTF-8 text; send binary keys with key_encoding=base64"
            ) from None
    if len(key) > MAX_KEY_BYTES:
        raise ProblemError(413, "too-large", f"{field} is {len(key)} bytes; the limit is {MAX_KEY_BYTES} bytes")
    return key


def _decode_context(text: str, field: str) -> bytes:
    """A causal context sent back by a client: base64, standard or URL-safe alphabet, padding
    optional. Contexts often travel in query strings, where an unescaped `+` arrives as a
    space: the URL-safe alphabet needs no escaping."""
    try:
        padded = text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)
        context = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ProblemError(
            400,
            "invalid-base64",
            f"{field} is not valid base64 (in a query string, escape + as %2B or use the URL-safe alphabet)",
        ) from None
    if not context:
        # The coordinator reads an empty context as none: a blind write the client did not ask for.
        raise ProblemError(
            400, "invalid-context", f"{field} is empty: send the context a read returned, or none for a blind write"
        )
    return context


def _encode_key(key: bytes, encoding: KeyEncoding) -> str:
    if encoding == "base64":
        return _b64(key)
    # A key written through RESP may not be UTF-8: shown with U+FFFD, documented in http.md.
    return key.decode("utf-8", "replace")


def _path_key(request: Request, key: str, encoding: KeyEncoding) -> bytes:
    if encoding == "utf-8" and "\ufffd" in key:
        # The server percent-decodes the path with errors="replace": tell a client that sent
        # bytes that are not UTF-8 rather than store them under a different key.
        try:
            unquote_to_bytes(request.scope.get("raw_path") or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise ProblemError(
                400,
                "bad-request",
                "the key in the path is not valid UTF-8 once percent-decoded; send binary keys with key_encoding=base64",
            ) from None
    return _decode_key(key, encoding, "key")


def _suffixed_path_key(request: Request, key: str, encoding: KeyEncoding, suffix: str) -> bytes:
    # A route regex ends in `$`, which also matches before a final newline: without this
    # check, POST /keys/k/ttl%0A would act on key "k" instead of finding no route.
    if not request.scope["path"].endswith(suffix):
        raise ProblemError(404, "not-found", f"no route for {request.method} {request.scope['path'][:200]!r}")
    return _path_key(request, key, encoding)


def _expire_at_ms(ttl_s: float | None) -> int:
    # ceil: a positive TTL never rounds down to "expires now".
    return 0 if ttl_s is None else now_ms() + max(1, math.ceil(ttl_s * 1000))


def _ttl_remaining(expire_at_ms: int) -> float | None:
    if not expire_at_ms:
        return None
    return max(0, expire_at_ms - now_ms()) / 1000


def _json(doc: dict[str, Any], status: int = 200) -> Response:
    # msgspec encodes without FastAPI's response-model validation: the models document the
    # answers; handlers build exactly what they say.
    return Response(msgspec.json.encode(doc), status_code=status, media_type="application/json")


def _wants_raw(accept: str | None) -> bool:
    """Whether Accept prefers application/octet-stream over JSON (q-values honoured)."""
    if not accept or OCTET_STREAM not in accept:
        return False
    best_raw = best_json = -1.0
    for position, part in enumerate(accept.split(",")):
        media, _, params = part.partition(";")
        media = media.strip().lower()
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        q -= position * 1e-6  # equal q: the type listed first wins
        if media == OCTET_STREAM:
            best_raw = max(best_raw, q)
        elif media in ("application/json", "application/*", "*/*"):
            best_json = max(best_json, q)
    return best_raw > 0 and best_raw > best_json


def _cursor(text: str | None) -> int:
    if not text:
        return 0
    if _CURSOR.fullmatch(text) is None or int(text) > MAX_TOKEN:
        raise ProblemError(
            400, "invalid-cursor", f"cursor {text[:64]!r} is not a cursor this API returned (a decimal 0..{MAX_TOKEN})"
        )
    return int(text)


def _prefix_glob(prefix: bytes) -> bytes:
    return _GLOB_SPECIAL.sub(rb"\\\1", prefix) + b"*"


# ---------------------------------------------------------------------- body limits


class BodyLimitMiddleware:
    """Pure ASGI middleware bounding request bodies before anything buffers them.

    A declared Content-Length over the limit is answered 413 at once; a chunked body is
    counted as it arrives and the read that crosses the limit raises a 413 HTTPException,
    which the route answers as a problem.
    """

    def __init__(self, app: Any, single_limit_bytes: int, batch_limit_bytes: int, max_value_bytes: int) -> None:
        self.app = app
        self.single_limit_bytes = single_limit_bytes
        self.batch_limit_bytes = batch_limit_bytes
        self.max_value_bytes = max_value_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        batch = scope["path"].startswith(API + "/batch/")
        limit = self.batch_limit_bytes if batch else self.single_limit_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # the HTTP parser has rejected a malformed length already
                if declared > limit:
                    await self._too_large(limit, batch).response()(scope, receive, send)
                    return
                break
        seen = 0

        async def receive_bounded() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                problem = self._too_large(limit, batch)
                raise StarletteHTTPException(413, problem.detail)
            return message

        await self.app(scope, receive_bounded, send)

    def _too_large(self, limit: int, batch: bool) -> ProblemError:
        if batch:
            why = f"a batch request body may hold {limit} bytes (max_batch_body_bytes); split the batch"
        else:
            why = (
                f"a request body may hold {limit} bytes: a base64 value of max_value_bytes={self.max_value_bytes} "
                f"plus {BODY_SLACK_BYTES} bytes of JSON"
            )
        return ProblemError(413, "too-large", f"request body is too large: {why}")


# ---------------------------------------------------------------------- the routes


class KeyValueApi:
    """The route handlers. Each reads `node.coordinator` per request, so the app can be built
    before the node starts (and for the OpenAPI spec, without a node).

    Data handlers take `level` (the validated consistency level) and run at it: the request's
    read and write levels are both that level; without one, the node's defaults apply.
    """

    def __init__(self, node: Any, metrics: HttpMetrics) -> None:
        self.node = node
        self.metrics = metrics

    def _coordinator(self, level: RequestLevel | None = None) -> Any:
        coordinator = getattr(self.node, "coordinator", None)
        if coordinator is None:
            raise ProblemError(503, "unavailable", "the node is not running")
        if level is None:
            return coordinator
        if level.namespace is not None:
            try:
                spec = coordinator.namespaces.named(level.namespace)
            except ValueError as exc:
                raise ProblemError(400, "unknown-namespace", str(exc)) from None
            coordinator = bind(coordinator, spec)
        if level.level is None and not level.strict:
            return coordinator
        name = None if level.level is None else level.level.value
        return coordinator.at(name, name, True if level.strict else None)

    # ------------------------------------------------------------ single keys

    async def get_key(
        self,
        request: Request,
        key: KeyPath,
        level: Consistency,
        key_encoding: KeyEncodingQuery = "utf-8",
        accept: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> Response:
        """Read a key: JSON with the base64 value, or the raw bytes with
        `Accept: application/octet-stream` (version, timestamp and TTL then in headers)."""
        kb = _path_key(request, key, key_encoding)
        value = await self._coordinator(level).get(kb)
        if value is None:
            raise ProblemError(404, "key-not-found", f"no value under key {key[:200]!r}")
        ttl = _ttl_remaining(value.expire_at_ms)
        if _wants_raw(accept):
            headers = {"Ringkv-Version": _b64(value.context), "Ringkv-Timestamp": str(value.timestamp)}
            if ttl is not None:
                headers["Ringkv-TTL-Remaining"] = f"{ttl:.3f}"
            return Response(value.value, media_type=OCTET_STREAM, headers=headers)
        return _json(
            {
                "key": key,
                "value": _b64(value.value),
                "version": _b64(value.context),
                "timestamp": value.timestamp,
                "ttl_remaining": ttl,
            }
        )

    async def head_key(
        self, request: Request, key: KeyPath, level: Consistency, key_encoding: KeyEncodingQuery = "utf-8"
    ) -> Response:
        """Whether a key has a live value: 200 or 404, no body."""
        kb = _path_key(request, key, key_encoding)
        found = await self._coordinator(level).exists([kb])
        return Response(status_code=200 if found else 404)

    async def put_key(
        self,
        request: Request,
        key: KeyPath,
        level: Consistency,
        key_encoding: KeyEncodingQuery = "utf-8",
        ttl: Annotated[
            float | None, Query(gt=0, le=MAX_TTL_S, description="With an octet-stream body only: seconds until expiry.")
        ] = None,
        if_not_exists: Annotated[
            bool | None, Query(description="With an octet-stream body only: write only if the key is missing.")
        ] = None,
    ) -> Response:
        """Write a key: a JSON body with the base64 value, or the raw bytes with
        `Content-Type: application/octet-stream`. Overwrites what the key held (replacing every
        sibling this node has seen)."""
        kb = _path_key(request, key, key_encoding)
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        raw = media == OCTET_STREAM
        if not raw and media != "application/json" and not media.endswith("+json"):
            raise ProblemError(
                415,
                "unsupported-media-type",
                f"Content-Type {media or '(none)'!r} is not accepted; send application/json or application/octet-stream",
            )
        body = await request.body()
        if raw:
            value = body
            nx = bool(if_not_exists)
        else:
            if ttl is not None or if_not_exists is not None:
                raise ProblemError(
                    400,
                    "bad-request",
                    "ttl and if_not_exists go in the JSON body; as query parameters they are for "
                    "application/octet-stream bodies",
                )
            try:
                put = PutKeyRequest.model_validate_json(body)
            except ValidationError as exc:
                raise RequestValidationError(
                    [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
                ) from None
            value = _decode_value(put.value, "value")
            ttl, nx = put.ttl, put.if_not_exists
        coordinator = self._coordinator(level)
        # Read the causal context and write with it: a plain overwrite, as SET is, that also
        # gives the client the new version. No await suspends between the two on one node.
        seen = await coordinator.get_versions(kb)
        if nx and seen.siblings:
            raise ProblemError(409, "key-exists", f"key {key[:200]!r} exists and if_not_exists was set")
        version = await coordinator.put_versioned(kb, value, seen.context, expire_at_ms=_expire_at_ms(ttl))
        return _json({"key": key, "version": _b64(version), "applied": True, "created": not seen.siblings})

    async def delete_key(
        self, request: Request, key: KeyPath, level: Consistency, key_encoding: KeyEncodingQuery = "utf-8"
    ) -> Response:
        """Delete a key. Idempotent: 200 whether or not it existed, `deleted` says which."""
        kb = _path_key(request, key, key_encoding)
        n = await self._coordinator(level).delete([kb])
        return _json({"deleted": n > 0})

    async def set_ttl(
        self,
        request: Request,
        key: KeyPath,
        body: Annotated[TtlRequest, Body()],
        level: Consistency,
        key_encoding: KeyEncodingQuery = "utf-8",
    ) -> Response:
        """Set a key's expiry (`ttl` seconds from now) or remove it (`ttl: null`)."""
        kb = _suffixed_path_key(request, key, key_encoding, "/ttl")
        coordinator = self._coordinator(level)
        if await coordinator.ttl_ms(kb) == -2:
            raise ProblemError(404, "key-not-found", f"no value under key {key[:200]!r}")
        changed = await coordinator.expire_at(kb, 0 if body.ttl is None else _expire_at_ms(body.ttl))
        return _json({"key": key, "changed": changed})

    async def incr(
        self,
        request: Request,
        key: KeyPath,
        body: Annotated[IncrRequest, Body()],
        level: Consistency,
        key_encoding: KeyEncodingQuery = "utf-8",
    ) -> Response:
        """Add `delta` to the integer stored under a key (a missing key counts as 0), as INCRBY."""
        kb = _suffixed_path_key(request, key, key_encoding, "/incr")
        try:
            value = await self._coordinator(level).incr_by(kb, body.delta)
        except CommandError as exc:
            # The request is well formed; what is stored (or the sum) is not an int64.
            raise ProblemError(409, "not-an-integer", f"cannot increment key {key[:200]!r}: {exc}") from None
        return _json({"value": value})

    # ------------------------------------------------------------ siblings

    async def get_versions(
        self, request: Request, key: KeyPath, level: Consistency, key_encoding: KeyEncodingQuery = "utf-8"
    ) -> Response:
        """Read every live sibling of a key (concurrent writes that no write has replaced) and
        the causal context that covers them all. A key with no record answers 200 with
        `context: null` and no siblings."""
        kb = _suffixed_path_key(request, key, key_encoding, "/versions")
        versions = await self._coordinator(level).get_versions(kb)
        return _json(
            {
                "key": _encode_key(kb, key_encoding),
                "context": None if versions.context is None else _b64(versions.context),
                "siblings": [
                    {
                        "value": _b64(s.value),
                        "timestamp": s.timestamp,
                        "ttl_remaining": _ttl_remaining(s.expire_at_ms),
                    }
                    for s in versions.siblings
                ],
            }
        )

    async def put_versioned(
        self,
        request: Request,
        key: KeyPath,
        body: Annotated[PutVersionRequest, Body()],
        level: Consistency,
        key_encoding: KeyEncodingQuery = "utf-8",
    ) -> Response:
        """Write a value with the causal context a read returned: it replaces exactly the
        siblings that read saw. Without a context the write is blind and becomes a sibling of
        whatever is stored."""
        kb = _suffixed_path_key(request, key, key_encoding, "/versions")
        value = _decode_value(body.value, "value")
        context = None if body.context is None else _decode_context(body.context, "context")
        new = await self._coordinator(level).put_versioned(kb, value, context, expire_at_ms=_expire_at_ms(body.ttl))
        return _json({"context": _b64(new)})

    async def delete_versioned(
        self,
        request: Request,
        key: KeyPath,
        level: Consistency,
        context: Annotated[
            str | None,
            Query(description="The context a read returned, base64 (URL-safe alphabet accepted); absent: blind."),
        ] = None,
        key_encoding: KeyEncodingQuery = "utf-8",
    ) -> Response:
        """Delete with a causal context: a versioned tombstone replaces the siblings the read
        saw (a blind delete replaces none of them)."""
        kb = _suffixed_path_key(request, key, key_encoding, "/versions")
        ctx = None if context is None else _decode_context(context, "context")
        new = await self._coordinator(level).put_versioned(kb, None, ctx)
        return _json({"context": _b64(new)})

    # ------------------------------------------------------------ batches

    async def batch_get(
        self, body: BatchGetRequest, level: Consistency, key_encoding: KeyEncodingQuery = "utf-8"
    ) -> Response:
        """Read up to 1000 keys at once."""
        keys = [_decode_key(k, key_encoding, f"keys[{i}]") for i, k in enumerate(body.keys)]
        values = await self._coordinator(level).mget(keys)
        return _json({"values": [None if v is None else _b64(v) for v in values]})

    async def batch_put(
        self, body: BatchPutRequest, level: Consistency, key_encoding: KeyEncodingQuery = "utf-8"
    ) -> Response:
        """Write up to 1000 keys, in order. Every item is checked before any is written, so a
        bad item rejects the whole batch."""
        coordinator = self._coordinator(level)
        limit = coordinator.max_value_bytes
        writes = []
        for i, item in enumerate(body.items):
            k = _decode_key(item.key, key_encoding, f"items[{i}].key")
            v = _decode_value(item.value, f"items[{i}].value")
            if len(v) > limit:
                raise ProblemError(
                    413, "too-large", f"items[{i}].value is {len(v)} bytes; the limit is max_value_bytes={limit}"
                )
            writes.append((k, v, item.ttl))
        if len({k for k, _, _ in writes}) < len(writes):
            # A key named twice keeps its last value: write in order, one at a time.
            for k, v, ttl in writes:
                await coordinator.set(k, v, expire_at_ms=_expire_at_ms(ttl))
        else:
            # Distinct keys: the ones without a TTL as one MSET (batched per replica set in a
            # cluster), the others concurrently.
            plain = [(k, v) for k, v, ttl in writes if not ttl]
            await asyncio.gather(
                *([coordinator.mset(plain)] if plain else []),
                *(coordinator.set(k, v, expire_at_ms=_expire_at_ms(ttl)) for k, v, ttl in writes if ttl))
        return _json({"written": len(writes)})

    # ------------------------------------------------------------ listing

    async def list_keys(
        self,
        level: Consistency,
        prefix: Annotated[str, Query(description="Only keys starting with this (in key_encoding).")] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT, description="Most keys in one page.")] = 100,
        cursor: Annotated[
            str | None, Query(description="From the previous page; absent or empty starts a listing.")
        ] = None,
        key_encoding: KeyEncodingQuery = "utf-8",
    ) -> Response:
        """List keys with a prefix, a page at a time. A key present for the whole listing is
        returned exactly once; a page may hold fewer than `limit` keys (even none) while
        `cursor` is not null."""
        coordinator = self._coordinator(level)
        match = _prefix_glob(_decode_key(prefix, key_encoding, "prefix"))
        position = _cursor(cursor)
        keys: list[bytes] = []
        budget = limit + LIST_SCAN_BUDGET
        examined = 0
        for _ in range(LIST_MAX_SCAN_CALLS):
            # count=keys still wanted: scan examines `count` records, so it cannot find more
            # than that, and the page never overshoots `limit`.
            count = min(limit - len(keys), budget - examined)
            position, page = await coordinator.scan(position, count, match)
            keys.extend(page)
            examined += count
            if position == 0 or len(keys) >= limit or examined >= budget:
                break
        return _json(
            {
                "keys": [_encode_key(k, key_encoding) for k in keys],
                "cursor": None if position == 0 else str(position),
            }
        )

    async def scan(
        self,
        level: Consistency,
        cursor: Annotated[str, Query(description="0 starts a scan; then the cursor of the previous answer.")] = "0",
        count: Annotated[int, Query(ge=1, le=MAX_SCAN_COUNT, description="Records to examine.")] = 10,
        match: Annotated[
            str | None, Query(description="Redis glob (*, ?, [abc], \\ escapes) on keys, in key_encoding.")
        ] = None,
        key_encoding: KeyEncodingQuery = "utf-8",
    ) -> Response:
        """Redis SCAN: examine `count` records from `cursor`, return the live keys among them."""
        pattern = None if match is None else _decode_key(match, key_encoding, "match")
        position, keys = await self._coordinator(level).scan(_cursor(cursor), count, pattern)
        return _json({"cursor": str(position), "keys": [_encode_key(k, key_encoding) for k in keys]})

    # ------------------------------------------------------------ operations

    async def healthz(self) -> Response:
        """The process is alive and its event loop answers."""
        return _json({"status": "ok"})

    async def readyz(self) -> Response:
        """Ready to serve: the engine is open and no background flush or compaction failed."""
        engine = getattr(self.node, "engine", None)
        if engine is None or getattr(self.node, "coordinator", None) is None:
            raise ProblemError(503, "unavailable", "the node is not running")
        if engine.closed:
            raise ProblemError(503, "unavailable", "the storage engine is closed")
        error = engine.stats()["background_error"]
        if error is not None:
            raise ProblemError(503, "unavailable", f"the storage engine is read-only after a background error: {error}")
        return _json({"status": "ready"})

    async def list_namespaces(self) -> Response:
        """The cluster's namespaces, each with its replica count N and conflict policy; pick
        one per request with `?namespace=`."""
        coordinator = self._coordinator()
        return _json({"namespaces": [s.as_dict() for s in coordinator.namespaces]})

    async def cluster_status(self) -> Response:
        """Members, their partitions, keys, addresses and liveness, as this node sees them (the
        same document as RINGKV.STATUS and `ringkv cluster status --json`)."""
        if not hasattr(self.node, "status") or getattr(self.node, "coordinator", None) is None:
            raise ProblemError(503, "unavailable", "the node is not running")
        return _json(await self.node.status())

    async def cluster_repair(self) -> Response:
        """Run anti-entropy now over every partition this node holds; answers what it fixed
        (as `ringkv repair`)."""
        if not hasattr(self.node, "repair") or getattr(self.node, "coordinator", None) is None:
            raise ProblemError(503, "unavailable", "the node is not running")
        return _json(await self.node.repair())

    async def cluster_remove_node(self, node_id: str) -> Response:
        """Take a node out of the ring: this node decommissions itself (hands its partitions
        over, then leaves) when `node_id` names it; any other node is removed as dead and its
        partitions are rebuilt from the remaining replicas."""
        admin = getattr(self.node, "admin", None)
        if admin is None or getattr(self.node, "coordinator", None) is None:
            raise ProblemError(503, "unavailable", "the node is not running")
        me = getattr(getattr(self.node, "config", None), "node_id", None)
        argv = [b"decommission"] if node_id == me else [b"remove", node_id.encode()]
        try:
            return _json(await admin(argv))
        except ValueError as exc:
            raise ProblemError(400, "bad-request", str(exc)) from None

    async def cluster_cleanup(self) -> Response:
        """Remove from this node the data it no longer holds as a replica (left behind by joins
        and decommissions); refused (409) while a membership change runs or a member is down."""
        admin = getattr(self.node, "admin", None)
        if admin is None or getattr(self.node, "coordinator", None) is None:
            raise ProblemError(503, "unavailable", "the node is not running")
        try:
            return _json(await admin([b"cleanup"]))
        except ValueError as exc:
            raise ProblemError(409, "conflict", str(exc)) from None

    async def cluster_add_seeds(self, body: JoinRequest) -> Response:
        """On a node started with `ringkv admin join`: the members to learn the cluster from
        (node_id@host:rpc_port). It then joins: receives its partitions and turns normal."""
        admin = getattr(self.node, "admin", None)
        if admin is None or getattr(self.node, "coordinator", None) is None:
            raise ProblemError(503, "unavailable", "the node is not running")
        try:
            return _json(await admin([b"join", *(seed.encode() for seed in body.seeds)]))
        except ValueError as exc:
            raise ProblemError(409 if "not joining" in str(exc) else 400,
                               "conflict" if "not joining" in str(exc) else "bad-request", str(exc)) from None

    async def cluster_rebalance(self) -> Response:
        """Bring every partition this node holds in line with its other replicas now (the
        anti-entropy pass `ringkv repair` runs), e.g. after a membership change."""
        return await self.cluster_repair()

    async def metrics_text(self) -> Response:
        """Prometheus metrics: HTTP requests and latency per command, RESP commands, engine, loop."""
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _routes(api: KeyValueApi) -> Iterator[tuple[str, Callable, str, dict[str, Any]]]:
    """The route table: (path, handler, method, route options)."""
    key = API + "/keys/{key:ringkv_key}"
    octet = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    # Before the plain key routes, whose key pattern would take `k/versions` as the key: a key
    # whose path ends in /versions is reached with key_encoding=base64 (docs/http.md).
    versions = key + "/versions"
    yield versions, api.get_versions, "GET", {
        "response_model": VersionsResponse,
        "responses": problem_responses(400, 404, 413, 422, 503),
    }
    yield versions, api.put_versioned, "PUT", {
        "response_model": ContextResponse,
        "responses": problem_responses(400, 404, 413, 422, 503, 507),
    }
    yield versions, api.delete_versioned, "DELETE", {
        "response_model": ContextResponse,
        "responses": problem_responses(400, 404, 413, 422, 503, 507),
    }
    yield key, api.get_key, "GET", {
        "response_model": GetKeyResponse,
        "responses": {200: {"content": octet}, **problem_responses(400, 404, 422, 503)},
    }
    yield key, api.head_key, "HEAD", {
        "response_class": Response,
        "responses": {200: {"description": "The key has a live value."}, 404: {"description": "No live value."},
                      **problem_responses(400, 422, 503)},
    }
    yield key, api.put_key, "PUT", {
        "response_model": PutKeyResponse,
        "responses": problem_responses(400, 409, 413, 415, 422, 503, 507),
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/PutKeyRequest"}},
                    **octet,
                },
            }
        },
    }
    yield key, api.delete_key, "DELETE", {
        "response_model": DeleteKeyResponse,
        "responses": problem_responses(400, 422, 503, 507),
    }
    yield API + "/keys/{key:ringkv_key}/ttl", api.set_ttl, "POST", {
        "response_model": TtlResponse,
        "responses": problem_responses(400, 404, 413, 422, 503, 507),
    }
    yield API + "/keys/{key:ringkv_key}/incr", api.incr, "POST", {
        "response_model": IncrResponse,
        "responses": {**problem_responses(400, 404, 413, 422, 503, 507),
                      409: {"description": "The stored value, or the sum, is not a signed 64-bit integer.",
                            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}},
    }
    yield API + "/batch/get", api.batch_get, "POST", {
        "response_model": BatchGetResponse,
        "responses": problem_responses(400, 413, 422, 503),
    }
    yield API + "/batch/put", api.batch_put, "POST", {
        "response_model": BatchPutResponse,
        "responses": problem_responses(400, 413, 422, 503, 507),
    }
    yield API + "/keys", api.list_keys, "GET", {
        "response_model": KeyListResponse,
        "responses": problem_responses(400, 422, 503),
    }
    yield API + "/scan", api.scan, "GET", {
        "response_model": ScanResponse,
        "responses": problem_responses(400, 422, 503),
    }
    json_object = {"response_class": Response, "responses": {
        200: {"description": "A JSON document (see docs/cluster.md).",
              "content": {"application/json": {"schema": {"type": "object"}}}},
        **problem_responses(503)}}
    yield API + "/admin/cluster/status", api.cluster_status, "GET", json_object
    yield API + "/namespaces", api.list_namespaces, "GET", json_object
    yield API + "/admin/cluster/repair", api.cluster_repair, "POST", json_object
    yield API + "/admin/cluster/rebalance", api.cluster_rebalance, "POST", json_object
    yield API + "/admin/cluster/nodes", api.cluster_add_seeds, "POST", {
        **json_object, "responses": {**json_object["responses"], **problem_responses(400, 409, 422)}}
    yield API + "/admin/cluster/cleanup", api.cluster_cleanup, "POST", {
        **json_object, "responses": {**json_object["responses"], **problem_responses(409)}}
    yield API + "/admin/cluster/nodes/{node_id}", api.cluster_remove_node, "DELETE", {
        **json_object, "responses": {**json_object["responses"], **problem_responses(400)}}
    yield "/healthz", api.healthz, "GET", {"response_model": StatusResponse}
    yield "/readyz", api.readyz, "GET", {"response_model": StatusResponse, "responses": problem_responses(503)}
    yield "/metrics", api.metrics_text, "GET", {
        "response_class": Response,
        "responses": {200: {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}},
    }


log = logging.getLogger(__name__)

_DESCRIPTION = """\
The REST/JSON API of a ringkv node. Values are base64 in JSON or raw bytes with
`application/octet-stream`; keys are UTF-8 text, or base64 with `key_encoding=base64`.
Errors are `application/problem+json`. See docs/http.md.
"""


def create_app(node: Any) -> FastAPI:
    """Build the app for `node` (which may be unstarted, or None for the spec alone)."""
    config = getattr(node, "config", None) or NodeConfig()
    metrics = HttpMetrics(node)
    api = KeyValueApi(node, metrics)
    app = FastAPI(title="ringkv", version=__version__, description=_DESCRIPTION)
    app.router.route_class = ProblemRoute
    for path, handler, method, options in _routes(api):
        app.add_api_route(
            path, handler, methods=[method], name=handler.__name__, operation_id=handler.__name__, **options
        )

    async def routing_problem(request: Request, exc: Exception) -> Response:
        # The router's own answers: no route for the path (404), or not for this method (405,
        # with its Allow header). Routes answer their errors themselves (ProblemRoute).
        problem = problem_from_exception(exc, request)
        if problem.status == 404:
            problem.detail = f"no route for {request.method} {request.url.path[:200]}"
        elif problem.status == 405:
            allowed = (problem.headers or {}).get("Allow", "")
            problem.detail = f"{request.method} is not allowed on {request.url.path[:200]}; allowed: {allowed}"
        return problem.response()

    app.add_exception_handler(StarletteHTTPException, routing_problem)

    single_limit = 4 * math.ceil(config.max_value_bytes / 3) + BODY_SLACK_BYTES
    # add_middleware wraps what was added before: the metrics (added last) run outermost and
    # see every answer, the body limit's early 413s included.
    app.add_middleware(
        BodyLimitMiddleware,
        single_limit_bytes=single_limit,
        batch_limit_bytes=max(MAX_BATCH_BODY_BYTES, single_limit),
        max_value_bytes=config.max_value_bytes,
    )
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's spec, plus the schemas that routes reference by hand (problems, PUT's body)."""
    if app.openapi_schema is None:
        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in (Problem, PutKeyRequest):
            schemas[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
        app.openapi_schema = spec
    return app.openapi_schema


# ---------------------------------------------------------------------- serving


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the node's loop. The node owns SIGTERM/SIGINT (it drains every server
    before closing the engine); uvicorn's own handlers would replace the node's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ClosedConnectionGuard:
    """The outermost ASGI layer: a response the server can no longer take is dropped.

    uvicorn answers some malformed requests itself (a broken chunked body, say) with a 400 and
    closes, while the app is still handling the request whose head arrived intact. When the
    app's own answer then reaches the server, uvicorn's h11 protocol raises
    `LocalProtocolError` (a state machine in MUST_CLOSE) instead of the `OSError` the ASGI
    specification asks for on a closed connection. The connection is gone either way; this
    layer notes that the first send failed and turns every later one into a no-op, so the
    app finishes normally and nothing is logged as an application error.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        closed = False

        async def send_unless_closed(message: dict) -> None:
            nonlocal closed
            if closed:
                return
            try:
                await send(message)
            except Exception as exc:
                closed = True
                log.debug("the server dropped the connection before the response (%s: %s)", type(exc).__name__, exc)

        await self.app(scope, receive, send_unless_closed)


class HttpHandle:
    """A running HTTP server; `close()` stops it (idempotent)."""

    def __init__(self, server: _EmbeddedServer, task: asyncio.Task, drain_s: float) -> None:
        self._server = server
        self._task = task
        self._drain_s = drain_s

    async def close(self) -> None:
        server = self._server
        server.should_exit = True
        try:
            # uvicorn stops accepting, closes idle keep-alive connections, lets in-flight
            # requests finish up to timeout_graceful_shutdown, then cancels them.
            await asyncio.wait_for(asyncio.shield(self._task), timeout=self._drain_s + 2)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # A client still sending a request (a slow or broken one) holds its connection past
        # the drain: close it, so the node's shutdown never waits on a client.
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()


def _bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket here, so a bad address raises OSError to the caller (uvicorn
    would log and sys.exit instead)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return socket.create_server((host, port), family=family, backlog=1024)


async def start_http(node: Any, host: str, port: int) -> tuple[HttpHandle, tuple[str, int]]:
    """Serve the HTTP API of `node` on host:port (0 picks a free port) in the running loop."""
    node_config = getattr(node, "config", None) or NodeConfig()
    drain_s = node_config.shutdown_drain_ms / 1000
    sock = _bind(host, port)
    config = uvicorn.Config(
        ClosedConnectionGuard(create_app(node)),
        host=host,
        port=port,
        log_level="error",  # "warning" logs a line per malformed request: garbage floods the log
        log_config=None,  # leave logging to the node (uvicorn's loggers propagate to its root)
        access_log=False,
        lifespan="off",
        interface="asgi3",
        ws="none",
        proxy_headers=False,  # a middleware layer per request that a node does not need
        server_header=False,
        limit_concurrency=node_config.max_connections,
        h11_max_incomplete_event_size=MAX_HTTP_HEAD_BYTES,
        timeout_graceful_shutdown=max(1, math.ceil(drain_s)),
    )
    server = _EmbeddedServer(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]), name="ringkv-http")
    try:
        while not server.started:
            if task.done():
                task.result()  # startup failed: raise its error
                raise RuntimeError("the HTTP server stopped during startup")
            await asyncio.sleep(0.001)
    except BaseException:
        server.should_exit = True
        sock.close()
        raise
    bound = server.servers[0].sockets[0].getsockname()
    return HttpHandle(server, task, drain_s), (bound[0], bound[1])
