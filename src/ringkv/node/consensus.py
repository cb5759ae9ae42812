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
from typing import Any

from ringkv.clock import Clock
from ringkv.cluster.paxos import (
    ZERO,
    AcceptorState,
    Ballot,
    Phase,
    Promise,
    ProposerRound,
    ballot_above,
    decode_state,
    encode_state,
    next_ballot,
    on_commit,
    on_prepare,
    on_propose,
)
from ringkv.errors import CommandError, CorruptionError
from ringkv.node.commands import BLIND, STORED, Command
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
from ringkv.node.replica import storage_key
from ringkv.node.replica_calls import ReplicaCalls, outcome
from ringkv.storage import Engine, Options
from ringkv.versioning import dvv
from ringkv.versioning import record as rec

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

    def __init__(self, data_dir: str, sync: str = "interval"):
        self.engine = Engine.open(os.path.join(data_dir, "paxos"),
                                  Options(sync=sync, memtable_bytes=4 * 1024 * 1024, background="thread",
                                          block_cache_bytes=8 * 1024 * 1024, max_value_bytes=64 * 1024 * 1024))
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


class _Lease:
    """The ballot this proposer's last value of a key was accepted with, and that value."""

    __slots__ = ("ballot", "value")

    def __init__(self, ballot: Ballot, value: bytes):
        self.ballot = ballot
        self.value = value


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
        self._leases: OrderedDict[bytes, _Lease] = OrderedDict()
        self._seen: OrderedDict[bytes, Ballot] = OrderedDict()  # the highest ballot seen per key

    # ------------------------------------------------------------ placement

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
        seen = self._seen.get(skey, ZERO)
        ballot = ballot_above(seen, self.node_id, at_least=self.clock.now_ms())
        self._note_seen(skey, ballot)
        return ballot

    # ------------------------------------------------------------ the command's way

    async def run(self, namespace: bytes, key: bytes, command: Command) -> Any:
        """Run `command` as consensus rounds until one is chosen (see the module docstring)."""
        self.store.check_key(key, namespace)
        skey = storage_key(namespace, key)
        policy = self.placement.namespaces.of_stored(namespace).conflict_policy
        proposed: list[tuple[dvv.Dot, Any, Ballot]] = []  # values that may have been chosen
        self.stats["paxos_commands"] += 1
        for attempt in range(MAX_ATTEMPTS):
            lease = self._leases.pop(skey, None)
            if lease is not None and not proposed:
                done, result = await self._leased(skey, lease, command, policy, proposed)
                if done:
                    return result
            done, result = await self._full(skey, command, policy, proposed)
            if done:
                return result
            self.stats["paxos_retries"] += 1
            await asyncio.sleep(self._backoff_s(attempt))
        if proposed:
            raise ConsensusError(
                f"consensus on the key did not finish after {MAX_ATTEMPTS} rounds: the command may or may not "
                f"have been applied (its last value was proposed at ballot {_ballot_text(proposed[-1][2])}); "
                "read the key at SERIAL to complete any unfinished round and see the outcome", status=504)
        raise ConsensusError(
            f"consensus on the key was contended for {MAX_ATTEMPTS} rounds (other proposers kept winning): "
            "nothing was applied; retry later", status=409)

    def _backoff_s(self, attempt: int) -> float:
        cap = min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * (2 ** attempt))
        return self.rng.uniform(0, cap) / 1000

    async def _leased(self, skey: bytes, lease: _Lease, command: Command, policy, proposed) -> tuple[bool, Any]:
        """Phase 2 only, at next(lease.ballot), on the value this proposer last had chosen."""
        current = self._merge(policy, lease.value, self.store.engine.get(skey))
        value, result, dot = self._apply(current, command, policy)
        if value is None:
            # Nothing to write, but whether the leased value is still the register's is known
            # only once a majority accepts at next(ballot): propose it again, unchanged.
            value = current
        ballot = next_ballot(lease.ballot)
        self._note_seen(skey, ballot)
        rnd = ProposerRound(ballot, self._replica_sets(skey), leased=True)
        base = dvv.encode_context(rec.decode_record(current).clock) if current is not None else b""
        maybe = await self._phase2(skey, rnd, value, base=base or None)
        if rnd.phase is Phase.CHOSEN:
            self.stats["paxos_leased"] += 1
            self._chosen(skey, rnd.ballot, value)
            return True, result
        if maybe:
            proposed.append((dot, result, ballot))
        return False, None

    async def _full(self, skey: bytes, command: Command, policy, proposed) -> tuple[bool, Any]:
        """Both phases. (True, result) once chosen; (False, _) to retry."""
        rnd = ProposerRound(self._fresh_ballot(skey), self._replica_sets(skey))
        records = await self._phase1(skey, rnd)
        if rnd.phase is not Phase.PROPOSE:
            self._not_prepared(rnd, proposed)
            return False, None
        _, accepted_value = rnd.current()
        known_chosen = accepted_value is None
        current = functools.reduce(functools.partial(self._merge, policy), records, accepted_value)
        clock = rec.decode_record(current).clock if current is not None else {}
        for dot, result, _ in reversed(proposed):  # an earlier attempt's value, chosen after all
            if dvv.covers(clock, dot):
                # Its effect is in the register, but answering from it needs it chosen: either
                # known committed, or completed now (else the next attempt looks again).
                if known_chosen or await self._finish(skey, rnd, current):
                    return True, result
                return False, None
        value, result, dot = self._apply(current, command, policy)
        if value is None:
            if known_chosen:
                return True, result
            value = current  # the answer rests on a value not known chosen: have it chosen first
        maybe = await self._phase2(skey, rnd, value)
        if rnd.phase is Phase.CHOSEN:
            self._chosen(skey, rnd.ballot, value)
            return True, result
        if maybe and dot is not None:
            proposed.append((dot, result, rnd.ballot))
        return False, None

    async def _finish(self, skey: bytes, rnd: ProposerRound, value: bytes | None) -> bool:
        """Propose the register's current value again, unchanged, to have it chosen; whether
        it was."""
        if value is None or rnd.phase is not Phase.PROPOSE:
            return False
        await self._phase2(skey, rnd, value)
        if rnd.phase is not Phase.CHOSEN:
            return False
        self._chosen(skey, rnd.ballot, value)
        return True

    def _not_prepared(self, rnd: ProposerRound, proposed) -> None:
        if rnd.phase is Phase.UNAVAILABLE and not proposed:
            detail = "; ".join(f"{n} {why}" for n, why in sorted(rnd.failures.items()))
            raise ConsensusError(f"nothing was applied: consensus on the key needs {rnd.needed()} replicas to "
                                 f"answer; they did not: {detail}")

    async def read(self, namespace: bytes, key: bytes) -> bytes | None:
        """A linearizable read (SERIAL): phase 1 at a majority, and phase 2 first when the value
        found is not known to be chosen."""
        self.store.check_key(key, namespace)
        skey = storage_key(namespace, key)
        policy = self.placement.namespaces.of_stored(namespace).conflict_policy
        self.stats["paxos_reads"] += 1
        for attempt in range(MAX_ATTEMPTS):
            rnd = ProposerRound(self._fresh_ballot(skey), self._replica_sets(skey))
            records = await self._phase1(skey, rnd)
            if rnd.phase is Phase.PROPOSE:
                _, accepted_value = rnd.current()
                known_chosen = accepted_value is None
                current = functools.reduce(functools.partial(self._merge, policy), records, accepted_value)
                if known_chosen:
                    return current
                if await self._finish(skey, rnd, current):
                    return current
            else:
                self._not_prepared(rnd, [])
            self.stats["paxos_retries"] += 1
            await asyncio.sleep(self._backoff_s(attempt))
        raise ConsensusError(f"a SERIAL read of the key was contended for {MAX_ATTEMPTS} rounds; retry later",
                             status=409)

    # ------------------------------------------------------------ values

    @staticmethod
    def _merge(policy, a: bytes | None, b) -> bytes | None:
        if b is None:
            return a
        b = bytes(b)
        if a is None or a == b:
            return b
        return rec.encode_record(rec.merge(rec.decode_record(a), rec.decode_record(b), policy))

    def _apply(self, current: bytes | None, command: Command, policy) -> tuple[bytes | None, Any, dvv.Dot | None]:
        """(the new value, or None when the command writes nothing; its result; its dot)."""
        record = None if current is None else rec.decode_record(current)
        now = self.clock.now_ms()
        effect = command.apply(None if record is None else record.winner(now), now)
        if not effect.write:
            return None, effect.result, None
        if effect.context == STORED:
            context = record.clock if record is not None else None
        elif effect.context == BLIND:
            context = None
        else:
            context = dvv.decode_context(effect.context)
        self.store.check_value(effect.value)
        new = rec.apply_write(record, actor=self.actor, context=context, value=effect.value,
                              timestamp=self.store.replica.hlc_now(), expire_at_ms=effect.expire_at_ms,
                              policy=policy)
        dot = max((s.dot for s in new.siblings if s.dot.actor == self.actor), key=lambda d: d.counter)
        return rec.encode_record(new), effect.result, dot

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
        self._leases[skey] = _Lease(ballot, value)
        self._leases.move_to_end(skey)
        if len(self._leases) > MAX_LEASES:
            self._leases.popitem(last=False)


def _flip(result: tuple[bool, Any]) -> tuple[Any, bool]:
    ok, reply = result
    return reply, ok


def _ballot_text(ballot: Ballot) -> str:
    return f"{ballot[0]}.{ballot[1]}"


