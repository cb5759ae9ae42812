"""Per-key Paxos (in the manner of CASPaxos): the acceptor's rules and one proposer round,
without IO. docs/consistency.md argues why it is safe; this is the code it argues about.

Every key has its own register, replicated on the key's N replicas, which are its acceptors.
A round changes the register from its current value to a new one computed from it (a
compare-and-set, an increment, ...):

    proposer                                   acceptors (the key's replicas)
    Prepare(ballot)              ------->      promise not to accept lower ballots; answer
                                 <-------      what they accepted last, and their stored record
    the new value = f(current)                 (current: the highest accepted value, merged
                                                with the stored records of the quorum)
    Propose(ballot, value)       ------->      accept it unless they promised higher
                                 <-------      Accepted
    chosen once a majority accepted: Commit to every replica (stored as data), reply

Rules of this module:
- A ballot is (counter, proposer id), ordered as a tuple; proposers pick a counter above every
  ballot they have seen, and the id breaks ties, so two proposers never share a ballot.
- An acceptor promises a ballot only if it is higher than every ballot it promised before, and
  accepts a proposal only if its ballot is at least the one it promised. What it promised and
  accepted is durable before it answers (the shell's job: `AcceptorState` is what it stores).
- Accepting (b, v) also promises next(b) = (b.counter + 1, b.proposer): the proposer that
  holds a majority's acceptance of b may propose next(b) without a Prepare (one round trip
  instead of two), and any other proposer must prepare a ballot above next(b) at a majority,
  which intersects the majority that accepted b, so it sees v. (CASPaxos, "one round-trip
  optimization".)
- The proposer takes the value accepted with the highest ballot in its promise quorum as the
  register's current value, so a round that stopped half-way (accepted by some, not chosen)
  is completed by whoever comes next; unless a commit of that ballot or a later one is known
  in the quorum: then the stored records the acceptors answered with are the register, and
  the accepted value (perhaps never chosen) is ignored.
- During a membership change a key may have two replica sets (the ring's and the pending
  ring's): every phase then needs a majority of each ("double quorum"), so the acceptors a
  partition moves to take part before the ring switches to them.
- Each acceptor's answer counts once per phase; late or duplicate answers change nothing.
- A register whose values are its whole state (`Register.full_state`: a hash tag's group
  register, whose value holds the records of every key of the tag written through it) keeps
  its accepted value after the commit, and a round builds on the highest value accepted in
  its quorum whether or not a commit of it is known, as plain Paxos does: the stored records
  only add writes made outside the register. A value of several keys must never be dropped
  for the stored records of only some of them (docs/consistency.md, "Hash tags").

Values are opaque bytes here (the node stores encoded records). Nothing here reads a clock,
draws a random number or does IO.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from ringkv.errors import ConfigError

Ballot = tuple[int, str]
ZERO: Ballot = (0, "")
MAX_BALLOT_COUNTER = (1 << 63) - 1  # ballots travel as msgpack integers


def next_ballot(ballot: Ballot) -> Ballot:
    """The ballot the proposer of `ballot` may propose next without preparing."""
    return (ballot[0] + 1, ballot[1])


BALLOT_UNITS_PER_MS = 1000


def ballot_floor(now_ms: int) -> int:
    """The lowest counter a proposer's fresh ballot may have at wall time `now_ms`.

    A proposer forgets the ballots it used when it restarts, and must not use one again with
    another value (two values at one ballot break Paxos). Counters start from the wall clock
    in microseconds: leased rounds advance a key's counter by one each, so a restarted
    proposer's first fresh ballot is above every ballot it used before, unless it ran more
    than a thousand rounds per millisecond on one key or its wall clock stepped back.
    The proposer's dots on the key are its ballot counters too (node/consensus.py), so they
    never repeat either."""
    return now_ms * BALLOT_UNITS_PER_MS


def ballot_above(seen: Ballot, proposer: str, at_least: int = 0) -> Ballot:
    """A ballot of `proposer` above `seen` and above next(seen) (so that it also outranks the
    promise an acceptance implies), with a counter of at least `at_least`."""
    counter = max(seen[0] + 2, at_least)
    if counter > MAX_BALLOT_COUNTER:
        raise ConfigError("ballot", "ballot counter overflow")
    return (counter, proposer)


# --------------------------------------------------------------------------- the acceptor


class AcceptorState(msgspec.Struct, frozen=True, array_like=True):
    """What one acceptor keeps for one key, durably. `value` is the accepted value, dropped
    once a commit of it (or of a later ballot) arrives: it is then in the stored data."""

    promised: Ballot = ZERO
    accepted: Ballot = ZERO
    value: bytes | None = None
    committed: Ballot = ZERO


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AcceptorState)


def encode_state(state: AcceptorState) -> bytes:
    return _encoder.encode(state)


def decode_state(data: bytes | None) -> AcceptorState:
    """The stored state (a fresh acceptor's for None). Raises msgspec.ValidationError on
    garbage, which the shell reports as corruption: an acceptor never guesses its promises."""
    if data is None:
        return AcceptorState()
    state = _decoder.decode(data)
    return AcceptorState(tuple(state.promised), tuple(state.accepted), state.value, tuple(state.committed))


@dataclass(frozen=True, slots=True)
class Promise:
    """An acceptor's yes to Prepare: what it accepted last, and what it knows committed."""

    accepted: Ballot
    value: bytes | None
    committed: Ballot


@dataclass(frozen=True, slots=True)
class Refusal:
    """An acceptor's no: it promised `promised`, which is higher."""

    promised: Ballot


def on_prepare(state: AcceptorState, ballot: Ballot) -> tuple[AcceptorState | None, Promise | Refusal]:
    """(the state to store first, or None when unchanged; the answer)."""
    if ballot <= state.promised:
        return None, Refusal(state.promised)
    new = replace_state(state, promised=ballot)
    return new, Promise(state.accepted, state.value, state.committed)


def on_propose(state: AcceptorState, ballot: Ballot, value: bytes) -> tuple[AcceptorState | None, bool | Refusal]:
    """(the state to store first; True when accepted, else the Refusal)."""
    if ballot < state.promised:
        return None, Refusal(state.promised)
    new = AcceptorState(next_ballot(ballot), ballot, value, state.committed)
    return new, True


def on_commit(state: AcceptorState, ballot: Ballot, keep_value: bool = False) -> AcceptorState | None:
    """The value of `ballot` is chosen and stored as data here: forget an accepted value that
    it supersedes, unless `keep_value` (a register whose values are its whole state, as a hash
    tag's group register's are: the next proposer builds on the highest accepted value, not on
    stored records). None when nothing changes."""
    if ballot <= state.committed:
        return None
    value = state.value
    if state.accepted <= ballot and not keep_value:
        value = None
    return replace_state(state, value=value, committed=ballot)


def replace_state(state: AcceptorState, **changes) -> AcceptorState:
    return msgspec.structs.replace(state, **changes)


# --------------------------------------------------------------------------- the proposer


class Phase(enum.Enum):
    PREPARE = "prepare"
    PROPOSE = "propose"
    CHOSEN = "chosen"
    REFUSED = "refused"  # a higher ballot won: retry above `highest_seen`
    UNAVAILABLE = "unavailable"  # too few acceptors answered


@dataclass(slots=True)
class _Group:
    """One replica set whose majority a phase needs."""

    nodes: tuple[str, ...]
    needed: int
    yes: set[str] = field(default_factory=set)
    no: set[str] = field(default_factory=set)  # refused or failed

    @property
    def met(self) -> bool:
        return len(self.yes) >= self.needed

    @property
    def lost(self) -> bool:
        return len(self.nodes) - len(self.no) < self.needed


def majority(n: int) -> int:
    return n // 2 + 1


class ProposerRound:
    """One round at one ballot (see the module docstring).

    The shell sends Prepare to `acceptors` (`start()`), reports each answer, and once
    `phase` is PROPOSE it has `current()` (with the promises' stored records) to compute the
    value from and calls `propose()` to get the Propose sends; CHOSEN means a majority (of each group) accepted. A round that
    starts with `leased=True` skips Prepare: its ballot is next(b) of a ballot b this proposer
    had accepted by a majority, and `propose` is called at once.
    """

    __slots__ = ("_answered", "_failures", "_groups", "_nodes", "accepted_by", "ballot", "highest_seen",
                 "phase", "promises", "sent_proposal")

    def __init__(self, ballot: Ballot, replica_sets: Iterable[tuple[str, ...]], *, leased: bool = False):
        sets = [tuple(s) for s in replica_sets if s]
        if not sets:
            raise ConfigError("acceptors", "a Paxos round needs at least one acceptor")
        self.ballot = ballot
        self._groups = [_Group(s, majority(len(s))) for s in sets]
        self._nodes = tuple(dict.fromkeys(n for s in sets for n in s))
        self.phase = Phase.PROPOSE if leased else Phase.PREPARE
        self.promises: dict[str, Promise] = {}
        self.accepted_by: set[str] = set()
        self._answered: set[str] = set()  # answers of the current phase, once each
        self._failures: dict[str, str] = {}
        self.highest_seen: Ballot = ballot  # the highest ballot any refusal named
        self.sent_proposal = False

    @property
    def acceptors(self) -> tuple[str, ...]:
        return self._nodes

    def start(self) -> tuple[str, ...]:
        """The acceptors to send Prepare to (all of them)."""
        return self._nodes if self.phase is Phase.PREPARE else ()

    # ---------------------------------------------------------------- phase 1

    def on_promise(self, node: str, promise: Promise) -> None:
        if self.phase is not Phase.PREPARE or node in self._answered or node not in self._nodes:
            return
        self._answered.add(node)
        self.promises[node] = promise
        for g in self._groups:
            if node in g.nodes:
                g.yes.add(node)
        if all(g.met for g in self._groups):
            self.phase = Phase.PROPOSE

    def current(self, full_state: bool = False) -> tuple[Ballot, bytes | None]:
        """Of the promise quorum: the highest ballot accepted and not known committed, and its
        value (ZERO and None when there is none: every value accepted in the quorum is known
        committed, and the stored records the promises carried are the register).

        An accepted value is known committed when some acceptor of the quorum saw a commit of
        that ballot or a later one; that acceptor's stored record then holds it, or a value
        chosen after it and built on it. Such a value is left out rather than merged again:
        it may be a proposal that was never chosen (accepted by a minority and overtaken),
        whose effects must not enter the register. One not known committed must be proposed
        again (completed) before anything is answered from it.
        """
        best: Ballot = ZERO
        value: bytes | None = None
        committed: Ballot = ZERO
        for p in self.promises.values():
            if p.value is not None and p.accepted > best:
                best, value = p.accepted, p.value
            committed = max(committed, p.committed)
        if full_state:
            # Values are the register's whole state (acceptors keep them after the commit):
            # the highest accepted one is the register, as in plain Paxos.
            return best, value
        if value is None or committed >= best:
            return ZERO, None
        return best, value

    def known_committed(self) -> bool:
        """Whether the highest value accepted in the promise quorum is known committed there
        (or none was accepted)."""
        best = max((p.accepted for p in self.promises.values() if p.value is not None), default=ZERO)
        return best == ZERO or max((p.committed for p in self.promises.values()), default=ZERO) >= best

    # ---------------------------------------------------------------- phase 2

    def propose(self) -> tuple[str, ...]:
        """The acceptors to send Propose(ballot, value) to; the shell has computed the value."""
        if self.phase is not Phase.PROPOSE or self.sent_proposal:
            raise RuntimeError(f"cannot propose in phase {self.phase.value}")
        self.sent_proposal = True
        self._answered = set()
        for g in self._groups:
            g.yes.clear()
            g.no.clear()
        return self._nodes

    def on_accepted(self, node: str) -> None:
        if self.phase is not Phase.PROPOSE or not self.sent_proposal or node in self._answered:
            return
        if node not in self._nodes:
            return
        self._answered.add(node)
        self.accepted_by.add(node)
        for g in self._groups:
            if node in g.nodes:
                g.yes.add(node)
        if all(g.met for g in self._groups):
            self.phase = Phase.CHOSEN

    # ---------------------------------------------------------------- refusals and failures

    def on_refusal(self, node: str, promised: Ballot, phase: Phase) -> None:
        """`node` refused the `phase` message (PREPARE or PROPOSE): it promised `promised`."""
        if promised > self.highest_seen:
            self.highest_seen = promised
        self._no(node, f"promised ballot {promised[0]}.{promised[1]}", phase)

    def on_failure(self, node: str, reason: str, phase: Phase) -> None:
        """`node` did not answer the `phase` message (down, timed out, an error)."""
        self._no(node, reason, phase)

    def one_vote_short(self, node: str) -> bool:
        """Whether `node`'s own vote, not cast yet, would complete the majority of every
        replica set it is in: the proposer's own acceptor then votes on a leased proposal
        (node/consensus.py), and not before, so that a leased value the other acceptors
        refuse as stale is accepted nowhere and no later round completes it."""
        if node in self._answered:
            return False
        return all(len(g.yes) >= g.needed - 1 for g in self._groups if node in g.nodes)

    def _no(self, node: str, reason: str, phase: Phase) -> None:
        # An answer to an earlier phase (a Prepare's refusal arriving once the round is
        # proposing) says nothing about this one.
        if phase is not self.phase or node in self._answered or node not in self._nodes:
            return
        if phase is Phase.PROPOSE and not self.sent_proposal:
            return
        self._answered.add(node)
        self._failures[node] = reason
        for g in self._groups:
            if node in g.nodes:
                g.no.add(node)
        if any(g.lost for g in self._groups):
            self.phase = Phase.REFUSED if self.highest_seen > self.ballot else Phase.UNAVAILABLE

    @property
    def failures(self) -> dict[str, str]:
        """Acceptors that refused or failed in the current phase, with why."""
        return dict(self._failures)

    @property
    def pending(self) -> tuple[str, ...]:
        """Acceptors that have not answered the current phase."""
        return tuple(n for n in self._nodes if n not in self._answered)

    def needed(self) -> str:
        """What a phase needs, for error messages: "2 of n1,n2,n3" (and of the pending set)."""
        return " and ".join(f"{g.needed} of {','.join(g.nodes)}" for g in self._groups)


# --------------------------------------------------------------------------- a command's rounds
#
# The attempts of one command, written as a generator that yields what it needs done and
# receives the answers (sans-IO, as h11 is): the node drives it with RPCs and asyncio, the
# simulator with simulated messages and virtual time, so both run the same decisions.
#
#   Prepare(round)               -> the shell runs phase 1 to its end; sends back the stored
#                                   records of the acceptors that promised
#   Propose(round, value, base)  -> the shell runs phase 2 to its end; sends back whether the
#                                   value may have been accepted somewhere without a majority
#                                   seen (timeouts, or some accepted)
#   Chosen(ballot, value)        -> the value is chosen: the shell stores it, sends the commits,
#                                   keeps the lease; sends back nothing
#   Pause(attempt)               -> the shell waits a jittered back-off; sends back nothing
#
# and returns an Outcome.


class Register(Protocol):
    """What the rounds need to know of the values (encoded records, in the node)."""

    def merge(self, a: bytes | None, b: bytes | None) -> bytes | None:
        """Both values folded together (None: no value)."""

    def compute(self, current: bytes | None, earlier: tuple[Any, ...]) -> tuple[bytes | None, Any, Any]:
        """The command applied to `current`: (the new value, None when it writes nothing; its
        result; the dot naming the new value, by which a later attempt recognises it). The
        dot must differ from every one in `earlier`, the dots this command's earlier
        attempts proposed (a later attempt may then tell which of its values was chosen)."""

    def covers(self, value: bytes | None, dot: Any) -> bool:
        """Whether `value` holds (or has superseded) the write named by `dot`."""

    def base(self, value: bytes | None) -> bytes | None:
        """What acceptors check a value proposed without phase 1 against (its clock)."""

    # A register may set `full_state = True`: its values are its whole state (a hash tag's
    # group register, node/consensus.py), so its acceptors keep the value after a commit
    # (on_commit's keep_value) and a round builds on the highest accepted value, known
    # committed or not; the stored records only add writes made outside the register.

    def unchanged(self, current: bytes | None, known: bytes | None) -> bytes | None:
        """The value to propose when the command changes nothing but a value must be chosen
        before it answers: `known` is the value that must be (the accepted value being
        completed, or the leased value), `current` that merged with the stored records read.
        A one-key register proposes `current`; one whose values hold several keys' records
        proposes only `current`'s records of the keys `known` holds, so that a commit never
        carries some keys of an earlier multi-key value without the others."""


@dataclass(frozen=True, slots=True)
class Lease:
    """The ballot this proposer's last value of a key was chosen with, and that value."""

    ballot: Ballot
    value: bytes


@dataclass(frozen=True, slots=True)
class Prepare:
    round: ProposerRound


@dataclass(frozen=True, slots=True)
class Propose:
    round: ProposerRound
    value: bytes
    base: bytes | None = None


@dataclass(frozen=True, slots=True)
class Chosen:
    """`value` is chosen at `ballot`. `record`: what the replicas must store as data when that
    is less than the whole value (a full-state register's records the command wrote, its other
    records being in a value whose commit was already sent); None: the value."""

    ballot: Ballot
    value: bytes
    record: bytes | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    attempt: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """`done` (with the command's result, or the value read), `unavailable` (too few
    acceptors answered and nothing was accepted: not applied), `contended` (other proposers
    kept winning: not applied), or `unknown` (a value was proposed and may have been accepted:
    `ballot` names it)."""

    kind: str
    result: Any = None
    ballot: Ballot = ZERO
    detail: str = ""


def _unavailable(rnd: ProposerRound) -> Outcome:
    detail = "; ".join(f"{n} {why}" for n, why in sorted(rnd.failures.items()))
    return Outcome("unavailable", detail=f"needs {rnd.needed()} replicas to answer; they did not: {detail}")


def _may_be_accepted(rnd: ProposerRound, shell_says: Any) -> bool:
    """Whether the value proposed in `rnd`, which was not chosen, may have been accepted
    somewhere: the shell says so (an acceptor accepted, or failed without saying no: a
    timeout), or an acceptor had not answered yet when the round was decided. A round ends
    as soon as a majority is out of reach, so a Propose may still be on its way to an
    acceptor that has promised nothing higher: it will accept it, and a later round may
    complete the value."""
    return bool(shell_says) or bool(rnd.accepted_by) or bool(rnd.pending)


def _changes(register: Register) -> bytes | None:
    """What the replicas must store of a value built on one known committed: the records the
    last compute wrote, for a register that can tell (`changes()`); else None (all of it)."""
    changes = getattr(register, "changes", None)
    return None if changes is None else changes()


def command_rounds(register: Register, replica_sets: list[tuple[str, ...]], fresh_ballot: Callable[[], Ballot],
                   *, lease: Lease | None = None, local: bytes | None = None, max_attempts: int = 8
                   ) -> Generator[Prepare | Propose | Chosen | Pause, Any, Outcome]:
    """The rounds of one read-modify-write command (see the section's comment). `lease`: skip
    phase 1 in the first attempt, building on the leased value merged with `local` (this
    proposer's own stored record). A value proposed in an attempt that ended without knowing
    its fate is recognised by its dot in the register read by a later attempt."""
    proposed: list[tuple[Any, Any, Ballot]] = []  # (dot, result, ballot) of values maybe accepted
    full = getattr(register, "full_state", False)
    for attempt in range(max_attempts):
        if lease is not None:
            current = register.merge(lease.value, local)
            rnd = ProposerRound(next_ballot(lease.ballot), replica_sets, leased=True)
            value, result, dot = register.compute(current, tuple(d for d, _, _ in proposed))
            if value is None:
                # Nothing to write, but whether the leased value is still the register's is
                # known only once a majority accepts at next(ballot): propose it, unchanged.
                value = register.unchanged(current, lease.value)
            lease = None
            maybe = yield Propose(rnd, value, register.base(current))
            if rnd.phase is Phase.CHOSEN:
                # Built on the leased value, whose commit this proposer sent.
                yield Chosen(rnd.ballot, value, _changes(register))
                return Outcome("done", result, rnd.ballot)
            if _may_be_accepted(rnd, maybe) and dot is not None:
                proposed.append((dot, result, rnd.ballot))
        rnd = ProposerRound(fresh_ballot(), replica_sets)
        records = yield Prepare(rnd)
        if rnd.phase is Phase.PROPOSE:
            _, accepted = rnd.current(full)
            known_chosen = rnd.known_committed() if full else accepted is None
            current = accepted
            for r in records:
                current = register.merge(current, r)
            # Each attempt's dot is above the earlier ones' (Register.compute), so the latest
            # attempt whose dot the register covers is the one whose value was chosen.
            earlier = next(((res, b) for dot, res, b in reversed(proposed) if register.covers(current, dot)), None)
            if earlier is not None:
                # An earlier attempt's value is in the register: answer from it once it is
                # chosen (known committed, or completed now), else look again next attempt.
                if known_chosen:
                    return Outcome("done", earlier[0], earlier[1])
                completing = register.unchanged(current, accepted)
                if completing is not None:
                    yield Propose(rnd, completing)
                    if rnd.phase is Phase.CHOSEN:
                        yield Chosen(rnd.ballot, completing)
                        return Outcome("done", earlier[0], earlier[1])
            else:
                value, result, dot = register.compute(current, tuple(d for d, _, _ in proposed))
                if value is None:
                    if known_chosen:
                        return Outcome("done", result)
                    # The answer rests on a value not known chosen: choose it first.
                    value = register.unchanged(current, accepted)
                if value is not None:
                    maybe = yield Propose(rnd, value)
                    if rnd.phase is Phase.CHOSEN:
                        yield Chosen(rnd.ballot, value, _changes(register) if known_chosen else None)
                        return Outcome("done", result, rnd.ballot)
                    if _may_be_accepted(rnd, maybe) and dot is not None:
                        proposed.append((dot, result, rnd.ballot))
        elif rnd.phase is Phase.UNAVAILABLE and not proposed:
            return _unavailable(rnd)
        yield Pause(attempt)
    if proposed:
        return Outcome("unknown", ballot=proposed[-1][2])
    return Outcome("contended")


def read_rounds(register: Register, replica_sets: list[tuple[str, ...]], fresh_ballot: Callable[[], Ballot],
                *, max_attempts: int = 8) -> Generator[Prepare | Propose | Chosen | Pause, Any, Outcome]:
    """A linearizable read: phase 1 at a majority of each replica set, and phase 2 first when
    the value found is not known chosen. Outcome `done` carries the value."""
    full = getattr(register, "full_state", False)
    for attempt in range(max_attempts):
        rnd = ProposerRound(fresh_ballot(), replica_sets)
        records = yield Prepare(rnd)
        if rnd.phase is Phase.PROPOSE:
            _, accepted = rnd.current(full)
            current = accepted
            for r in records:
                current = register.merge(current, r)
            if accepted is None or current is None or (full and rnd.known_committed()):
                return Outcome("done", current)
            completing = register.unchanged(current, accepted)
            yield Propose(rnd, completing)
            if rnd.phase is Phase.CHOSEN:
                yield Chosen(rnd.ballot, completing)
                return Outcome("done", current, rnd.ballot)
        elif rnd.phase is Phase.UNAVAILABLE:
            return _unavailable(rnd)
        yield Pause(attempt)
    return Outcome("contended")
