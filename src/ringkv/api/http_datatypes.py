"""The HTTP API's collection routes: hashes, sets, sorted sets and lists as REST resources
under a key, and the JSON shape of a whole collection that `GET /api/v1/keys/{key}` answers.

Each handler runs exactly one Redis command through `KeyValueService.type_command` (HSET,
SADD, ZRANGE, LPOP, ...), so the command's semantics, its errors and its permission (the user's
ACL rules, checked by api/http_auth.GuardedService as that command) are RESP's. The route table
is `collection_routes(api)`; docs/http.md ("Collections") is the reference.

Elements (hash fields and values, members, list items) travel as values do (http_codec): text,
or, when any element of an answer is not UTF-8, every element of it base64 in the `*_base64`
twin of the field (`fields_base64`, `members_base64`, ...); `?encoding=base64` makes them all
base64 in the plain field. An element named in the path is text, or base64 (either alphabet)
under `encoding=base64`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal
from urllib.parse import unquote_to_bytes

from fastapi import Body, Path, Query, Request
from starlette.responses import Response

from ringkv.api.http_codec import (
    API,
    Consistency,
    KeyEncodingQuery,
    KeyPath,
    ValueEncodingQuery,
    b64,
    decode_value,
    json_response,
    path_key,
    suffixed_path_key,
    unix_seconds,
    value_in,
    value_out,
    version_fields,
)
from ringkv.api.http_models import (
    AddedResponse,
    FieldResponse,
    FieldsRequest,
    FieldsResponse,
    FieldsWriteResponse,
    FieldVersionsResponse,
    FieldWriteResponse,
    ItemsResponse,
    MembershipResponse,
    MembersRequest,
    MembersResponse,
    PushRequest,
    PushResponse,
    RangeResponse,
    RemovedResponse,
    ScoreRequest,
    ScoreResponse,
    ScoreVersionsResponse,
    ScoreWriteResponse,
    ValueEncoding,
    ValueFields,
)
from ringkv.api.http_problems import ProblemError, problem_responses
from ringkv.errors import RingkvError
from ringkv.service.contract import KeyValueService
from ringkv.service.datatypes.base import WrongTypeError

# A whole-collection read is TYPE, then the type's read: a key that changes type in between is
# read again, this many times at most before a 409.
MAX_TYPE_ATTEMPTS = 3
_INT64 = {"ge": -(1 << 63), "le": (1 << 63) - 1}
_TYPE_NOUNS = {"hash": "a hash", "set": "a set", "zset": "a sorted set", "list": "a list", "string": "a string"}

ElementPath = Annotated[
    str, Path(min_length=1, description="The field or member: UTF-8 text, percent-encoded, or base64 with "
                                        "encoding=base64.")]


class StringNow(Exception):
    """The key holds a string again (it changed type while a collection read ran)."""


# ---------------------------------------------------------------------- elements


def decode_element(text: str, encoding: ValueEncoding, field: str) -> bytes:
    """An element named by the client: UTF-8 text, or base64 (standard or URL-safe alphabet,
    padding optional: a path cannot carry `/` unambiguously) under encoding=base64."""
    if encoding == "base64":
        try:
            padded = text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)
            return base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError):
            raise ProblemError(400, "invalid-base64", f"{field} is not valid base64 (encoding=base64)") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which a JSON \ud800 escape can carry
        raise ProblemError(400, "bad-request", f"{field} is not valid UTF-8 text; send bytes base64 with "
                                               "encoding=base64 or in the *_base64 field") from None


def path_element(request: Request, text: str, encoding: ValueEncoding, field: str) -> bytes:
    """An element named in the path (see `http_codec.path_key` for why U+FFFD is checked)."""
    if encoding == "utf-8" and "\ufffd" in text:
        try:
            unquote_to_bytes(request.scope.get("raw_path") or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise ProblemError(400, "bad-request", f"the {field} in the path is not valid UTF-8 once percent-decoded; "
                                                   "send it base64 with encoding=base64") from None
    return decode_element(text, encoding, field)


def elements_in(body: Any, encoding: ValueEncoding, name: str) -> list[bytes]:
    """The elements of a request body: its `name` list (text, or base64 under encoding=base64)
    or its `name_base64` list, exactly one of the two."""
    text, raw = getattr(body, name), getattr(body, name + "_base64")
    if (text is None) == (raw is None):
        raise ProblemError(400, "bad-request", f"give {name} or {name}_base64, "
                                               + ("not both" if text is not None else "one of them"))
    if raw is not None:
        return [decode_value(x, f"{name}_base64[{i}]") for i, x in enumerate(raw)]
    if encoding == "base64":
        return [decode_value(x, f"{name}[{i}]") for i, x in enumerate(text)]
    return [decode_element(x, "utf-8", f"{name}[{i}]") for i, x in enumerate(text)]


def texts_out(items: list[bytes], encoding: ValueEncoding) -> tuple[list[str], bool]:
    """`items` as JSON strings, and whether they went base64 because one is not UTF-8 (the
    answer then names the field `*_base64`)."""
    if encoding == "base64":
        return [b64(x) for x in items], False
    try:
        return [x.decode("utf-8") for x in items], False
    except UnicodeDecodeError:
        return [b64(x) for x in items], True


def score_out(score: Any) -> float | str:
    """A score as JSON: a number, or "inf" / "-inf"."""
    x = float(score)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def score_arg(score: float | str) -> bytes:
    """A request's score as ZADD takes it."""
    if isinstance(score, str):
        return b"-inf" if score == "-inf" else b"+inf"
    if math.isnan(score):
        raise ProblemError(400, "bad-request", "score is NaN; a score is a number, or inf / -inf")
    return repr(float(score)).encode()


def _pairs(reply: Any) -> list[tuple[bytes, Any]]:
    """(member, score) pairs from a WITHSCORES reply, flat or in pairs."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(reply.items())
    if isinstance(reply[0], list | tuple):
        return [(m, s) for m, s in reply]
    return list(zip(reply[0::2], reply[1::2], strict=True))


def scored_out(pairs: list[tuple[bytes, Any]], encoding: ValueEncoding) -> tuple[list[dict[str, Any]], bool]:
    members, as_b64 = texts_out([m for m, _ in pairs], encoding)
    return [{"member": m, "score": score_out(s)} for m, (_, s) in zip(members, pairs, strict=True)], as_b64


def hash_out(fields: dict[bytes, bytes], encoding: ValueEncoding) -> tuple[dict[str, str], bool]:
    flat, as_b64 = texts_out([x for pair in fields.items() for x in pair], encoding)
    return dict(zip(flat[0::2], flat[1::2], strict=True)), as_b64


def _put(doc: dict[str, Any], name: str, shaped: tuple[Any, bool]) -> dict[str, Any]:
    value, as_b64 = shaped
    doc[name + "_base64" if as_b64 else name] = value
    return doc


def _as_dict(reply: Any) -> dict[bytes, bytes]:
    """HGETALL's reply (a dict, or a flat field, value list) as a dict."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[0::2], reply[1::2], strict=True)) if reply else {}


def _type_name(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


# ---------------------------------------------------------------------- whole collections

# TYPE -> the command that reads the whole collection, and its arguments after the key.
WHOLE_READS = {
    "hash": ("HGETALL", []),
    "list": ("LRANGE", [b"0", b"-1"]),
    "set": ("SMEMBERS", []),
    "zset": ("ZRANGE", [b"0", b"-1", b"WITHSCORES"]),
}


def collection_value(kind: str, reply: Any, encoding: ValueEncoding) -> tuple[Any, bool]:
    """A whole collection as JSON (hash: object; list: array; set: sorted array; sorted set:
    array of {member, score}), and whether its elements went base64."""
    if kind == "hash":
        return hash_out(_as_dict(reply), encoding)
    if kind == "list":
        return texts_out(list(reply), encoding)
    if kind == "set":
        return texts_out(sorted(reply), encoding)
    return scored_out(_pairs(reply), encoding)


async def read_collection(kv: KeyValueService, kb: bytes, key: str, encoding: ValueEncoding) -> dict[str, Any]:
    """The JSON document of the collection under `kb` (404 when the key has no live value).
    StringNow when it holds a string (the caller reads it as one)."""
    for _ in range(MAX_TYPE_ATTEMPTS):
        kind = _type_name(await kv.type_command("TYPE", [kb]))
        if kind == "none":
            raise ProblemError(404, "key-not-found", f"no value under key {key[:200]!r}")
        if kind == "string":
            raise StringNow
        name, extra = WHOLE_READS[kind]
        try:
            reply = await kv.type_command(name, [kb, *extra])
        except WrongTypeError:
            continue  # changed type since TYPE: look again
        if not reply:  # deleted since TYPE
            raise ProblemError(404, "key-not-found", f"no value under key {key[:200]!r}")
        ttl_ms = await kv.ttl_ms(kb)
        doc = _put({"key": key, "type": kind}, "value", collection_value(kind, reply, encoding))
        doc["ttl_remaining"] = ttl_ms / 1000 if ttl_ms >= 0 else None
        return doc
    raise ProblemError(409, "conflict", f"key {key[:200]!r} changed type {MAX_TYPE_ATTEMPTS} times while it was "
                                        "read; read it again")


# ---------------------------------------------------------------------- routes


class CollectionApi:
    """The collection handlers, over the data API's service views (`KeyValueApi._kv`)."""

    def __init__(self, views: Callable[..., KeyValueService]) -> None:
        self._views = views

    async def _run(self, kv: KeyValueService, key: str, kb: bytes, type_name: str, name: str,
                   args: list[bytes]) -> Any:
        """Run `name` (a data-type command) with `args`; WRONGTYPE as a 409 naming the type the
        key holds."""
        try:
            return await kv.type_command(name, args)
        except WrongTypeError:
            held = "another type"
            # The refusal stands whatever TYPE says, or if it cannot say (the key changed, a
            # replica went away): the type is only named to help.
            with contextlib.suppress(RingkvError):
                held = _TYPE_NOUNS.get(_type_name(await kv.type_command("TYPE", [kb])), held)
            raise ProblemError(409, "wrong-type", f"WRONGTYPE key {key[:200]!r} holds {held}; {name} works on "
                                                  f"{_TYPE_NOUNS[type_name]}") from None

    # -------------------------------------------------------------- hashes

    async def get_fields(self, request: Request, key: KeyPath, level: Consistency,
                         key_encoding: KeyEncodingQuery = "utf-8", encoding: ValueEncodingQuery = "utf-8") -> Response:
        """Every field of a hash and its value (HGETALL). 404 when the key does not exist."""
        kb = suffixed_path_key(request, key, key_encoding, "/fields")
        reply = _as_dict(await self._run(self._views(level), key, kb, "hash", "HGETALL", [kb]))
        if not reply:
            raise ProblemError(404, "key-not-found", f"no value under key {key[:200]!r}")
        return json_response(_put({"key": key}, "fields", hash_out(reply, encoding)))

    async def set_fields(self, request: Request, key: KeyPath, body: Annotated[FieldsRequest, Body()],
                         level: Consistency, key_encoding: KeyEncodingQuery = "utf-8",
                         encoding: ValueEncodingQuery = "utf-8") -> Response:
        """Set several fields of a hash at once (HSET), creating it if needed; the other fields
        stay. `added` counts the fields that were new."""
        kb = suffixed_path_key(request, key, key_encoding, "/fields")
        if (body.fields is None) == (body.fields_base64 is None):
            raise ProblemError(400, "bad-request", "give fields or fields_base64, "
                                                   + ("not both" if body.fields is not None else "one of them"))
        args = [kb]
        if body.fields_base64 is not None:
            for f, v in body.fields_base64.items():
                args += [decode_value(f, "fields_base64 (a field)"), decode_value(v, f"fields_base64[{f[:64]!r}]")]
        else:
            assert body.fields is not None
            for f, v in body.fields.items():
                args += [decode_element(f, encoding, "fields (a field)"),
                         decode_element(v, encoding, f"fields[{f[:64]!r}]")]
        added = await self._run(self._views(level), key, kb, "hash", "HSET", args)
        return json_response({"key": key, "added": int(added)})

    async def get_field(self, request: Request, key: KeyPath, field: ElementPath, level: Consistency,
                        key_encoding: KeyEncodingQuery = "utf-8", encoding: ValueEncodingQuery = "utf-8") -> Response:
        """One field's value (HGET); 404 `field-not-found` when the hash has no such field (or
        the key does not exist)."""
        kb = path_key(request, key, key_encoding)
        fb = path_element(request, field, encoding, "field")
        value = await self._run(self._views(level), key, kb, "hash", "HGET", [kb, fb])
        if value is None:
            raise ProblemError(404, "field-not-found", f"key {key[:200]!r} has no field {field[:200]!r}")
        return json_response(value_out(value, encoding, {"key": key, "field": field}))

    async def get_field_versions(self, request: Request, key: KeyPath, field: ElementPath, level: Consistency,
                                 key_encoding: KeyEncodingQuery = "utf-8",
                                 encoding: ValueEncodingQuery = "utf-8") -> Response:
        """Every value of one field (RINGKV.HGETV): HSETs of the field on two replicas at once
        (a partition) leave both values until the next write of the field, and GET .../fields/{field}
        answers the newest; this answers all of them. An empty list when the hash has no such
        field; 409 when the key holds another type."""
        versions = await self._element_versions(request, key, field, level, key_encoding, encoding, "field")
        return json_response({
            "key": key, "field": field, **version_fields(versions.context),
            "siblings": [value_out(s.value, encoding, {"timestamp": unix_seconds(s.timestamp), "hlc": s.timestamp})
                         for s in versions.siblings],
        })

    async def _element_versions(self, request: Request, key: str, element: str, level: Any, key_encoding: str,
                                encoding: str, what: str) -> Any:
        """The SiblingSet of a hash field (`what` "field") or a sorted-set member ("member")."""
        if not request.scope["path"].endswith("/versions"):
            raise ProblemError(404, "not-found", f"no route for {request.method} {request.scope['path'][:200]!r}")
        kb = path_key(request, key, key_encoding)
        eb = path_element(request, element, encoding, what)
        views = self._views(level)
        try:
            if what == "field":
                return await views.hash_field_versions(kb, eb)
            return await views.zset_score_versions(kb, eb)
        except WrongTypeError:
            held = "hash" if what == "field" else "sorted set"
            raise ProblemError(409, "wrong-type", f"WRONGTYPE key {key[:200]!r} holds no {held}") from None

    async def put_field(self, request: Request, key: KeyPath, field: ElementPath, body: Annotated[ValueFields, Body()],
                        level: Consistency, key_encoding: KeyEncodingQuery = "utf-8",
                        encoding: ValueEncodingQuery = "utf-8") -> Response:
        """Set one field (HSET), creating the hash if needed."""
        kb = path_key(request, key, key_encoding)
        fb = path_element(request, field, encoding, "field")
        value = value_in(body, encoding, "value")
        assert value is not None
        added = await self._run(self._views(level), key, kb, "hash", "HSET", [kb, fb, value])
        return json_response({"key": key, "field": field, "created": bool(added)})

    async def delete_field(self, request: Request, key: KeyPath, field: ElementPath, level: Consistency,
                           key_encoding: KeyEncodingQuery = "utf-8",
                           encoding: ValueEncodingQuery = "utf-8") -> Response:
        """Remove one field (HDEL); the hash goes when its last field does. Idempotent:
        `removed` says whether the field was there."""
        kb = path_key(request, key, key_encoding)
        fb = path_element(request, field, encoding, "field")
        removed = await self._run(self._views(level), key, kb, "hash", "HDEL", [kb, fb])
        return json_response({"key": key, "removed": bool(removed)})

    # -------------------------------------------------------------- sets

    async def get_members(self, request: Request, key: KeyPath, level: Consistency,
                          key_encoding: KeyEncodingQuery = "utf-8",
                          encoding: ValueEncodingQuery = "utf-8") -> Response:
        """Every member of a set (SMEMBERS), sorted by bytes. 404 when the key does not exist."""
        kb = suffixed_path_key(request, key, key_encoding, "/members")
        reply = await self._run(self._views(level), key, kb, "set", "SMEMBERS", [kb])
        if not reply:
            raise ProblemError(404, "key-not-found", f"no value under key {key[:200]!r}")
        return json_response(_put({"key": key}, "members", texts_out(sorted(reply), encoding)))

    async def add_members(self, request: Request, key: KeyPath, body: Annotated[MembersRequest, Body()],
                          level: Consistency, key_encoding: KeyEncodingQuery = "utf-8",
                          encoding: ValueEncodingQuery = "utf-8") -> Response:
        """Add members to a set (SADD), creating it if needed; `added` counts the new ones."""
        kb = suffixed_path_key(request, key, key_encoding, "/members")
        members = elements_in(body, encoding, "members")
        added = await self._run(self._views(level), key, kb, "set", "SADD", [kb, *members])
        return json_response({"key": key, "added": int(added)})

    async def is_member(self, request: Request, key: KeyPath, member: ElementPath, level: Consistency,
                        key_encoding: KeyEncodingQuery = "utf-8", encoding: ValueEncodingQuery = "utf-8") -> Response:
        """Whether the set holds `member` (SISMEMBER); false when the key does not exist."""
        kb = path_key(request, key, key_encoding)
        mb = path_element(request, member, encoding, "member")
        found = await self._run(self._views(level), key, kb, "set", "SISMEMBER", [kb, mb])
        return json_response({"key": key, "member": member, "is_member": bool(found)})

    async def remove_member(self, request: Request, key: KeyPath, member: ElementPath, level: Consistency,
                            key_encoding: KeyEncodingQuery = "utf-8",
                            encoding: ValueEncodingQuery = "utf-8") -> Response:
        """Remove one member (SREM); the set goes with its last member. Idempotent."""
        kb = path_key(request, key, key_encoding)
        mb = path_element(request, member, encoding, "member")
        removed = await self._run(self._views(level), key, kb, "set", "SREM", [kb, mb])
        return json_response({"key": key, "removed": bool(removed)})

    # -------------------------------------------------------------- sorted sets

    async def get_score(self, request: Request, key: KeyPath, member: ElementPath, level: Consistency,
                        key_encoding: KeyEncodingQuery = "utf-8", encoding: ValueEncodingQuery = "utf-8") -> Response:
        """A member's score (ZSCORE); 404 `member-not-found` when it is not in the sorted set."""
        kb = path_key(request, key, key_encoding)
        mb = path_element(request, member, encoding, "member")
        score = await self._run(self._views(level), key, kb, "zset", "ZSCORE", [kb, mb])
        if score is None:
            raise ProblemError(404, "member-not-found", f"key {key[:200]!r} has no member {member[:200]!r}")
        return json_response({"key": key, "member": member, "score": score_out(score)})

    async def get_score_versions(self, request: Request, key: KeyPath, member: ElementPath, level: Consistency,
                                 key_encoding: KeyEncodingQuery = "utf-8",
                                 encoding: ValueEncodingQuery = "utf-8") -> Response:
        """Every score of one member (RINGKV.ZSCOREV): ZADDs of the member on two replicas at
        once (a partition) leave both scores until the next write of the member, and GET
        .../scores/{member} answers the newest; this answers all of them. An empty list when
        the sorted set has no such member; 409 when the key holds another type."""
        versions = await self._element_versions(request, key, member, level, key_encoding, encoding, "member")
        return json_response({
            "key": key, "member": member, **version_fields(versions.context),
            "siblings": [{"score": score_out(s.value), "timestamp": unix_seconds(s.timestamp), "hlc": s.timestamp}
                         for s in versions.siblings],
        })

    async def put_score(self, request: Request, key: KeyPath, member: ElementPath,
                        body: Annotated[ScoreRequest, Body()], level: Consistency,
                        key_encoding: KeyEncodingQuery = "utf-8", encoding: ValueEncodingQuery = "utf-8") -> Response:
        """Add a member with its score, or change its score (ZADD ... CH), creating the sorted
        set if needed; `condition` as ZADD's NX / XX / GT / LT."""
        kb = path_key(request, key, key_encoding)
        mb = path_element(request, member, encoding, "member")
        flags = [] if body.condition is None else [body.condition.upper().encode()]
        changed = await self._run(self._views(level), key, kb, "zset", "ZADD",
                                  [kb, *flags, b"CH", score_arg(body.score), mb])
        return json_response({"key": key, "member": member, "changed": bool(changed)})

    async def remove_score(self, request: Request, key: KeyPath, member: ElementPath, level: Consistency,
                           key_encoding: KeyEncodingQuery = "utf-8",
                           encoding: ValueEncodingQuery = "utf-8") -> Response:
        """Remove one member (ZREM); the sorted set goes with its last member. Idempotent."""
        kb = path_key(request, key, key_encoding)
        mb = path_element(request, member, encoding, "member")
        removed = await self._run(self._views(level), key, kb, "zset", "ZREM", [kb, mb])
        return json_response({"key": key, "removed": bool(removed)})

    async def get_range(
        self,
        request: Request,
        key: KeyPath,
        level: Consistency,
        start: Annotated[int | None, Query(description="First rank (0 is the lowest score; negative counts from "
                                                       "the end).", **_INT64)] = None,
        stop: Annotated[int | None, Query(description="Last rank, included (-1: the last).", **_INT64)] = None,
        min_score: Annotated[str | None, Query(alias="min", max_length=64, description="By score: the lowest score (a number, "
                                         "-inf, or `(x` for x excluded). With max; excludes start/stop.")] = None,
        max_score: Annotated[str | None, Query(alias="max", max_length=64, description="By score: the highest score (a number, "
                                         "+inf, or `(x`).")] = None,
        rev: Annotated[bool, Query(description="Highest score first (ranks then count from the highest).")] = False,
        offset: Annotated[int | None, Query(ge=0, le=(1 << 63) - 1, description="By score: members to skip.")] = None,
        count: Annotated[int | None, Query(ge=1, le=(1 << 63) - 1, description="By score: most members to answer.")]
        = None,
        key_encoding: KeyEncodingQuery = "utf-8",
        encoding: ValueEncodingQuery = "utf-8",
    ) -> Response:
        """Members of a sorted set with their scores (ZRANGE ... WITHSCORES): by rank
        (`start`, `stop`; all of them by default) or by score (`min`, `max`, with `offset` and
        `count`), lowest first or with `rev` highest first. An empty range, or a missing key,
        answers an empty list."""
        kb = suffixed_path_key(request, key, key_encoding, "/range")
        by_score = min_score is not None or max_score is not None
        if by_score and (start is not None or stop is not None):
            raise ProblemError(400, "bad-request", "give ranks (start, stop) or scores (min, max), not both")
        if (offset is not None or count is not None) and not by_score:
            raise ProblemError(400, "bad-request", "offset and count go with a range by score (min, max)")
        if by_score:
            low, high = (min_score or "-inf").encode(), (max_score or "+inf").encode()
            args = [kb, *((high, low) if rev else (low, high)), b"BYSCORE"]
            if offset is not None or count is not None:
                args += [b"LIMIT", b"%d" % (offset or 0), b"%d" % (-1 if count is None else count)]
        else:
            args = [kb, b"%d" % (0 if start is None else start), b"%d" % (-1 if stop is None else stop)]
        if rev:
            args.append(b"REV")
        args.append(b"WITHSCORES")
        reply = await self._run(self._views(level), key, kb, "zset", "ZRANGE", args)
        return json_response(_put({"key": key}, "members", scored_out(_pairs(reply), encoding)))

    # -------------------------------------------------------------- lists

    async def get_items(
        self,
        request: Request,
        key: KeyPath,
        level: Consistency,
        start: Annotated[int, Query(description="First index (0: the head; negative counts from the tail).",
                                    **_INT64)] = 0,
        stop: Annotated[int, Query(description="Last index, included (-1: the tail).", **_INT64)] = -1,
        key_encoding: KeyEncodingQuery = "utf-8",
        encoding: ValueEncodingQuery = "utf-8",
    ) -> Response:
        """Items of a list from `start` to `stop` (LRANGE), head first; every item by default.
        A missing key answers an empty list."""
        kb = suffixed_path_key(request, key, key_encoding, "/items")
        reply = await self._run(self._views(level), key, kb, "list", "LRANGE", [kb, b"%d" % start, b"%d" % stop])
        return json_response(_put({"key": key}, "values", texts_out(list(reply), encoding)))

    async def push_items(self, request: Request, key: KeyPath, body: Annotated[PushRequest, Body()],
                         level: Consistency, key_encoding: KeyEncodingQuery = "utf-8",
                         encoding: ValueEncodingQuery = "utf-8") -> Response:
        """Push items at the tail (`side: right`, RPUSH) or the head (`left`, LPUSH), creating
        the list unless `if_exists` (LPUSHX / RPUSHX). Not idempotent: a retried push pushes
        again."""
        kb = suffixed_path_key(request, key, key_encoding, "/items")
        values = elements_in(body, encoding, "values")
        name = ("LPUSH" if body.side == "left" else "RPUSH") + ("X" if body.if_exists else "")
        length = await self._run(self._views(level), key, kb, "list", name, [kb, *values])
        return json_response({"key": key, "length": int(length)})

    async def pop_items(
        self,
        request: Request,
        key: KeyPath,
        level: Consistency,
        side: Annotated[Literal["left", "right"],
                        Query(description="left: from the head (LPOP); right: from the tail (RPOP).")] = "left",
        count: Annotated[int, Query(ge=1, le=(1 << 63) - 1, description="Most items to pop.")] = 1,
        key_encoding: KeyEncodingQuery = "utf-8",
        encoding: ValueEncodingQuery = "utf-8",
    ) -> Response:
        """Pop up to `count` items (LPOP / RPOP with a count) and answer them in the order
        popped; the list goes with its last item. A missing key answers an empty list."""
        kb = suffixed_path_key(request, key, key_encoding, "/items")
        name = "LPOP" if side == "left" else "RPOP"
        reply = await self._run(self._views(level), key, kb, "list", name, [kb, b"%d" % count])
        return json_response(_put({"key": key}, "values", texts_out(list(reply or ()), encoding)))


def collection_routes(api: CollectionApi) -> Iterator[tuple[str, Callable, str, dict[str, Any]]]:
    """The route table. Before the plain key routes: their key pattern would take
    `k/fields/f` as a key (docs/http.md says how such keys are reached)."""
    key = API + "/keys/{key:ringkv_key}"
    reads = problem_responses(400, 409, 413, 422, 503)
    writes = problem_responses(400, 409, 413, 422, 503, 504, 507)
    not_found = problem_responses(400, 404, 409, 413, 422, 503)
    element = "/{field:ringkv_key}"
    # Before the field routes, whose pattern would take `f/versions` as the field: a field whose
    # path ends in /versions is reached with encoding=base64 (docs/http.md).
    yield key + "/fields" + element + "/versions", api.get_field_versions, "GET", {
        "response_model": FieldVersionsResponse, "responses": reads}
    yield key + "/fields" + element, api.get_field, "GET", {"response_model": FieldResponse, "responses": not_found}
    yield key + "/fields" + element, api.put_field, "PUT", {"response_model": FieldWriteResponse, "responses": writes}
    yield key + "/fields" + element, api.delete_field, "DELETE", {"response_model": RemovedResponse,
                                                                  "responses": writes}
    yield key + "/fields", api.get_fields, "GET", {"response_model": FieldsResponse, "responses": not_found}
    yield key + "/fields", api.set_fields, "PATCH", {"response_model": FieldsWriteResponse, "responses": writes}
    member = "/{member:ringkv_key}"
    yield key + "/members" + member, api.is_member, "GET", {"response_model": MembershipResponse,
                                                            "responses": reads}
    yield key + "/members" + member, api.remove_member, "DELETE", {"response_model": RemovedResponse,
                                                                   "responses": writes}
    yield key + "/members", api.get_members, "GET", {"response_model": MembersResponse, "responses": not_found}
    yield key + "/members", api.add_members, "POST", {"response_model": AddedResponse, "responses": writes}
    yield key + "/scores" + member + "/versions", api.get_score_versions, "GET", {
        "response_model": ScoreVersionsResponse, "responses": reads}
    yield key + "/scores" + member, api.get_score, "GET", {"response_model": ScoreResponse, "responses": not_found}
    yield key + "/scores" + member, api.put_score, "PUT", {"response_model": ScoreWriteResponse,
                                                           "responses": writes}
    yield key + "/scores" + member, api.remove_score, "DELETE", {"response_model": RemovedResponse,
                                                                 "responses": writes}
    yield key + "/range", api.get_range, "GET", {"response_model": RangeResponse, "responses": reads}
    yield key + "/items", api.get_items, "GET", {"response_model": ItemsResponse, "responses": reads}
    yield key + "/items", api.push_items, "POST", {"response_model": PushResponse, "responses": writes}
    yield key + "/items", api.pop_items, "DELETE", {"response_model": ItemsResponse, "responses": writes}
