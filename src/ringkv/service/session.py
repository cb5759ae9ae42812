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
of the key is known to hold the requirement (a write acknowledged by all N home replicas
themselves, a session read that all N answered alike; at any level, and often known only after
the answer: node/session_reads.Settler marks it then), so a read at any level finds it without
the entry. When none is
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

What a token costs, and the caches that keep it small (docs/benchmarks/ycsb.md, "Sessions"):
a token travels on every request of a client that moves between connections, so decoding and
encoding it must not cost hundreds of microseconds of Python per request.
- `SessionToken` keeps its encoded text until it changes (`_encoded`), and each entry keeps its
  own msgpack form (`Requirement.packed`, under the token's actor table), so encoding a token
  that changed in one entry packs that entry only; the rest is a join, an HMAC and base64.
- `Requirement`s are immutable (a change makes a new one), so a copy of a token is a copy of
  two dicts that share the entries: cheap.
- `SessionCodec` keeps, per token text it issued or checked, a copy of the token
  (`cache_max_bytes` of token text, least recently used dropped first). A resume with a text
  this node gave out or took in a moment ago is a dict lookup and a copy, not a MAC check and
  a decode; the text was checked (MAC, bounds) when it entered the cache.

Contract: pure, no IO, no clock. A `SessionToken` belongs to one session and is changed only
by the event loop serving it; a `SessionCodec` is used by one event loop (neither is
thread-safe).
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
# Token text the codec's cache holds (SessionCodec): about 600 tokens at their default bound,
# each held as a copy of the token; entries are shared between successive versions of one
# session's token, so the memory is a small multiple of this.
DEFAULT_SESSION_TOKEN_CACHE_MAX_BYTES = 2 << 20

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
    """One key's entry: the clock reads must descend, and whether every home replica holds it.

    Immutable once in a token (a change makes a new one): copies of a token share entries.
    `packed` caches the entry's msgpack form under the actor table `packed_for` (identity)."""

    __slots__ = ("clock", "packed", "packed_for", "settled")

    def __init__(self, clock: dict[bytes, int], settled: bool = False):
        self.clock = clock
        self.settled = settled
        self.packed: bytes | None = None
        self.packed_for: tuple[bytes, ...] | None = None

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

    __slots__ = ("_actor_index", "_actor_refs", "_actors", "_body_bytes", "_encoded", "_settled", "degraded",
                 "entries", "max_keys", "max_token_bytes")

    def __init__(self, max_keys: int = DEFAULT_SESSION_MAX_KEYS,
                 max_token_bytes: int = DEFAULT_SESSION_MAX_TOKEN_BYTES):
        # digest -> entry, least recently used first (a dict: insertion ordered, and copied
        # faster than an OrderedDict)
        self.entries: dict[int, Requirement] = {}
        self.degraded = False
        self.max_keys = max_keys
        self.max_token_bytes = max_token_bytes
        self._actor_refs: dict[bytes, int] = {}  # actor -> entries naming it
        self._body_bytes = _BODY_OVERHEAD_BYTES  # an upper bound of the encoded body's size
        # The actor table of the encoding (sorted actors) and each actor's index in it; None
        # when the set of actors changed since it was last built (_table).
        self._actors: tuple[bytes, ...] | None = None
        self._actor_index: dict[bytes, int] = {}
        # The token's text as last encoded or decoded, None once the token changed since:
        # encoding an unchanged token costs nothing, and the RESP API tells a client whose
        # token did not change so (RINGKV.SESSION TOKEN CHANGED) instead of sending it again.
        self._encoded: bytes | None = None
        self._settled = 0  # entries settled: when none is, eviction need not look for one

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def unchanged(self) -> bool:
        """Whether the token is as it was when last encoded or decoded (its text known)."""
        return self._encoded is not None

    def encoded_as(self, text: bytes) -> bool:
        """Whether `text` (stripped) is this token's text as last encoded or decoded."""
        return self._encoded is not None and self._encoded == text.strip()

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

    def settle(self, skey: bytes, clock: Mapping[bytes, int]) -> None:
        """Every home replica of `skey` is now known to hold `clock` (learned after the
        request's answer: node/session_reads.Settler): the key's entry becomes settled if
        `clock` covers what it requires. Its place and its size stay as they were."""
        digest = key_digest(skey)
        entry = self.entries.get(digest)
        if entry is None or entry.settled or not dvv.descends(clock, entry.clock):
            return
        self.entries[digest] = Requirement(entry.clock, True)
        self._settled += 1
        self._encoded = None

    def _take(self, digest: int, clock: dict[bytes, int], settled: bool) -> None:
        entries = self.entries
        entry = entries.get(digest)
        if entry is None:
            entries[digest] = Requirement(clock, settled)
            self._account(clock, 1)
            self._settled += settled
            self._encoded = None
            return
        joined = dvv.join(entry.clock, clock)
        # Settled only if every home replica holds the whole join: what was settled and is
        # not grown, or what this observation settles and covers all of.
        grown = joined != entry.clock
        now_settled = (entry.settled and not grown) or (settled and dvv.descends(clock, joined))
        if grown or now_settled != entry.settled:
            if grown:
                self._account(entry.clock, -1)
                self._account(joined, 1)
            entries[digest] = Requirement(joined if grown else entry.clock, now_settled)  # keeps its place
            self._settled += now_settled - entry.settled
            self._encoded = None
        # Already the most recently used (a session reading one key again and again): the
        # order, so the token's text, stays as it is.
        if next(reversed(entries)) != digest:
            entries[digest] = entries.pop(digest)
            self._encoded = None

    def _account(self, clock: Mapping[bytes, int], sign: int) -> None:
        refs = self._actor_refs
        size = _ENTRY_BYTES + _PAIR_BYTES * len(clock)
        for actor, counter in clock.items():
            size += _int_bytes(counter)
            n = refs.get(actor, 0) + sign
            if n == 0:
                del refs[actor]
                size += len(actor) + _ACTOR_OVERHEAD_BYTES
                self._actors = None
            else:
                if n == 1 and sign > 0:
                    size += len(actor) + _ACTOR_OVERHEAD_BYTES
                    self._actors = None
                refs[actor] = n
        self._body_bytes += sign * size

    def merge(self, other: SessionToken) -> None:
        """Take in everything `other` requires (two tokens of one user, joined)."""
        for digest, entry in other.entries.items():
            self._take(digest, dict(entry.clock), entry.settled)
        if other.degraded and not self.degraded:
            self.degraded = True
            self._encoded = None
        self._bound()

    def _evict_one(self) -> None:
        victim = next((d for d, e in self.entries.items() if e.settled), None) if self._settled else None
        if victim is None:
            victim = next(iter(self.entries))
            self.degraded = True
        entry = self.entries.pop(victim)
        self._account(entry.clock, -1)
        self._settled -= entry.settled
        self._encoded = None

    def _bound(self) -> None:
        while len(self.entries) > self.max_keys:
            self._evict_one()
        while len(self.entries) > 1 and encoded_length(self._body_bytes) > self.max_token_bytes:
            self._evict_one()

    def copy(self) -> SessionToken:
        """An independent token equal to this one. Cheap: entries are immutable and shared."""
        out = SessionToken(self.max_keys, self.max_token_bytes)
        out.entries = dict(self.entries)
        out.degraded = self.degraded
        out._actor_refs = dict(self._actor_refs)
        out._body_bytes = self._body_bytes
        out._settled = self._settled
        out._actors = self._actors  # a tuple and a dict never changed once built: shared
        out._actor_index = self._actor_index
        out._encoded = self._encoded
        return out

    def _table(self) -> tuple[bytes, ...]:
        """The encoding's actor table, built again only when the set of actors changed; a new
        table is a new tuple, so entries packed under the old one are packed again."""
        table = self._actors
        if table is None:
            table = self._actors = tuple(sorted(self._actor_refs))
            self._actor_index = {actor: i for i, actor in enumerate(table)}
        return table


def _int_bytes(n: int) -> int:
    """msgpack's size of a positive int."""
    return 1 if n < 128 else 2 if n < 256 else 3 if n < 65536 else 5 if n < 1 << 32 else 9


def _array_header(n: int) -> bytes:
    """msgpack's header of an array of `n` items (fixarray, array 16 or array 32)."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _body(token: SessionToken) -> bytes:
    """The msgpack body, assembled from each entry's cached msgpack form (see the module
    docstring): the same document msgspec would write for `[flags, actors, entries]`."""
    table = token._table()
    index = token._actor_index
    # A comprehension, not a loop of appends: this runs over every entry on every encode.
    packed = [entry.packed if entry.packed_for is table else _pack(digest, entry, table, index)
              for digest, entry in token.entries.items()]
    return b"".join((b"\x93", bytes((_FLAG_DEGRADED if token.degraded else 0,)), _encoder.encode(table),
                     _array_header(len(packed)), *packed))


def _pack(digest: int, entry: Requirement, table: tuple[bytes, ...], index: dict[bytes, int]) -> bytes:
    """An entry's msgpack form `[digest, [[actor index, counter], ...], settled]`, kept in it."""
    packed = entry.packed = _encoder.encode(
        (digest, [(index[actor], counter) for actor, counter in entry.clock.items()], entry.settled))
    entry.packed_for = table
    return packed


def encoded_length(body_bytes: int) -> int:
    """The length of a token whose body is `body_bytes` long (base64url, no padding)."""
    raw = _HEADER_BYTES + body_bytes + MAC_BYTES
    return (raw * 4 + 2) // 3


class SessionCodec:
    """Encodes and checks tokens under one cluster's key (see the module docstring)."""

    __slots__ = ("_cache", "_cache_bytes", "_key", "cache_max_bytes", "key_id", "max_keys", "max_token_bytes")

    def __init__(self, cluster_name: str, secret: bytes | None = None, *,
                 max_keys: int = DEFAULT_SESSION_MAX_KEYS,
                 max_token_bytes: int = DEFAULT_SESSION_MAX_TOKEN_BYTES,
                 cache_max_bytes: int = DEFAULT_SESSION_TOKEN_CACHE_MAX_BYTES):
        material = secret if secret else cluster_name.encode()
        self._key = hmac.new(material, b"ringkv session token key\x00" + cluster_name.encode(),
                             hashlib.sha256).digest()
        self.key_id = hmac.new(self._key, b"key id", hashlib.sha256).digest()[:KEY_ID_BYTES]
        self.max_keys = max_keys
        self.max_token_bytes = max_token_bytes
        # token text -> a copy of the token it encodes, least recently used first; the texts'
        # lengths add up to _cache_bytes <= cache_max_bytes (0: no cache).
        self.cache_max_bytes = cache_max_bytes
        self._cache: OrderedDict[bytes, SessionToken] = OrderedDict()
        self._cache_bytes = 0

    def new(self) -> SessionToken:
        return SessionToken(self.max_keys, self.max_token_bytes)

    def encode(self, token: SessionToken) -> str:
        return self.encode_bytes(token).decode("ascii")

    def encode_bytes(self, token: SessionToken) -> bytes:
        """The token's text (ASCII), encoded again only if the token changed since it was last
        encoded or decoded."""
        text = token._encoded
        if text is None:
            signed = bytes((FORMAT_VERSION,)) + self.key_id + _body(token)
            mac = hmac.new(self._key, signed, hashlib.sha256).digest()[:MAC_BYTES]
            text = token._encoded = base64.urlsafe_b64encode(signed + mac).rstrip(b"=")
            self._remember(text, token)
        return text

    def _remember(self, text: bytes, token: SessionToken) -> None:
        if len(text) > self.cache_max_bytes:
            return
        cache = self._cache
        old = cache.pop(text, None)
        if old is None:
            self._cache_bytes += len(text)
        cache[text] = token.copy()
        while self._cache_bytes > self.cache_max_bytes:
            self._cache_bytes -= len(cache.popitem(last=False)[0])

    def decode(self, text: str | bytes) -> SessionToken:
        """The token `text` encodes; SessionError naming what is wrong otherwise."""
        if isinstance(text, str):
            text = text.encode("ascii", "replace")
        text = bytes(text.strip())  # a cache key: immutable
        if len(text) > self.max_token_bytes:
            raise SessionError(f"the token is {len(text)} bytes, over session_max_token_bytes="
                               f"{self.max_token_bytes}")
        cached = self._cache.get(text)
        if cached is not None:
            # Checked when it entered the cache; the cache's copy stays as it is.
            self._cache.move_to_end(text)
            return cached.copy()
        token = self._decode(text)
        if token._encoded is not None:
            self._remember(text, token)
        return token

    def _decode(self, text: bytes) -> SessionToken:
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
        kept = len(token.entries)
        token._bound()
        if len(token.entries) == kept:
            token._encoded = text  # the token is what `text` says: no need to encode it again
        return token
