"""The consensus path of a key: read-modify-write commands as Paxos rounds among its replicas.

Every command whose result depends on the current value (the INCR family, APPEND, SET with
NX/XX/GET/KEEPTTL/IFEQ..., GETDEL, GETEX, the EXPIRE family, DEL, CAS, a SERIAL read) runs
here in a namespace whose `rmw` is "paxos" (the default). The rules are cluster/paxos.py's;
docs/consistency.md says why they are safe and what they cost. This module does the IO:

- `AcceptorStore` keeps each key's acceptor state in an engine of its own
  (`<data_dir>/paxos`), written before any answer leaves (and fsynced first under
  sync=always), so a restarted acceptor keeps its promises.
- `Acceptor` answers PaxosPrepare (with the stored record: the read folded into phase 1),
  PaxosPropose and PaxosCommit.
- `Proposer` runs rounds: it computes the new value with the command's own `apply`
  (node/commands.py) from the current value, the highest accepted value merged with the
  stored records of the quorum, and builds the new record with a dot of this node's actor
  and the merged clock as context, so it supersedes everything the round saw. Once a
  majority accepted (of each replica set, during a membership change), the record is chosen:
  it is stored here, the commit goes to every replica, and the client is answered once the
  command's write level W of the key's replicas hold the record as data (this one counting;
  a replica that fails or misses it gets a hint, and then the answer does not wait for it),
  so that a read at R with R + W > N sees it. The proposer keeps the ballot its last value
  was accepted with, and the value: the next command on the key skips phase 1 (one round
  trip), unless another proposer or a plain write came in between.

Keys with a hash tag share the tag's group register (see "registers" below): MSETNX of
several keys of one tag is one round, committed in one WriteBatch per replica.

What a client is told when a round does not finish:
- too few replicas answered before anything was accepted: an error saying nothing was
  applied;
- a higher ballot won (contention): the round is retried, up to MAX_ATTEMPTS with jittered
  back-off, then an error naming the contention, nothing applied;
- the value may have been accepted somewhere without a majority seen (timeouts): the next
  attempt finds out (the dot of the value it proposed is in the register, or not); if the
  attempts run out first, an error says the command may or may not have been applied and
  names the ballot (a SERIAL read completes any such round and shows the outcome).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgspec

from ringkv.clock import Clock
from ringkv.cluster.paxos import (
    ZERO,
    AcceptorState,
    Ballot,
    Chosen,
    Lease,
    Outcome,
    Phase,
    Prepare,
    Promise,
    Propose,
    ProposerRound,
    ballot_above,
    ballot_floor,
    command_rounds,
    decode_state,
    encode_state,
    next_ballot,
    on_commit,
    on_prepare,
    on_propose,
    read_rounds,
)
from ringkv.cluster.ring import hash_part
from ringkv.errors import CommandError, CorruptionError, InvalidContextError
from ringkv.node.commands import (
    BLIND,
    STORED,
    Command,
    MSetNX,
    Replace,
    Set,
    TypeWrite,
    fill_result,
)
from ringkv.node.handoff import HintStore
from ringkv.node.local_store import LocalStore
from ringkv.node.messages import (
    MAX_KEYS_PER_PUT_MANY,
    PaxosAccepted,
    PaxosCommit,
    PaxosPrepare,
    PaxosPromise,
    PaxosPropose,
    ReplicaAck,
)
from ringkv.node.placement import Placement
from ringkv.node.quotas import quota_checked
from ringkv.node.replica import split_storage_key, storage_key
from ringkv.node.replica_calls import ReplicaCalls, outcome
from ringkv.service.elements import ELEMENT_MARK
from ringkv.storage import Engine, Options
from ringkv.versioning import dvv
from ringkv.versioning import record as rec
from ringkv.versioning.record import ConflictPolicy

log = logging.getLogger("ringkv.consensus")

MAX_ATTEMPTS = 8  # rounds one command may take under contention before it gives up
BACKOFF_BASE_MS = 2.0  # first back-off after a refused round, doubled per attempt, jittered
BACKOFF_MAX_MS = 100.0
MAX_LEASES = 100_000  # keys whose last accepted ballot (and value) a proposer remembers
# Keys one command on a hash tag's group register may name, and records one group value may
# hold (a value is the register's whole state: every key of the tag written through it).
MAX_GROUP_KEYS = MAX_KEYS_PER_PUT_MANY
# Bytes of one encoded group value: a promise carries the accepted value and the stored records
# of the command's keys, both within one RPC frame (16 MiB by default).
MAX_GROUP_VALUE_BYTES = 6 * 1024 * 1024
CROSSSLOT = "CROSSSLOT"


class ConsensusError(CommandError):
    """A consensus round that did not finish; the message says whether anything was applied."""

    def __init__(self, message: str, status: int = 503):
        super().__init__(message, status=status)


# --------------------------------------------------------------------------- registers
#
# A key without a hash tag is a register of its own: its Paxos state is kept under its storage
# key and its value is its record. The keys of one hash tag (`{user1}:a`, `{user1}:b`) share
# one register, the tag's group register, kept under the storage key of `{tag}` in the same
# namespace: the same token, so the same partition and replicas (cluster/ring.hash_part). Its
# value is a group value: the records of every key of the tag written through it (GroupRegister
# says why all of them), by storage key. Every
# consensus command on a tagged key (INCR, CAS, SETNX, MSETNX, a SERIAL read, ...) is a round
# of the group register, so all of them on one tag are linearizable with each other, and a
# command may change several of the tag's keys in one chosen value (MSETNX). Prepare names the
# command's keys and the promise carries their stored records; the commit writes every record
# of the value in one WriteBatch on each replica.


def register_key(skey: bytes) -> bytes:
    """The storage key a key's consensus register is kept under: `skey` itself, or for a key
    with a hash tag the tag's group register, `{tag}` in the key's namespace. A collection's
    element (a hash field an HINCRBY changes) is a register of its own, tag or not: a group
    value would hold every field."""
    n = skey[8]
    key = skey[9 + n:]
    if key[:3] == ELEMENT_MARK:
        return skey
    part = hash_part(key)
    if len(part) == len(key):
        return skey
    group = b"{" + part + b"}"
    return skey if key == group else skey[:9 + n] + group


def is_group_register(skey: bytes) -> bool:
    """Whether `skey` (a register key) is a hash tag's group register."""
    key = skey[9 + skey[8]:]
    return key[:3] != ELEMENT_MARK and len(hash_part(key)) != len(key)


def crossslot_error(first: bytes, other: bytes, command: str = "MSETNX",
                    reason: str = "is one consensus round") -> CommandError:
    """Redis Cluster's refusal of a multi-key command over several slots, with the rule."""
    return CommandError(
        f"Keys in request don't hash to the same slot: {command} of several keys {reason}, "
        "so its keys must share one hash tag (the part between the first '{' and the next '}': "
        f"'{{user1}}:a' and '{{user1}}:b' share 'user1'); '{_text(first)}' and '{_text(other)}' do not",
        kind=CROSSSLOT, status=400)


_group_encoder = msgspec.msgpack.Encoder()
_group_decoder = msgspec.msgpack.Decoder(list[tuple[bytes, bytes]])


def encode_group(entries: dict[bytes, bytes]) -> bytes:
    """A group value (or a group base: clocks instead of records): [[skey, bytes], ...] in key
    order, so that equal values encode equally."""
    if len(entries) > MAX_GROUP_KEYS:
        raise CommandError(f"a hash tag's consensus register holds the records of at most {MAX_GROUP_KEYS} keys "
                           f"(MAX_GROUP_KEYS), and this command would make it {len(entries)}: spread the keys "
                           "over more hash tags")
    data = _group_encoder.encode(sorted(entries.items()))
    if len(data) > MAX_GROUP_VALUE_BYTES:
        raise CommandError(f"a hash tag's consensus register holds at most {MAX_GROUP_VALUE_BYTES} bytes of records "
                           f"(MAX_GROUP_VALUE_BYTES), and this command would make it {len(data)}: spread the keys "
                           "over more hash tags")
    return data


def decode_group(data: bytes | None, register: bytes | None = None) -> dict[bytes, bytes]:
    """The entries of a group value; with `register`, each key is checked to belong to it (a
    value comes from a peer: an acceptor never stores records under another tag's register).
    CorruptionError on anything else."""
    if data is None:
        return {}
    try:
        pairs = _group_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise CorruptionError(f"a group register value is unreadable: {exc}") from None
    if len(pairs) > MAX_GROUP_KEYS or len(data) > MAX_GROUP_VALUE_BYTES:
        raise CorruptionError(f"a group register value holds {len(pairs)} records in {len(data)} bytes, over "
                              f"MAX_GROUP_KEYS ({MAX_GROUP_KEYS}) or MAX_GROUP_VALUE_BYTES ({MAX_GROUP_VALUE_BYTES})")
    if register is not None:
        for skey, _ in pairs:
            if len(skey) < 9 or register_key(skey) != register:
                raise CorruptionError(f"a group register value names key {skey!r} of another register")
    return dict(pairs)


class GroupRegister:
    """cluster/paxos.Register over group values, for one command on the hash tag's `keys`.

    A group value is the register's whole state: the records of every key of the tag that a
    chosen value wrote (`full_state`). Acceptors keep it after the commit, and a round builds on
    the highest accepted value, merged with the stored records of its keys (which add writes
    made outside the register, plain SETs). Why not only the command's keys: a value chosen and
    committed at one replica, then overtaken by a value of other keys accepted everywhere else,
    would leave its records on that one replica, and a later round that missed it could apply
    an overlapping MSETNX a second time (tests/node/test_group_register.py found this).

    A dot is (storage key, dvv.Dot): the dot of the first key the command wrote (all of its keys
    are written in the same value, so one names the value)."""

    __slots__ = ("_apply", "_written", "keys", "policy")
    full_state = True

    def __init__(self, policy: ConflictPolicy,
                 apply: Callable[[dict[bytes, bytes], tuple[Any, ...]], tuple[dict[bytes, bytes] | None, Any, Any]],
                 keys: list[bytes] | tuple[bytes, ...] = ()):
        self.policy = policy
        self._apply = apply
        self.keys = keys
        self._written: dict[bytes, bytes] = {}

    def merge(self, a: bytes | None, b) -> bytes | None:
        if b is None:
            return a
        b = bytes(b)
        if a is None or a == b:
            return b
        entries = decode_group(a)
        for skey, record in decode_group(b).items():
            mine = entries.get(skey)
            entries[skey] = record if mine is None or mine == record else rec.encode_record(
                rec.merge(rec.decode_record(mine), rec.decode_record(record), self.policy))
        return encode_group(entries)

    def compute(self, current: bytes | None, earlier: tuple[Any, ...]) -> tuple[bytes | None, Any, Any]:
        entries = decode_group(current)
        new, result, dot = self._apply(entries, earlier)
        self._written = new or {}
        if new is None:
            return None, result, None
        # The value keeps every record of the current one: those of an unfinished value it
        # completes are chosen with it.
        entries.update(new)
        return encode_group(entries), result, dot

    def changes(self) -> bytes:
        """The records the last compute wrote, as a group value: all that a commit of a value
        built on a value known committed must store (paxos.Chosen.record). The value's other
        records are the earlier value's, whose commit its proposer sent (a replica that missed
        it got them as hints); storing all of them again on every commit would cost a read and
        a merge per key of the tag."""
        return encode_group(self._written)

    @staticmethod
    def covers(value: bytes | None, dot: tuple[bytes, dvv.Dot]) -> bool:
        record = decode_group(value).get(dot[0])
        return record is not None and dvv.covers(rec.decode_record(record).clock, dot[1])

    def base(self, value: bytes | None) -> bytes | None:
        # The command's keys, which its result depends on: an acceptor holding a plain write to
        # one of them that the value has not seen refuses the leased proposal. (The value's
        # other records may be older than a plain write; committing them changes nothing on a
        # replica that has the write, and the command that next reads such a key checks it.)
        entries = decode_group(value)
        clocks = {k: dvv.encode_context(rec.decode_record(entries[k]).clock if k in entries else {})
                  for k in self.keys}
        return encode_group(clocks) if clocks else None

    @staticmethod
    def unchanged(current: bytes | None, known: bytes | None) -> bytes | None:
        # The records read from stored data of keys `known` lacks stay out: a replica that
        # missed an earlier multi-key commit must not get some of its keys from this one.
        if known is None or current is None:
            return current
        keys = decode_group(known).keys()
        return encode_group({k: r for k, r in decode_group(current).items() if k in keys})


def check_register_value(register: bytes, value: bytes, base: bytes | None = None) -> None:
    """Check a value (and base) a peer proposed or committed for `register` before an acceptor
    keeps it, since it may become stored data: a record (and an encoded clock), or for a group
    register a group value of that register's keys, each a record (and clocks). Raises
    CorruptionError (or the record decoder's error)."""
    if not is_group_register(register):
        rec.decode_record(value)
        if base is not None:
            dvv.decode_context(base)
        return
    for record in decode_group(value, register).values():
        rec.decode_record(record)
    if base is not None:
        for clock in decode_group(base, register).values():
            dvv.decode_context(clock)


def group_records(value: bytes | None, skeys: list[bytes]) -> list[bytes | None]:
    """The records of `skeys` in a group value (None: no record)."""
    entries = decode_group(value)
    return [entries.get(k) for k in skeys]


# --------------------------------------------------------------------------- acceptor


class AcceptorStore:
    """Acceptor states by storage key, in their own engine (as hints are)."""

    def __init__(self, data_dir: str, sync: str = "interval", encryption_keys=None):
        self.engine = Engine.open(os.path.join(data_dir, "paxos"),
                                  Options(sync=sync, memtable_bytes=4 * 1024 * 1024, background="thread",
                                          block_cache_bytes=8 * 1024 * 1024, max_value_bytes=64 * 1024 * 1024,
                                          encryption_keys=encryption_keys))
        self.sync_always = sync == "always"

    def get(self, skey: bytes) -> AcceptorState:
        data = self.engine.get(skey)
        try:
            return decode_state(None if data is None else bytes(data))
        except Exception as exc:  # never guess what was promised
            raise CorruptionError(f"acceptor state of a key is unreadable: {exc}") from None

    def put(self, skey: bytes, state: AcceptorState) -> int:
        """Store `state` in the log now (one write to the OS; the LSN to wait for an fsync)."""
        return self.engine.put(skey, encode_state(state), sync=False)

    async def durable(self, lsn: int) -> None:
        if self.sync_always and lsn:
            await asyncio.get_running_loop().run_in_executor(None, self.engine.wait_durable, lsn)

    def forget_values(self, keep_namespace: bytes) -> int:
        """After FLUSHALL: every register outside `keep_namespace` forgets the value it holds
        (a group register keeps its committed value, which would bring the flushed keys
        back at its next round) and the one it accepted; promises stay, so no ballot is
        reused. Returns how many states changed."""
        changed = []
        with self.engine.scan() as it:
            for skey, data in it:
                if split_storage_key(bytes(skey))[0] == keep_namespace:
                    continue
                state = decode_state(bytes(data))
                if state.value is not None or state.accepted != ZERO:
                    changed.append((bytes(skey), AcceptorState(max(state.promised, state.accepted), ZERO, None,
                                                               state.committed)))
        for skey, state in changed:
            self.put(skey, state)
        return len(changed)

    def close(self) -> None:
        self.engine.flush()
        self.engine.close()


class Acceptor:
    """This node as an acceptor of its keys."""

    def __init__(self, states: AcceptorStore, store: LocalStore):
        self.states = states
        self.store = store

    def prepare(self, skey: bytes, ballot: Ballot, keys: list[bytes] | tuple[bytes, ...] = ()
                ) -> tuple[PaxosPromise, int]:
        """(the answer, the LSN to be durable before it leaves). `skey` is the register's key;
        `keys`, for a group register, the storage keys whose records the promise carries."""
        if keys:
            _check_group_keys(skey, keys)
        new, answer = on_prepare(self.states.get(skey), ballot)
        lsn = self.states.put(skey, new) if new is not None else 0
        if isinstance(answer, Promise):
            if keys:
                get = self.store.engine.get
                found = {k: bytes(d) for k in keys if (d := get(k)) is not None}
                record = encode_group(found) if found else None
            else:
                data = self.store.engine.get(skey)
                record = None if data is None else bytes(data)
            return PaxosPromise(True, ballot, answer.accepted, answer.value, answer.committed, record), lsn
        return PaxosPromise(False, answer.promised), lsn

    def propose(self, skey: bytes, ballot: Ballot, value: bytes, base: bytes | None) -> tuple[PaxosAccepted, int]:
        state = self.states.get(skey)
        if base is not None and ballot >= state.promised:
            bases = decode_group(base, skey).items() if is_group_register(skey) else ((skey, base),)
            for key, clock in bases:
                stored = self.store.read(key)
                if stored is not None and not dvv.descends(dvv.decode_context(clock), stored.clock):
                    # A write this proposer has not seen (a plain SET, or a commit it missed):
                    # it must read again with a full round.
                    return PaxosAccepted(False, state.promised, stale=True), 0
        new, answer = on_propose(state, ballot, value)
        if answer is True:
            return PaxosAccepted(True), self.states.put(skey, new)
        return PaxosAccepted(False, answer.promised), 0

    def commit(self, skey: bytes, ballot: Ballot, record: bytes) -> tuple[int, int]:
        """Store the chosen `record` as data and note the commit: (the data's LSN, the state's).
        A group register's value is every record of it, written in one WriteBatch: a reader of
        this replica sees all of a multi-key command or none of it."""
        if is_group_register(skey):
            data_lsn = self.store.apply_records(list(decode_group(record, skey).items()))
        else:
            data_lsn = self.store.apply_record(skey, record)
        new = on_commit(self.states.get(skey), ballot, keep_value=is_group_register(skey))
        return data_lsn, (self.states.put(skey, new) if new is not None else 0)

    # ------------------------------------------------------------ RPC handlers

    async def on_prepare(self, body: PaxosPrepare) -> PaxosPromise:
        reply, lsn = self.prepare(body.skey, tuple(body.ballot), body.keys)
        await self.states.durable(lsn)
        return reply

    async def on_propose(self, body: PaxosPropose) -> PaxosAccepted:
        reply, lsn = self.propose(body.skey, tuple(body.ballot), body.value, body.base)
        await self.states.durable(lsn)
        return reply

    async def on_commit(self, body: PaxosCommit) -> ReplicaAck:
        data_lsn, state_lsn = self.commit(body.skey, tuple(body.ballot), body.record)
        await self.store.durable(data_lsn)
        await self.states.durable(state_lsn)
        return ReplicaAck()


def _check_group_keys(register: bytes, keys: list[bytes] | tuple[bytes, ...]) -> None:
    """A Prepare's keys must be of its group register (a peer sent them)."""
    if len(keys) > MAX_GROUP_KEYS:
        raise CommandError(f"a Prepare names {len(keys)} keys, over MAX_GROUP_KEYS ({MAX_GROUP_KEYS})")
    if not is_group_register(register):
        raise CommandError("a Prepare names keys, but its register is not a hash tag's group register")
    for key in keys:
        if len(key) < 9 or register_key(key) != register:
            raise CommandError(f"a Prepare names key {key!r}, which is not of its group register")


# --------------------------------------------------------------------------- proposer


class RecordRegister:
    """cluster/paxos.Register over encoded records, for one command on one key."""

    __slots__ = ("_apply", "policy")

    def __init__(self, policy: ConflictPolicy, apply: Callable[[bytes | None], tuple[bytes | None, Any, Any]]):
        self.policy = policy
        self._apply = apply

    def merge(self, a: bytes | None, b) -> bytes | None:
        if b is None:
            return a
        b = bytes(b)
        if a is None or a == b:
            return b
        return rec.encode_record(rec.merge(rec.decode_record(a), rec.decode_record(b), self.policy))

    def compute(self, current: bytes | None, earlier: tuple[dvv.Dot, ...]) -> tuple[bytes | None, Any, Any]:
        return self._apply(current, earlier)

    @staticmethod
    def covers(value: bytes | None, dot: dvv.Dot) -> bool:
        return value is not None and dvv.covers(rec.decode_record(value).clock, dot)

    @staticmethod
    def base(value: bytes | None) -> bytes | None:
        return None if value is None else dvv.encode_context(rec.decode_record(value).clock)

    @staticmethod
    def unchanged(current: bytes | None, known: bytes | None) -> bytes | None:
        return current


class Proposer:
    def __init__(self, node_id: str, actor: bytes, placement: Placement, calls: ReplicaCalls, store: LocalStore,
                 acceptor: Acceptor, hints: HintStore | None, clock: Clock, stats: dict[str, int],
                 rng: random.Random | None = None):
        self.node_id = node_id
        self.actor = actor
        self.placement = placement
        self.calls = calls
        self.store = store
        self.acceptor = acceptor
        self.hints = hints
        self.clock = clock
        self.stats = stats
        self.rng = rng or random.Random()
        self._leases: OrderedDict[bytes, Lease] = OrderedDict()
        self._seen: OrderedDict[bytes, Ballot] = OrderedDict()  # the highest ballot seen per key

    # ------------------------------------------------------------ placement and ballots

    def forget_leases(self, keep_namespace: bytes = b"") -> None:
        """After FLUSHALL: the values this proposer remembers of its last rounds are gone."""
        self._leases.clear()

    def _replica_sets(self, skey: bytes) -> list[tuple[str, ...]]:
        pref = self.placement.replicas_of(skey)
        pending = self.placement.pending_replicas_of(skey)
        return [pref] if pending is None or pending == pref else [pref, pending]

    def _note_seen(self, skey: bytes, ballot: Ballot) -> None:
        seen = self._seen.get(skey, ZERO)
        if ballot > seen:
            self._seen[skey] = ballot
            self._seen.move_to_end(skey)
            if len(self._seen) > MAX_LEASES:
                self._seen.popitem(last=False)

    def _fresh_ballot(self, skey: bytes) -> Ballot:
        ballot = ballot_above(self._seen.get(skey, ZERO), self.node_id, at_least=ballot_floor(self.clock.now_ms()))
        self._note_seen(skey, ballot)
        return ballot

    # ------------------------------------------------------------ commands and reads

    async def run(self, namespace: bytes, key: bytes, command: Command, w: int = 1) -> Any:
        """Run `command` as consensus rounds until one is chosen (see the module docstring),
        answering once `w` of the key's replicas store the chosen record. An MSetNX names its
        keys itself (`key` is its first); they must share one register."""
        self.store.check_key(key, namespace)
        skey = storage_key(namespace, key)
        rkey = register_key(skey)
        policy = self.placement.namespaces.of_stored(namespace).conflict_policy
        self.stats["paxos_commands"] += 1
        group_keys = command.group_keys()
        if group_keys is not None:
            skeys = self._group_keys(namespace, group_keys, rkey, command)
            if isinstance(command, MSetNX) and not is_group_register(rkey):  # one key without a tag: SET NX
                self.stats["paxos_commands"] -= 1
                return bool((await self.run(namespace, key, Set(command.pairs[-1][1], condition="nx"), w))[0])
        elif rkey != skey or is_group_register(rkey):
            skeys = [skey]
        else:
            skeys = None
        lease = self._leases.pop(rkey, None)
        if skeys is None:
            register: Any = RecordRegister(policy, quota_checked(functools.partial(self._apply, command, policy),
                                                                 self.store.quotas, namespace, len(key)))
            local = self.store.engine.get(skey) if lease is not None else None
            local = None if local is None else bytes(local)
        else:
            register = GroupRegister(policy, functools.partial(self._apply_group, command, policy, namespace, skeys),
                                     skeys)
            local = self._local_group(skeys) if lease is not None else None
        rounds = command_rounds(register, self._replica_sets(rkey), functools.partial(self._fresh_ballot, rkey),
                                lease=lease, local=local, max_attempts=MAX_ATTEMPTS)
        try:
            outcome = await self._drive(rkey, rounds, skeys, w)
        except InvalidContextError:
            if lease is None:
                raise
            # A client's context names a version the leased value lacks (a plain write since):
            # the leased attempt computes first and proposes nothing, so run the command again
            # with a full round, which reads a majority, before refusing the context.
            return await self.run(namespace, key, command, w)
        return self._result(outcome, lease)

    async def run_element(self, namespace: bytes, eskey: bytes,
                          effect: Callable[[rec.Record | None], tuple[bytes, Any]], w: int = 1) -> Any:
        """A read-modify-write of one element of a collection (HINCRBY of a hash field), as
        rounds of the element's own register (`register_key`): `effect(record)` answers the
        element's new value (None: nothing to write) and the command's result from its record
        as the round found it (None: no record), and must not write anything itself (a round
        may compute several times). Answers once `w` of the key's replicas store the chosen record; errors as
        `run`'s. The caller (node/elements.py) writes the collection's meta record after."""
        policy = self.placement.namespaces.of_stored(namespace).conflict_policy
        self.stats["paxos_commands"] += 1

        def apply(current: bytes | None, earlier: tuple[dvv.Dot, ...]) -> tuple[bytes | None, Any, Any]:
            record = None if current is None else rec.decode_record(current)
            value, result = effect(record)
            if value is None:
                return None, result, None  # nothing to write
            self.store.check_value(value)
            new, dot = proposed_record(record, None if record is None else record.clock, earlier, actor=self.actor,
                                       value=value, timestamp=self.store.replica.hlc_now(), expire_at_ms=0,
                                       policy=policy)
            return rec.encode_record(new), result, dot

        register = RecordRegister(policy, quota_checked(apply, self.store.quotas, namespace, len(eskey) - 9 - eskey[8]))
        lease = self._leases.pop(eskey, None)
        local = self.store.engine.get(eskey) if lease is not None else None
        rounds = command_rounds(register, self._replica_sets(eskey), functools.partial(self._fresh_ballot, eskey),
                                lease=lease, local=None if local is None else bytes(local), max_attempts=MAX_ATTEMPTS)
        return self._result(await self._drive(eskey, rounds, None, w), lease)

    def _result(self, outcome: Outcome, lease: Lease | None) -> Any:
        """A command's result from its rounds' outcome, or the error that says what happened."""
        if outcome.kind == "done":
            if lease is not None and outcome.ballot == next_ballot(lease.ballot):
                self.stats["paxos_leased"] += 1
            return outcome.result
        if outcome.kind == "unavailable":
            raise ConsensusError(f"nothing was applied: consensus on the key {outcome.detail}")
        if outcome.kind == "unknown":
            raise ConsensusError(
                f"consensus on the key did not finish after {MAX_ATTEMPTS} rounds: the command may or may not "
                f"have been applied (its value was proposed at ballot {_ballot_text(outcome.ballot)}); read "
                "the key at SERIAL to complete any unfinished round and see the outcome", status=504)
        raise ConsensusError(
            f"consensus on the key was contended for {MAX_ATTEMPTS} rounds (other proposers kept winning): "
            "nothing was applied; retry later", status=409)

    def _group_keys(self, namespace: bytes, keys: list[bytes], rkey: bytes, command: Command) -> list[bytes]:
        """The storage keys of a multi-key command, all of register `rkey` (else CROSSSLOT)."""
        name = command.name if isinstance(command, TypeWrite) else "MSETNX"
        if len(keys) > MAX_GROUP_KEYS:
            raise CommandError(f"{name} names {len(keys)} keys; one consensus round takes at most "
                               f"{MAX_GROUP_KEYS} (MAX_GROUP_KEYS)")
        skeys = []
        for key in keys:
            self.store.check_key(key, namespace)
            skey = storage_key(namespace, key)
            if register_key(skey) != rkey:
                raise crossslot_error(keys[0], key, name)
            skeys.append(skey)
        return list(dict.fromkeys(skeys))

    def _local_group(self, skeys: list[bytes]) -> bytes | None:
        """This node's stored records of `skeys`, as a group value (None: none stored)."""
        get = self.store.engine.get
        found = {k: bytes(d) for k in skeys if (d := get(k)) is not None}
        return encode_group(found) if found else None

    async def read(self, namespace: bytes, key: bytes, w: int = 1) -> bytes | None:
        """A linearizable read (SERIAL): the key's record, encoded (None: no record). A round
        it completes is committed to `w` replicas before the answer, as a command's."""
        self.store.check_key(key, namespace)
        skey = storage_key(namespace, key)
        return (await self.read_many(namespace, [skey], w))[0]

    async def read_many(self, namespace: bytes, skeys: list[bytes], w: int = 1) -> list[bytes | None]:
        """A linearizable read of keys of one register (SERIAL): their records, encoded, all as
        of one instant (one round of the register)."""
        rkey = register_key(skeys[0])
        group = rkey != skeys[0] or is_group_register(rkey)
        if any(register_key(k) != rkey for k in skeys) or (len(skeys) > 1 and not group):
            raise CommandError("a SERIAL read of several keys needs keys of one hash tag", kind=CROSSSLOT)
        policy = self.placement.namespaces.of_stored(namespace).conflict_policy
        self.stats["paxos_reads"] += 1
        register = GroupRegister(policy, _no_group_command, skeys) if group else RecordRegister(policy, _no_command)
        outcome = await self._drive(rkey, read_rounds(
            register, self._replica_sets(rkey), functools.partial(self._fresh_ballot, rkey),
            max_attempts=MAX_ATTEMPTS), skeys if group else None, w)
        if outcome.kind == "done":
            return group_records(outcome.result, skeys) if group else [outcome.result]
        if outcome.kind == "unavailable":
            raise ConsensusError(f"a SERIAL read needs a majority: consensus on the key {outcome.detail}")
        raise ConsensusError(f"a SERIAL read of the key was contended for {MAX_ATTEMPTS} rounds; retry later",
                             status=409)

    async def _drive(self, skey: bytes, rounds, keys: list[bytes] | None = None, w: int = 1) -> Outcome:
        """Do what a command's rounds ask for until they return (cluster/paxos.py). `skey` is
        the register's key; `keys`, for a group register, the command's storage keys; `w`, how
        many replicas store a chosen value before the rounds go on."""
        reply: Any = None
        while True:
            try:
                step = rounds.send(reply)
            except StopIteration as done:
                return done.value
            kind = type(step)
            if kind is Prepare:
                reply = await self._phase1(skey, step.round, keys)
            elif kind is Propose:
                # A leased proposal uses a ballot fresh_ballot never made; once accepted it
                # also stands for next(ballot), which acceptors then promise: a later fresh
                # ballot must be above both.
                self._note_seen(skey, next_ballot(step.round.ballot))
                reply = await self._phase2(skey, step.round, step.value, step.base)
            elif kind is Chosen:
                stored = self._chosen(skey, step.ballot, step.value if step.record is None else step.record,
                                      step.value, keys is not None, w)
                if stored is not None:
                    await stored
                reply = None
            else:
                self.stats["paxos_retries"] += 1
                await asyncio.sleep(self._backoff_s(step.attempt))
                reply = None

    def _backoff_s(self, attempt: int) -> float:
        cap = min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * (2 ** attempt))
        return self.rng.uniform(0, cap) / 1000

    def _apply(self, command: Command, policy: ConflictPolicy, current: bytes | None,
               earlier: tuple[dvv.Dot, ...]) -> tuple[bytes | None, Any, dvv.Dot | None]:
        return apply_command(command, policy, current, earlier, actor=self.actor, now_ms=self.clock.now_ms(),
                             timestamp=self.store.replica.hlc_now, check_value=self.store.check_value)

    def _apply_group(self, command: Command, policy: ConflictPolicy, namespace: bytes, skeys: list[bytes],
                     entries: dict[bytes, bytes], earlier: tuple[Any, ...]
                     ) -> tuple[dict[bytes, bytes] | None, Any, Any]:
        new, result, dot = apply_group_command(
            command, policy, skeys, entries, earlier, actor=self.actor, now_ms=self.clock.now_ms(),
            timestamp=self.store.replica.hlc_now, check_value=self.store.check_value)
        gate = self.store.quotas
        if new is not None and gate is not None and namespace in gate.sized:
            for skey, record in new.items():
                old = entries.get(skey)
                gate.check_records(namespace, len(split_storage_key(skey)[1]),
                                   None if old is None else rec.decode_record(old), rec.decode_record(record))
        return new, result, dot

    # ------------------------------------------------------------ the phases

    async def _phase1(self, skey: bytes, rnd: ProposerRound, keys: list[bytes] | None = None) -> list[bytes | None]:
        """Prepare at every acceptor until a quorum promised or it cannot; the stored records
        of the acceptors that promised (group values of `keys` for a group register)."""
        records: list[bytes | None] = []
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        body = PaxosPrepare(skey, rnd.ballot, keys or [])

        def answered(node: str, reply: Any, ok: bool) -> None:
            if ok and reply.ok:
                if rnd.phase is Phase.PREPARE:
                    records.append(reply.record)
                rnd.on_promise(node, Promise(tuple(reply.accepted), reply.value, tuple(reply.committed)))
            elif ok:
                self._note_seen(skey, tuple(reply.promised))
                rnd.on_refusal(node, tuple(reply.promised), Phase.PREPARE)
            else:
                rnd.on_failure(node, reply, Phase.PREPARE)
            if rnd.phase is not Phase.PREPARE and not waiter.done():
                waiter.set_result(None)

        nodes = rnd.start()
        for node in nodes:
            if node != self.node_id:
                self.calls.send(node, body).add_done_callback(
                    lambda f, node=node: answered(node, *_flip(outcome(f))))
        if self.node_id in nodes:  # our own acceptor, durable before it counts
            reply, lsn = self.acceptor.prepare(skey, rnd.ballot, keys or ())
            await self.acceptor.states.durable(lsn)
            answered(self.node_id, reply, True)
        if rnd.phase is Phase.PREPARE:
            await waiter
        return records

    async def _phase2(self, skey: bytes, rnd: ProposerRound, value: bytes, base: bytes | None = None) -> bool:
        """Propose until chosen or not; True when the value may have been accepted somewhere
        without the proposer knowing the outcome (a timeout, or some accepted)."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        uncertain: set[str] = set()
        body = PaxosPropose(skey, rnd.ballot, value, base)

        def answered(node: str, reply: Any, ok: bool) -> None:
            if ok and reply.ok:
                rnd.on_accepted(node)
            elif ok:
                if reply.stale:
                    self.stats["paxos_stale_leases"] += 1
                    rnd.on_failure(node, "holds a write the leased value has not seen", Phase.PROPOSE)
                else:
                    self._note_seen(skey, tuple(reply.promised))
                    rnd.on_refusal(node, tuple(reply.promised), Phase.PROPOSE)
            else:
                if not reply.startswith(("unavailable", "failed:")):
                    uncertain.add(node)  # it may have accepted and its answer was lost
                rnd.on_failure(node, reply, Phase.PROPOSE)
            if rnd.phase is not Phase.PROPOSE and not waiter.done():
                waiter.set_result(None)

        nodes = rnd.propose()
        me = self.node_id
        tick = [loop.create_future()]  # resolved at each remote answer

        def remote(node: str, f: asyncio.Future) -> None:
            answered(node, *_flip(outcome(f)))
            if not tick[0].done():
                tick[0].set_result(None)

        for node in nodes:
            if node != me:
                self.calls.send(node, body).add_done_callback(functools.partial(remote, node))
        if me in nodes:
            if base is not None:
                # A leased proposal (no Prepare read it): this acceptor votes only when its vote
                # completes a majority. A value the other acceptors refuse as stale (they hold a
                # plain write it has not seen; an acknowledged write is on a majority, so on one
                # of them) is then accepted nowhere, and no later round can complete it.
                while rnd.phase is Phase.PROPOSE and not rnd.one_vote_short(me):
                    await tick[0]
                    tick[0] = loop.create_future()
            if rnd.phase is Phase.PROPOSE:
                reply, lsn = self.acceptor.propose(skey, rnd.ballot, value, base)
                await self.acceptor.states.durable(lsn)
                answered(me, reply, True)
        if rnd.phase is Phase.PROPOSE:
            await waiter
        if rnd.phase is Phase.CHOSEN:
            return True
        return bool(rnd.accepted_by or uncertain)

    def _chosen(self, skey: bytes, ballot: Ballot, value: bytes, chosen: bytes, group: bool = False,
                w: int = 1) -> asyncio.Future | None:
        """Store `value` (what of the `chosen` value replicas must store) here, send the commit
        everywhere else (a replica that misses it gets the record as a hint, each record of a
        group value as one), and keep the lease on the chosen value. Returns what to wait on
        until `w` of the key's replicas (this one counting) store it, or every commit to them
        has failed; None when nothing is to wait for.

        The chosen value is decided, so a failed commit does not fail the command: its hint
        carries the record, and a SERIAL read sees it meanwhile. Waiting is what makes a
        plain read at R, with R + W > N, see what the command did: without it, a DEL
        acknowledged at QUORUM could be followed by a QUORUM read of the two replicas its
        commit had not reached yet, showing the deleted value."""
        self.stats["paxos_chosen"] += 1
        me = self.node_id
        sets = self._replica_sets(skey)
        home = sets[0]
        nodes = {n for s in sets for n in s}
        if me in nodes:
            self.acceptor.commit(skey, ballot, value)
        need = w - (me in home)
        waiting = [n for n in home if n != me] if need > 0 else []
        waiter = asyncio.get_running_loop().create_future() if waiting else None
        left = [need, len(waiting)]  # commits still needed, commits to home replicas unanswered

        def answered(node: str, fut: asyncio.Future) -> None:
            ok = outcome(fut)[0]
            if not ok and hints is not None:
                if group:
                    _hint_group(hints, node, value)
                else:
                    hints.add(node, skey, value)
            if waiter is not None and node in waiting:
                left[0] -= ok
                left[1] -= 1
                if (left[0] <= 0 or left[1] == 0) and not waiter.done():
                    waiter.set_result(None)

        body = PaxosCommit(skey, ballot, value)
        hints = self.hints
        for node in nodes - {me}:
            self.calls.send(node, body).add_done_callback(functools.partial(answered, node))
        self._leases[skey] = Lease(ballot, chosen)
        self._leases.move_to_end(skey)
        if len(self._leases) > MAX_LEASES:
            self._leases.popitem(last=False)
        return waiter


def _hint_group(hints: HintStore, node: str, value: bytes) -> None:
    for key, record in decode_group(value).items():
        hints.add(node, key, record)


def apply_command(command: Command, policy: ConflictPolicy, current: bytes | None, earlier: tuple[dvv.Dot, ...], *,
                  actor: bytes, now_ms: int, timestamp: Callable[[], int],
                  check_value: Callable[[bytes | None], None] | None = None) -> tuple[bytes | None, Any, Any]:
    """A proposal's value: `command` applied to the register's `current` value (an encoded
    record): (the new record, or None when the command writes nothing; its result; its dot).

    The new record's context is the current record's clock, so it supersedes everything the
    round saw. Its dot is above the dots of `earlier` (this command's earlier attempts, whose
    values the register did not show): two attempts never share a dot, so a later attempt
    tells exactly which of its values was chosen. (Values of different commands may share a
    dot when one was never chosen; only chosen values reach stored records, and each chosen
    value's clock holds the one before it, so stored values never share one.)
    """
    record = None if current is None else rec.decode_record(current)
    effect = command.apply(None if record is None else record.winner(now_ms), now_ms,
                           None if record is None else record.clock)
    if not effect.write:
        return None, effect.result, None
    if effect.context == STORED:
        context = record.clock if record is not None else None
    elif effect.context == BLIND:
        context = None
    else:
        context = dvv.decode_context(effect.context)
        dvv.check_known(record.clock if record is not None else {}, context)  # as LocalStore.execute's
    if check_value is not None:
        check_value(effect.value)
    new, dot = proposed_record(record, context, earlier, actor=actor, value=effect.value, timestamp=timestamp(),
                               expire_at_ms=effect.expire_at_ms, policy=policy)
    return rec.encode_record(new), fill_result(effect.result, new), dot


def proposed_record(record: rec.Record | None, context: dvv.VersionVector | None, earlier: tuple[dvv.Dot, ...], *,
                    actor: bytes, value: Any, timestamp: int, expire_at_ms: int,
                    policy: ConflictPolicy) -> tuple[rec.Record, dvv.Dot]:
    """The record a proposal writes over `record` with `context`, and its dot: above the dots
    of `earlier` (this command's earlier attempts; `apply_command` says why)."""
    floor = max((d.counter for d in earlier if d.actor == actor), default=0)
    if floor and (context is None or context.get(actor, 0) < floor):
        context = {**(context or {}), actor: floor}
    new = rec.apply_write(record, actor=actor, context=context, value=value, timestamp=timestamp,
                          expire_at_ms=expire_at_ms, policy=policy)
    return new, max((s.dot for s in new.siblings if s.dot.actor == actor), key=lambda d: d.counter)


def apply_group_command(command: Command, policy: ConflictPolicy, skeys: list[bytes], entries: dict[bytes, bytes],
                        earlier: tuple[Any, ...], **env: Any) -> tuple[dict[bytes, bytes] | None, Any, Any]:
    """A group register's proposal: `command` applied to the records of its keys `skeys` in
    the current group value `entries`: (the new records by storage key, or None when it writes
    nothing; its result; its dot, (the first key written, that record's dot)). `earlier` are
    the dots of this command's earlier attempts; `env` is apply_command's keywords.

    MSETNX writes every key or none: none when any key has a live value, else each key as
    SET NX would, all in one value (so one commit, one WriteBatch per replica)."""
    def earlier_of(skey: bytes) -> tuple[dvv.Dot, ...]:
        return tuple(d for k, d in earlier if k == skey)

    if isinstance(command, MSetNX):
        now_ms = env["now_ms"]
        for skey in skeys:
            record = entries.get(skey)
            if record is not None and rec.decode_record(record).winner(now_ms) is not None:
                return None, False, None
        values = dict(zip(skeys, (v for _, v in _unique_pairs(command.pairs)), strict=True))
        new: dict[bytes, bytes] = {}
        first = None
        for skey, value in values.items():
            record, _, dot = apply_command(Set(value, condition="nx"), policy, entries.get(skey), earlier_of(skey),
                                           **env)
            new[skey] = record
            if first is None:
                first = (skey, dot)
        return new, True, first
    if isinstance(command, TypeWrite) and len(skeys) > 1:
        now_ms = env["now_ms"]
        records = {skey: None if entries.get(skey) is None else rec.decode_record(entries[skey]) for skey in skeys}
        key_of = {skey: split_storage_key(skey)[1] for skey in skeys}
        effects, result = command.apply_many(
            {key_of[skey]: None if r is None else r.winner(now_ms) for skey, r in records.items()}, now_ms)
        if not effects:
            return None, result, None
        new = {}
        first = None
        for skey in skeys:
            effect = effects.get(key_of[skey])
            if effect is None:
                continue
            record, _, dot = apply_command(Replace(effect.value, effect.expire_at_ms), policy, entries.get(skey),
                                           earlier_of(skey), **env)
            new[skey] = record
            if first is None:
                first = (skey, dot)
        return new, result, first
    skey = skeys[0]
    record, result, dot = apply_command(command, policy, entries.get(skey), earlier_of(skey), **env)
    if record is None:
        return None, result, None
    return {skey: record}, result, (skey, dot)


def _unique_pairs(pairs: tuple[tuple[bytes, bytes], ...]) -> list[tuple[bytes, bytes]]:
    """The pairs with each key once, keeping its last value (as Redis), in first-seen order."""
    return list(dict(pairs).items())


def _no_command(current: bytes | None, earlier: tuple[dvv.Dot, ...]) -> tuple[None, None, None]:
    return None, None, None


def _no_group_command(entries: dict[bytes, bytes], earlier: tuple[Any, ...]) -> tuple[None, None, None]:
    return None, None, None


def _flip(result: tuple[bool, Any]) -> tuple[Any, bool]:
    ok, reply = result
    return reply, ok


def _text(key: bytes) -> str:
    return key.decode(errors="backslashreplace")


def _ballot_text(ballot: Ballot) -> str:
    return f"{ballot[0]}.{ballot[1]}"


