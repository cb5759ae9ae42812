"""The data service of a node that is a cluster of one: every call on the local replica.

`LocalService` implements `service.KeyValueService` over a `LocalStore`, bound to one
namespace. Every level means "this node" (explicit counts are still checked, so a client
learns at once that r=2 cannot be met). On a single node none of the coroutines suspends
except to wait for an fsync under sync=always, so the adapters run them eagerly: a GET costs
no task and no event-loop round trip. Read-modify-write commands read and write with no await
in between, so the event loop serializes them per key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from ringkv.cluster.hotkeys import WRITE
from ringkv.errors import CommandError, UnknownNamespaceError
from ringkv.node import elements
from ringkv.node.commands import (
    Append,
    Command,
    CompareAndSet,
    Delete,
    DeleteIf,
    ExpireAt,
    GetDel,
    GetEx,
    IncrBy,
    IncrByFloat,
    Put,
    PutVersioned,
    Replace,
    Set,
    TypeWrite,
    entry_of,
    string_value,
    write_command,
)
from ringkv.node.local_store import LocalStore
from ringkv.node.replica import storage_key
from ringkv.service.contract import NamespaceSpec, ServiceLimits
from ringkv.service.datatypes import COMMANDS as TYPE_COMMANDS
from ringkv.service.datatypes.base import KIND_ZSET, Ctx
from ringkv.service.levels import ConsistencyLevel, Levels, parse_level, resolve
from ringkv.service.limits import MAX_KEY_BYTES, MAX_TOKEN
from ringkv.service.session import SessionCodec, SessionToken
from ringkv.service.values import ANY_VERSION, AnyVersion, AtomicWrite, SiblingSet, Value, Written
from ringkv.versioning.dvv import decode_context, encode_context

_LEVELS = Levels(ConsistencyLevel.QUORUM, ConsistencyLevel.QUORUM, False)
# A node of one keeps no requirements in its tokens; they still refuse other clusters' tokens
# (under the default cluster name) and altered ones.
_SESSIONS = SessionCodec("ringkv")


class LocalService:
    __slots__ = ("_ns", "get_value_now", "limits", "namespace", "put_now", "rate_limited", "store")

    def __init__(self, store: LocalStore, namespace: NamespaceSpec | None = None):
        self.store = store
        self.namespace = namespace or store.namespaces.default
        self._ns = self.namespace.stored
        self.limits = ServiceLimits(store.max_value_bytes, store.keys_max_count, store.flush_enabled)
        # The contract's two calls without a coroutine (a plain GET and SET) go straight to the
        # store, bound to this view's namespace: no frame of this view's own on the hottest path.
        self.get_value_now: Callable[[bytes], Any] = partial(store.get_value_now, self._ns)
        self.put_now: Callable[[bytes, bytes], Any] = partial(store.put_now, self._ns)
        self.rate_limited = store.quotas is not None

    # ---------------------------------------------------------------- views

    @property
    def levels(self) -> Levels:
        return _LEVELS

    def at(self, r=None, w=None, strict=None) -> LocalService:
        if r is not None:
            resolve(parse_level(r, "r"), 1, field="r")
        if w is not None:
            resolve(parse_level(w, "w"), 1, field="w")
        return self

    def in_namespace(self, name: str | bytes) -> LocalService:
        try:
            spec = self.store.namespaces.named(name)
        except ValueError as exc:
            raise UnknownNamespaceError(str(exc)) from None
        return self if spec is self.namespace else LocalService(self.store, spec)

    @property
    def sessions(self) -> SessionCodec:
        """Session tokens of a node of one (service/session.py)."""
        return _SESSIONS

    def with_session(self, session: SessionToken | None) -> LocalService:
        """Sessions need nothing here: the one replica holds every write it acknowledged, so
        every read is as new as anything a session wrote or read."""
        return self

    def namespaces(self) -> list[NamespaceSpec]:
        return list(self.store.namespaces)

    def now_ms(self) -> int:
        return self.store.clock.now_ms()

    def admit(self) -> None:
        """Count one client request in this view's namespace (max_requests_per_s, node/quotas.py)."""
        gate = self.store.quotas
        if gate is not None:
            gate.admit(self._ns)

    def _check_batch_quota(self, pairs: list[tuple[bytes, bytes]]) -> None:
        """Refuse a batch that would take the namespace over its key or byte quota as a whole,
        before any of it is written."""
        gate = self.store.quotas
        if gate is not None and self._ns in gate.sized and not gate.batch_upper_bound(self._ns, pairs):
            get = self.store.get_value_now
            gate.check_batch(self._ns, pairs, [get(self._ns, k) for k, _ in pairs])

    # ---------------------------------------------------------------- reads

    def _skey(self, key: bytes) -> bytes:
        if len(key) + len(self._ns) > MAX_KEY_BYTES:
            self.store.check_key(key, self._ns)
        return storage_key(self._ns, key)

    async def get(self, key: bytes) -> Value | None:
        record = self.store.read(self._skey(key))
        if record is None:
            return None
        w = record.winner(self.now_ms())
        if w is None:
            return None
        return Value(string_value(w), w.timestamp, w.expire_at_ms, encode_context(record.clock))

    async def get_value(self, key: bytes) -> bytes | None:
        self._skey(key)  # a key over the limit is refused with its size
        return self.store.get_value_now(self._ns, key)

    async def get_versions(self, key: bytes) -> SiblingSet:
        record = self.store.read(self._skey(key))
        if record is None:
            return SiblingSet([], None)
        sibs = [Value(string_value(s), s.timestamp, s.expire_at_ms, b"") for s in record.live_siblings(self.now_ms())]
        return SiblingSet(sibs, encode_context(record.clock))

    async def hash_field_versions(self, key: bytes, field: bytes) -> SiblingSet:
        self._skey(key)
        values, clock = await elements.field_versions(elements.LocalBackend(self.store), self._ns, key, field,
                                                      self.now_ms())
        return SiblingSet([Value(v, ts, 0, b"") for v, ts in values], None if clock is None else encode_context(clock))

    async def zset_score_versions(self, key: bytes, member: bytes) -> SiblingSet:
        self._skey(key)
        values, clock = await elements.field_versions(elements.LocalBackend(self.store), self._ns, key, member,
                                                      self.now_ms(), KIND_ZSET)
        return SiblingSet([Value(v, ts, 0, b"") for v, ts in values], None if clock is None else encode_context(clock))

    async def exists(self, keys: Iterable[bytes]) -> int:
        winner = self.store.winner
        return sum(winner(self._skey(k)) is not None for k in keys)

    async def mget(self, keys: list[bytes]) -> list[bytes | None]:
        winner = self.store.winner
        out: list[bytes | None] = []
        for k in keys:
            w = winner(self._skey(k))
            out.append(w.value if w is not None and type(w.value) is bytes else None)  # MGET: nil for a non-string
        return out

    async def ttl_ms(self, key: bytes) -> int:
        now = self.now_ms()
        record = self.store.read(self._skey(key))
        w = None if record is None else record.winner(now)
        if w is None:
            return -2
        if not w.expire_at_ms:
            return -1
        return max(0, w.expire_at_ms - now)

    # ---------------------------------------------------------------- data types

    async def type_command(self, name: str, args: list[bytes]) -> Any:
        spec = TYPE_COMMANDS[name]
        keys = spec.keys(args)
        for key in keys:
            self._skey(key)  # every key checked before anything runs
        if name in elements.ELEMENT_COMMANDS or (name in elements.KEYSPACE_WRITES and (
                self._holds_elements(keys) or elements.restores_elements(name, args))):
            return await self._elements(spec, name, args)
        if not spec.write:
            winner = self.store.winner
            hot = self.store.hot_keys
            if len(keys) == 1 and hot.tick():  # a one-key read, as GET's
                hot.count(storage_key(self._ns, keys[0]))
            entries = {key: entry_of(winner(storage_key(self._ns, key))) for key in keys}
            if any(e is not None and elements.not_loaded(e) for e in entries.values()):
                return await self._elements(spec, name, args)  # TYPE, DUMP, ... of a set stored per element
            return spec.run(Ctx(self.now_ms()), args, entries)[1]
        command = TypeWrite(name, tuple(args))
        unique = list(dict.fromkeys(keys))
        if len(unique) == 1:
            return spec.shape(await self._run(unique[0], command))
        # Several keys: decided on what they all hold now, then written with no await between,
        # so no other command on this node sees half of it.
        winner = self.store.winner
        effects, reply = command.apply_many({key: winner(storage_key(self._ns, key)) for key in unique},
                                            self.now_ms())
        for effect in effects.values():
            self.store.check_value(effect.value)
        lsn = 0
        for key, effect in effects.items():
            lsn = self.store.execute(self._ns, key, Replace(effect.value, effect.expire_at_ms))[2] or lsn
        await self.store.durable(lsn)
        return spec.shape(reply)

    async def _elements(self, spec, name: str, args: list[bytes]) -> Any:
        """A command on sets stored one record per element (node/elements.py)."""
        backend = elements.LocalBackend(self.store)
        if not spec.write:
            return await elements.read(backend, self._ns, name, args, self.now_ms())
        held = await elements.LocalLocks.acquire(self.store, [storage_key(self._ns, k) for k in spec.keys(args)])
        try:
            return spec.shape(await elements.run(backend, self._ns, name, args, self.now_ms()))
        finally:
            elements.LocalLocks.release(held)

    def _holds_elements(self, keys: list[bytes]) -> bool:
        now = self.now_ms()
        return any(elements.holds_elements(self.store.read(storage_key(self._ns, k)), now) for k in keys)

    # ---------------------------------------------------------------- writes

    async def _run(self, key: bytes, command: Command) -> Any:
        hot = self.store.hot_keys
        if hot.tick():  # HotKeys.offer, the key built only when it is counted
            hot.count(storage_key(self._ns, key), WRITE)
        result, _, lsn = self.store.execute(self._ns, key, command)
        await self.store.durable(lsn)
        return result

    async def set(self, key: bytes, value: bytes, *, expire_at_ms: int = 0, keep_ttl: bool = False,
                  condition: str | None = None, return_old: bool = False,
                  match: bytes | None = None) -> tuple[bool, bytes | None]:
        return await self._run(key, Set(value, expire_at_ms, keep_ttl, condition, return_old, match))

    async def put(self, key: bytes, value: bytes) -> None:
        await self.store.durable(self.put_now(key, value))

    async def durable(self, lsn: int) -> None:
        await self.store.durable(lsn)

    async def put_versioned(self, key: bytes, value: bytes | None, context: bytes | None, *,
                            expire_at_ms: int = 0) -> bytes:
        if context:
            decode_context(context)  # a bad context fails before anything is read
        return await self._run(key, PutVersioned(value, context, expire_at_ms))

    async def mset(self, pairs: list[tuple[bytes, bytes]]) -> None:
        lsn = 0
        unique = self.store.check_pairs(pairs, self._ns)
        self._check_batch_quota(list(unique.items()))
        for key, value in unique.items():
            lsn = self.store.execute(self._ns, key, Put(value))[2]
        await self.store.durable(lsn)

    async def write_atomic(self, items: list[tuple[bytes, bytes, int]]) -> AtomicWrite:
        """Every item in one engine WriteBatch (docs/atomic-batches.md): after any crash the
        store holds all of them or none; durable as the sync policy says before the answer.
        The timestamp is chosen after every key's stored versions were observed, so each key
        takes its value."""
        store = self.store
        checked = store.check_batch(items, self._ns)
        self._check_batch_quota([(k, v) for k, v, _ in checked])
        if not checked:
            return AtomicWrite(0, [], False)
        applied = store.write_atomic(self._ns, checked)
        await store.durable(applied.lsn)
        return AtomicWrite(applied.timestamp, [], False)

    async def msetnx(self, pairs: list[tuple[bytes, bytes]]) -> bool:
        unique = self.store.check_pairs(pairs, self._ns)
        if await self.exists(unique):
            return False
        await self.mset(list(unique.items()))
        return True

    async def delete(self, keys: Iterable[bytes]) -> int:
        n = 0
        lsn = 0
        for key in keys:
            result, _, key_lsn = self.store.execute(self._ns, key, Delete())
            n += result
            lsn = key_lsn or lsn
        await self.store.durable(lsn)
        return n

    async def getdel(self, key: bytes) -> bytes | None:
        return await self._run(key, GetDel())

    async def delete_if(self, key: bytes, condition: str | None = None, match: bytes | None = None) -> int:
        return await self._run(key, DeleteIf(condition, match))

    async def cas(self, key: bytes, expected: bytes | None, value: bytes | None, *,
                  expire_at_ms: int = 0) -> tuple[bool, bytes | None]:
        if expected:
            decode_context(expected)  # a bad version fails here, before anything runs
        if value is not None:
            self.store.check_value(value)
        return await self._run(key, CompareAndSet(expected or None, value, expire_at_ms))

    async def write(self, key: bytes, value: bytes | None, *, expire_at_ms: int = 0,
                    expected: bytes | int | AnyVersion | None = ANY_VERSION) -> Written:
        return Written(*await self._run(key, write_command(value, expire_at_ms, expected, self.store.check_value)))

    async def incr_by(self, key: bytes, delta: int) -> int:
        return await self._run(key, IncrBy(delta))

    async def incr_by_versioned(self, key: bytes, delta: int) -> tuple[int, bytes]:
        return await self._run(key, IncrBy(delta, versioned=True))

    async def incr_by_float(self, key: bytes, increment: bytes) -> bytes:
        return await self._run(key, IncrByFloat(increment=increment))

    async def append(self, key: bytes, value: bytes) -> int:
        return await self._run(key, Append(value))

    async def expire_at(self, key: bytes, expire_at_ms: int, condition: str | None = None) -> bool:
        return await self._run(key, ExpireAt(expire_at_ms, condition))

    async def getex(self, key: bytes, expire_at_ms: int | None) -> bytes | None:
        if expire_at_ms is None:
            return await self.get_value(key)
        return await self._run(key, GetEx(expire_at_ms))

    async def flushall(self) -> int:
        return await self.store.flush()

    async def flushdb(self) -> int:
        if not self._ns:
            return await self.flushall()
        return await flush_namespace(self)

    # ---------------------------------------------------------------- the keyspace

    async def dbsize(self) -> int:
        return self.store.dbsize(self._ns)

    async def scan(self, cursor: int, count: int = 10, match: bytes | None = None) -> tuple[int, list[bytes]]:
        """One page of keys in token order from `cursor` (0 starts; 0 returned means done).

        The cursor is the token to resume from, so it stays valid whatever is written between
        calls: keys present for the whole scan are returned exactly once (Redis's guarantee).
        """
        if not 0 <= cursor <= MAX_TOKEN:
            raise CommandError("invalid cursor")
        keys, _, next_token = self.store.scan_range(cursor, MAX_TOKEN, count, match, self._ns)
        return (0 if next_token is None else next_token), keys

    async def keys(self, pattern: bytes) -> list[bytes]:
        store = self.store
        if store.live_keys > store.keys_max_count:
            raise CommandError(
                f"KEYS refused: the keyspace holds {store.live_keys} keys, over keys_max_count="
                f"{store.keys_max_count}; use SCAN with MATCH to page through it"
            )
        out: list[bytes] = []
        cursor = 0
        while True:
            cursor, page = await self.scan(cursor, 1000, pattern)
            out.extend(page)
            if cursor == 0:
                return out

    # ---------------------------------------------------------------- batching

    @property
    def has_pending_writes(self) -> bool:
        return self.store.engine.has_deferred

    def commit_writes(self) -> None:
        self.store.engine.flush_deferred()


async def flush_namespace(service: Any) -> int:
    """FLUSHDB in a named namespace: versioned deletes of its keys, page by page, through the
    service (so a cluster deletes them on every replica). Returns how many existed."""
    if not service.limits.flush_enabled:
        raise CommandError("FLUSHALL and FLUSHDB are disabled on this node (flush_enabled = false)")
    removed = 0
    cursor = 0
    while True:
        cursor, keys = await service.scan(cursor, 1000)
        if keys:
            removed += await service.delete(keys)
        if cursor == 0:
            return removed
