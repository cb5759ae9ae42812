"""The consensus path in the simulator: acceptors and proposers of per-key Paxos over the
simulated network, on virtual time (docs/simulator.md, "The consensus scenario").

What is real: the acceptor's transitions (cluster/paxos.on_prepare, on_propose, on_commit over
AcceptorState, stored encoded with encode_state and read back with decode_state), the
proposer's decisions (cluster/paxos.command_rounds and read_rounds, the very generators the
node drives, with their ProposerRound), the register over versioned records
(node/consensus.RecordRegister, versioning/record.apply_write and merge, an HLC driven by
virtual time), the commands (node/commands.py: IncrBy, and Set with IFEQ, NX or GET), the
messages (node/messages.PaxosPrepare ... PaxosCommit), placement (cluster/ring.Ring) and
liveness (each node's gossip and phi detectors, testing/sim/node.SimNode). The shell is a
copy of node/consensus.py's in callbacks instead of asyncio, and says where it departs:

- A node's durable state (`ConsensusStore`: each key's AcceptorState and stored record, and
  its HLC) survives a crash whole: in the node both are written before any answer leaves.
  What dies with an incarnation: its calls, its running commands, its leases and the
  ballots it has seen (the node keeps them in memory too), its timers.
- Calls fail as the node's ReplicaCalls and RPC client fail them: at once, unsent, for a
  peer its detector holds down ("unavailable (down ...)"); after one network delay, unsent,
  for a peer whose process is down ("unavailable (connection refused)"); when the peer
  crashes while the call waits ("unavailable (connection lost)": the request may have been
  handled); after `call_timeout_ms` ("timed out"). A reply after that, or a second copy of
  one, is dropped. Requests are not de-duplicated: the network's copies reach the acceptor
  twice, which the acceptor's rules must (and do) take.
- A Propose that failed may still have been accepted unless it was never sent:
  `maybe_accepted` says which (the node's rule differs, harmlessly: see there).
- A client's command runs on the node it was sent to, whichever it is (the node forwards to
  the key's first replica held up; the protocol must not care who proposes, and more
  proposers make more contention). Each node runs one command per key at a time, queueing
  the others, as node/forwarding.Forwarder does with its KeyLocks: see `Bug.NO_KEY_LOCK`.
- Commits go to every replica and the client is answered without waiting for them (the node
  waits for its write level W of them, which only plain reads notice, and the simulator makes
  none); one that is lost is not made good by a hint (the node adds one): the protocol must
  not need it.
- No plain (non-Paxos) writes, no expiry, no membership changes (one replica set per key).

Deliberately broken variants (`Bug`) are what the checks must catch (tests/testing/
test_sim_consensus.py).
"""

from __future__ import annotations

import enum
import functools
import itertools
import random
from collections import deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any

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
from ringkv.errors import ClockSkewError, ConfigError, RingkvError
from ringkv.node.commands import Command
from ringkv.node.consensus import (
    BACKOFF_BASE_MS,
    BACKOFF_MAX_MS,
    MAX_ATTEMPTS,
    RecordRegister,
    apply_command,
)
from ringkv.node.messages import (
    PaxosAccepted,
    PaxosCommit,
    PaxosPrepare,
    PaxosPromise,
    PaxosPropose,
    ReplicaAck,
)
from ringkv.testing.sim.kv import EPOCH_MS, NAMESPACE, ring_of
from ringkv.testing.sim.network import NetworkConditions
from ringkv.testing.sim.node import GossipSettings
from ringkv.testing.simulator import Simulation
from ringkv.versioning import dvv
from ringkv.versioning import record as rec
from ringkv.versioning.hlc import HybridLogicalClock
from ringkv.versioning.record import ConflictPolicy

POLICY = ConflictPolicy.SIBLINGS  # the default namespace's


class Bug(enum.StrEnum):
    """Deliberately broken variants; each must make a check fail for some seed."""

    NONE = "none"
    # (a) An acceptor that keeps its promises and accepted value in memory only: a restart
    # forgets them (its stored records survive).
    FORGET_PROMISES = "forget-promises"
    # (b) A proposer that takes the highest accepted value of its promise quorum as the
    # register's even when a commit of that ballot or a later one is known there (the
    # `current()` rule of ProposerRound without its commit clause). Done in the shell: the
    # promises are handed to the round without the committed ballot.
    IGNORE_COMMITS = "ignore-commits"
    # (c) A proposer that answers from an earlier attempt's value found in the register
    # without first having it chosen (command_rounds proposes it again first).
    ANSWER_UNCHOSEN = "answer-unchosen"
    # A node running two commands on one key at once (no KeyLocks): both compute their value
    # from the same register, so two different values get the same dot, and a later attempt
    # of one may take the other's chosen value for its own.
    NO_KEY_LOCK = "no-key-lock"


@dataclass(frozen=True)
class ConsensusSettings:
    """The consensus path's settings; the defaults are the node's where it has one."""

    replicas: int = 3  # N
    partitions: int = 16  # Q
    call_timeout_ms: float = 500.0  # replica_timeout_ms
    max_attempts: int = MAX_ATTEMPTS
    backoff_base_ms: float = BACKOFF_BASE_MS
    backoff_max_ms: float = BACKOFF_MAX_MS
    bug: Bug = Bug.NONE

    def __post_init__(self) -> None:
        if not self.call_timeout_ms > 0:
            raise ConfigError("call_timeout_ms", f"must be > 0, got {self.call_timeout_ms!r}")
        if self.max_attempts < 1:
            raise ConfigError("max_attempts", f"must be >= 1, got {self.max_attempts!r}")
        object.__setattr__(self, "bug", Bug(self.bug))

    def longest_command_ms(self) -> float:
        """An upper bound on one command: every attempt's two phases time out, then the
        longest back-off."""
        return self.max_attempts * (2 * self.call_timeout_ms + self.backoff_max_ms)


# --- what survives a crash -----------------------------------------------------------------------


class ConsensusStore:
    """One node's durable state: per key, its acceptor state (encoded, as AcceptorStore keeps
    it) and its stored record (encoded, as the engine keeps it); and its HLC."""

    __slots__ = ("actor", "clock", "records", "states")

    def __init__(self, node_id: str):
        self.actor = f"{node_id}@1".encode()  # node_id@epoch: the data directory survives
        self.states: dict[bytes, bytes] = {}
        self.records: dict[bytes, bytes] = {}
        self.clock = HybridLogicalClock()

    def state(self, key: bytes) -> AcceptorState:
        return decode_state(self.states.get(key))

    def put_state(self, key: bytes, state: AcceptorState) -> None:
        self.states[key] = encode_state(state)

    def apply_record(self, key: bytes, incoming: bytes, physical_ms: int) -> None:
        """Merge a chosen record into the stored one (LocalStore.apply_record)."""
        record = rec.decode_record(incoming)
        try:
            self.clock.observe(max(s.timestamp for s in record.siblings), physical_ms)
        except ClockSkewError:
            pass
        stored = self.records.get(key)
        if stored is None or stored == incoming:
            self.records[key] = incoming
        else:
            self.records[key] = rec.encode_record(rec.merge(rec.decode_record(stored), record, POLICY))


# --- the acceptor (node/consensus.Acceptor) ------------------------------------------------------


def acceptor_prepare(store: ConsensusStore, key: bytes, ballot: Ballot) -> PaxosPromise:
    new, answer = on_prepare(store.state(key), ballot)
    if new is not None:
        store.put_state(key, new)
    if isinstance(answer, Promise):
        return PaxosPromise(True, ballot, answer.accepted, answer.value, answer.committed, store.records.get(key))
    return PaxosPromise(False, answer.promised)


def acceptor_propose(store: ConsensusStore, key: bytes, ballot: Ballot, value: bytes,
                     base: bytes | None) -> PaxosAccepted:
    state = store.state(key)
    if base is not None and ballot >= state.promised:
        stored = store.records.get(key)
        if stored is not None and not dvv.descends(dvv.decode_context(base), rec.decode_record(stored).clock):
            return PaxosAccepted(False, state.promised, stale=True)
    new, answer = on_propose(state, ballot, value)
    if answer is True:
        store.put_state(key, new)
        return PaxosAccepted(True)
    return PaxosAccepted(False, answer.promised)


def acceptor_commit(store: ConsensusStore, key: bytes, ballot: Ballot, record: bytes, physical_ms: int) -> None:
    store.apply_record(key, record, physical_ms)
    new = on_commit(store.state(key), ballot)
    if new is not None:
        store.put_state(key, new)


# --- failures ------------------------------------------------------------------------------------

DOWN = "unavailable (down (failure detector))"
REFUSED = "unavailable (connection refused)"
LOST = "unavailable (connection lost)"


def maybe_accepted(reason: str) -> bool:
    """Whether a Propose that failed with `reason` may have been accepted: unless it was
    never sent (held down, connection refused) or the acceptor answered an error.

    node/consensus.Proposer._phase2 counts every "unavailable" failure as not accepted,
    "connection lost" included, though the acceptor may have handled the Propose before its
    process died. That is harmless as long as command_rounds also counts the acceptors a
    round had not heard from when it was decided (cluster/paxos._may_be_accepted): a round
    of one replica set is lost at the first "no" that leaves too few, and then every other
    acceptor has accepted or not answered yet."""
    return not (reason.startswith("failed:") or reason in (DOWN, REFUSED))


# --- one incarnation of a node -------------------------------------------------------------------

SERIAL = None  # the `command` of a SERIAL read
MAX_LEASED_LEFT = 10_000  # leased values left by failed rounds that a run keeps track of


@dataclass(eq=False)
class _Run:
    """One client operation on its way through the rounds."""

    key: bytes
    command: Command | None  # SERIAL for a read
    done: Callable[[Outcome | str], None]
    rounds: Generator[Any, Any, Outcome] | None = None
    lease: Lease | None = None
    steps: int = 0


@dataclass
class ConsensusStats:
    commands: int = 0
    reads: int = 0
    chosen: int = 0
    leased: int = 0  # commands done in one round trip on a lease
    stale_leases: int = 0
    # Leased values a remote acceptor took in a round that then failed (others refused it as
    # stale), chosen later by another round: the path docs/consistency.md argues is safe.
    leased_completed_later: int = 0
    retries: int = 0  # Pauses
    timeouts: int = 0
    connections_lost: int = 0
    commits_sent: int = 0
    queued: int = 0  # operations that waited for the key's lock

    def add(self, other: ConsensusStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class ConsensusNode:
    """One incarnation of a node: an acceptor of its keys (over its ConsensusStore) and a
    proposer of the commands its clients send it. Its calls, runs, leases and timers die
    with it; its store does not."""

    def __init__(self, sim: ConsensusSimulation, node_id: str, generation: int, store: ConsensusStore,
                 rng: random.Random):
        self.sim = sim
        self.node_id = node_id
        self.generation = generation
        self.store = store
        self.settings = sim.consensus
        self.alive = True
        self.stats = ConsensusStats()
        self._calls: dict[int, tuple[str, Callable[[Any], None], Callable[[str], None]]] = {}
        self._leases: dict[bytes, Lease] = {}
        self._seen: dict[bytes, Ballot] = {}
        self._running: dict[bytes, _Run] = {}  # key -> the run holding the key's lock
        self._waiting: dict[bytes, deque[_Run]] = {}
        self._unlocked: list[_Run] = []  # runs without the lock (Bug.NO_KEY_LOCK)
        self.rng = rng  # back-off jitter

    def __repr__(self) -> str:
        return f"ConsensusNode({self.node_id!r}, generation={self.generation})"

    # -- time and liveness

    def physical_ms(self) -> int:
        return EPOCH_MS + int(self.sim.now_ms)

    def is_up(self, node: str) -> bool:
        return self.sim.nodes[self.node_id].is_up(node, self.sim.now_ms)

    # -- calls (node/replica_calls.ReplicaCalls and the RPC client)

    def call(self, dst: str, body: Any, on_reply: Callable[[Any], None], on_failure: Callable[[str], None]) -> None:
        """Send `body` to `dst`; exactly one callback runs (later, never within this call),
        unless this incarnation dies first."""
        sim = self.sim
        call_id = next(sim.call_ids)
        self._calls[call_id] = (dst, on_reply, on_failure)
        now = sim.now_ms
        if not self.is_up(dst):
            sim.queue.schedule(now, self._failed, call_id, DOWN)  # ReplicaCalls: not sent
            return
        if not sim.nodes[dst].running and sim.network.can_talk(self.node_id, dst):
            sim.queue.schedule(now + sim.network_conditions.min_delay_ms, self._failed, call_id, REFUSED)
            return
        sim.waiting_on(dst)[call_id] = self
        sim.network.send(self.node_id, dst, ConsensusCall(call_id, body), sim.nodes[dst].generation)
        sim.queue.schedule(now + self.settings.call_timeout_ms, self._timed_out, call_id)

    def _timed_out(self, call_id: int) -> None:
        if call_id in self._calls:
            self.stats.timeouts += 1
            self._failed(call_id, f"timed out after {self.settings.call_timeout_ms:g} ms")

    def _failed(self, call_id: int, reason: str) -> None:
        entry = self._calls.pop(call_id, None)
        if entry is not None and self.alive:
            self.sim.waiting_on(entry[0]).pop(call_id, None)
            entry[2](reason)

    def connection_lost(self, call_id: int) -> None:
        """The peer this call waits on crashed: the connection reset reaches us."""
        if call_id in self._calls:
            self.stats.connections_lost += 1
            self._failed(call_id, LOST)

    def on_message(self, src: str, message: ConsensusCall | ConsensusReply) -> None:
        if type(message) is ConsensusReply:
            entry = self._calls.pop(message.call_id, None)
            if entry is not None:  # else: after its timeout or failure, or a duplicate
                self.sim.waiting_on(entry[0]).pop(message.call_id, None)
                entry[1](message.body)
            return
        reply = self.serve(message.body)
        self.sim.network.send(self.node_id, src, ConsensusReply(message.call_id, reply), self.sim.nodes[src].generation)

    # -- the acceptor side

    def serve(self, body: Any) -> Any:
        kind = type(body)
        if kind is PaxosPrepare:
            return acceptor_prepare(self.store, body.skey, body.ballot)
        if kind is PaxosPropose:
            return acceptor_propose(self.store, body.skey, body.ballot, body.value, body.base)
        if kind is PaxosCommit:
            acceptor_commit(self.store, body.skey, body.ballot, body.record, self.physical_ms())
            return ReplicaAck()
        raise TypeError(f"{self.node_id} got an unexpected message {kind.__name__}")

    # -- client operations, one per key at a time

    def submit(self, key: bytes, command: Command | None, done: Callable[[Outcome | str], None]) -> None:
        """Run `command` (SERIAL: a linearizable read) on `key`; `done` gets the Outcome, or
        a string naming an error the command raised."""
        run = _Run(key, command, done)
        if self.settings.bug is Bug.NO_KEY_LOCK:
            self._unlocked.append(run)
            self._start(run)
        elif key in self._running:
            self.stats.queued += 1
            self._waiting.setdefault(key, deque()).append(run)
        else:
            self._running[key] = run
            self._start(run)

    def _finish(self, run: _Run, outcome: Outcome | str) -> None:
        if not self.alive:
            return
        if self.settings.bug is Bug.NO_KEY_LOCK:
            self._unlocked.remove(run)
        else:
            queue = self._waiting.get(run.key)
            if queue:
                nxt = queue.popleft()
                self._running[run.key] = nxt
                self.sim.queue.schedule(self.sim.now_ms, self._start, nxt)
            else:
                self._waiting.pop(run.key, None)
                del self._running[run.key]
        run.done(outcome)

    def _fresh_ballot(self, key: bytes) -> Ballot:
        ballot = ballot_above(self._seen.get(key, ZERO), self.node_id, at_least=ballot_floor(self.physical_ms()))
        self._note_seen(key, ballot)
        return ballot

    def _note_seen(self, key: bytes, ballot: Ballot) -> None:
        if ballot > self._seen.get(key, ZERO):
            self._seen[key] = ballot

    def _start(self, run: _Run) -> None:
        if not self.alive:
            return
        key = run.key
        replica_sets = [self.sim.placement(key)]
        fresh = functools.partial(self._fresh_ballot, key)
        s = self.settings
        if run.command is SERIAL:
            self.stats.reads += 1
            rounds = read_rounds(RecordRegister(POLICY, _no_command), replica_sets, fresh, max_attempts=s.max_attempts)
        else:
            self.stats.commands += 1
            lease = run.lease = self._leases.pop(key, None)
            local = self.store.records.get(key) if lease is not None else None
            register = RecordRegister(POLICY, functools.partial(self._apply, run.command))
            if s.bug is Bug.ANSWER_UNCHOSEN:
                recording = RecordingRegister(register)
                rounds = answer_unchosen(command_rounds(recording, replica_sets, fresh, lease=lease, local=local,
                                                        max_attempts=s.max_attempts), recording)
            else:
                rounds = command_rounds(register, replica_sets, fresh, lease=lease, local=local,
                                        max_attempts=s.max_attempts)
        run.rounds = rounds
        self._advance(run, None)

    def _apply(self, command: Command, current: bytes | None, earlier: tuple) -> tuple[bytes | None, Any, Any]:
        """Proposer._apply: the command applied to the register's value, by the node's code."""
        now = self.physical_ms()
        return apply_command(command, POLICY, current, earlier, actor=self.store.actor, now_ms=now,
                             timestamp=functools.partial(self.store.clock.now, now))

    # -- driving the rounds (Proposer._drive)

    def _advance(self, run: _Run, reply: Any) -> None:
        if not self.alive:
            return
        run.steps += 1
        try:
            step = run.rounds.send(reply)
        except StopIteration as done:
            outcome: Outcome = done.value
            if outcome.kind == "done" and run.lease is not None and outcome.ballot == next_ballot(run.lease.ballot):
                self.stats.leased += 1
            self._finish(run, outcome)
            return
        except RingkvError as exc:  # the command's own error (INCR of a non-integer ...)
            self._finish(run, f"{type(exc).__name__}: {exc}")
            return
        kind = type(step)
        if kind is Prepare:
            self._phase1(run, step.round)
        elif kind is Propose:
            self._phase2(run, step.round, step.value, step.base)
        elif kind is Chosen:
            self._chosen(run.key, step.ballot, step.value)
            self._advance(run, None)
        else:
            self.stats.retries += 1
            cap = min(self.settings.backoff_max_ms, self.settings.backoff_base_ms * (2 ** step.attempt))
            self.sim.queue.schedule(self.sim.now_ms + self.rng.uniform(0, cap),
                                    self._advance, run, None)

    def _phase1(self, run: _Run, rnd: ProposerRound) -> None:
        key = run.key
        records: list[bytes | None] = []
        ignore_commits = self.settings.bug is Bug.IGNORE_COMMITS
        moved_on = False

        def answered(node: str, reply: Any, ok: bool) -> None:
            nonlocal moved_on
            if ok and reply.ok:
                if rnd.phase is Phase.PREPARE:
                    records.append(reply.record)
                committed = ZERO if ignore_commits else reply.committed
                rnd.on_promise(node, Promise(reply.accepted, reply.value, committed))
            elif ok:
                self._note_seen(key, reply.promised)
                rnd.on_refusal(node, reply.promised, Phase.PREPARE)
            else:
                rnd.on_failure(node, reply, Phase.PREPARE)
            if rnd.phase is not Phase.PREPARE and not moved_on:
                moved_on = True
                self._advance(run, records)

        body = PaxosPrepare(key, rnd.ballot)
        nodes = rnd.start()
        for node in nodes:
            if node != self.node_id:
                self.call(node, body, functools.partial(answered, node, ok=True),
                          functools.partial(_failure, answered, node))
        if self.node_id in nodes:  # our own acceptor: durable before it counts
            answered(self.node_id, acceptor_prepare(self.store, key, rnd.ballot), True)

    def _phase2(self, run: _Run, rnd: ProposerRound, value: bytes, base: bytes | None) -> None:
        key = run.key
        uncertain: set[str] = set()
        moved_on = False

        taken_remotely = [False]  # a leased value accepted by another acceptor

        def answered(node: str, reply: Any, ok: bool) -> None:
            nonlocal moved_on
            if ok and reply.ok:
                if base is not None and node != self.node_id:
                    taken_remotely[0] = True
                rnd.on_accepted(node)
            elif ok:
                if reply.stale:
                    self.stats.stale_leases += 1
                    rnd.on_failure(node, "holds a write the leased value has not seen", Phase.PROPOSE)
                else:
                    self._note_seen(key, reply.promised)
                    rnd.on_refusal(node, reply.promised, Phase.PROPOSE)
            else:
                if maybe_accepted(reply):
                    uncertain.add(node)  # it may have accepted and its answer was lost
                rnd.on_failure(node, reply, Phase.PROPOSE)
            if rnd.phase is not Phase.PROPOSE and not moved_on:
                moved_on = True
                chosen = rnd.phase is Phase.CHOSEN
                if not chosen and taken_remotely[0]:
                    self.sim.note_leased_value_left(key, value, rnd.ballot)
                self._advance(run, chosen or bool(rnd.accepted_by or uncertain))

        body = PaxosPropose(key, rnd.ballot, value, base)
        nodes = rnd.propose()
        me = self.node_id
        voted = [me not in nodes]

        def own_vote() -> None:
            # On a leased proposal the own acceptor votes last, once its vote completes a
            # majority (Proposer._phase2): a stale leased value is then accepted nowhere.
            if not voted[0] and rnd.phase is Phase.PROPOSE and (base is None or rnd.one_vote_short(me)):
                voted[0] = True
                answered(me, acceptor_propose(self.store, key, rnd.ballot, value, base), True)

        def remote(node: str, reply: Any, ok: bool) -> None:
            answered(node, reply, ok)
            own_vote()

        for node in nodes:
            if node != me:
                self.call(node, body, functools.partial(remote, node, ok=True),
                          functools.partial(_failure, remote, node))
        own_vote()

    def _chosen(self, key: bytes, ballot: Ballot, value: bytes) -> None:
        """Store the chosen value here, send the commit to every other replica without
        waiting, keep the lease (Proposer._chosen)."""
        self.stats.chosen += 1
        if self.sim.leased_value_chosen(key, value, ballot):
            self.stats.leased_completed_later += 1
        nodes = self.sim.placement(key)
        if self.node_id in nodes:
            acceptor_commit(self.store, key, ballot, value, self.physical_ms())
        body = PaxosCommit(key, ballot, value)
        for node in nodes:
            if node != self.node_id:
                self.stats.commits_sent += 1
                self.call(node, body, _ignore, _ignore)
        self._leases[key] = Lease(ballot, value)

    # -- crash

    def crash(self) -> None:
        self.alive = False
        for call_id, (dst, _, _) in self._calls.items():
            self.sim.waiting_on(dst).pop(call_id, None)
        self._calls.clear()
        self._running.clear()
        self._waiting.clear()
        self._unlocked.clear()

    @property
    def idle(self) -> bool:
        return not self._calls and not self._running and not self._unlocked


def _failure(answered: Callable[..., None], node: str, reason: str) -> None:
    answered(node, reason, False)


def _ignore(*args: object) -> None:
    return None


def _no_command(current: bytes | None, earlier: tuple) -> tuple[None, None, None]:
    return None, None, None


class RecordingRegister:
    """A Register (cluster/paxos.Register) that notes each value its command computes, and
    whether the current attempt computed one (for Bug.ANSWER_UNCHOSEN)."""

    __slots__ = ("computed", "fresh", "inner")

    def __init__(self, inner: RecordRegister):
        self.inner = inner
        self.computed: list[tuple[dvv.Dot, Any]] = []  # (dot, result) of every value computed
        self.fresh = False

    def merge(self, a: bytes | None, b: bytes | None) -> bytes | None:
        return self.inner.merge(a, b)

    def compute(self, current: bytes | None, earlier: tuple) -> tuple[bytes | None, Any, Any]:
        self.fresh = True
        value, result, dot = self.inner.compute(current, earlier)
        if dot is not None:
            self.computed.append((dot, result))
        return value, result, dot

    def covers(self, value: bytes | None, dot: Any) -> bool:
        return self.inner.covers(value, dot)

    def base(self, value: bytes | None) -> bytes | None:
        return self.inner.base(value)

    def unchanged(self, current: bytes | None, known: bytes | None) -> bytes | None:
        return self.inner.unchanged(current, known)


def answer_unchosen(rounds: Generator[Any, Any, Outcome], register: RecordingRegister) -> Generator[Any, Any, Outcome]:
    """Bug.ANSWER_UNCHOSEN: command_rounds (over `register`), except that an attempt which
    finds an earlier attempt's value in the register answers from it at once, instead of
    first proposing it again and answering once that is chosen.

    The wrapper sees what the generator does: an attempt that yields a Propose without having
    computed a value (after its Prepare, `compute` was not called) is command_rounds
    completing a value it found; when that value holds the dot of a value computed earlier,
    answer that computation's result instead of proposing."""
    reply: Any = None
    while True:
        try:
            step = rounds.send(reply)
        except StopIteration as done:
            return done.value
        if type(step) is Prepare:
            register.fresh = False
        elif type(step) is Propose and not register.fresh:
            earlier = next((res for dot, res in reversed(register.computed) if register.covers(step.value, dot)), None)
            if earlier is not None:
                rounds.close()
                return Outcome("done", earlier)
        reply = yield step


# --- messages ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsensusCall:
    call_id: int
    body: Any


@dataclass(frozen=True, slots=True)
class ConsensusReply:
    call_id: int
    body: Any


CONSENSUS_MESSAGES = (ConsensusCall, ConsensusReply)


# --- the simulation ------------------------------------------------------------------------------


class ConsensusSimulation(Simulation):
    """A Simulation whose nodes also run the consensus path: each gossips as before (its
    detectors are what its calls ask) and runs a ConsensusNode beside it."""

    def __init__(
        self,
        nodes: int | Iterable[str],
        seed: int,
        network: NetworkConditions | None = None,
        gossip: GossipSettings | None = None,
        consensus: ConsensusSettings | None = None,
        *,
        keep_trace: int = 0,
    ):
        super().__init__(nodes, seed, network, gossip, keep_trace=keep_trace)
        self.consensus = consensus or ConsensusSettings()
        self.ring = ring_of(self.members, self.consensus.partitions, self.consensus.replicas)
        self._placement: dict[bytes, tuple[str, ...]] = {}
        self.call_ids = itertools.count(1)
        self.stores = {n: ConsensusStore(n) for n in self.members}
        self.consensus_nodes: dict[str, ConsensusNode] = {}
        self._waiting: dict[str, dict[int, ConsensusNode]] = {n: {} for n in self.members}
        self._open_ops: dict[str, dict[int, Callable[[], None]]] = {}
        self._op_ids = itertools.count(1)
        self._past_stats = ConsensusStats()
        self._leased_left: dict[tuple[bytes, bytes], Ballot] = {}
        self.crashes = 0
        for name in self.members:
            self._start_consensus(name, self.nodes[name].generation)

    def note_leased_value_left(self, key: bytes, value: bytes, ballot: Ballot) -> None:
        """A leased proposal's round failed after another acceptor accepted its value: a later
        round may find and complete it (counted by `leased_value_chosen`)."""
        if len(self._leased_left) < MAX_LEASED_LEFT:
            self._leased_left[key, value] = ballot

    def leased_value_chosen(self, key: bytes, value: bytes, ballot: Ballot) -> bool:
        """Whether `value`, chosen now at `ballot`, is a leased value left by a failed round."""
        left = self._leased_left.pop((key, value), None)
        return left is not None and left != ballot

    def placement(self, key: bytes) -> tuple[str, ...]:
        """The key's replicas, its acceptors (the preference list, as the node computes it)."""
        pref = self._placement.get(key)
        if pref is None:
            pref = self._placement[key] = self.ring.preference_list(self.ring.partition_for_key(NAMESPACE, key))
        return pref

    def waiting_on(self, node: str) -> dict[int, ConsensusNode]:
        """Calls in flight to `node`, by call id: a crash of `node` resets their connections."""
        return self._waiting[node]

    def _start_consensus(self, name: str, generation: int) -> ConsensusNode:
        node = ConsensusNode(self, name, generation, self.stores[name], random.Random(self._root.getrandbits(64)))
        self.consensus_nodes[name] = node
        return node

    # -- faults

    def crash(self, node: str) -> None:
        super().crash(node)
        cn = self.consensus_nodes[node]
        cn.crash()
        self._past_stats.add(cn.stats)
        self.crashes += 1
        # The connections of calls waiting on it reset (where the network lets a reset
        # through); the others time out.
        delay = self.network_conditions.min_delay_ms
        for call_id, caller in sorted(self._waiting[node].items()):
            if self.network.can_talk(node, caller.node_id):
                self.queue.schedule(self.now_ms + delay, caller.connection_lost, call_id)
        self._waiting[node].clear()
        open_ops = self._open_ops.pop(node, {})
        for token in list(open_ops):
            open_ops.pop(token)()

    def restart(self, node: str):
        new = super().restart(node)
        if self.consensus.bug is Bug.FORGET_PROMISES:
            self.stores[node].states.clear()
        self._start_consensus(node, new.generation)
        return new

    # -- clients

    def client_submit(self, contact: str, key: bytes, command: Command | None,
                      done: Callable[[Outcome | str | None], None]) -> None:
        """A client sends a command (None: a SERIAL read) to `contact`. `done` gets the
        Outcome, an error's text, or None when the contact crashed first (the client learns
        nothing); "refused" at once when the contact is down."""
        self._record("op", "serial" if command is None else type(command).__name__, contact, key.decode("latin-1"))
        if not self.nodes[contact].running:
            done("refused")
            return
        token = next(self._op_ids)
        open_ops = self._open_ops.setdefault(contact, {})
        open_ops[token] = lambda: done(None)

        def finish(outcome: Outcome | str) -> None:
            if open_ops.pop(token, None) is not None:
                done(outcome)

        self.consensus_nodes[contact].submit(key, command, finish)

    def idle(self) -> bool:
        return all(self.consensus_nodes[n].idle for n in self.running())

    def stats(self) -> ConsensusStats:
        total = ConsensusStats()
        total.add(self._past_stats)
        for node in self.consensus_nodes.values():
            if node.alive:
                total.add(node.stats)
        return total

    # -- internals

    def _deliver(self, src: str, dst: str, message: object, dst_generation: int) -> None:
        if type(message) not in CONSENSUS_MESSAGES:
            super()._deliver(src, dst, message, dst_generation)
            return
        node = self.nodes[dst]
        body = message.body
        if not node.running or node.generation != dst_generation:
            self._record("lost", src, dst, type(body).__name__)
            return
        self.messages_delivered += 1
        self._record("paxos", src, dst, type(body).__name__)
        self.consensus_nodes[dst].on_message(src, message)
