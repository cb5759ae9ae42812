"""The data service of a cluster node: any node coordinates any request over the key's replicas.

`ClusterService` implements `service.KeyValueService`, bound to one namespace and one read
level, write level and STRICT flag (`at()` and `in_namespace()` give other views of the same
node). It is thin: reads go to `ReadPath` (quorum reads with read repair), writes to
`Forwarder` (run on a replica: here, or forwarded) and `WritePath` (replication at W), the
whole keyspace to `Keyspace`. What each path guarantees is in docs/cluster.md.

A plain SET on a node that is a replica of the key, the common case, skips the command
machinery: one local overwrite and one ReplicaPut per other replica; the adapter puts the
local write in the log before it replies (deferred, see LocalStore.overwrite_now).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any

from ringkv.clock import Clock
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
    MSetNX,
    Put,
    PutVersioned,
    SerialRead,
    Set,
    TypeWrite,
    entry_of,
    string_value,
    write_command,
)
from ringkv.node.consensus import crossslot_error, register_key
from ringkv.node.forwarding import Forwarder
from ringkv.node.hot_cache import MISS
from ringkv.node.keyspace import Keyspace
from ringkv.node.local_service import flush_namespace
from ringkv.node.local_store import LocalStore
from ringkv.node.messages import MAX_KEYS_PER_PUT_MANY
from ringkv.node.placement import Placement
from ringkv.node.read_path import ReadPath
from ringkv.node.replica import storage_key
from ringkv.node.session_reads import SessionReads, Settler
from ringkv.node.write_path import WritePath
from ringkv.service.contract import NamespaceSpec, ServiceLimits
from ringkv.service.datatypes import COMMANDS as TYPE_COMMANDS
from ringkv.service.datatypes.base import KIND_ZSET, Ctx
from ringkv.service.levels import ConsistencyLevel, Levels, parse_level, resolve
from ringkv.service.limits import MAX_KEY_BYTES
from ringkv.service.session import SessionCodec, SessionToken
from ringkv.service.values import (
    ANY_VERSION,
    PENDING,
    AnyVersion,
    AtomicWrite,
    SiblingSet,
    Value,
    Written,
)
from ringkv.versioning import record as rec
from ringkv.versioning.dvv import decode_context, encode_context


@dataclass(frozen=True)
class DataPath:
    """What every view of a cluster node shares."""

    node_id: str
    clock: Clock
    store: LocalStore
    placement: Placement
    reads: ReadPath
    writes: WritePath
    forwarder: Forwarder
    keyspace: Keyspace
    limits: ServiceLimits
    batches: Any = None  # node/atomic_batches.AtomicBatches (None: atomic batches refused)
    sessions: SessionCodec | None = None  # session tokens (service/session.py); None: cluster name's key
    session_reads: SessionReads | None = None  # reads in a session (node/session_reads.py)


DEFAULT_LEVELS = Levels(ConsistencyLevel.QUORUM, ConsistencyLevel.QUORUM, False)


class ClusterService:
    __slots__ = ("_dc_r", "_dc_w", "_ns", "levels", "namespace", "path", "rate_limited", "session")

    def __init__(self, path: DataPath, levels: Levels = DEFAULT_LEVELS, namespace: NamespaceSpec | None = None,
                 session: SessionToken | None = None):
        self.path = path
        self.levels = levels
        self.namespace = namespace or path.placement.namespaces.default
        self._ns = self.namespace.stored
        # The session this view reads and writes in (None: none): its token is updated by
        # every read and write made through the view (node/session_reads.py).
        self.session = session
        self.rate_limited = path.store.quotas is not None  # False: admit() does nothing
        # The levels when they count per datacenter (None: a count of all N), found once here.
        self._dc_r = levels.r if type(levels.r) is ConsistencyLevel and levels.r.per_dc else None
        self._dc_w = levels.w if type(levels.w) is ConsistencyLevel and levels.w.per_dc else None

    # ---------------------------------------------------------------- views

    @property
    def limits(self) -> ServiceLimits:
        return self.path.limits

    def at(self, r=None, w=None, strict=None) -> ClusterService:
        """A view at other levels (None keeps the current one). Explicit counts are checked
        against the cluster's N here, so a bad one fails at once."""
        n = self.path.placement.ring.replicas
        levels = self.levels
        r = levels.r if r is None else parse_level(r, "r")
        w = levels.w if w is None else parse_level(w, "w")
        resolve(r, n, field="r")
        resolve(w, n, field="w")
        return ClusterService(self.path, Levels(r, w, levels.strict if strict is None else strict), self.namespace,
                              self.session)

    def in_namespace(self, name: str | bytes) -> ClusterService:
        try:
            spec = self.path.placement.namespaces.named(name)
        except ValueError as exc:
            raise UnknownNamespaceError(str(exc)) from None
        return self if spec is self.namespace else ClusterService(self.path, self.levels, spec, self.session)

    @property
    def sessions(self) -> SessionCodec:
        """How this node encodes and checks session tokens."""
        codec = self.path.sessions
        if codec is None:
            raise CommandError("sessions are not available on this node", status=501)
        return codec

    def with_session(self, session: SessionToken | None) -> ClusterService:
        """This view, reading and writing in `session` (None: in none)."""
        return ClusterService(self.path, self.levels, self.namespace, session)

    def namespaces(self) -> list[NamespaceSpec]:
        return list(self.path.placement.namespaces)

    def ring_map(self) -> dict:
        return self.path.keyspace.ring_map(self.namespace)

    def now_ms(self) -> int:
        return self.path.clock.now_ms()

    def admit(self) -> None:
        """Count one client request in this view's namespace (max_requests_per_s, node/quotas.py)."""
        gate = self.path.store.quotas
        if gate is not None:
            gate.admit(self._ns)

    async def _check_batch_quota(self, pairs: list[tuple[bytes, bytes]]) -> None:
        """Refuse a batch that would take the namespace over its key or byte quota as a whole,
        before any of it is written; the keys' current values are read (at ONE) only when the
        batch might not fit."""
        gate = self.path.store.quotas
        if gate is None or self._ns not in gate.sized or gate.batch_upper_bound(self._ns, pairs):
            return
        current = await self.at(ConsistencyLevel.ONE).mget([k for k, _ in pairs])
        gate.check_batch(self._ns, pairs, current)

    # ---------------------------------------------------------------- reads

    def _skey(self, key: bytes) -> bytes:
        self.path.store.check_key(key, self._ns)
        return storage_key(self._ns, key)

    async def _record(self, key: bytes) -> rec.Record | None:
        skey = self._skey(key)
        if self.levels.r is ConsistencyLevel.SERIAL:
            data = await self.path.forwarder.run(self._ns, key, SerialRead(), self.levels)
            record = None if data is None else rec.decode_record(data)
            if record is not None and self.session is not None:
                self.session.observe(skey, record.clock)  # linearizable: as new as any write
            return record
        path = self.path
        pref = path.placement.replicas_of(skey)
        level = self.levels.r
        if self._dc_r is not None:
            pref, r, needs = path.placement.read_scope(level, pref)
            if needs:  # EACH_QUORUM: a majority of every datacenter, as new as any write at it
                data = await path.reads.read(skey, r, pref, needs=needs)
                record = None if data is None else rec.decode_record(data)
                if record is not None and self.session is not None:
                    self.session.observe(skey, record.clock)
                return record
        else:
            r = resolve(level, len(pref), field="r")
        hot = path.store.hot_keys
        if hot.tick():  # HotKeys.offer, inlined
            hot.count(skey)
        if self.session is not None and path.session_reads is not None:
            return await path.session_reads.read(key, skey, r, pref, self.session)
        if r == 1 and skey in hot.hot:
            data = await self._hot_read(skey, pref)
        else:
            data = await path.reads.read(skey, r, pref)
        return None if data is None else rec.decode_record(data)

    async def _hot_read(self, skey: bytes, pref: tuple[str, ...]) -> bytes | None:
        """A read at ONE of a key this node finds hot, as its namespace asks (docs/hot-keys.md):
        from the coordinator's cache while an entry is younger than `hot_cache_ms`, from one
        replica in turn with `hot_reads = "spread"`, else as any read at ONE."""
        path = self.path
        spec = self.namespace
        cache = path.store.hot_cache if spec.hot_cache_ms else None
        if cache is not None:
            now = path.clock.now_ms()
            data = cache.get(skey, now)
            if data is not MISS:
                path.reads.stats["hot_cache_hits"] += 1
                return data
            generation = cache.generation
        if spec.hot_reads == "spread":
            data = await path.reads.read_spread(skey, pref)
        else:
            data = await path.reads.read(skey, 1, pref)
        if cache is not None:
            cache.put(skey, data, now + spec.hot_cache_ms, now, generation)
        return data

    async def get(self, key: bytes) -> Value | None:
        record = await self._record(key)
        if record is None:
            return None
        w = record.winner(self.now_ms())
        if w is None:
            return None
        return Value(string_value(w), w.timestamp, w.expire_at_ms, encode_context(record.clock))

    async def get_value(self, key: bytes) -> bytes | None:
        record = await self._record(key)
        if record is None:
            return None
        return string_value(record.winner(self.now_ms()))

    def get_value_now(self, key: bytes) -> Any:
        return PENDING

    async def get_versions(self, key: bytes) -> SiblingSet:
        record = await self._record(key)
        if record is None:
            return SiblingSet([], None)
        sibs = [Value(string_value(s), s.timestamp, s.expire_at_ms, b"") for s in record.live_siblings(self.now_ms())]
        return SiblingSet(sibs, encode_context(record.clock))

    async def exists(self, keys: Iterable[bytes]) -> int:
        keys = list(keys)
        if len(keys) == 1 or self.levels.r is ConsistencyLevel.SERIAL or self.session is not None or self._dc_r is not None:
            records = await asyncio.gather(*(self._record(k) for k in keys))
            now = self.now_ms()
            return sum(r is not None and r.winner(now) is not None for r in records)
        values = await self._winners(keys)
        return sum(v is not None for v in values)

    async def mget(self, keys: list[bytes]) -> list[bytes | None]:
        if len(keys) > 1 and self.levels.r is ConsistencyLevel.SERIAL and self.session is None:
            group = self._serial_group(keys)
            if group is not None:
                return await group
        # Per datacenter, each key is read on its own.
        if len(keys) == 1 or self.levels.r is ConsistencyLevel.SERIAL or self.session is not None or self._dc_r is not None:
            records = await asyncio.gather(*(self._record(k) for k in keys))
            now = self.now_ms()
            winners = [None if r is None else r.winner(now) for r in records]
            # MGET answers nil for a key holding a collection, as Redis does.
            return [w.value if w is not None and type(w.value) is bytes else None for w in winners]
        return [w if type(w) is bytes else None for w in await self._winners(keys)]

    async def _winners(self, keys: list[bytes]) -> list[Any]:
        """The winning values of several keys (None: missing), read in one batch per replica."""
        skeys = [self._skey(k) for k in keys]
        r = self.levels.r
        r_of = {n: resolve(r, n, field="r") for n in {s.replicas for s in self.path.placement.namespaces}}
        now = self.now_ms()
        out: list[bytes | None] = []
        for data in await self.path.reads.read_many(skeys, r_of):
            w = None if data is None else rec.decode_record(data).winner(now)
            out.append(None if w is None else w.value)
        return out

    def _serial_group(self, keys: list[bytes]):
        """MGET at SERIAL of keys of one hash tag: one round of the tag's register, so the values
        are of one instant (no MSETNX half seen). None when the keys are of several registers
        or the namespace is not on the consensus path (then each key is read on its own)."""
        skeys = [self._skey(k) for k in keys]
        register = register_key(skeys[0])
        if (register == skeys[0] and len(set(skeys)) > 1) or any(register_key(k) != register for k in skeys):
            return None
        if self.path.placement.namespaces.of_stored(self._ns).rmw != "paxos":
            return None
        return self._serial_values(keys)

    async def _serial_values(self, keys: list[bytes]) -> list[bytes | None]:
        unique = list(dict.fromkeys(keys))
        records = await self.path.forwarder.run(self._ns, unique[0], SerialRead(tuple(unique)), self.levels)
        now = self.now_ms()
        by_key = {}
        for key, data in zip(unique, records, strict=True):
            w = None if data is None else rec.decode_record(data).winner(now)
            by_key[key] = None if w is None or type(w.value) is not bytes else w.value
        return [by_key[k] for k in keys]

    async def ttl_ms(self, key: bytes) -> int:
        record = await self._record(key)
        now = self.now_ms()
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
        unique = list(dict.fromkeys(keys))
        if not spec.write:
            if name in elements.ELEMENT_COMMANDS:
                return await self._read_elements(name, args, unique[0])
            records = await asyncio.gather(*(self._record(k) for k in unique))
            now = self.now_ms()
            if any(elements.holds_elements(r, now) for r in records):
                return await self._read_elements(name, args, unique[0])
            entries = {k: None if r is None else entry_of(r.winner(now)) for k, r in zip(unique, records, strict=True)}
            return spec.run(Ctx(now), args, entries)[1]
        # One key or several of one hash tag: one command where the key's writes run (several:
        # the tag's consensus register; node/consensus.apply_group_command).
        return spec.shape(await self._run(unique[0], TypeWrite(name, tuple(args))))

    async def _read_elements(self, name: str, args: list[bytes], first: bytes) -> Any:
        """A read naming a set or hash stored one record per element (node/elements.py), at the
        view's R; SERIAL reads every replica (these converge without consensus rounds, so there
        is no register to read linearizably)."""
        return await elements.read(self._elements_backend(first), self._ns, name, args, self.now_ms())

    def _elements_backend(self, key: bytes) -> elements.ClusterBackend:
        pref = self.path.placement.replicas_of(storage_key(self._ns, key))
        level = self.levels.r
        r = len(pref) if level is ConsistencyLevel.SERIAL else resolve(level, len(pref), field="r")
        return elements.ClusterBackend(self.path.store, self.path.placement, self.path.reads, self.path.writes, r, 0)

    async def hash_field_versions(self, key: bytes, field: bytes) -> SiblingSet:
        self._skey(key)
        values, clock = await elements.field_versions(self._elements_backend(key), self._ns, key, field, self.now_ms())
        return SiblingSet([Value(v, ts, 0, b"") for v, ts in values], None if clock is None else encode_context(clock))

    async def zset_score_versions(self, key: bytes, member: bytes) -> SiblingSet:
        self._skey(key)
        values, clock = await elements.field_versions(self._elements_backend(key), self._ns, key, member,
                                                      self.now_ms(), KIND_ZSET)
        return SiblingSet([Value(v, ts, 0, b"") for v, ts in values], None if clock is None else encode_context(clock))

    # ---------------------------------------------------------------- writes

    def _run(self, key: bytes, command: Command):
        store = self.path.store
        if store.hot_keys.tick():  # HotKeys.offer, the key built only when it is counted
            store.hot_keys.count(storage_key(self._ns, key), WRITE)
        if self.session is None:
            pending = self.path.forwarder.run(self._ns, key, command, self.levels)
        else:
            pending = self._run_in_session(key, command)
        if store.hot_cache is None or isinstance(command, SerialRead):
            return pending
        return self._uncached(list(command.group_keys() or (key,)), pending)

    async def _uncached(self, keys: list[bytes], pending: Awaitable[Any]) -> Any:
        """Await a write of `keys` with the hot cache (node/hot_cache.py) dropping them before
        and after it: a read in flight meanwhile keeps nothing, and this node's next read of
        them reads the replicas again."""
        cache = self.path.store.hot_cache
        assert cache is not None
        skeys = [storage_key(self._ns, k) for k in keys]
        for skey in skeys:
            cache.drop(skey)
        try:
            return await pending
        finally:
            for skey in skeys:
                cache.drop(skey)

    async def _run_in_session(self, key: bytes, command: Command) -> Any:
        """`_run`, then the session requires what the replica that ran it holds after."""
        clock_out: list[bytes | None] = []
        result = await self.path.forwarder.run(self._ns, key, command, self.levels, clock_out)
        if clock_out and clock_out[0]:
            skey = storage_key(self._ns, key)
            pref = self.path.placement.replicas_of(skey)
            self.session.observe(skey, decode_context(clock_out[0]),
                                 self._settles(resolve(self.levels.w, len(pref), field="w"), pref))
        return result

    def _settles(self, w: int, pref: tuple[str, ...]) -> bool:
        """Whether a write acknowledged at `w` is known held by every home replica: all N
        acknowledged, and no stand-in counted (STRICT)."""
        return w == len(pref) and self.levels.strict

    async def set(self, key: bytes, value: bytes, *, expire_at_ms: int = 0, keep_ttl: bool = False,
                  condition: str | None = None, return_old: bool = False,
                  match: bytes | None = None) -> tuple[bool, bytes | None]:
        self.path.store.check_value(value)
        return await self._run(key, Set(value, expire_at_ms, keep_ttl, condition, return_old, match))

    async def put(self, key: bytes, value: bytes) -> None:
        path = self.path
        store = path.store
        ns = self._ns
        if (
            len(value) <= store.max_value_bytes
            and len(key) + len(ns) <= MAX_KEY_BYTES
            and store.plain_sets(ns)
            and not store.sync_always
        ):
            skey = storage_key(ns, key)
            pref = path.placement.replicas_of(skey)
            if path.node_id in pref:
                data, _ = store.overwrite_now(skey, value)  # sent once in our log (WritePath)
                level = self.levels.w
                w = resolve(level, len(pref), field="w")
                needs = () if self._dc_w is None else path.placement.dc_needs(level, pref)
                session = self.session
                # In a session, the entry becomes settled once every replica acknowledged,
                # even after the answer (node/session_reads.Settler).
                settler = None if session is None else Settler(session, skey)
                written = path.writes.replicate(skey, data, pref, w, self.levels.strict, settler, needs)
                await (written if store.hot_cache is None else self._uncached([key], written))
                if settler is not None:
                    clock = rec.decode_record(data).clock
                    session.observe(skey, clock, self._settles(w, pref))
                    settler.answered(clock)
                return
        store.check_value(value)
        await self._run(key, Put(value))

    def put_now(self, key: bytes, value: bytes) -> Any:
        return PENDING

    async def durable(self, lsn: int) -> None:
        await self.path.store.durable(lsn)

    async def put_versioned(self, key: bytes, value: bytes | None, context: bytes | None, *,
                            expire_at_ms: int = 0) -> bytes:
        if context:
            decode_context(context)  # a bad context fails here, before any hop
        self.path.store.check_value(value)
        return await self._run(key, PutVersioned(value, context, expire_at_ms))

    async def mset(self, pairs: list[tuple[bytes, bytes]]) -> None:
        """Every key written at W. Keys this node is a replica of are written here and sent to
        their other replicas in one ReplicaPutMany per replica set and replica; the others
        are forwarded one by one (as SET is)."""
        path = self.path
        store = path.store
        ns = self._ns
        unique = store.check_pairs(pairs, ns)
        await self._check_batch_quota(list(unique.items()))
        batchable = (
            len(unique) > 1 and not store.sync_always and not path.placement.moving
            and (store.quotas is None or ns not in store.quotas.sized)  # each write checked: node/quotas.py
            and path.placement.namespaces.of_stored(ns).conflict_policy is rec.ConflictPolicy.SIBLINGS
        )
        # In a session, or at a datacenter level (each key's write waits per datacenter), key by key.
        if not batchable or self.session is not None or self._dc_w is not None:
            await asyncio.gather(*(self._run(k, Put(v)) for k, v in unique.items()))
            return
        groups: dict[tuple[str, ...], list[tuple[bytes, bytes]]] = {}
        elsewhere: list[tuple[bytes, bytes]] = []
        for key, value in unique.items():
            skey = storage_key(ns, key)
            pref = path.placement.replicas_of(skey)
            if path.node_id in pref:
                groups.setdefault(pref, []).append((skey, store.overwrite_now(skey, value)[0]))
            else:
                elsewhere.append((key, value))
        store.commit_writes()  # in our log before any other replica is asked to hold them
        w = self.levels.w
        written = asyncio.gather(
            *(self._run(k, Put(v)) for k, v in elsewhere),
            *(path.writes.replicate_many(records[i:i + MAX_KEYS_PER_PUT_MANY], pref,
                                         resolve(w, len(pref), field="w"))
              for pref, records in groups.items()
              for i in range(0, len(records), MAX_KEYS_PER_PUT_MANY)))
        await (written if store.hot_cache is None else self._uncached(list(unique), written))

    async def write_atomic(self, items: list[tuple[bytes, bytes, int]]) -> AtomicWrite:
        """Every item or none (docs/atomic-batches.md): the keys of one replica set commit
        together on each replica; a batch over several replica sets is logged on two nodes
        first and replayed until every key is written (node/atomic_batches.py)."""
        path = self.path
        checked = path.store.check_batch(items, self._ns)
        await self._check_batch_quota([(k, v) for k, v, _ in checked])
        if path.batches is None:
            raise CommandError("atomic batches are not available on this node", status=501)
        written = path.batches.write(self._ns, checked, self.levels)
        if path.store.hot_cache is None:
            return await written
        return await self._uncached([k for k, _, _ in checked], written)

    async def msetnx(self, pairs: list[tuple[bytes, bytes]]) -> bool:
        """Every key or none, atomically and linearizably (docs/consistency.md, "MSETNX"): the
        keys must share one hash tag, whose group register runs it as one consensus round
        (one key: SET NX). Keys of several tags: CROSSSLOT, as Redis Cluster answers. In a
        namespace with rmw = "fast" the check and the writes are two steps, atomic only when no
        other client writes these keys meanwhile."""
        unique = self.path.store.check_pairs(pairs, self._ns)
        keys = list(unique)
        if not keys:
            raise CommandError("MSETNX needs at least one key and value")
        if len(keys) == 1:
            key, value = pairs[-1]
            return bool((await self._run(key, Set(value, condition="nx")))[0])
        register = register_key(storage_key(self._ns, keys[0]))
        for key in keys[1:]:
            if register_key(storage_key(self._ns, key)) != register:
                raise crossslot_error(keys[0], key)
        if self.path.placement.namespaces.of_stored(self._ns).rmw != "paxos":
            if await self.exists(keys):
                return False
            await self.mset(list(unique.items()))
            return True
        return await self._run(keys[0], MSetNX(tuple(unique.items())))

    async def delete(self, keys: Iterable[bytes]) -> int:
        keys = list(keys)
        for key in keys:
            self.path.store.check_key(key, self._ns)
        return sum(await asyncio.gather(*(self._run(k, Delete()) for k in keys)))

    async def getdel(self, key: bytes) -> bytes | None:
        return await self._run(key, GetDel())

    async def delete_if(self, key: bytes, condition: str | None = None, match: bytes | None = None) -> int:
        return await self._run(key, DeleteIf(condition, match))

    async def cas(self, key: bytes, expected: bytes | None, value: bytes | None, *,
                  expire_at_ms: int = 0) -> tuple[bool, bytes | None]:
        if expected:
            decode_context(expected)  # a bad version fails here, before anything runs
        if value is not None:
            self.path.store.check_value(value)
        return await self._run(key, CompareAndSet(expected or None, value, expire_at_ms))

    async def write(self, key: bytes, value: bytes | None, *, expire_at_ms: int = 0,
                    expected: bytes | int | AnyVersion | None = ANY_VERSION) -> Written:
        return Written(*await self._run(key, write_command(value, expire_at_ms, expected, self.path.store.check_value)))

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
        return await self.path.keyspace.flushall()

    async def flushdb(self) -> int:
        if not self._ns:
            return await self.flushall()
        return await flush_namespace(self)

    # ---------------------------------------------------------------- the keyspace

    async def dbsize(self) -> int:
        return await self.path.keyspace.dbsize(self._ns)

    async def scan(self, cursor: int, count: int = 10, match: bytes | None = None) -> tuple[int, list[bytes]]:
        return await self.path.keyspace.scan(cursor, count, match, self._ns)

    async def keys(self, pattern: bytes) -> list[bytes]:
        return await self.path.keyspace.keys(pattern, self._ns)

    # ---------------------------------------------------------------- batching

    @property
    def has_pending_writes(self) -> bool:
        return self.path.store.engine.has_deferred

    def commit_writes(self) -> None:
        self.path.store.engine.flush_deferred()
