"""Session tokens: what one client session wrote and read, so that its reads never go back.

A session (docs/consistency.md, "Sessions") promises read-your-writes and monotonic reads for
the keys it touches, at any consistency level. `SessionToken` is its memory: for each key the
session wrote or read, the *requirement*, a version vector that every later read of the key
in the session must descend (the clock of the record the write made, or the read returned).
A replica whose record's clock descends the requirement has seen everything the session saw
of the key; the coordinator looks for one (node/session_reads.py).

Keys are held by a 64-bit digest of (namespace, key) (xxh3_64 of the storage key), so a token
never holds key bytes. Two keys of one token sharing a digest (about 1 in 10^13 at 1024
entries) share a requirement, the join of both: never a missed guarantee, at worst a read that
waits for a version its key will never have and answers the session error.

Bounds, with their reasons:
- `max_keys` entries (the `session_max_keys` setting), least recently used evicted first;
- `max_token_bytes`, the encoded token's length (`session_max_token_bytes`): tokens travel in
  an HTTP header and on every RESP resume.
When an entry must go, the oldest *settled* one goes first: settled means every home replica
of the key is known to hold the requirement (a write acknowledged by all N, a session read that
all N answered with it), so a read at any level finds it without the entry. When none is
settled, the oldest entry goes and the token becomes *degraded*: from then on a read of a key
with no entry is made at QUORUM at least (or the asked level when higher). What stays
guaranteed when degraded is written in docs/consistency.md.

The encoded form (docs/consistency.md, "The token's format"):

    base64url( FORMAT_VERSION u8 ‖ key id (4 bytes) ‖ msgpack body ‖ HMAC-SHA256 (first 16 bytes) )

with body `[flags, [actor, ...], [[digest u64, [[actor index, counter], ...], settled], ...]]`,
entries oldest first. The MAC is over everything before it, under a key derived from the
cluster secret when one is configured, else from the cluster name; the key id (the first
4 bytes of HMAC(key, "key id")) tells a token of another cluster (or another secret) from an
altered one. Without a cluster secret the MAC still refuses altered, truncated and foreign
tokens, but anyone who knows the cluster name could make a token; such a token can only
make its own session's reads wait and fail (never read data it may not), so the cluster name
is an acceptable key for that. Configure a cluster secret to make tokens unforgeable.

Contract: pure, no IO, no clock. A `SessionToken` belongs to one session and is changed only
by the event loop serving it (not thread-safe).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping

import msgspec
from xxhash import xxh3_64_intdigest

from ringkv.errors import CommandError
from ringkv.versioning import dvv

FORMAT_VERSION = 1
MAC_BYTES = 16
KEY_ID_BYTES = 4
DEFAULT_SESSION_MAX_KEYS = 128
DEFAULT_SESSION_MAX_TOKEN_BYTES = 4096
MIN_SESSION_MAX_TOKEN_BYTES = 256  # an empty token and one small entry must fit
MAX_SESSION_MAX_KEYS = 65_536
MAX_SESSION_MAX_TOKEN_BYTES = 1 << 20

_FLAG_DEGRADED = 1
_HEADER_BYTES = 1 + KEY_ID_BYTES

# body: [flags, actors, entries]; an entry: [digest, [[actor index, counter], ...], settled]
_Pair = tuple[int, int]
_Entry = tuple[int, list[_Pair], bool]
_Body = tuple[int, list[bytes], list[_Entry]]
_decoder = msgspec.msgpack.Decoder(_Body)
_encoder = msgspec.msgpack.Encoder()


class SessionError(CommandError):
    """A session token refused (altered, of another cluster, over a bound), or a session read
    that found no replica holding what the session saw. RESP `-ERR session: ...`, HTTP 400 or
    503."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(f"session: {message}", "ERR", status)


def key_digest(skey: bytes) -> int:
    """The digest a token holds a key by: xxh3_64 of its storage key (namespace and key)."""
    return xxh3_64_intdigest(skey)


class Requirement:
    """One key's entry: the clock reads must descend, and whether every home replica holds it."""

    __slots__ = ("clock", "settled")

    def __init__(self, clock: dict[bytes, int], settled: bool = False):
        self.clock = clock
        self.settled = settled

    def __repr__(self) -> str:
        return f"Requirement({self.clock!r}, settled={self.settled})"


# Upper bounds of the msgpack sizes a token's body is made of, so that the byte bound is
# kept without encoding the token on every change: an entry's array header, digest (uint64)
# and settled flag; one (actor index, counter) pair; one actor of the actor table (bin header).
_ENTRY_BYTES = 1 + 9 + 3 + 1
_PAIR_BYTES = 1 + 3  # and the counter's own size (_int_bytes)
_ACTOR_OVERHEAD_BYTES = 2
_BODY_OVERHEAD_BYTES = 1 + 1 + 3 + 3  # the body's array, flags, the two lists' headers


class SessionToken:
    """The mutable memory of one session (see the module docstring)."""

    __slots__ = ("_actor_refs", "_body_bytes", "degraded", "entries", "max_keys", "max_token_bytes")

    def __init__(self, max_keys: int = DEFAULT_SESSION_MAX_KEYS,
                 max_token_bytes: int = DEFAULT_SESSION_MAX_TOKEN_BYTES):
        self.entries: OrderedDict[int, Requirement] = OrderedDict()  # digest -> entry, oldest first
        self.degraded = False
        self.max_keys = max_keys
        self.max_token_bytes = max_token_bytes
        self._actor_refs: dict[bytes, int] = {}  # actor -> entries naming it
        self._body_bytes = _BODY_OVERHEAD_BYTES  # an upper bound of the encoded body's size

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def bound_bytes(self) -> int:
        """An upper bound of the encoded token's length (what the byte bound is kept on)."""
        return encoded_length(self._body_bytes)

    def required(self, skey: bytes) -> dict[bytes, int] | None:
        """The clock a read of `skey` must descend (None: no requirement)."""
        entry = self.entries.get(key_digest(skey))
        return None if entry is None else entry.clock

    def satisfied_by(self, skey: bytes, clock: Mapping[bytes, int]) -> bool:
        required = self.required(skey)
        return required is None or dvv.descends(clock, required)

    def observe(self, skey: bytes, clock: Mapping[bytes, int] | None, settled: bool = False) -> None:
        """The session wrote or read `skey` and saw `clock` (None or empty: no record, nothing
        to require). The entry becomes the join of what it held and `clock`, the most recently
        used; `settled` when every home replica is known to hold `clock`."""
        if not clock:
            return
        self._take(key_digest(skey), dict(clock), settled)
        self._bound()

    def _take(self, digest: int, clock: dict[bytes, int], settled: bool) -> None:
        entry = self.entries.get(digest)
        if entry is None:
            self.entries[digest] = Requirement(clock, settled)
            self._account(clock, 1)
            return
        joined = dvv.join(entry.clock, clock)
        # Settled only if every home replica holds the whole join: what was settled and is
        # not grown, or what this observation settles and covers all of.
        grown = joined != entry.clock
        entry.settled = (entry.settled and not grown) or (settled and dvv.descends(clock, joined))
        if grown:
            self._account(entry.clock, -1)
            self._account(joined, 1)
            entry.clock = joined
        self.entries.move_to_end(digest)

    def _account(self, clock: Mapping[bytes, int], sign: int) -> None:
        refs = self._actor_refs
        size = _ENTRY_BYTES + _PAIR_BYTES * len(clock)
        for actor, counter in clock.items():
            size += _int_bytes(counter)
            n = refs.get(actor, 0) + sign
            if n == 0:
                del refs[actor]
                size += len(actor) + _ACTOR_OVERHEAD_BYTES
            else:
                if n == 1 and sign > 0:
                    size += len(actor) + _ACTOR_OVERHEAD_BYTES
                refs[actor] = n
        self._body_bytes += sign * size

    def merge(self, other: SessionToken) -> None:
        """Take in everything `other` requires (two tokens of one user, joined)."""
        for digest, entry in other.entries.items():
            self._take(digest, dict(entry.clock), entry.settled)
        self.degraded = self.degraded or other.degraded
        self._bound()

    def _evict_one(self) -> None:
        victim = next((d for d, e in self.entries.items() if e.settled), None)
        if victim is None:
            victim = next(iter(self.entries))
            self.degraded = True
        self._account(self.entries.pop(victim).clock, -1)

    def _bound(self) -> None:
        while len(self.entries) > self.max_keys:
            self._evict_one()
        while len(self.entries) > 1 and encoded_length(self._body_bytes) > self.max_token_bytes:
            self._evict_one()

    def copy(self) -> SessionToken:
        out = SessionToken(self.max_keys, self.max_token_bytes)
        out.degraded = self.degraded
        for digest, entry in self.entries.items():
            out._take(digest, dict(entry.clock), entry.settled)
        return out


def _int_bytes(n: int) -> int:
    """msgpack's size of a positive int."""
    return 1 if n < 128 else 2 if n < 256 else 3 if n < 65536 else 5 if n < 1 << 32 else 9


def _body(token: SessionToken) -> bytes:
    actors: dict[bytes, int] = {}
    entries = []
    for digest, entry in token.entries.items():
        pairs = [[actors.setdefault(actor, len(actors)), counter] for actor, counter in entry.clock.items()]
        entries.append([digest, pairs, entry.settled])
    return _encoder.encode([_FLAG_DEGRADED if token.degraded else 0, list(actors), entries])


def encoded_length(body_bytes: int) -> int:
    """The length of a token whose body is `body_bytes` long (base64url, no padding)."""
    raw = _HEADER_BYTES + body_bytes + MAC_BYTES
    return (raw * 4 + 2) // 3


class SessionCodec:
    """Encodes and checks tokens under one cluster's key (see the module docstring)."""

    __slots__ = ("_key", "key_id", "max_keys", "max_token_bytes")

    def __init__(self, cluster_name: str, secret: bytes | None = None, *,
                 max_keys: int = DEFAULT_SESSION_MAX_KEYS,
                 max_token_bytes: int = DEFAULT_SESSION_MAX_TOKEN_BYTES):
        material = secret if secret else cluster_name.encode()
        self._key = hmac.new(material, b"ringkv session token key\x00" + cluster_name.encode(),
                             hashlib.sha256).digest()
        self.key_id = hmac.new(self._key, b"key id", hashlib.sha256).digest()[:KEY_ID_BYTES]
        self.max_keys = max_keys
        self.max_token_bytes = max_token_bytes

    def new(self) -> SessionToken:
        return SessionToken(self.max_keys, self.max_token_bytes)

    def encode(self, token: SessionToken) -> str:
        signed = bytes((FORMAT_VERSION,)) + self.key_id + _body(token)
        mac = hmac.new(self._key, signed, hashlib.sha256).digest()[:MAC_BYTES]
        return base64.urlsafe_b64encode(signed + mac).rstrip(b"=").decode("ascii")

    def decode(self, text: str | bytes) -> SessionToken:
        """The token `text` encodes; SessionError naming what is wrong otherwise."""
        if isinstance(text, str):
            text = text.encode("ascii", "replace")
        text = text.strip()
        if len(text) > self.max_token_bytes:
            raise SessionError(f"the token is {len(text)} bytes, over session_max_token_bytes="
                               f"{self.max_token_bytes}")
        try:
            raw = base64.b64decode(text + b"=" * (-len(text) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise SessionError("the token is not base64url text; pass back exactly the token "
                               "ringkv gave") from None
        if len(raw) < _HEADER_BYTES + MAC_BYTES:
            raise SessionError(f"the token is {len(raw)} bytes decoded, shorter than any token "
                               f"({_HEADER_BYTES + MAC_BYTES}); pass back exactly the token ringkv gave")
        if raw[0] != FORMAT_VERSION:
            raise SessionError(f"the token has format version {raw[0]}; this node reads version "
                               f"{FORMAT_VERSION}")
        if raw[1:_HEADER_BYTES] != self.key_id:
            raise SessionError("the token was issued by another cluster (or under another cluster "
                               "secret); start a new session", status=400)
        signed, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if not hmac.compare_digest(hmac.new(self._key, signed, hashlib.sha256).digest()[:MAC_BYTES], mac):
            raise SessionError("the token has been altered (its MAC does not match); pass back "
                               "exactly the token ringkv gave")
        try:
            flags, actors, entries = _decoder.decode(signed[_HEADER_BYTES:])
        except msgspec.DecodeError as exc:
            # A valid MAC over a body this build cannot read: a bug, or a newer writer.
            raise SessionError(f"the token's body does not decode: {exc}") from None
        token = self.new()
        token.degraded = bool(flags & _FLAG_DEGRADED)
        for digest, pairs, settled in entries:
            clock: dict[bytes, int] = {}
            for index, counter in pairs:
                if not 0 <= index < len(actors) or not 1 <= counter <= dvv.MAX_COUNTER:
                    raise SessionError("the token's body names an actor or counter out of range")
                clock[actors[index]] = counter
            if clock:
                token._take(digest, dict(sorted(clock.items())), settled)
        # Issued under larger bounds (another node's settings): keep the newest entries.
        token._bound()
        return token
