"""The HTTP API's data routes: each handler translates one request into calls on the node's
`KeyValueService` and their results back into JSON or raw bytes.

`routes(api)` is the route table: path, handler, method and the route's OpenAPI options. Errors
are raised (ProblemError, or the service's typed errors) and answered as problem+json in one
place (api/http_problems.py). Handlers are `async def` and never block.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Body, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import Response

from ringkv.api.http_codec import (
    API,
    LIST_MAX_SCAN_CALLS,
    LIST_SCAN_BUDGET,
    MAX_LIST_LIMIT,
    OCTET_STREAM,
    Consistency,
    KeyEncodingQuery,
    KeyPath,
    RequestLevel,
    ValueEncodingQuery,
    b64,
    decode_context,
    decode_key,
    encode_key,
    expire_at_ms,
    json_response,
    parse_cursor,
    path_key,
    prefix_glob,
    suffixed_path_key,
    ttl_remaining,
    unix_seconds,
    value_in,
    value_out,
    version_fields,
    wants_raw,
)
from ringkv.api.http_conditions import (
    MAX_CONDITIONAL_ATTEMPTS,
    NOT_YET_READ,
    IfMatchHeader,
    IfNoneMatchHeader,
    Preconditions,
    etag,
    parse_preconditions,
    precondition_failed,
)
from ringkv.api.http_datatypes import (
    MAX_TYPE_ATTEMPTS,
    CollectionApi,
    StringNow,
    collection_routes,
    read_collection,
)
from ringkv.api.http_models import (
    MAX_TTL_S,
    BatchGetRequest,
    BatchGetResponse,
    BatchPutItem,
    BatchPutRequest,
    BatchPutResponse,
    CasRequest,
    CasResponse,
    ContextResponse,
    DeleteKeyResponse,
    GetCollectionResponse,
    GetKeyResponse,
    IncrRequest,
    IncrResponse,
    KeyEncoding,
    KeyListResponse,
    PutKeyRequest,
    PutKeyResponse,
    PutVersionRequest,
    ScanResponse,
    TtlRequest,
    TtlResponse,
    ValueEncoding,
    VersionsResponse,
)
from ringkv.api.http_problems import (
    PROBLEM_JSON,
    ProblemError,
    problem_from_exception,
    problem_responses,
)
from ringkv.api.http_session import CURRENT as CURRENT_SESSION
from ringkv.errors import CommandError, InvalidContextError, RingkvError
from ringkv.service.contract import KeyValueService
from ringkv.service.datatypes.base import WrongTypeError
from ringkv.service.limits import MAX_SCAN_COUNT
from ringkv.service.values import Written, version_number

# Writes of one non-atomic batch in flight at once (a batch holds at most MAX_BATCH_ITEMS).
BATCH_WRITES_IN_FLIGHT = 64


class KeyValueApi:
    """The route handlers, over a node's services (None: the app exists for its OpenAPI spec
    alone, and every route answers 503).

    Data handlers take `level` (the validated consistency level, strictness and namespace)
    and run on the service view it names; without one, the node's defaults apply.
    """

    def __init__(self, service: KeyValueService | None) -> None:
        self.service = service

    def _kv(self, level: RequestLevel | None = None) -> KeyValueService:
        kv = self.service
        if kv is None:
            raise ProblemError(503, "unavailable", "the node is not running")
        session = CURRENT_SESSION.get()  # Session-Token (api/http_session.py)
        if session is not None:
            kv = kv.with_session(session)
        if level is None:
            return kv
        if level.namespace is not None:
            kv = kv.in_namespace(level.namespace)  # UnknownNamespaceError: 400 (http_problems)
        kv.admit()  # one request of the namespace's max_requests_per_s (429 when over)
        if level.level is None and not level.strict:
            return kv
        name = None if level.level is None else level.level.service_level
        return kv.at(name, name, True if level.strict else None)

    # ------------------------------------------------------------ single keys

    async def get_key(
        self,
        request: Request,
        key: KeyPath,
        level: Consistency,
        key_encoding: KeyEncodingQuery = "utf-8",
        encoding: ValueEncodingQuery = "utf-8",
        accept: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> Response:
        """Read a key: JSON with the value as text (`value_base64` when it is not UTF-8), or the
        raw bytes with `Accept: application/octet-stream` (version, timestamp and TTL then in
        headers). `version` is a number that grows with every write; `context` is the exact
        version, also the `ETag` for `If-Match` on a later PUT or DELETE. At
        `Consistency-Level: SERIAL` the read is linearizable (the key's consensus path). `type`
        is "string" here; a hash, list, set or sorted set answers its whole value as JSON
        (`type`, `value`, `ttl_remaining`: GetCollectionResponse)."""
        kb = path_key(request, key, key_encoding)
        kv = self._kv(level)
        for _ in range(MAX_TYPE_ATTEMPTS):
            try:
                value = await kv.get(kb)
                break
            except WrongTypeError:
                # A collection: its JSON (api/http_datatypes.py); raw bytes are a string's.
                if wants_raw(accept):
                    raise ProblemError(409, "wrong-type", f"key {key[:200]!r} holds a collection, which has no raw "
                                       "bytes: read it as JSON") from None
                try:
                    return json_response(await read_collection(kv, kb, key, encoding))
                except StringNow:
                    continue  # a string again since: read it as one
        else:
            raise ProblemError(409, "conflict", f"key {key[:200]!r} changed type {MAX_TYPE_ATTEMPTS} times while it "
                                                "was read; read it again")
        if value is None:
            raise ProblemError(404, "key-not-found", f"no value under key {key[:200]!r}")
        ttl = ttl_remaining(value.expire_at_ms, kv.now_ms())
        # The exact version as an entity tag, for If-Match on the write that follows this read.
        tag = {"ETag": etag(value.context)}
        if wants_raw(accept):
            headers = {**tag, "Ringkv-Version": str(version_number(value.context)),
                       "Ringkv-Context": b64(value.context), "Ringkv-Timestamp": str(unix_seconds(value.timestamp)),
                       "Ringkv-HLC": str(value.timestamp)}
            if ttl is not None:
                headers["Ringkv-TTL-Remaining"] = f"{ttl:.3f}"
            return Response(value.value, media_type=OCTET_STREAM, headers=headers)
        doc = value_out(value.value, encoding, {"key": key, "type": "string"})
        doc.update(version_fields(value.context))
        doc.update(timestamp=unix_seconds(value.timestamp), hlc=value.timestamp, ttl_remaining=ttl)
        return json_response(doc, headers=tag)

    async def head_key(
        self, request: Request, key: KeyPath, level: Consistency, key_encoding: KeyEncodingQuery = "utf-8"
    ) -> Response:
        """Whether a key has a live value: 200 or 404, no body."""
        kb = path_key(request, key, key_encoding)
        found = await self._kv(level).exists([kb])
        return Response(status_code=200 if found else 404)

    async def put_key(
        self,
        request: Request,
        key: KeyPath,
        level: Consistency,
        key_encoding: KeyEncodingQuery = "utf-8",
        encoding: ValueEncodingQuery = "utf-8",
        ttl: Annotated[
            float | None, Query(gt=0, le=MAX_TTL_S, description="With an octet-stream body only: seconds until expiry.")
        ] = None,
        if_not_exists: Annotated[
            bool | None, Query(description="With an octet-stream body only: write only if the key is missing.")
        ] = None,
        if_match: IfMatchHeader = None,  # type: ignore[assignment]
        if_none_match: IfNoneMatchHeader = None,  # type: ignore[assignment]
    ) -> Response:
        """Write a key: a JSON body with the value as text (`value`) or bytes (`value_base64`),
        or the raw bytes with `Content-Type: application/octet-stream`. Overwrites what the key
        held (replacing every sibling the replica has seen). `If-Match: "<context>"` and
        `If-None-Match: *` make it a compare-and-set (412 with the current version when they do
        not hold), as `if_not_exists` does (409)."""
        kb = path_key(request, key, key_encoding)
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
            value = value_in(put, encoding, "value")
            ttl, nx = put.ttl, put.if_not_exists
        conditions = parse_preconditions(if_match, if_none_match)
        if nx and conditions is not None:
            raise ProblemError(
                400, "bad-request", "give if_not_exists or the If-Match / If-None-Match headers, not both"
            )
        kv = self._kv(level)
        expire_at = expire_at_ms(ttl, kv.now_ms())
        if nx:
            # A compare-and-set against "no live value": one atomic step (linearizable on the
            # consensus path), so of concurrent creators exactly one is told 200.
            written = await kv.write(kb, value, expire_at_ms=expire_at, expected=None)
            if not written.applied:
                raise ProblemError(409, "key-exists", f"key {key[:200]!r} exists and if_not_exists was set",
                                   extensions=version_fields(written.version))
        elif conditions is not None:
            written = await self._write_if(kv, kb, key, conditions, value, expire_at)
        else:
            written = await kv.write(kb, value, expire_at_ms=expire_at)
        assert written.version is not None  # a write was made
        return json_response(
            {"key": key, **version_fields(written.version), "timestamp": unix_seconds(written.timestamp),
             "status": "success", "hlc": written.timestamp, "applied": True, "created": written.created},
            headers={"ETag": etag(written.version)},
        )

    async def _write_if(self, kv: KeyValueService, kb: bytes, key: str, conditions: Preconditions,
                        value: bytes | None, expire_at: int) -> Written:
        """Write `value` (None: delete) at a version `conditions` allow, through compare-and-set.
        Raises the 412 when the key is at a version they refuse (http_conditions.py has the
        rules)."""
        current = conditions.first_guess()
        if current is NOT_YET_READ:
            # Only a read can tell (If-Match: *): a SERIAL one, so that a refusal rests on the
            # key's latest version and not on a replica that has not seen it.
            seen = await kv.at("serial").get(kb)
            current = None if seen is None else seen.context
        for _ in range(MAX_CONDITIONAL_ATTEMPTS):
            why = conditions.refusal(current)
            if why is not None:
                raise precondition_failed(key, why, current)
            try:
                written = await kv.write(kb, value, expire_at_ms=expire_at, expected=current)
            except InvalidContextError:
                # An entity tag naming versions the key never had is one the key is not at
                # (RFC 9110 compares tags): look at the version it is at, as after a refusal.
                seen = await kv.at("serial").get(kb)
                current = None if seen is None else seen.context
                continue
            if written.applied:
                return written
            # The key is at another version (None: no live value): may the write go at that one?
            current = None if written.created else written.version
        raise ProblemError(
            409, "conflict",
            f"key {key[:200]!r} changed {MAX_CONDITIONAL_ATTEMPTS} times while this conditional write ran; "
            "nothing was written: retry")

    async def delete_key(
        self,
        request: Request,
        key: KeyPath,
        level: Consistency,
        key_encoding: KeyEncodingQuery = "utf-8",
        if_match: IfMatchHeader = None,  # type: ignore[assignment]
        if_none_match: IfNoneMatchHeader = None,  # type: ignore[assignment]
    ) -> Response:
        """Delete a key. Idempotent: 200 whether or not it existed, `deleted` says which; a
        delete is a write, so `version` grows. With `If-Match: "<context>"`, only if the key is
        still at that version (412 with the current version otherwise)."""
        kb = path_key(request, key, key_encoding)
        conditions = parse_preconditions(if_match, if_none_match)
        kv = self._kv(level)
        if conditions is not None:
            written = await self._write_if(kv, kb, key, conditions, None, 0)
        else:
            written = await kv.write(kb, None)
        deleted = written.applied and not written.created
        return json_response({"key": key, "deleted": deleted, **version_fields(written.version)})

    async def cas(
        self,
        request: Request,
        key: KeyPath,
        body: Annotated[CasRequest, Body()],
        level: Consistency,
        key_encoding: KeyEncodingQuery = "utf-8",
        encoding: ValueEncodingQuery = "utf-8",
    ) -> Response:
        """Compare-and-set: write `new_value` (null: delete) only if the key is still at
        `expected_version` (a version number, or a context for an exact comparison; null or 0:
        has no live value), as one atomic step (linearizable on the key's consensus path). 200
        either way: `success` says whether it was written, and `current_version` is the version
        to expect next."""
        kb = suffixed_path_key(request, key, key_encoding, "/cas")
        expected: bytes | int | None
        if isinstance(body.expected_version, str):
            expected = decode_context(body.expected_version, "expected_version")
        elif body.expected_version is not None and body.expected_version < 0:
            raise ProblemError(400, "bad-request",
                               f"expected_version is {body.expected_version}; version numbers are >= 0")
        else:
            expected = body.expected_version or None
        required = "new_value" not in body.model_fields_set
        value = value_in(body, encoding, "new_value", name="new_value", required=required)
        if value is None and expected is None:
            raise ProblemError(
                400, "bad-request",
                "new_value null deletes the key at expected_version; with expected_version null there is no live "
                "value to delete")
        if value is None and body.ttl is not None:
            raise ProblemError(400, "bad-request", "ttl goes with a new_value; new_value null deletes the key")
        kv = self._kv(level)
        written = await kv.write(kb, value, expire_at_ms=expire_at_ms(body.ttl, kv.now_ms()), expected=expected)
        if not written.applied:
            current = None if written.created else written.version
            return json_response({
                "success": False, "new_version": None, "new_context": None,
                "current_version": None if current is None else version_number(current),
                "current_context": None if current is None else b64(current)})
        # After a delete the key has no live value: the next compare-and-set expects null.
        version = written.version
        assert version is not None
        current = None if value is None else version
        return json_response(
            {"success": True, "new_version": version_number(version), "new_context": b64(version),
             "current_version": None if current is None else version_number(current),
             "current_context": None if current is None else b64(current)},
            headers=None if current is None else {"ETag": etag(current)},
        )

    async def set_ttl(
        self,
        request: Request,
        key: KeyPath,
        body: Annotated[TtlRequest, Body()],
        level: Consistency,
        key_encoding: KeyEncodingQuery = "utf-8",
    ) -> Response:
        """Set a key's expiry (`ttl_seconds` from now) or remove it (`ttl_seconds: null`)."""
        kb = suffixed_path_key(request, key, key_encoding, "/ttl")
        given = body.model_fields_set & {"ttl_seconds", "ttl"}
        if len(given) != 1:
            raise ProblemError(400, "bad-request",
                               "give ttl_seconds (seconds until expiry; null removes the expiry), or ttl, not "
                               + ("both" if given else "neither"))
        seconds = body.ttl_seconds if "ttl_seconds" in given else body.ttl
        kv = self._kv(level)
        if await kv.ttl_ms(kb) == -2:
            raise ProblemError(404, "key-not-found", f"no value under key {key[:200]!r}")
        changed = await kv.expire_at(kb, 0 if seconds is None else expire_at_ms(seconds, kv.now_ms()))
        remaining = await kv.ttl_ms(kb)
        return json_response({"key": key, "changed": changed,
                              "ttl_seconds": remaining / 1000 if remaining >= 0 else None})

    async def incr(
        self,
        request: Request,
        key: KeyPath,
        body: Annotated[IncrRequest, Body()],
        level: Consistency,
        key_encoding: KeyEncodingQuery = "utf-8",
    ) -> Response:
        """Add `delta` to the integer stored under a key (a missing key counts as 0), as INCRBY;
        answers the new value and the version the increment made."""
        kb = suffixed_path_key(request, key, key_encoding, "/incr")
        try:
            value, version = await self._kv(level).incr_by_versioned(kb, body.delta)
        except CommandError as exc:
            if exc.status != 400:  # unavailable, or an outcome the consensus path could not tell
                raise
            # The request is well formed; what is stored (or the sum) is not an int64.
            raise ProblemError(409, "not-an-integer", f"cannot increment key {key[:200]!r}: {exc}") from None
        return json_response({"key": key, "value": value, **version_fields(version)})

    # ------------------------------------------------------------ siblings

    async def get_versions(
        self, request: Request, key: KeyPath, level: Consistency, key_encoding: KeyEncodingQuery = "utf-8",
        encoding: ValueEncodingQuery = "utf-8",
    ) -> Response:
        """Read every live sibling of a key (concurrent writes that no write has replaced) and
        the causal context that covers them all. A key with no record answers 200 with
        `context: null` and no siblings."""
        kb = suffixed_path_key(request, key, key_encoding, "/versions")
        kv = self._kv(level)
        versions = await kv.get_versions(kb)
        now = kv.now_ms()
        return json_response(
            {
                "key": encode_key(kb, key_encoding),
                **version_fields(versions.context),
                "siblings": [
                    value_out(s.value, encoding, {
                        "timestamp": unix_seconds(s.timestamp),
                        "hlc": s.timestamp,
                        "ttl_remaining": ttl_remaining(s.expire_at_ms, now),
                    })
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
        encoding: ValueEncodingQuery = "utf-8",
    ) -> Response:
        """Write a value with the causal context a read returned: it replaces exactly the
        siblings that read saw. Without a context the write is blind and becomes a sibling of
        whatever is stored."""
        kb = suffixed_path_key(request, key, key_encoding, "/versions")
        value = value_in(body, encoding, "value")
        context = None if body.context is None else decode_context(body.context, "context")
        kv = self._kv(level)
        new = await kv.put_versioned(kb, value, context, expire_at_ms=expire_at_ms(body.ttl, kv.now_ms()))
        return json_response(version_fields(new))

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
        kb = suffixed_path_key(request, key, key_encoding, "/versions")
        ctx = None if context is None else decode_context(context, "context")
        new = await self._kv(level).put_versioned(kb, None, ctx)
        return json_response(version_fields(new))

    # ------------------------------------------------------------ batches

    async def batch_get(
        self, body: BatchGetRequest, level: Consistency, key_encoding: KeyEncodingQuery = "utf-8",
        encoding: ValueEncodingQuery = "utf-8",
    ) -> Response:
        """Read up to 1000 keys at once: one result per key, in order, with `found`."""
        keys = [decode_key(k, key_encoding, f"keys[{i}]") for i, k in enumerate(body.keys)]
        values = await self._kv(level).mget(keys)
        return json_response({"results": [
            {"key": name, "found": False} if v is None else value_out(v, encoding, {"key": name, "found": True})
            for name, v in zip(body.keys, values, strict=True)]})

    async def batch_put(
        self, body: BatchPutRequest, level: Consistency, key_encoding: KeyEncodingQuery = "utf-8",
        encoding: ValueEncodingQuery = "utf-8",
    ) -> Response:
        """Write up to 1000 keys. `atomic: true`: all or nothing (docs/atomic-batches.md); every
        item is checked first and a bad one rejects the batch. `atomic: false` (the default):
        each write on its own, in order for a key named twice, with a result per key."""
        if (body.operations is None) == (body.items is None):
            raise ProblemError(400, "bad-request", "give operations (the writes), or items, not "
                               + ("neither" if body.operations is None else "both"))
        ops = body.operations if body.operations is not None else body.items
        assert ops is not None
        field = "operations" if body.operations is not None else "items"
        kv = self._kv(level)
        if body.atomic:
            return await self._batch_put_atomic(kv, ops, field, key_encoding, encoding)
        return await self._batch_put_each(kv, ops, field, key_encoding, encoding)

    async def _batch_put_atomic(self, kv: KeyValueService, ops: list[BatchPutItem], field: str,
                                key_encoding: KeyEncoding, encoding: ValueEncoding) -> Response:
        limit = kv.limits.max_value_bytes
        now = kv.now_ms()
        items = []
        for i, op in enumerate(ops):
            try:
                k = decode_key(op.key, key_encoding, f"{field}[{i}].key")
                v = value_in(op, encoding, f"{field}[{i}]")
            except ProblemError as exc:
                # One bad write refuses the whole batch: say which, and that nothing was written.
                raise ProblemError(exc.status, exc.slug, f"{exc.detail}; nothing was written",
                                   extensions={"failed_keys": [op.key]}) from None
            assert v is not None
            if len(v) > limit:
                raise ProblemError(
                    413, "too-large", f"{field}[{i}] value is {len(v)} bytes; the limit is max_value_bytes={limit}; "
                    "nothing was written", extensions={"failed_keys": [op.key]})
            items.append((k, v, expire_at_ms(op.ttl, now)))
        outcome = await kv.write_atomic(items)
        pending = set(outcome.pending)
        results = [{"key": op.key, "success": k not in pending, **({"pending": True} if k in pending else {})}
                   for op, (k, _, _) in zip(ops, items, strict=True)]
        done = sum(r["success"] for r in results)
        return json_response({"success_count": done, "failed_keys": [], "results": results, "atomic": True,
                              "status": "pending" if pending else "success", "written": done},
                             status=202 if pending else 200)

    async def _batch_put_each(self, kv: KeyValueService, ops: list[BatchPutItem], field: str,
                              key_encoding: KeyEncoding, encoding: ValueEncoding) -> Response:
        now = kv.now_ms()
        results: list[dict[str, Any]] = [{} for _ in ops]
        # A key named twice keeps its last value: its writes run in order, one chain per key;
        # the chains run concurrently, BATCH_WRITES_IN_FLIGHT at a time.
        chains: dict[bytes, list[tuple[int, bytes, int]]] = {}
        for i, op in enumerate(ops):
            try:
                k = decode_key(op.key, key_encoding, f"{field}[{i}].key")
                v = value_in(op, encoding, f"{field}[{i}]")
                assert v is not None
            except ProblemError as exc:
                results[i] = _failed(op.key, exc)
                continue
            chains.setdefault(k, []).append((i, v, expire_at_ms(op.ttl, now)))
        gate = asyncio.Semaphore(BATCH_WRITES_IN_FLIGHT)

        async def run_chain(k: bytes, writes: list[tuple[int, bytes, int]]) -> None:
            async with gate:
                for i, v, at in writes:
                    try:
                        written = await kv.write(k, v, expire_at_ms=at)
                    except RingkvError as exc:
                        problem = problem_from_exception(exc)
                        results[i] = _failed(ops[i].key, problem)
                    else:
                        results[i] = {"key": ops[i].key, "success": True,
                                      "version": version_number(written.version)}

        await asyncio.gather(*(run_chain(k, w) for k, w in chains.items()))
        failed = [r["key"] for r in results if not r["success"]]
        done = len(results) - len(failed)
        status = "success" if not failed else "failed" if not done else "partial"
        return json_response({"success_count": done, "failed_keys": failed, "results": results, "atomic": False,
                              "status": status, "written": done})

    async def list_namespaces(self) -> Response:
        """The cluster's namespaces, each with its replica count N and conflict policy; pick
        one per request with `?namespace=`."""
        return json_response({"namespaces": [s.as_dict() for s in self._kv().namespaces()]})

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
        kv = self._kv(level)
        match = prefix_glob(decode_key(prefix, key_encoding, "prefix"))
        position = parse_cursor(cursor)
        keys: list[bytes] = []
        budget = limit + LIST_SCAN_BUDGET
        examined = 0
        for _ in range(LIST_MAX_SCAN_CALLS):
            # count=keys still wanted: scan examines `count` records, so it cannot find more
            # than that, and the page never overshoots `limit`.
            count = min(limit - len(keys), budget - examined)
            position, page = await kv.scan(position, count, match)
            keys.extend(page)
            examined += count
            if position == 0 or len(keys) >= limit or examined >= budget:
                break
        return json_response(
            {
                "keys": [encode_key(k, key_encoding) for k in keys],
                "cursor": None if position == 0 else str(position),
                "has_more": position != 0,
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
        pattern = None if match is None else decode_key(match, key_encoding, "match")
        position, keys = await self._kv(level).scan(parse_cursor(cursor), count, pattern)
        return json_response({"keys": [encode_key(k, key_encoding) for k in keys], "next_cursor": str(position),
                              "done": position == 0, "cursor": str(position)})

def _failed(key: str, problem: ProblemError) -> dict[str, Any]:
    """A non-atomic batch's result for a write that failed."""
    return {"key": key, "success": False,
            "error": {"status": problem.status, "type": f"urn:ringkv:problem:{problem.slug}", "detail": problem.detail}}


def routes(api: KeyValueApi) -> Iterator[tuple[str, Callable, str, dict[str, Any]]]:
    """The route table: (path, handler, method, route options)."""
    key = API + "/keys/{key:ringkv_key}"
    # First: the plain key routes' pattern would take `k/fields/f` as a key (docs/http.md).
    yield from collection_routes(CollectionApi(api._kv))
    octet = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    # Before the plain key routes, whose key pattern would take `k/versions` as the key: a key
    # whose path ends in /versions is reached with key_encoding=base64 (docs/http.md).
    versions = key + "/versions"
    yield versions, api.get_versions, "GET", {
        "response_model": VersionsResponse,
        "responses": problem_responses(400, 404, 409, 413, 422, 503),
    }
    yield versions, api.put_versioned, "PUT", {
        "response_model": ContextResponse,
        "responses": problem_responses(400, 404, 413, 422, 503, 507),
    }
    yield versions, api.delete_versioned, "DELETE", {
        "response_model": ContextResponse,
        "responses": problem_responses(400, 404, 413, 422, 503, 507),
    }
    etag_header = {"ETag": {"description": 'The key\'s version, quoted: `"<version>"` (for If-Match).',
                            "schema": {"type": "string"}}}
    yield key, api.get_key, "GET", {
        "response_model": GetKeyResponse | GetCollectionResponse,
        # 409: a SERIAL read that kept losing to other proposers of the key (nothing to retry
        # but the read).
        "responses": {200: {"content": octet, "headers": etag_header},
                      **problem_responses(400, 404, 409, 422, 503)},
    }
    yield key, api.head_key, "HEAD", {
        "response_class": Response,
        "responses": {200: {"description": "The key has a live value."}, 404: {"description": "No live value."},
                      **problem_responses(400, 409, 422, 503)},
    }
    # 409: key-exists (if_not_exists), or a compare-and-set that kept losing to other writers
    # of the key; 504: a write on the consensus path whose outcome is unknown.
    yield key, api.put_key, "PUT", {
        "response_model": PutKeyResponse,
        "responses": {200: {"headers": etag_header},
                      **problem_responses(400, 409, 412, 413, 415, 422, 503, 504, 507)},
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
        "responses": problem_responses(400, 409, 412, 422, 503, 504, 507),
    }
    yield API + "/keys/{key:ringkv_key}/cas", api.cas, "POST", {
        "response_model": CasResponse,
        "responses": problem_responses(400, 404, 409, 413, 422, 503, 504, 507),
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
        "responses": problem_responses(400, 409, 413, 422, 503),
    }
    yield API + "/batch/put", api.batch_put, "POST", {
        "response_model": BatchPutResponse,
        "responses": {202: {"description": "An atomic batch is committed (logged) but some keys wait for the "
                            "batch log's replay (`pending`).",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchPutResponse"}}}},
                      **problem_responses(400, 413, 422, 503, 507)},
    }
    yield API + "/keys", api.list_keys, "GET", {
        "response_model": KeyListResponse,
        "responses": problem_responses(400, 422, 503),
    }
    yield API + "/scan", api.scan, "GET", {
        "response_model": ScanResponse,
        "responses": problem_responses(400, 422, 503),
    }
    yield API + "/namespaces", api.list_namespaces, "GET", {
        "response_class": Response,
        "responses": {200: {"description": "The namespaces (see docs/namespaces.md).",
                            "content": {"application/json": {"schema": {"type": "object"}}}},
                      **problem_responses(503)}}
