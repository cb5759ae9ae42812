"""Sets, hashes and sorted sets stored one record per element: the commands, run where the
key's writes run.

docs/formats/elements.md is the layout and the rules; service/datatypes/convergent.py decides
what records mean and what to write. This module does the IO for a command:

1. **Load** each key it names: the meta record (the collection's own key) at R, merged into this
   replica's copy; then, for a collection stored per element, its elements: only the ones the
   command names for SADD, SREM, SISMEMBER, SMISMEMBER, HSET, HGET, HDEL, ZADD, ZSCORE, ZREM, ...
   (what they answer depends on nothing else; `named_members`), the ones drawn at random for
   SPOP, SRANDMEMBER and HRANDFIELD (`_draw`), every one (a range read) for the rest. A collection stored whole by an
   earlier release, a string or another collection loads as the pure commands have always
   seen it.
2. **Run** the pure command (service/datatypes) on what was loaded.
3. **Write** what changed: each added member born at this replica's next meta write, each
   removed member a tombstone, and the meta record, at W on the key's home replicas (no
   stand-ins, `strict`), in one batch per replica, so that a replica holding the meta write
   holds the members it names (a command of more than 1,000 records writes the members
   first, then the meta record). A set that became empty gets a clear marker, after a read of its
   members at R with R + W > N found none left (the emptiness rule). A key that now holds
   something else is overwritten whole, as before.

No consensus round: the records converge by the rules, so two replicas that run commands on
one collection at once (both believe they come first) still agree after repair. The exceptions
are HINCRBY, HINCRBYFLOAT, ZINCRBY and ZADD ... INCR, whose result depends on the element's
value: in a cluster each is a consensus round of the element's own record (`_increment`). A
collection stored whole is rewritten per element by the first write that loads it (a
migration, once per key).

`Backend` is where records come from and go: `ClusterBackend` reads at R and replicates at W,
`LocalBackend` is a single node's engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ringkv.errors import CommandError, QuorumError
from ringkv.node.commands import _NotLoaded
from ringkv.node.consensus import crossslot_error, register_key
from ringkv.node.messages import MAX_KEYS_PER_PUT_MANY, MAX_RANGE_RECORDS
from ringkv.node.range_reads import read_range
from ringkv.node.replica import element_storage_key, elements_range, split_storage_key, storage_key
from ringkv.node.score_index import parse_entry, record_scores, walk_range
from ringkv.service.datatypes import COMMANDS as TYPE_COMMANDS
from ringkv.service.datatypes import codec, hashes, keyspace, sets, zsets
from ringkv.service.datatypes.base import (
    KIND_HASH,
    KIND_SET,
    KIND_STRING,
    KIND_ZSET,
    Ctx,
    Entry,
    WrongTypeError,
    double_text,
)
from ringkv.service.datatypes.convergent import (
    MetaState,
    carried_births,
    clear_meta,
    decode_score,
    element_value,
    encode_element,
    encode_score,
    meta_state,
    next_birth,
    present_siblings,
    remove_element,
    visible,
    write_element,
    write_meta,
)
from ringkv.service.elements import check_element, split_element_key
from ringkv.versioning.dvv import join
from ringkv.versioning.record import Record, Typed, decode_record, overwrite

_RANDOM = random.Random()  # SPOP's and SRANDMEMBER's choices (seeding one per command costs 10 us)
SET_COMMANDS = frozenset(spec.name for spec in sets.COMMANDS)
HASH_COMMANDS = frozenset(spec.name for spec in hashes.COMMANDS)
ZSET_COMMANDS = frozenset(spec.name for spec in zsets.COMMANDS)
# The commands of the collections stored one record per element.
ELEMENT_COMMANDS = SET_COMMANDS | HASH_COMMANDS | ZSET_COMMANDS
# The kinds stored per element, and what a collection's value is built from its elements.
STORED_PER_ELEMENT = frozenset({KIND_SET, KIND_HASH, KIND_ZSET})
# Commands whose answer depends only on the elements they name: they load only those, the
# arguments args[start:stop:step].
_NAMED = {"SADD": (1, None, 1), "SREM": (1, None, 1), "SISMEMBER": (1, None, 1), "SMISMEMBER": (1, None, 1),
          "HSET": (1, None, 2), "HMSET": (1, None, 2), "HSETNX": (1, 2, 1), "HGET": (1, 2, 1),
          "HMGET": (1, None, 1), "HDEL": (1, None, 1), "HEXISTS": (1, 2, 1), "HSTRLEN": (1, 2, 1),
          "HINCRBY": (1, 2, 1), "HINCRBYFLOAT": (1, 2, 1),
          "ZREM": (1, None, 1), "ZSCORE": (1, 2, 1), "ZMSCORE": (1, None, 1), "ZINCRBY": (2, 3, 1)}
# ZADD names its members after its flags and between its scores (`named_members`).
# Commands that choose elements at random (without a count, or a positive one up to
# MAX_DRAWN): they draw them from this replica's engine and load only those (`_draw`), and read
# every element only when draws fall short.
_DRAWN = frozenset({"SPOP", "SRANDMEMBER", "HRANDFIELD"})
DRAW_ROUNDS = 3  # rounds of draws (each 2 per element still wanted, then one read) before reading every element
MAX_DRAWN = 64  # the largest positive count answered by draws
# Commands whose result depends on the element's current value: in a cluster each is a
# consensus round of the element's own record (node/consensus.Proposer.run_element). ZADD
# with INCR is one too (`is_increment`).
INCREMENTS = frozenset({"HINCRBY", "HINCRBYFLOAT", "ZINCRBY"})
# Sorted-set commands that walk the score order from the lowest score (zsets.walk_of): where
# the store keeps a score index (node/score_index.py) they load only the members the walk
# reaches, checking its entries in rounds of one index read and one read of their records.
INDEX_PAGE_ENTRIES = 64
# Commands that look only at a key's type: they load no member.
_TYPE_ONLY = frozenset({"TYPE"})
# Keyspace commands that move whole values between keys: they run here when a key they name
# holds a set stored per element.
KEYSPACE_WRITES = frozenset({"RENAME", "RENAMENX", "COPY", "RESTORE"})


class Backend(Protocol):
    """Records as a command sees them: read at R (and merged into this replica), written here
    and at W."""

    async def record(self, skey: bytes) -> Record | None: ...

    async def records(self, skeys: list[bytes]) -> list[Record | None]: ...

    def pages(self, start: bytes, end: bytes, first_records: int = 0) -> AsyncIterator[list[tuple[bytes, Record]]]: ...
    # (`first_records`: a small first page, growing after; 0: full pages from the start)

    def local(self, skey: bytes) -> Record | None: ...

    def sample(self, start: bytes, end: bytes) -> bytes | None: ...  # a storage key of this replica in [start, end)

    indexed: bool  # whether sorted sets' score indexes can be read (node/score_index.py)

    def index_pages(self, start: bytes, end: bytes, first: int) -> AsyncIterator[list[tuple[bytes, float, bytes]]]: ...
    # (pages of (index key, score, member) in [start, end) at R, the first of `first` entries)

    def stale(self, ikey: bytes, eskey: bytes, score: float) -> None: ...  # an entry found stale

    async def write(self, records: list[tuple[bytes, Record | None, Record]]) -> None: ...  # (skey, stored, new)

    async def flush(self) -> None: ...  # what `write` left to wait for (a single node's fsync)

    store: Any  # the node's LocalStore (its value limits)

    def stamp(self) -> tuple[bytes, int]: ...  # (this replica's actor, an HLC timestamp now)

    concurrent: bool  # whether reads may be issued at once (a cluster's, over the network)

    # A consensus round of one element's record (node/consensus.Proposer.run_element), or None
    # where a command holding the key's locks is already linearizable (a single node) or the
    # namespace chose the fast path (rmw = "fast").
    consensus: Any


@dataclass
class Loaded:
    """What one key holds, as a command loaded it."""

    key: bytes
    skey: bytes
    meta: Record | None
    state: MetaState
    entry: Entry | None
    per_element: bool  # a set stored one record per element
    partial: bool = False  # only the members the command names are in `entry`
    members: dict[bytes, Record | None] = field(default_factory=dict)  # the named members' records


def holds_elements(record: Record | None, now_ms: int) -> bool:
    """Whether `record` (a key's own record) is a collection stored per element now."""
    return record is not None and meta_state(record, now_ms).exists


def not_loaded(entry: Entry) -> bool:
    """Whether `entry` (node/commands.entry_of's) is a set stored per element, members not read."""
    return type(entry.value) is _NotLoaded


def wants(name: str) -> bool:
    """Whether a command may need this module: set, hash and sorted-set commands always;
    keyspace writes when a key they name holds a collection stored per element (the caller
    checks with `holds_elements`) or when they restore one (`restores_elements`)."""
    return name in ELEMENT_COMMANDS or name in KEYSPACE_WRITES


def restores_elements(name: str, args: list[bytes]) -> bool:
    """Whether a command is a RESTORE of a DUMP payload of a set, hash or sorted set: it is
    written one record per element, as every write of one is (so no size bound applies to
    it), rather than whole."""
    return name == "RESTORE" and len(args) > 2 and keyspace.payload_kind(args[2]) in STORED_PER_ELEMENT


def named_members(name: str, args: list[bytes]) -> list[bytes] | None:
    """The elements a command names, when its answer depends on nothing else (None: all)."""
    if name == "ZADD":  # key [flags] score member [score member ...]
        return list(dict.fromkeys(args[zsets.zadd_options(args)[1] + 1::2]))
    where = _NAMED.get(name)
    return None if where is None else list(dict.fromkeys(args[where[0]:where[1]:where[2]]))


def is_increment(name: str, args: list[bytes]) -> bool:
    """Whether a command's new value of an element is computed from its current one."""
    return name in INCREMENTS or (name == "ZADD" and b"incr" in zsets.zadd_options(args)[0])


def _no_value(sibling: Any) -> bytes:
    return b""


def _value_of(kind: int, present: dict[bytes, bytes]) -> Any:
    """A collection's value (base.py's table) from its present elements' values."""
    if kind == KIND_SET:
        return set(present)
    if kind == KIND_ZSET:
        return {m: decode_score(v) for m, v in present.items()}
    return present


def _element_bytes(kind: int, value: Any) -> bytes:
    """What an element record stores of an element's value in a collection's value."""
    return encode_score(value) if kind == KIND_ZSET else value


async def load(backend: Backend, namespace: bytes, key: bytes, now_ms: int, members: list[bytes] | None,
               type_only: bool = False) -> Loaded:
    skey = storage_key(namespace, key)
    eskeys = None
    if members is not None and not type_only:
        for m in members:
            check_element(namespace, key, m)
        eskeys = [element_storage_key(skey, m) for m in members]
        if backend.concurrent:
            # The meta record and the named members in one round trip: which members are
            # present is decided once both are here.
            meta, named = await asyncio.gather(backend.record(skey), backend.records(eskeys))
        else:
            meta, named = await backend.record(skey), await backend.records(eskeys)
    else:
        meta = await backend.record(skey)
    state = meta_state(meta, now_ms)
    if state.kind == -1:  # a string, or a collection stored whole
        value = state.other.value
        if type(value) is Typed:
            entry = Entry(value.kind, codec.decode(value.kind, value.data), state.other.expire_at_ms)
        else:
            entry = Entry(KIND_STRING, value, state.other.expire_at_ms)
        return Loaded(key, skey, meta, state, entry, False)
    if not state.exists:
        return Loaded(key, skey, meta, state, None, False)
    if state.kind not in STORED_PER_ELEMENT:
        raise CommandError(f"key {key[:64]!r} holds a collection of kind {state.kind} stored per element, which this "
                           "build does not read: upgrade the node")
    kind = state.kind
    if type_only:
        return Loaded(key, skey, meta, state, Entry(kind, _value_of(kind, {}), state.expire_at_ms), True, True)
    if eskeys is not None:
        return _partial(key, skey, meta, state, dict(zip(members, named, strict=True)), now_ms)
    present: dict[bytes, bytes] = {}
    value_of = element_value if kind != KIND_SET else _no_value  # a member has no value to decode
    start, end = elements_range(skey)
    async with contextlib.aclosing(backend.pages(start, end)) as pages:  # closed even on an error
        async for page in pages:  # kept: the elements' values, not their records
            for s, rec in page:
                sibling = visible(rec, state, now_ms)
                if sibling is not None:
                    present[split_element_key(split_storage_key(s)[1])[1]] = value_of(sibling)
    return Loaded(key, skey, meta, state, Entry(kind, _value_of(kind, present), state.expire_at_ms), True)


def _partial(key: bytes, skey: bytes, meta: Record | None, state: MetaState, named: dict[bytes, Record | None],
             now_ms: int) -> Loaded:
    """A collection stored per element, loaded as the elements `named` (element -> its record)."""
    kind = state.kind
    value_of = element_value if kind != KIND_SET else _no_value  # a member has no value to decode
    present = {}
    for m, rec in named.items():
        sibling = visible(rec, state, now_ms)
        if sibling is not None:
            present[m] = value_of(sibling)
    return Loaded(key, skey, meta, state, Entry(kind, _value_of(kind, present), state.expire_at_ms), True, True,
                  named)


async def field_versions(backend: Backend, namespace: bytes, key: bytes, field: bytes, now_ms: int,
                         kind: int = KIND_HASH) -> tuple[list[tuple[bytes, int]], Any]:
    """Every value a hash field holds (`kind` KIND_HASH), or every score a sorted-set member has
    (KIND_ZSET, as ZSCORE's text): ([(value, HLC timestamp), ...] in a stable order, the
    element record's clock, None without one). One value unless writes of the element on two
    replicas at once left siblings, which HGET and ZSCORE resolve to the newest; a collection
    stored whole has one value per element. WRONGTYPE when the key holds something else."""
    check_element(namespace, key, field)
    loaded = await load(backend, namespace, key, now_ms, [field])
    if loaded.entry is None:
        return [], None
    if loaded.entry.kind != kind:
        raise WrongTypeError()
    text = double_text if kind == KIND_ZSET else _same
    if not loaded.per_element:  # stored whole: the key's own record versions it
        value = loaded.entry.value.get(field)
        other = loaded.state.other
        return ([] if value is None else [(text(value), other.timestamp)]), loaded.meta.clock
    record = loaded.members[field]
    present = present_siblings(record, loaded.state, now_ms)
    if kind == KIND_ZSET:
        return ([(text(decode_score(element_value(s))), s.timestamp) for s in present],
                None if record is None else record.clock)
    return [(element_value(s), s.timestamp) for s in present], (None if record is None else record.clock)


def _same(value: bytes) -> bytes:
    return value


def _wanted(name: str, args: list[bytes]) -> int:
    """How many distinct elements a random command asks for that draws can answer: 1 without a
    count, the count when it is positive and at most MAX_DRAWN (HRANDFIELD's WITHVALUES
    allowed); 0 when it must read every element (a negative count draws with repeats from the
    whole collection; a malformed one gets the command's own error there)."""
    if name not in _DRAWN or not args:
        return 0
    if len(args) == 1:
        return 1
    if len(args) > 3 or (len(args) == 3 and (name != "HRANDFIELD" or args[2].lower() != b"withvalues")):
        return 0
    count = args[1]
    if not count.isdigit() or len(count) > 3:
        return 0
    return int(count) if 0 < int(count) <= MAX_DRAWN else 0


async def _loaded_elements(backend: Backend, namespace: bytes, name: str, args: list[bytes], now_ms: int
                           ) -> tuple[list[bytes] | None, Loaded | None]:
    """The elements a command loads: (those it names, or None: all of them; or the key it draws
    from, loaded with the elements drawn for it)."""
    want = _wanted(name, args)
    if want:
        return None, await _draw(backend, namespace, args[0], now_ms, want)
    return named_members(name, args), None


async def _draw(backend: Backend, namespace: bytes, key: bytes, now_ms: int, want: int) -> Loaded | None:
    """The collection `key` (stored per element) loaded as `want` distinct present elements,
    drawn at random from this replica's engine (storage/sampling.py) and confirmed at R, in
    rounds of one read each (the records read are the ones loaded); None when the key holds no
    such collection, or DRAW_ROUNDS rounds found fewer (many removed elements, a collection
    smaller than `want`, or a node that holds no replica of the key): the caller then reads
    every element."""
    skey = storage_key(namespace, key)
    meta = await backend.record(skey)
    state = meta_state(meta, now_ms)
    if not state.exists or state.kind not in STORED_PER_ELEMENT:
        return None
    start, end = elements_range(skey)
    found: dict[bytes, Record] = {}
    for _ in range(DRAW_ROUNDS):
        need = want - len(found)
        drawn = {e for _ in range(2 * need + 2) if (e := backend.sample(start, end)) is not None}
        drawn = [e for e in drawn if e not in found]
        if drawn:
            for eskey, record in zip(drawn, await backend.records(drawn), strict=True):
                if len(found) < want and visible(record, state, now_ms) is not None:
                    found[eskey] = record
        if len(found) == want:
            named = {split_element_key(split_storage_key(e)[1])[1]: r for e, r in found.items()}
            return _partial(key, skey, meta, state, named, now_ms)
    return None


async def _load_walk(backend: Backend, namespace: bytes, key: bytes, now_ms: int, walk: zsets.Walk) -> Loaded | None:
    """The members of the sorted set `key` that `walk` reaches, in score order from the lowest
    or the highest (a partial load, as for named members), read through the score index: each entry is
    checked against the member's record read at R (its present score must be the entry's),
    so entries a write or a DEL left behind are skipped. None when the key holds no sorted
    set stored per element (`load` reads it as it is)."""
    skey = storage_key(namespace, key)
    meta = await backend.record(skey)
    state = meta_state(meta, now_ms)
    if state.kind != KIND_ZSET:
        return None
    found: dict[bytes, float] = {}
    loaded = Loaded(key, skey, meta, state, Entry(KIND_ZSET, found, state.expire_at_ms), True, partial=True)
    low, high = walk.low, walk.high
    if walk.member is not None:  # ZRANK, ZREVRANK: the members up to this one's score
        check_element(namespace, key, walk.member)
        sibling = visible((await backend.records([element_storage_key(skey, walk.member)]))[0], state, now_ms)
        if sibling is None:
            return loaded
        if walk.reverse:
            low = decode_score(element_value(sibling))
        else:
            high = decode_score(element_value(sibling))
    start, end = walk_range(elements_range(skey)[0], low, high, walk.reverse)
    want = walk.most
    first = min(want, INDEX_PAGE_ENTRIES) if want else INDEX_PAGE_ENTRIES
    moved: dict[bytes, float] = {}  # members whose record holds another score than the entry read
    reached = None  # (score, member) where a walk with a limit stopped
    async with contextlib.aclosing(backend.index_pages(start, end, first)) as pages:
        async for page in pages:
            eskeys = [element_storage_key(skey, member) for _, _, member in page]
            for (ikey, score, member), eskey, record in zip(page, eskeys, await backend.records(eskeys), strict=True):
                sibling = visible(record, state, now_ms)
                present = None if sibling is None else decode_score(element_value(sibling))
                if present != score:
                    backend.stale(ikey, eskey, score)
                    if present is not None:
                        moved[member] = present
                    continue
                if walk.reaches(score):
                    found.setdefault(member, score)
                    if len(found) == want:
                        reached = (score, member)
                        break
            if reached is not None:
                break
    # A member whose score changed between the index read and the record read (a write at
    # once with the walk) is in it at its present score, when that lies in what the walk
    # covered: its new entry may be in a page already read, or on a replica not asked.
    for member, score in moved.items():
        if member not in found and low <= score <= high and walk.reaches(score) and (
                reached is None or ((score, member) >= reached if walk.reverse else (score, member) <= reached)):
            found[member] = score
    return loaded


async def _load_key(backend: Backend, namespace: bytes, key: bytes, now_ms: int, members: list[bytes] | None,
                    walk: zsets.Walk | None, type_only: bool = False) -> Loaded:
    """`load`, or `_load_walk` for a walk on a sorted set where the backend reads score
    indexes (a replica that keeps none, an older build's, sends the command to `load`)."""
    if walk is not None and backend.indexed:
        try:
            loaded = await _load_walk(backend, namespace, key, now_ms, walk)
        except QuorumError:
            loaded = None
        if loaded is not None:
            return loaded
    return await load(backend, namespace, key, now_ms, members, type_only)


def check_one_slot(namespace: bytes, name: str, keys: list[bytes]) -> None:
    """In a cluster, a command's keys must share a hash tag: one replica set runs it whole."""
    first = register_key(storage_key(namespace, keys[0]))
    for key in keys[1:]:
        if register_key(storage_key(namespace, key)) != first:
            raise crossslot_error(keys[0], key, name, "runs on one replica set")


async def read(backend: Backend, namespace: bytes, name: str, args: list[bytes], now_ms: int) -> Any:
    """A read command (SMEMBERS, SISMEMBER, TYPE, ...) on keys at least one of which may hold a set
    stored per element."""
    spec = TYPE_COMMANDS[name]
    keys = list(dict.fromkeys(spec.keys(args)))
    members, drawn = await _loaded_elements(backend, namespace, name, args, now_ms)
    walk = zsets.walk_of(name, args)
    entries = {}
    for key in keys:
        loaded = drawn or await _load_key(backend, namespace, key, now_ms, members, walk, type_only=name in _TYPE_ONLY)
        entries[key] = loaded.entry
    return spec.run(Ctx(now_ms, _RANDOM), args, entries)[1]


async def run(backend: Backend, namespace: bytes, name: str, args: list[bytes], now_ms: int) -> Any:
    """A write command, run here under the locks of its keys (the caller's), on what the keys
    hold; returns the reply."""
    spec = TYPE_COMMANDS[name]
    if backend.consensus is not None and is_increment(name, args):
        return await _increment(backend, namespace, spec, args, now_ms)
    keys = list(dict.fromkeys(spec.keys(args)))
    members, drawn = await _loaded_elements(backend, namespace, name, args, now_ms)
    walk = zsets.walk_of(name, args)
    loaded = {key: drawn or await _load_key(backend, namespace, key, now_ms, members, walk) for key in keys}
    entries = {key: None if lo.entry is None else Entry(lo.entry.kind, _copy(lo.entry.value), lo.entry.expire_at_ms)
               for key, lo in loaded.items()}
    writes, reply = spec.run(Ctx(now_ms, _RANDOM), args, entries)
    emptied: list[Loaded] = []
    elements: list[tuple[bytes, Record]] = []
    metas: list[tuple[bytes, Record]] = []
    for key, after in writes.items():
        _plan(backend, loaded[key], after, elements, metas, emptied)
    await _write(backend, elements, metas)
    for lo in emptied:
        await _clear_if_empty(backend, lo, now_ms)
    await backend.flush()
    return reply


async def _increment(backend: Backend, namespace: bytes, spec: Any, args: list[bytes], now_ms: int) -> Any:
    """HINCRBY, HINCRBYFLOAT, ZINCRBY or ZADD ... INCR in a cluster: a consensus round of the
    element's record, so that increments from any number of coordinators are linearizable
    and none is lost.

    The round reads the element at a majority and writes its new value with a dot that
    supersedes all it read. A present element keeps its births (`carried_births`): the
    increment is removed by exactly the removes that would remove the element. An element the
    round finds absent is born at this replica's next meta write, which follows the round (the
    element at W before the meta record names its birth, as every add). A round that changes
    nothing (ZADD NX INCR of a present member) writes nothing."""
    name, key = spec.name, args[0]
    kind = KIND_HASH if name in HASH_COMMANDS else KIND_ZSET
    ctx = Ctx(now_ms, _RANDOM)
    spec.run(ctx, args, {key: Entry(kind, {}, 0)})  # the command's own errors, before any round
    element = args[1] if kind == KIND_HASH else args[2] if name == "ZINCRBY" else args[-1]
    check_element(namespace, key, element)
    lo = await load(backend, namespace, key, now_ms, [])  # the meta record: the round reads the element
    if lo.entry is not None and lo.entry.kind != kind:
        spec.run(ctx, args, {key: lo.entry})  # WRONGTYPE
    if lo.entry is not None and not lo.per_element:  # stored whole: rewritten per element first
        elements: list[tuple[bytes, Record]] = []
        metas: list[tuple[bytes, Record]] = []
        _plan(backend, lo, Entry(kind, _copy(lo.entry.value), lo.entry.expire_at_ms), elements, metas, [])
        await _write(backend, elements, metas)
        lo = await load(backend, namespace, key, now_ms, [])
    actor = backend.stamp()[0]
    meta = backend.local(lo.skey)
    birth = next_birth(meta, actor)
    state = lo.state if lo.state.exists else MetaState(kind, lo.state.cleared)
    born = []

    def effect(record: Record | None) -> tuple[bytes | None, Any]:
        sibling = visible(record, state, now_ms)
        before = None if sibling is None else _value_of(kind, {element: element_value(sibling)})[element]
        entry = Entry(kind, {} if sibling is None else {element: before}, 0)
        writes, reply = spec.run(ctx, args, {key: entry})
        after = writes.get(key)
        value = None if after is None else after.value.get(element)
        if value is None or value == before:
            return None, reply  # nothing to write (the round still orders the command)
        if sibling is None:
            births = carried_births(record, state, meta.clock if meta is not None else {})
            births.add(birth)
            born.append(True)
        else:
            births = carried_births(record, state, {})
        return encode_element(kind, list(births), _element_bytes(kind, value)), reply

    reply = await backend.consensus(namespace, element_storage_key(lo.skey, element), effect)
    if born:
        actor, ts = backend.stamp()
        meta = backend.local(lo.skey)
        meta_state_now = MetaState(kind, state.cleared, state.expire_at_ms)
        await backend.write([(lo.skey, meta, write_meta(meta, meta_state_now, actor=actor, timestamp=ts, kind=kind))])
    return reply


async def _write(backend: Backend, elements: list, metas: list) -> None:
    if elements and metas and len(elements) + len(metas) <= MAX_KEYS_PER_PUT_MANY:
        # One batch per replica: a replica that holds a meta write holds the elements it names.
        await backend.write(elements + metas)
    else:
        if elements:
            await backend.write(elements)  # every element at W before any meta write names its birth
        if metas:
            await backend.write(metas)


def _copy(value: Any) -> Any:
    return set(value) if type(value) is set else dict(value) if type(value) is dict else \
        list(value) if type(value) is list else value


def _plan(backend: Backend, lo: Loaded, after: Entry | None, elements: list, metas: list, emptied: list) -> None:
    """The records that take key `lo` to `after` (None or an empty collection: gone)."""
    actor, ts = backend.stamp()
    gone = after is None or after.is_empty()
    if not gone and after.kind in STORED_PER_ELEMENT:
        kind = after.kind
        meta = backend.local(lo.skey)  # the record `lo.state` was read from (the keys are locked)
        same = lo.per_element and lo.entry.kind == kind
        if same:
            before, cleared = lo.entry.value, lo.state.cleared
        elif lo.per_element:  # a collection of another kind replaced: none of its elements stays
            before, cleared = (), join(lo.state.cleared, meta.clock)
        else:  # a collection stored whole is rewritten per element; a string replaced
            before, cleared = (), lo.state.cleared
        if kind == KIND_SET:
            adds = [(m, b"") for m in after.value if m not in before]
        else:  # a hash field's value, a member's score
            adds = [(e, _element_bytes(kind, v)) for e, v in after.value.items() if not same or before.get(e) != v]
        removes = [e for e in before if e not in after.value]
        if not adds and not removes and same and after.expire_at_ms == lo.state.expire_at_ms:
            return
        state = MetaState(kind, cleared, after.expire_at_ms)
        birth = next_birth(meta, actor)
        namespace = lo.skey[9:9 + lo.skey[8]]
        for m, value in adds:
            check_element(namespace, lo.key, m)
            if value:
                backend.store.check_value(value)
            eskey = element_storage_key(lo.skey, m)
            stored = backend.local(eskey)
            elements.append((eskey, stored, write_element(stored, state, meta, actor=actor, timestamp=ts,
                                                          kind=kind, birth=birth, value=value)))
        for m in removes:
            eskey = element_storage_key(lo.skey, m)
            stored = backend.local(eskey)
            elements.append((eskey, stored, remove_element(stored, actor=actor, timestamp=ts)))
        if adds or not same or after.expire_at_ms != lo.state.expire_at_ms:
            metas.append((lo.skey, meta, write_meta(meta, state, actor=actor, timestamp=ts, kind=kind)))
        return
    if gone and lo.per_element:
        for m in (lo.entry.value if lo.partial else ()):  # the named members it removed
            if after is None or m not in after.value:
                eskey = element_storage_key(lo.skey, m)
                stored = backend.local(eskey)
                elements.append((eskey, stored, remove_element(stored, actor=actor, timestamp=ts)))
        if lo.partial:
            emptied.append(lo)  # the members it did not load decide whether the set is gone
        else:
            meta = backend.local(lo.skey)
            metas.append((lo.skey, meta, clear_meta(meta, lo.state, actor=actor, timestamp=ts, whole=True)))
        return
    # A key that holds something else now (or nothing): its own record, overwritten whole.
    value = None if gone else (after.value if after.kind == KIND_STRING else Typed(after.kind, codec.encode(after.kind, after.value)))
    backend.store.check_value(value)
    stored = backend.local(lo.skey)
    metas.append((lo.skey, stored, overwrite(stored, actor=actor, value=value, timestamp=ts,
                                             expire_at_ms=0 if gone else after.expire_at_ms)))


async def _clear_if_empty(backend: Backend, lo: Loaded, now_ms: int) -> None:
    """A clear marker for a set whose named members a command removed, when a read of all its
    members finds none left (the emptiness rule: the backend reads at R with R + W > N)."""
    start, end = elements_range(lo.skey)
    meta = await backend.record(lo.skey)
    state = meta_state(meta, now_ms)
    if not state.exists or state.kind != lo.state.kind:
        return
    # Closed at once when it stops early: a local page reader holds an engine snapshot, and
    # every write to the memtable copies into each open one (left to the garbage collector,
    # hundreds piled up and an HDEL cost 12 ms).
    async with contextlib.aclosing(backend.pages(start, end, PROBE_PAGE_RECORDS)) as pages:
        async for page in pages:
            if any(visible(rec, state, now_ms) is not None for _, rec in page):
                return
    actor, ts = backend.stamp()
    stored = backend.local(lo.skey)
    await backend.write([(lo.skey, stored, clear_meta(stored, state, actor=actor, timestamp=ts, whole=False))])


# ---------------------------------------------------------------------------- backends

LOCAL_PAGE_RECORDS = 1000
# The emptiness probe's first page (records), and how pages grow after a small first one: a
# probe of a set that still has members reads a few records, not a full page.
PROBE_PAGE_RECORDS = 16
PAGE_GROWTH = 8


class LocalLocks:
    """A single node's per-key locks for these commands, shared by every view of its store
    (a range read frees the event loop between pages, so commands on one key must wait for
    each other). An entry exists only while a key is held."""

    _held: dict[bytes, asyncio.Lock] = {}
    _waiting: dict[bytes, int] = {}

    @classmethod
    async def acquire(cls, store: object, skeys: list[bytes]) -> list[bytes]:
        held = []
        for skey in sorted(set(skeys)):
            name = id(store).to_bytes(8, "little") + skey
            lock = cls._held.setdefault(name, asyncio.Lock())
            cls._waiting[name] = cls._waiting.get(name, 0) + 1
            await lock.acquire()
            held.append(name)
        return held

    @classmethod
    def release(cls, held: list[bytes]) -> None:
        for name in held:
            cls._held[name].release()
            cls._waiting[name] -= 1
            if not cls._waiting[name]:
                del cls._waiting[name], cls._held[name]


class _OnStore:
    """What both backends take from this node's own store."""

    store: Any

    def local(self, skey: bytes) -> Record | None:
        return self.store.read(skey)

    def sample(self, start: bytes, end: bytes) -> bytes | None:
        # This node's own copy: in a cluster, a coordinator that is no replica of the key holds
        # none of it (the draw finds nothing, and the command reads every element).
        return self.store.engine.sample(start, end, _RANDOM)

    @property
    def indexed(self) -> bool:
        return self.store.score_index is not None

    def stale(self, ikey: bytes, eskey: bytes, score: float) -> None:
        """Remove an index entry that this replica's own record of the member does not back (a
        record the engine collected, or an entry read from a peer and never held here)."""
        if score not in record_scores(self.store.read(eskey)):
            self.store.score_index.discard(ikey)

    def stamp(self) -> tuple[bytes, int]:
        replica = self.store.replica
        return replica.actor, replica.hlc.now(replica.wall.now_ms())


class LocalBackend(_OnStore):
    """A single node: its engine is every replica."""

    concurrent = False
    consensus = None

    def __init__(self, store):
        self.store = store
        self.lsn = 0

    async def record(self, skey: bytes) -> Record | None:
        return self.store.read(skey)

    async def records(self, skeys: list[bytes]) -> list[Record | None]:
        return [self.store.read(s) for s in skeys]

    async def pages(self, start: bytes, end: bytes, first_records: int = 0) -> AsyncIterator[list[tuple[bytes, Record]]]:
        """Pages of LOCAL_PAGE_RECORDS over a snapshot, the event loop free between pages (a
        set of a million members takes seconds: the node serves others meanwhile)."""
        size = first_records or LOCAL_PAGE_RECORDS
        with self.store.engine.scan(start, end) as it:
            page = []
            for k, v in it:
                page.append((bytes(k), decode_record(bytes(v))))
                if len(page) >= size:
                    yield page
                    page = []
                    size = min(LOCAL_PAGE_RECORDS, size * PAGE_GROWTH)
                    await asyncio.sleep(0)
            if page:
                yield page

    async def index_pages(self, start: bytes, end: bytes, first: int) -> AsyncIterator[list[tuple[bytes, float, bytes]]]:
        """The entries over a snapshot of this node's index, in pages growing from `first`."""
        entries = self.store.score_index.entries(start, end)
        try:
            size, page = first, []
            for entry in entries:
                page.append(entry)
                if len(page) >= size:
                    yield page
                    page, size = [], min(LOCAL_PAGE_RECORDS, size * PAGE_GROWTH)
            if page:
                yield page
        finally:
            entries.close()  # the snapshot, at once (see _clear_if_empty)

    async def write(self, records: list[tuple[bytes, Record | None, Record]]) -> None:
        # The command holds its keys' locks (LocalLocks); its writes are one step of the loop.
        for skey, stored, record in records:
            self.lsn = self.store.store_record(skey, stored, record)[1] or self.lsn

    async def flush(self) -> None:
        await self.store.durable(self.lsn)


class ClusterBackend(_OnStore):
    """A replica of the keys in a cluster: reads at `r` from the key's replicas (merged into
    this one), writes here and then at `w` on home replicas only."""

    concurrent = True

    def __init__(self, store, placement, reads, writes, r: int, w: int, proposer=None):
        self.store, self.placement, self.reads, self.writes = store, placement, reads, writes
        self.r, self.w = r, w
        self.proposer = proposer
        self.consensus = None if proposer is None else self._consensus

    async def _consensus(self, namespace: bytes, eskey: bytes, effect) -> Any:
        return await self.proposer.run_element(namespace, eskey, effect, self.w)

    def _merge_here(self, skey: bytes, merged: bytes | None) -> None:
        if merged is None:
            return
        stored = self.store.engine.get(skey)
        if stored is None or bytes(stored) != merged:
            self.store.apply_record(skey, merged)

    async def record(self, skey: bytes) -> Record | None:
        merged = await self.reads.read(skey, self.r, self.placement.replicas_of(skey))
        self._merge_here(skey, merged)
        return self.store.read(skey)

    async def records(self, skeys: list[bytes]) -> list[Record | None]:
        if not skeys:
            return []
        n = len(self.placement.replicas_of(skeys[0]))
        merged = await self.reads.read_many(skeys, {n: self.r})
        for skey, data in zip(skeys, merged, strict=True):
            self._merge_here(skey, data)
        return [self.store.read(s) for s in skeys]

    async def pages(self, start: bytes, end: bytes, first_records: int = 0) -> AsyncIterator[list[tuple[bytes, Record]]]:
        after = None
        size = first_records or MAX_RANGE_RECORDS
        while True:
            page = await read_range(self.reads, start, end, after, self.r, max_records=size)
            size = min(MAX_RANGE_RECORDS, size * PAGE_GROWTH)
            out = []
            for skey, data in page.records:
                self._merge_here(skey, data)
                out.append((skey, decode_record(data)))
            yield out
            if page.after is None:
                return
            after = page.after

    async def index_pages(self, start: bytes, end: bytes, first: int) -> AsyncIterator[list[tuple[bytes, float, bytes]]]:
        """The union of R replicas' entries (read_range over their indexes), in pages."""
        after, size = None, first
        while True:
            page = await read_range(self.reads, start, end, after, self.r, max_records=size, index=True)
            size = min(MAX_RANGE_RECORDS, size * PAGE_GROWTH)
            yield [parse_entry(ikey) for ikey, _ in page.records]
            if page.after is None:
                return
            after = page.after

    async def write(self, records: Sequence[tuple[bytes, Record | None, Record]]) -> None:
        """Store `records` here (one log write), then at W on home replicas: one ReplicaPutMany
        per replica, applied there in one WriteBatch (a command's keys share one partition)."""
        sent = []
        lsn = 0
        for skey, stored, record in records:
            data, written = self.store.store_record(skey, stored, record, defer=True)
            lsn = written or lsn
            sent.append((skey, data))
        if self.store.has_pending_writes:
            self.store.commit_writes()  # in the log before any other replica is asked to hold them
        await self.store.durable(lsn)  # fsynced first under sync=always
        await self.writes.replicate_many(sent, self.placement.replicas_of(sent[0][0]), self.w, True)

    async def flush(self) -> None:
        return None
