"""Requests as data: what each client method sends, whether it may be resent, how to read the reply.

Both clients (`Client` and `AsyncClient`) build a `Request` here and hand it to their own IO
loop, so argument checks, encoding and reply parsing are written once. Nothing here does IO.

A request is `idempotent` when sending it twice leaves the same state as sending it once
(GET, SET without conditions, DEL, MSET, EXPIRE, ...): only those are retried after a
connection failure. INCR, INCRBYFLOAT, APPEND and the conditional writes (SET NX/XX/IFEQ...,
DELEX with a condition, RINGKV.CAS, RINGKV.CAD) are not: a lost reply means the outcome is
unknown, and resending could apply the change twice, or find the first copy's own write and
answer "condition not met" for a write that was made. Nor are the sibling-aware writes
(RINGKV.PUTV, RINGKV.DELV): a second copy has not seen the first one's version, so both would
stay, as siblings.

Keys and values are bytes; `str` is accepted and encoded as UTF-8. Replies are bytes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ringkv.client.options import Consistency
from ringkv.client.siblings import Versions, parse_versions
from ringkv.service.values import version_number

T = TypeVar("T")
Data = str | bytes | bytearray | memoryview

# The node answers SCAN COUNT up to this many keys examined per page (resp_server bounds it).
MAX_SCAN_COUNT = 100_000
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_DIGEST = re.compile(rb"[0-9a-fA-F]{16}")  # Redis 8.4's DIGEST: XXH3-64 as 16 hex digits


@dataclass(frozen=True, slots=True)
class CasResult:
    """What `cas` answers. `success`: the key was still at the expected version and the new
    value was written. `version`: the key's version now (its causal context): the new one after
    a write; after a refusal the one that did not match, None when the key has no live value
    (expect None next). `version_number` is its number, as the HTTP API's `version` (the count
    of the key's writes). A version belongs to its key: compare it only with versions of the
    same key."""

    success: bool
    version: bytes | None

    @property
    def version_number(self) -> int | None:
        return None if self.version is None else version_number(self.version)


@dataclass(frozen=True, slots=True)
class Request(Generic[T]):
    """One command for the node.

    `command` names it in error messages ("GET"). `args` is the whole command line; empty
    `args` means no round trip is needed (DEL of no keys) and the result is `parse(None)`.
    `consistency` is the level the caller asked for, sent as `RINGKV.AT <level> <command...>`
    (see `wire_args`); None leaves the connection's level (the node's default).
    """

    command: str
    args: tuple[bytes | int, ...]
    idempotent: bool
    parse: Callable[[Any], T]
    consistency: Consistency | None = None


def wire_args(request: Request) -> tuple[bytes | int | str, ...]:
    """The command line sent for `request`: wrapped in RINGKV.AT when it names a level."""
    if request.consistency is None:
        return request.args
    return (b"RINGKV.AT", request.consistency.value, *request.args)


# ---------------------------------------------------------------------- encoding


def encode(data: Data, what: str = "key") -> bytes:
    """bytes-like as is, str as UTF-8. Anything else is refused rather than guessed at
    (an int or None turning into b"5" or b"None" is a bug waiting to be stored)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"{what} must be bytes or str, got {type(data).__name__}")


def _keys(keys: Iterable[Data]) -> list[bytes]:
    if isinstance(keys, str | bytes | bytearray | memoryview):
        # mget("abc") would otherwise ask for keys "a", "b" and "c".
        raise TypeError("keys must be an iterable of keys, not a single key")
    return [encode(k) for k in keys]


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _ttl_ms(ttl_s: float | None, ttl_ms: int | None) -> int | None:
    if ttl_s is not None and ttl_ms is not None:
        raise ValueError("give ttl_s or ttl_ms, not both")
    if ttl_ms is not None:
        if type(ttl_ms) is not int or ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be a positive integer, got {ttl_ms!r}")
        return ttl_ms
    if ttl_s is not None:
        if not _is_number(ttl_s) or not 0 < ttl_s < math.inf:
            raise ValueError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
        return math.ceil(ttl_s * 1000)  # never round a short TTL down to "no TTL"
    return None


# ---------------------------------------------------------------------- reply parsers


def _optional_bytes(reply: Any) -> bytes | None:
    return reply


def _integer(reply: Any) -> int:
    return int(reply)


def _count(reply: Any) -> int:
    return 0 if reply is None else int(reply)


def _flag(reply: Any) -> bool:
    return bool(reply)


def _ok(reply: Any) -> bool:
    # SET answers +OK when it wrote and a nil when an NX/XX condition did not hold.
    return reply is not None


def _none(reply: Any) -> None:
    return None


def _float(reply: Any) -> float:
    return float(reply)


def _seconds_left(reply: Any) -> float | None:
    ms = int(reply)
    return None if ms < 0 else ms / 1000  # -1: no expiry, -2: no such key


def _context(reply: Any) -> bytes:
    return bytes(reply)


def _values(reply: Any) -> list[bytes | None]:
    return [] if reply is None else list(reply)


def _pong(reply: Any) -> bool:
    return reply in (b"PONG", "PONG")


def _scan_page(reply: Any) -> tuple[int, list[bytes]]:
    cursor, keys = reply
    return int(cursor), list(keys)


_INT = re.compile(r"-?\d+")
_FLOAT = re.compile(r"-?\d+\.\d+(e[-+]?\d+)?")


def _info_value(text: str) -> int | float | str:
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def parse_info(reply: Any) -> dict[str, dict[str, Any]]:
    """INFO's text -> {section: {field: value}}, section names lower-case as INFO takes them.

    Numbers become int or float; keyspace lines ("db0:keys=3,expires=0,avg_ttl=0") become
    dicts. Fields before any "# Section" line land in section "".
    """
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply or "")
    sections: dict[str, dict[str, Any]] = {}
    name = ""
    current = sections.setdefault(name, {})
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            name = line[1:].strip().lower()
            current = sections.setdefault(name, {})
            continue
        field, sep, value = line.partition(":")
        if not sep:
            continue
        if name == "keyspace":
            current[field] = {
                k: _info_value(v) for k, _, v in (item.partition("=") for item in value.split(","))
            }
        else:
            current[field] = _info_value(value)
    if not sections[""]:
        del sections[""]
    return sections


# ---------------------------------------------------------------------- builders


def get(key: Data, consistency: Consistency | None = None) -> Request[bytes | None]:
    return Request("GET", (b"GET", encode(key)), True, _optional_bytes, consistency)


def _value_condition(if_eq: Data | None, if_ne: Data | None, if_digest_eq: Data | None,
                     if_digest_ne: Data | None) -> list[bytes]:
    """Redis 8.4's IFEQ / IFNE / IFDEQ / IFDNE and its argument, or nothing; at most one."""
    given = [(option, match) for option, match in
             ((b"IFEQ", if_eq), (b"IFNE", if_ne), (b"IFDEQ", if_digest_eq), (b"IFDNE", if_digest_ne))
             if match is not None]
    if len(given) > 1:
        raise ValueError("if_eq, if_ne, if_digest_eq and if_digest_ne exclude each other")
    if not given:
        return []
    option, match = given[0]
    if option in (b"IFEQ", b"IFNE"):
        return [option, encode(match, "the value to compare with")]
    digest = encode(match, "digest")
    if _DIGEST.fullmatch(digest) is None:
        # Any other string would never equal a digest: the condition would silently never hold.
        raise ValueError(f"a digest is 16 hex digits, as digest() returns, got {digest[:40]!r}")
    return [option, digest.lower()]


def set_(
    key: Data,
    value: Data,
    ttl_s: float | None = None,
    ttl_ms: int | None = None,
    if_not_exists: bool = False,
    if_exists: bool = False,
    consistency: Consistency | None = None,
    *,
    if_eq: Data | None = None,
    if_ne: Data | None = None,
    if_digest_eq: Data | None = None,
    if_digest_ne: Data | None = None,
) -> Request[bool]:
    if if_not_exists and if_exists:
        raise ValueError("if_not_exists and if_exists exclude each other")
    compare = _value_condition(if_eq, if_ne, if_digest_eq, if_digest_ne)
    if compare and (if_not_exists or if_exists):
        raise ValueError("if_not_exists / if_exists and a value condition (if_eq, ...) exclude each other")
    args: list[bytes | int] = [b"SET", encode(key), encode(value, "value")]
    ms = _ttl_ms(ttl_s, ttl_ms)
    if ms is not None:
        args += [b"PX", ms]
    if if_not_exists:
        args.append(b"NX")
    elif if_exists:
        args.append(b"XX")
    args += compare
    conditional = if_not_exists or if_exists or bool(compare)
    # A conditional SET is a read-modify-write: resent after it was applied, NX would answer
    # "not written" for the caller's own write.
    return Request("SET", tuple(args), not conditional, _ok, consistency)


def _version_arg(version: Data | int | None, what: str) -> bytes:
    """A version for RINGKV.CAS / CAD: the bytes a read returned, or a version number (an int,
    sent as decimal digits); None (no live value) is sent as the empty string."""
    if version is None:
        return b""
    if isinstance(version, int) and not isinstance(version, bool):
        if version < 0:
            raise ValueError(f"{what} is {version}; version numbers are >= 0")
        return b"%d" % version
    data = encode(version, what)
    if not data:
        # On the wire the empty string means "no live value": make the caller say so with None.
        raise ValueError(f"{what} is empty: pass the version a read returned, or None for a key with no live value")
    return data


def _cas_result(reply: Any) -> CasResult:
    applied, version = reply
    return CasResult(bool(int(applied)), None if version is None else bytes(version))


def cas(
    key: Data,
    expected_version: Data | int | None,
    new_value: Data,
    ttl_s: float | None = None,
    ttl_ms: int | None = None,
    consistency: Consistency | None = None,
) -> Request[CasResult]:
    args: list[bytes | int] = [b"RINGKV.CAS", encode(key), _version_arg(expected_version, "expected_version"),
                               encode(new_value, "value")]
    ms = _ttl_ms(ttl_s, ttl_ms)
    if ms is not None:
        args += [b"PX", ms]
    # Never resent: a copy arriving after the first was applied finds the version changed (by
    # itself) and answers "not applied" for a write that was made.
    return Request("RINGKV.CAS", tuple(args), False, _cas_result, consistency)


def cad(key: Data, expected_version: Data | int, consistency: Consistency | None = None) -> Request[bool]:
    if expected_version is None:
        raise ValueError("cad needs the version a read returned: a key with no live value has nothing to delete")
    args = (b"RINGKV.CAD", encode(key), _version_arg(expected_version, "expected_version"))
    return Request("RINGKV.CAD", args, False, _flag, consistency)


def delex(
    key: Data,
    consistency: Consistency | None = None,
    *,
    if_eq: Data | None = None,
    if_ne: Data | None = None,
    if_digest_eq: Data | None = None,
    if_digest_ne: Data | None = None,
) -> Request[bool]:
    compare = _value_condition(if_eq, if_ne, if_digest_eq, if_digest_ne)
    # Without a condition DELEX is DEL of one key, safe to resend; with one, a resent copy
    # would find the key gone and answer "not deleted" for the caller's own delete.
    return Request("DELEX", (b"DELEX", encode(key), *compare), not compare, _flag, consistency)


def _digest(reply: Any) -> str | None:
    return None if reply is None else bytes(reply).decode("ascii")


def digest(key: Data, consistency: Consistency | None = None) -> Request[str | None]:
    return Request("DIGEST", (b"DIGEST", encode(key)), True, _digest, consistency)


def get_versions(key: Data, consistency: Consistency | None = None) -> Request[Versions]:
    return Request("RINGKV.GETV", (b"RINGKV.GETV", encode(key)), True, parse_versions, consistency)


def _context_args(context: Data | None) -> list[bytes | int]:
    if context is None:
        return []
    data = encode(context, "context")
    if not data:
        # The node would refuse it; None is how a blind write is asked for.
        raise ValueError("context is empty: pass the context a read returned, or None for a blind write")
    return [b"CONTEXT", data]


def put_versioned(
    key: Data,
    value: Data,
    context: Data | None = None,
    ttl_s: float | None = None,
    ttl_ms: int | None = None,
    consistency: Consistency | None = None,
) -> Request[bytes]:
    args: list[bytes | int] = [b"RINGKV.PUTV", encode(key), encode(value, "value"), *_context_args(context)]
    ms = _ttl_ms(ttl_s, ttl_ms)
    if ms is not None:
        args += [b"PX", ms]
    return Request("RINGKV.PUTV", tuple(args), False, _context, consistency)


def delete_versioned(
    key: Data, context: Data | None = None, consistency: Consistency | None = None
) -> Request[bytes]:
    args = (b"RINGKV.DELV", encode(key), *_context_args(context))
    return Request("RINGKV.DELV", args, False, _context, consistency)


def resolved_write(
    key: Data, versions: Versions, resolved: Any, consistency: Consistency | None = None
) -> tuple[bytes, Request[bytes]]:
    """The value a resolver returned for `versions`' siblings, and the write that replaces
    them with it (their context; the TTL of `Versions.resolved_ttl_ms`)."""
    value = encode(resolved, "the resolver's result")
    write = put_versioned(key, value, versions.context, ttl_ms=versions.resolved_ttl_ms(), consistency=consistency)
    return value, write


def delete(keys: Iterable[Data], consistency: Consistency | None = None) -> Request[int]:
    # Resending DEL leaves the same state; only the count it returns may then be lower.
    encoded = _keys(keys)
    return Request("DEL", (b"DEL", *encoded) if encoded else (), True, _count, consistency)


def exists(keys: Iterable[Data], consistency: Consistency | None = None) -> Request[int]:
    encoded = _keys(keys)
    return Request("EXISTS", (b"EXISTS", *encoded) if encoded else (), True, _count, consistency)


def incr(key: Data, delta: int = 1, consistency: Consistency | None = None) -> Request[int]:
    if type(delta) is not int or not _INT64_MIN <= delta <= _INT64_MAX:
        raise ValueError(f"delta must be a 64-bit signed integer, got {delta!r}")
    return Request("INCRBY", (b"INCRBY", encode(key), delta), False, _integer, consistency)


def incr_float(key: Data, delta: float, consistency: Consistency | None = None) -> Request[float]:
    if not _is_number(delta) or not math.isfinite(delta):
        raise ValueError(f"delta must be a finite number, got {delta!r}")
    return Request(
        "INCRBYFLOAT", (b"INCRBYFLOAT", encode(key), repr(float(delta)).encode()), False, _float,
        consistency,
    )


def append(key: Data, value: Data, consistency: Consistency | None = None) -> Request[int]:
    return Request("APPEND", (b"APPEND", encode(key), encode(value, "value")), False, _integer,
                   consistency)


def expire(key: Data, ttl_s: float, consistency: Consistency | None = None) -> Request[bool]:
    if not _is_number(ttl_s) or not math.isfinite(ttl_s):
        raise ValueError(f"ttl_s must be a number of seconds, got {ttl_s!r}")
    # PEXPIRE keeps sub-second TTLs. As in Redis, ttl_s <= 0 deletes the key. Resending it is
    # harmless: the expiry is set again, counted from the later arrival.
    ms = math.ceil(ttl_s * 1000) if ttl_s > 0 else math.floor(ttl_s * 1000)
    return Request("PEXPIRE", (b"PEXPIRE", encode(key), ms), True, _flag, consistency)


def persist(key: Data, consistency: Consistency | None = None) -> Request[bool]:
    return Request("PERSIST", (b"PERSIST", encode(key)), True, _flag, consistency)


def ttl(key: Data, consistency: Consistency | None = None) -> Request[float | None]:
    return Request("PTTL", (b"PTTL", encode(key)), True, _seconds_left, consistency)


def mget(keys: Iterable[Data], consistency: Consistency | None = None) -> Request[list[bytes | None]]:
    encoded = _keys(keys)
    return Request("MGET", (b"MGET", *encoded) if encoded else (), True, _values, consistency)


def mset(
    pairs: Mapping[Data, Data] | Iterable[tuple[Data, Data]],
    consistency: Consistency | None = None,
) -> Request[None]:
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    args: list[bytes | int] = []
    for key, value in items:
        args += [encode(key), encode(value, "value")]
    return Request("MSET", (b"MSET", *args) if args else (), True, _none, consistency)


def _hash_tag(key: bytes) -> bytes | None:
    """Redis Cluster's hash tag of a key (the node's rule, cluster/ring.hash_part): the bytes
    between the first `{` and the next `}`, when there is at least one; else None."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return None


def msetnx(
    pairs: Mapping[Data, Data] | Iterable[tuple[Data, Data]],
    consistency: Consistency | None = None,
) -> Request[bool]:
    """MSETNX: every pair or none, only if no key exists. Several keys must share one hash tag
    (`{user1}:a`, `{user1}:b`): the node runs them as one consensus round of the tag's
    register; keys of several tags are refused here, before sending, as the node would refuse
    them (CROSSSLOT)."""
    items = list(pairs.items() if isinstance(pairs, Mapping) else pairs)
    args: list[bytes | int] = []
    keys: list[bytes] = []
    for key, value in items:
        k = encode(key)
        keys.append(k)
        args += [k, encode(value, "value")]
    distinct = list(dict.fromkeys(keys))
    if len(distinct) > 1:
        tags = {_hash_tag(k) for k in distinct}
        if None in tags or len(tags) > 1:
            other = next(k for k in distinct if _hash_tag(k) != _hash_tag(distinct[0]) or _hash_tag(k) is None)
            raise ValueError(
                "CROSSSLOT Keys in request don't hash to the same slot: MSETNX of several keys needs keys of "
                f"one hash tag ({{tag}}: '{{user1}}:a' and '{{user1}}:b' share 'user1'); {distinct[0]!r} and "
                f"{other!r} do not")
    # Not resent: a second copy would find the first copy's keys and answer False.
    return Request("MSETNX", (b"MSETNX", *args) if args else (), False, _flag, consistency)


def mset_atomic(
    pairs: Mapping[Data, Data] | Iterable[tuple[Data, Data]],
    consistency: Consistency | None = None,
) -> Request[list[bytes]]:
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    args: list[bytes | int] = []
    for key, value in items:
        args += [encode(key), encode(value, "value")]
    # Resent like MSET: a second copy is a second batch with the same values.
    return Request("RINGKV.MSETATOMIC", (b"RINGKV.MSETATOMIC", *args) if args else (), True, _pending_keys,
                   consistency)


def _pending_keys(reply: Any) -> list[bytes]:
    if reply is None:  # no pairs: nothing sent
        return []
    _, pending = reply
    return [bytes(k) for k in pending]


def scan_page(cursor: int, match: Data | None = None, count: int = 100) -> Request[tuple[int, list[bytes]]]:
    """One SCAN page. Resending a page is safe: the cursor is a position in the key space, so
    it stays valid whatever happens between calls."""
    if type(count) is not int or not 1 <= count <= MAX_SCAN_COUNT:
        raise ValueError(f"count must be an integer 1..{MAX_SCAN_COUNT}, got {count!r}")
    args: list[bytes | int] = [b"SCAN", cursor, b"COUNT", count]
    if match is not None:
        args += [b"MATCH", encode(match, "match pattern")]
    return Request("SCAN", tuple(args), True, _scan_page)


def dbsize() -> Request[int]:
    return Request("DBSIZE", (b"DBSIZE",), True, _integer)


def info(section: str | None = None) -> Request[dict[str, dict[str, Any]]]:
    args: tuple[bytes | int, ...] = (b"INFO",) if section is None else (b"INFO", encode(section, "section"))
    return Request("INFO", args, True, parse_info)


def ping() -> Request[bool]:
    return Request("PING", (b"PING",), True, _pong)


def ring_map() -> Request[Any]:
    """RINGKV.RING: the client's namespace's partitions and their replicas (client/routing.py)."""
    return Request("RINGKV.RING", (b"RINGKV.RING",), True, _json)


def _json(reply: Any) -> Any:
    return json.loads(reply)
