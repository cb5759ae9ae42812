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
  it is stored here, the commit goes to every replica without waiting (a replica that misses
  it gets a hint), and the client is answered. The proposer keeps the ballot its last value
  was accepted with, and the value: the next command on the key skips phase 1 (one round
  trip), unless another proposer or a plain write came in between.

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
from ringkv.errors import CommandError, CorruptionError, InvalidContextError
from ringkv.node.commands import BLIND, STORED, Command, fill_result
from ringkv.node.handoff import HintStore
from ringkv.node.local_store import LocalStore
from ringkv.node.messages import (
    PaxosAccepted,
    PaxosCommit,
    PaxosPrepare,
    PaxosPromise,
    PaxosPropose,
    ReplicaAck,
)
from ringkv.node.placement import Placement
from ringkv.node.quotas import quota_checked
from ringkv.node.replica import storage_key
from ringkv.node.replica_calls import ReplicaCalls, outcome
from ringkv.storage import Engine, Options
from ringkv.versioning import dvv
from ringkv.versioning import record as rec
from ringkv.versioning.record import ConflictPolicy

log = logging.getLogger("ringkv.consensus")

MAX_ATTEMPTS = 8  # rounds one command may take under contention before it gives up
BACKOFF_BASE_MS = 2.0  # first back-off after a refused round, doubled per attempt, jittered
BACKOFF_MAX_MS = 100.0
MAX_LEASES = 100_000  # keys whose last accepted ballot (and value) a proposer remembers


class ConsensusError(CommandError):
    """A consensus round that did not finish; the message says whether anything was applied."""

    def __init__(self, message: str, status: int = 503):
        super().__init__(message, status=status)


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

    def close(self) -> None:
        self.engine.flush()
        self.engine.close()


class Acceptor:
    """This node as an acceptor of its keys."""

    def __init__(self, states: AcceptorStore, store: LocalStore):
        self.states = states
        self.store = store

    def prepare(self, skey: bytes, ballot: Ballot) -> tuple[PaxosPromise, int]:
        """(the answer, the LSN to be durable before it leaves)."""
        new, answer = on_prepare(self.states.get(skey), ballot)
        lsn = self.states.put(skey, new) if new is not None else 0
        if isinstance(answer, Promise):
            data = self.store.engine.get(skey)
            return PaxosPromise(True, ballot, answer.accepted, answer.value, answer.committed,
                                None if data is None else bytes(data)), lsn
        return PaxosPromise(False, answer.promised), lsn

    def propose(self, skey: bytes, ballot: Ballot, value: bytes, base: bytes | None) -> tuple[PaxosAccepted, int]:
        state = self.states.get(skey)
        if base is not None and ballot >= state.promised:
            stored = self.store.read(skey)
            if stored is not None and not dvv.descends(dvv.decode_context(base), stored.clock):
                # A write this proposer has not seen (a plain SET, or a commit it missed):
                # it must read again with a full round.
                return PaxosAccepted(False, state.promised, stale=True), 0
        new, answer = on_propose(state, ballot, value)
        if answer is True:
            return PaxosAccepted(True), self.states.put(skey, new)
        return PaxosAccepted(False, answer.promised), 0

    def commit(self, skey: bytes, ballot: Ballot, record: bytes) -> tuple[int, int]:
        """Store the chosen `record` as data and note the commit: (the data's LSN, the state's)."""
        data_lsn = self.store.apply_record(skey, record)
        new = on_commit(self.states.get(skey), ballot)
        return data_lsn, (self.states.put(skey, new) if new is not None else 0)

    # ------------------------------------------------------------ RPC handlers

    async def on_prepare(self, body: PaxosPrepare) -> PaxosPromise:
        reply, lsn = self.prepare(body.skey, tuple(body.ballot))
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

    async def run(self, namespace: bytes, key: bytes, command: Command) -> Any:
        """Run `command` as consensus rounds until one is chosen (see the module docstring)."""
        self.store.check_key(key, namespace)
        skey = storage_key(namespace, key)
        policy = self.placement.namespaces.of_stored(namespace).conflict_policy
        self.stats["paxos_commands"] += 1
        lease = self._leases.pop(skey, None)
        local = self.store.engine.get(skey) if lease is not None else None
        rounds = command_rounds(
            RecordRegister(policy, quota_checked(functools.partial(self._apply, command, policy), self.store.quotas,
                                                 namespace, len(key))), self._replica_sets(skey),
            functools.partial(self._fresh_ballot, skey), lease=lease,
            local=None if local is None else bytes(local), max_attempts=MAX_ATTEMPTS)
        try:
            outcome = await self._drive(skey, rounds)
        except InvalidContextError:
            if lease is None:
                raise
            # A client's context names a version the leased value lacks (a plain write since):
            # the leased attempt computes first and proposes nothing, so run the command again
            # with a full round, which reads a majority, before refusing the context.
            return await self.run(namespace, key, command)
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

    async def read(self, namespace: bytes, key: bytes) -> bytes | None:
        """A linearizable read (SERIAL): the key's record, encoded (None: no record)."""
        self.store.check_key(key, namespace)
        skey = storage_key(namespace, key)
        policy = self.placement.namespaces.of_stored(namespace).conflict_policy
        self.stats["paxos_reads"] += 1
        outcome = await self._drive(skey, read_rounds(
            RecordRegister(policy, _no_command), self._replica_sets(skey),
            functools.partial(self._fresh_ballot, skey), max_attempts=MAX_ATTEMPTS))
        if outcome.kind == "done":
            return outcome.result
        if outcome.kind == "unavailable":
            raise ConsensusError(f"a SERIAL read needs a majority: consensus on the key {outcome.detail}")
        raise ConsensusError(f"a SERIAL read of the key was contended for {MAX_ATTEMPTS} rounds; retry later",
                             status=409)

    async def _drive(self, skey: bytes, rounds) -> Outcome:
        """Do what a command's rounds ask for until they return (cluster/paxos.py)."""
        reply: Any = None
        while True:
            try:
                step = rounds.send(reply)
            except StopIteration as done:
                return done.value
            kind = type(step)
            if kind is Prepare:
                reply = await self._phase1(skey, step.round)
            elif kind is Propose:
                # A leased proposal uses a ballot fresh_ballot never made; once accepted it
                # also stands for next(ballot), which acceptors then promise: a later fresh
                # ballot must be above both.
                self._note_seen(skey, next_ballot(step.round.ballot))
                reply = await self._phase2(skey, step.round, step.value, step.base)
            elif kind is Chosen:
                self._chosen(skey, step.ballot, step.value)
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

    # ------------------------------------------------------------ the phases

    async def _phase1(self, skey: bytes, rnd: ProposerRound) -> list[bytes | None]:
        """Prepare at every acceptor until a quorum promised or it cannot; the stored records
        of the acceptors that promised."""
        records: list[bytes | None] = []
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        body = PaxosPrepare(skey, rnd.ballot)

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
            reply, lsn = self.acceptor.prepare(skey, rnd.ballot)
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
        for node in nodes:
            if node != self.node_id:
                self.calls.send(node, body).add_done_callback(
                    lambda f, node=node: answered(node, *_flip(outcome(f))))
        if self.node_id in nodes:
            reply, lsn = self.acceptor.propose(skey, rnd.ballot, value, base)
            await self.acceptor.states.durable(lsn)
            answered(self.node_id, reply, True)
        if rnd.phase is Phase.PROPOSE:
            await waiter
        if rnd.phase is Phase.CHOSEN:
            return True
        return bool(rnd.accepted_by or uncertain)

    def _chosen(self, skey: bytes, ballot: Ballot, value: bytes) -> None:
        """Store the chosen value here, send the commit everywhere else (not awaited; a
        replica that misses it gets the record as a hint), and keep the lease."""
        self.stats["paxos_chosen"] += 1
        me = self.node_id
        nodes = {n for s in self._replica_sets(skey) for n in s}
        if me in nodes:
            self.acceptor.commit(skey, ballot, value)
        body = PaxosCommit(skey, ballot, value)
        hints = self.hints
        for node in nodes - {me}:
            fut = self.calls.send(node, body)
            if hints is not None:
                fut.add_done_callback(lambda f, node=node: None if outcome(f)[0] else hints.add(node, skey, value))
        self._leases[skey] = Lease(ballot, value)
        self._leases.move_to_end(skey)
        if len(self._leases) > MAX_LEASES:
            self._leases.popitem(last=False)


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
    floor = max((d.counter for d in earlier if d.actor == actor), default=0)
    if floor and (context is None or context.get(actor, 0) < floor):
        context = {**(context or {}), actor: floor}
    if check_value is not None:
        check_value(effect.value)
    new = rec.apply_write(record, actor=actor, context=context, value=effect.value, timestamp=timestamp(),
                          expire_at_ms=effect.expire_at_ms, policy=policy)
    dot = max((s.dot for s in new.siblings if s.dot.actor == actor), key=lambda d: d.counter)
    return rec.encode_record(new), fill_result(effect.result, new), dot


def _no_command(current: bytes | None, earlier: tuple[dvv.Dot, ...]) -> tuple[None, None, None]:
    return None, None, None


def _flip(result: tuple[bool, Any]) -> tuple[Any, bool]:
    ok, reply = result
    return reply, ok


def _ballot_text(ballot: Ballot) -> str:
    return f"{ballot[0]}.{ballot[1]}"


