"""The HTTP API's codec: how keys, values, causal contexts, cursors and consistency levels
travel in requests and answers, and the parameters every key route shares.

Values are text in JSON (`value`), with `value_base64` for bytes that are not UTF-8, or raw with
`application/octet-stream`; `encoding=base64` makes every `value` of a request and its answer
base64 (ringkv's earlier shape). Keys are UTF-8 text unless the request says
`key_encoding=base64`, which applies to every key in the request and in its answer (path,
bodies, prefixes, listings). Contexts are base64 (the URL-safe alphabet accepted). Every
malformed input is a `ProblemError` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

import msgspec
from fastapi import Depends, Header, Path, Query, Request
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response

from ringkv.api.http_models import ConsistencyLevel, KeyEncoding, ValueEncoding
from ringkv.api.http_problems import ProblemError
from ringkv.service.limits import MAX_KEY_BYTES, MAX_TOKEN
from ringkv.service.values import version_number
from ringkv.versioning.hlc import timestamp_ms

API = "/api/v1"
MAX_BATCH_BODY_BYTES = 16 * 1024 * 1024  # larger batches are split by the client
BODY_SLACK_BYTES = 64 * 1024  # JSON around a single base64 value: key, ttl, flags
MAX_LIST_LIMIT = 10_000
# A prefix listing is a filtered scan (docs/architecture.md). A sparse prefix
# would make one request read the whole keyspace on the event loop, so one request examines
# at most `limit + LIST_SCAN_BUDGET` records in at most LIST_MAX_SCAN_CALLS engine scans, and
# may answer fewer than `limit` keys with a cursor to continue.
LIST_SCAN_BUDGET = 20_000
LIST_MAX_SCAN_CALLS = 32
MAX_HTTP_HEAD_BYTES = 128 * 1024  # request line + headers: room for a 64 KiB key in the path

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
ValueEncodingQuery = Annotated[
    ValueEncoding,
    Query(description="How values travel in JSON: utf-8 (`value` is text; a value that is not UTF-8 is "
                      "answered in `value_base64`) or base64 (every `value` is base64 of the bytes)."),
]


async def consistency_level(
    # Typed `str`, not `str | None`, so the spec shows a plain enum of strings.
    header: Annotated[
        str,  # noqa: RUF013
        Header(
            alias="Consistency-Level",
            description="ONE (or EVENTUAL), QUORUM or ALL (or STRONG), case-insensitive: the request's R and "
            "W. SERIAL: a linearizable read through the key's consensus path (a write at SERIAL is at QUORUM). "
            "LOCAL_ONE, LOCAL_QUORUM: one or a majority of the replicas in the node's datacenter; EACH_QUORUM: a "
            "majority in every datacenter (docs/multi-dc.md).",
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
                400,
                "invalid-consistency",
                f"{source} is {raw[:64]!r}; expected ONE (or EVENTUAL), QUORUM, ALL (or STRONG), SERIAL "
                "(a linearizable read), SESSION, LOCAL_ONE, LOCAL_QUORUM or EACH_QUORUM",
            ) from None
    if len(levels) == 2 and levels[0].service_level != levels[1].service_level:
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


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_value(text: str, field: str) -> bytes:
    """A base64 value (standard alphabet, padded)."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProblemError(
            400, "invalid-base64", f"{field} is not valid base64 (standard alphabet A-Z a-z 0-9 + /, padded with =)"
        ) from None


def value_in(fields: Any, encoding: ValueEncoding, field: str, *, name: str = "value",
             required: bool = True) -> bytes | None:
    """The value of a request body: its `value` (text, or base64 under encoding=base64) or its
    `value_base64`; exactly one of them. `field` names the body element in errors ("value",
    "operations[3]"); `name` is the field pair's stem ("value", "new_value"). None when neither
    is given and `required` is false."""
    text = getattr(fields, name)
    b64_text = getattr(fields, name + "_base64")
    where = f"{field}." if field != name else ""
    if text is not None and b64_text is not None:
        raise ProblemError(400, "bad-request", f"give {where}{name} or {where}{name}_base64, not both")
    if b64_text is not None:
        return decode_value(b64_text, f"{where}{name}_base64")
    if text is None:
        if required:
            raise ProblemError(400, "bad-request", f"{where}{name} is required (or {where}{name}_base64 for bytes)")
        return None
    if encoding == "base64":
        return decode_value(text, f"{where}{name}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which a JSON \ud800 escape can carry
        raise ProblemError(
            400, "bad-request", f"{where}{name} is not valid UTF-8 text; send bytes in {where}{name}_base64"
        ) from None


def value_out(value: bytes, encoding: ValueEncoding, doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with the value added: `value` as text when it is UTF-8 (base64 under
    encoding=base64), else `value_base64`."""
    if encoding == "base64":
        doc["value"] = b64(value)
        return doc
    try:
        doc["value"] = value.decode("utf-8")
    except UnicodeDecodeError:
        doc["value_base64"] = b64(value)
    return doc


def unix_seconds(hlc_timestamp: int) -> int:
    """An HLC timestamp as whole Unix seconds (what the specification's `timestamp` is)."""
    return timestamp_ms(hlc_timestamp) // 1000


def version_fields(context: bytes | None) -> dict[str, Any]:
    """`version` (the number) and `context` (base64; None without one) of a key."""
    return {"version": version_number(context), "context": None if context is None else b64(context)}


def decode_key(text: str, encoding: KeyEncoding, field: str) -> bytes:
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


def decode_context(text: str, field: str) -> bytes:
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
        # The service reads an empty context as none: a blind write the client did not ask for.
        raise ProblemError(
            400, "invalid-context", f"{field} is empty: send the context a read returned, or none for a blind write"
        )
    return context


def encode_key(key: bytes, encoding: KeyEncoding) -> str:
    if encoding == "base64":
        return b64(key)
    # A key written through RESP may not be UTF-8: shown with U+FFFD, documented in http.md.
    return key.decode("utf-8", "replace")


def path_key(request: Request, key: str, encoding: KeyEncoding) -> bytes:
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
    return decode_key(key, encoding, "key")


def suffixed_path_key(request: Request, key: str, encoding: KeyEncoding, suffix: str) -> bytes:
    # A route regex ends in `$`, which also matches before a final newline: without this
    # check, POST /keys/k/ttl%0A would act on key "k" instead of finding no route.
    if not request.scope["path"].endswith(suffix):
        raise ProblemError(404, "not-found", f"no route for {request.method} {request.scope['path'][:200]!r}")
    return path_key(request, key, encoding)


def expire_at_ms(ttl_s: float | None, now_ms: int) -> int:
    # ceil: a positive TTL never rounds down to "expires now".
    return 0 if ttl_s is None else now_ms + max(1, math.ceil(ttl_s * 1000))


def ttl_remaining(expire_at_ms: int, now_ms: int) -> float | None:
    if not expire_at_ms:
        return None
    return max(0, expire_at_ms - now_ms) / 1000


def json_response(doc: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # msgspec encodes without FastAPI's response-model validation: the models document the
    # answers; handlers build exactly what they say.
    return Response(msgspec.json.encode(doc), status_code=status, media_type="application/json", headers=headers)


def wants_raw(accept: str | None) -> bool:
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


def parse_cursor(text: str | None) -> int:
    if not text:
        return 0
    if _CURSOR.fullmatch(text) is None or int(text) > MAX_TOKEN:
        raise ProblemError(
            400, "invalid-cursor", f"cursor {text[:64]!r} is not a cursor this API returned (a decimal 0..{MAX_TOKEN})"
        )
    return int(text)


def prefix_glob(prefix: bytes) -> bytes:
    return _GLOB_SPECIAL.sub(rb"\\\1", prefix) + b"*"
