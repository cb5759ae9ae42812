"""Whether a history of operations is linearizable against a sequential model: Wing & Gong's
search with Lowe's memoization and P-compositionality, as Porcupine does it
(docs/reliability.md, "Linearizability checker"). Pure: no IO and no clock; the budget is a
count of search steps and of stored configurations, so every verdict, "ran out of budget"
included, replays exactly.

Contract. A history is `Operation`s, each with an invocation and a return time on one clock
(any unit: the checker only compares them; equal times count as concurrent). An operation
whose return time is None (or +inf) has an unknown outcome (a timeout, a crash): it may take
effect at any point after its invocation or not at all, and its output is not checked.
Operations that certainly had no effect (never sent) must be left out by the caller.
Operations on different keys are checked independently (a history is linearizable iff each
key's is), each with its own budget, so one hard key cannot starve the others of a verdict.

Theory of operation (one key). The invocations and returns of the known operations form one
list in time order. A configuration is (known operations linearized K, unknown operations
linearized U, model state s). Its candidates are the known operations invoked before the first
return of an unlinearized one (the "blocking" return), then the unknown ones invoked by then.
The search is depth-first: apply a candidate to the model; if the model accepts its output and
the new configuration is not covered by one already seen, push it; when no candidate is left,
backtrack. It succeeds when every known operation is linearized: the unknown ones left over
did not take effect (the same as taking effect after everything else). Each shortcut below
only drops configurations that cannot succeed unless one already seen, or on the stack, can
(tests/chaos/test_linearizability.py checks the verdicts against trying every order):

- memoization (Lowe): a configuration seen before is not explored again;
- dominance: (K, U, s) is covered by a seen (K, U', s) with U' a subset of U, because an
  unknown operation still pending can always be left out;
- observers first: a candidate that never changes the state (a read, `Model.observes`) and is
  accepted now can be moved to the front of any linearization from here, so it is linearized
  at once and nothing else is tried in that configuration;
- symmetry: unknown operations of the same kind and input are interchangeable, so they are
  linearized in invocation order (n pending INCRs are a count, not 2^n subsets);
- blind writes (`Model.overwrites`): where an unknown blind write leads does not depend on the
  state, so it is tried once per (K, U), and never right after another unknown operation (the
  two in a row are no better than the second alone);
- guards (`Model.guard`, `Model.requires`): an unknown CAS is only tried where it could swap,
  a known read only where it could be accepted, without calling the model elsewhere;
- unneeded timeouts (`Model.drop_unneeded`): an unknown write whose value no operation could
  tell apart is set aside before the search; most timed-out writes of a read/write workload are.

Complexity and budget. K is "everything that returned before the blocking return, plus a
subset of the operations concurrent with it", so with at most c operations overlapping a key
of n operations has at most n * 2^c known parts, times the reachable model states, times the
unknown combinations left; each configuration costs O(c + pending unknown classes) steps. A
linearizable history with modest concurrency takes O(n * c) steps in practice; proving one is
not linearizable means visiting every configuration reachable before the anomaly, which is
what pending unknown operations multiply (a counter with m pending INCRs: up to m states per
K). `max_steps` bounds the time (a step is a candidate considered or a backtrack: 0.2 to 1 us
of CPU in CPython, hashing K included); `max_states` bounds the memory (a stored configuration
is about 220 bytes). Past either the verdict is `ok=None`, never a guess.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ringkv.chaos.history import Op as ChaosOp
    from ringkv.testing.sim.history import History as SimHistory

DEFAULT_MAX_STEPS = 5_000_000  # 1 to 5 s of CPU for a key that uses it all
DEFAULT_MAX_STATES = 500_000  # about 110 MB of stored configurations per key
REJECTED_STATES_KEPT = 6  # per operation, for the explanation of a failure
CONCURRENT_OPS_SHOWN = 8

_FORCED, _KNOWN, _UNKNOWN = 0, 1, 2  # how a search frame's operation was chosen
UNGUARDED = object()  # Model.guard: the operation may change any state


@dataclasses.dataclass(frozen=True, slots=True)
class Operation:
    """One client operation as the checker sees it.

    `input` and `output` are what the model's `step` reads (hashable inputs let identical
    unknown operations be treated as interchangeable). `returned_at` None or +inf: the outcome
    is unknown (stored as None). `key` partitions the history; `index` is the operation's
    number in the saved history, for reports.
    """

    client: int
    kind: str
    input: Any
    output: Any
    invoked_at: float
    returned_at: float | None
    key: Hashable = None
    index: int | None = None

    def __post_init__(self) -> None:
        if self.returned_at is None:
            return
        if self.returned_at == math.inf:
            object.__setattr__(self, "returned_at", None)
        elif self.returned_at < self.invoked_at:
            raise ValueError(f"operation {self.describe()} returned before it was invoked")

    @property
    def unknown(self) -> bool:
        """The outcome is unknown: it may or may not have taken effect."""
        return self.returned_at is None

    def describe(self) -> str:
        """E.g. "client 3's read -> 5 (op #17, invoked 4.1, returned 5.2)"."""
        if self.input is None:
            args = ""
        elif isinstance(self.input, tuple):
            args = "(" + ", ".join(map(repr, self.input)) + ")"
        else:
            args = f"({self.input!r})"
        if self.returned_at is None:
            out, done = " -> ?", "outcome unknown"
        else:
            out = "" if self.output is None and self.kind != "read" else f" -> {self.output!r}"
            done = f"returned {_t(self.returned_at)}"
        ident = f"op #{self.index}, " if self.index is not None else ""
        return (f"client {self.client}'s {self.kind}{args}{out} "
                f"({ident}invoked {_t(self.invoked_at)}, {done})")


def _t(time: float) -> str:
    """A time as the history has it (chaos runs keep microseconds), without float noise."""
    if float(time).is_integer():
        return str(int(time))
    return f"{time:.6f}".rstrip("0").rstrip(".")


# ------------------------------------------------------------------ models


class Model:
    """A sequential specification. `init()` is the state before any operation; `step(state,
    op)` returns whether `op` may take effect in `state` with the output it recorded, and the
    state after it. States must be hashable and compared by value.

    REQUIRES of `step`: it depends on `op` only through its kind, input and output, and for an
    operation with an unknown outcome (`op.unknown`) only through its kind and input: any
    output is accepted, and the state is the one the operation would produce.

    The other methods are hints that make the search faster; the defaults are always safe.
    A wrong hint gives wrong verdicts, so each must agree with `step` exactly as documented
    (the tests compare the built-in models against trying every order):

        observes(op)        op never changes the state: linearized as soon as accepted
        overwrites(op)      unknown op, state after independent of state before
        requires(op)        known op, the only state that accepts it
        guard(op)           unknown op, the only guard_of(state) where it changes anything
        drop_unneeded(ops)  unknown ops no linearization needs, set aside before the search
        impossible(ops)     known ops no order of ops can accept: refuted with no search
        describe_state(s)   how an explanation prints a state
    """

    name = "model"
    kinds: frozenset[str] = frozenset()

    def init(self) -> Hashable:
        raise NotImplementedError

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        raise NotImplementedError

    def observes(self, op: Operation) -> bool:
        """Whether `op` leaves the state as it is in every state that accepts it (a read, a
        CAS known to have failed). The search linearizes such an operation as soon as the
        model accepts it and makes no other choice there, which is sound only for these:
        when unsure, say False."""
        return False

    def overwrites(self, op: Operation) -> bool:
        """Whether `op`, with its outcome unknown, is accepted in every state and leaves one
        that does not depend on the state before it (a blind write). The search then tries
        it once per set of linearized operations, not once per state, and never right after
        another unknown operation (the two in a row are no better than it alone). When
        unsure, say False."""
        return False

    def requires(self, op: Operation) -> Any:
        """For `op` with a known outcome: the one state in which it can be accepted (a read's
        output, a successful CAS's expected value), or UNGUARDED. Lets the search skip
        the model's step elsewhere; it must agree with `step`."""
        return UNGUARDED

    def guard(self, op: Operation) -> Any:
        """For `op` with its outcome unknown: the one value of `guard_of(state)` in which it
        may change the state (a CAS's expected value), or UNGUARDED. The search then does
        not try it in other states, where it would change nothing."""
        return UNGUARDED

    def guard_of(self, state: Any) -> Any:
        """What `guard` compares: the state itself, or the part of it a CAS looks at."""
        return state

    def drop_unneeded(self, ops: Sequence[Operation]) -> list[Operation]:
        """`ops` (one key's) without operations of unknown outcome that no linearization
        needs: every linearization in which they take effect must still work without them.
        Each one kept costs the search a branch wherever it could take effect, so a model
        that can tell which are unneeded makes histories with many timeouts checkable. Here:
        those that never change the state."""
        return [op for op in ops if not (op.returned_at is None and self.observes(op))]

    def impossible(self, ops: Sequence[Operation]) -> list[Operation]:
        """Known operations of `ops` (one key's) that no state any order of `ops` reaches
        accepts, so that a history holding one is refuted at once, however many operations of
        unknown outcome would otherwise multiply the search (a read of a value nothing wrote).
        Only what is certain: the default is none."""
        return []

    def describe_state(self, state: Any) -> str:
        return repr(state)


class RegisterModel(Model):
    """A register that may be absent (state None).

        read              -> value (None: absent)
        write(value)
        cas(expected, new) -> bool; expected None means "absent"
        delete            -> whether the key existed (None: not recorded)
    """

    name = "register"
    kinds = frozenset({"read", "write", "cas", "delete"})

    def __init__(self) -> None:
        # A table of transitions, not an if-chain: one lookup per step.
        self._steps = {"read": self._read, "write": self._write, "cas": self._cas,
                       "delete": self._delete}

    def init(self) -> Hashable:
        return None

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        return self._steps[op.kind](state, op)

    @staticmethod
    def _read(state: Any, op: Operation) -> tuple[bool, Any]:
        return op.returned_at is None or op.output == state, state

    @staticmethod
    def _write(state: Any, op: Operation) -> tuple[bool, Any]:
        return True, op.input

    @staticmethod
    def _cas(state: Any, op: Operation) -> tuple[bool, Any]:
        expected, new = op.input
        swapped = state == expected
        if op.returned_at is not None and op.output != swapped:
            return False, state
        return True, new if swapped else state

    @staticmethod
    def _delete(state: Any, op: Operation) -> tuple[bool, Any]:
        if op.returned_at is not None and op.output is not None \
                and bool(op.output) != (state is not None):
            return False, state
        return True, None

    def observes(self, op: Operation) -> bool:
        return op.kind == "read" or (
            op.kind in ("cas", "delete") and op.returned_at is not None
            and op.output is not None and not op.output)

    def drop_unneeded(self, ops: Sequence[Operation]) -> list[Operation]:
        """Also an unknown write, cas or delete whose resulting value no operation can tell
        apart (no known read returned it, no CAS expected it), when no known operation is
        accepted in "any state but one" (a failed CAS of a value the register can hold, a
        delete that found the key). Then, had it taken effect, every operation until the
        next change of the value either ignores the value or is an unknown CAS that can be
        left out too, so dropping it keeps the linearization valid. Typical of read/write
        workloads with unique values, where most timed-out writes are never read."""
        ops = super().drop_unneeded(ops)
        try:
            # A failed CAS of a value the register can never hold does not care.
            held = {None} | {self._makes(op) for op in ops if op.kind != "read"}
            if any(op.returned_at is not None and (
                    (op.kind == "cas" and not op.output and op.input[0] in held)
                    or (op.kind == "delete" and op.output)) for op in ops):
                return ops
            needed = {op.output for op in ops if op.kind == "read" and op.returned_at is not None}
            needed |= {op.input[0] for op in ops if op.kind == "cas"}
            if any(op.kind == "delete" and op.returned_at is not None and op.output is not None
                   for op in ops):
                needed.add(None)  # a delete that found no key tells absent apart
            return [op for op in ops if op.returned_at is not None or op.kind == "read"
                    or self._makes(op) in needed]
        except TypeError:  # unhashable values: keep everything
            return ops

    def overwrites(self, op: Operation) -> bool:
        return op.kind in ("write", "delete")

    def requires(self, op: Operation) -> Any:
        if op.kind == "read":
            return op.output
        return op.input[0] if op.kind == "cas" and op.output is True else UNGUARDED

    def guard(self, op: Operation) -> Any:
        return op.input[0] if op.kind == "cas" else UNGUARDED

    @staticmethod
    def _makes(op: Operation) -> Any:
        return op.input if op.kind == "write" else op.input[1] if op.kind == "cas" else None

    def impossible(self, ops: Sequence[Operation]) -> list[Operation]:
        """A known read of a value, or a known successful CAS from a value, that the register
        never holds: neither absent (its start) nor the value of any write or CAS, known or not."""
        try:
            held = {None} | {self._makes(op) for op in ops if op.kind != "read"}
            return [op for op in ops if op.returned_at is not None and (
                (op.kind == "read" and op.output not in held)
                or (op.kind == "cas" and op.output is True and op.input[0] not in held))]
        except TypeError:  # an unhashable value: no shortcut
            return []

    def describe_state(self, state: Any) -> str:
        return "absent" if state is None else repr(state)


class CounterModel(Model):
    """An integer counter; a missing counter reads as 0.

        incr(delta) -> the new value
        read        -> value (None: missing, i.e. 0)
        set(value)
    """

    name = "counter"
    kinds = frozenset({"incr", "read", "set"})

    def __init__(self) -> None:
        self._steps = {"incr": self._incr, "read": self._read, "set": self._set}

    def init(self) -> Hashable:
        return 0

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        return self._steps[op.kind](state, op)

    @staticmethod
    def _incr(state: int, op: Operation) -> tuple[bool, Any]:
        new = state + op.input
        return op.returned_at is None or op.output == new, new

    @staticmethod
    def _read(state: int, op: Operation) -> tuple[bool, Any]:
        seen = 0 if op.output is None else op.output
        return op.returned_at is None or seen == state, state

    @staticmethod
    def _set(state: int, op: Operation) -> tuple[bool, Any]:
        return True, op.input

    def observes(self, op: Operation) -> bool:
        return op.kind == "read" or (op.kind == "incr" and op.input == 0)

    def overwrites(self, op: Operation) -> bool:
        return op.kind == "set"

    def requires(self, op: Operation) -> Any:
        if op.kind == "read":
            return 0 if op.output is None else op.output
        if op.kind == "incr" and isinstance(op.output, int) and isinstance(op.input, int):
            return op.output - op.input
        return UNGUARDED


@dataclasses.dataclass(frozen=True, slots=True)
class UnseenVersion:
    """The version made by an operation whose reply was lost and that no read saw: equal only
    to itself, so nothing in the history can have compared against it."""

    op: int

    def __repr__(self) -> str:
        return f"<unseen version of op #{self.op}>"


class VersionedRegisterModel(Model):
    """A register whose every successful write, cas and delete makes a new opaque version;
    the state is (value, version), (None, None) before the first write.

        read                                   -> (value, version); None: (None, None)
        write((value, version))
        cas((expected_version, value, version)) -> bool
        delete(version)                        the key becomes (None, version)

    The simpler approach chosen: the version an operation makes is part of its input, not its
    output, so the model stays deterministic. For an acknowledged operation it comes from the
    reply; for one with an unknown outcome, `resolve_versions` takes it from a read that saw
    the operation's value (values must be unique per key, as the chaos workloads make them),
    or gives it an `UnseenVersion` when no read did.
    """

    name = "versioned register"
    kinds = frozenset({"read", "write", "cas", "delete"})

    def __init__(self) -> None:
        self._steps = {"read": self._read, "write": self._write, "cas": self._cas,
                       "delete": self._delete}

    def init(self) -> Hashable:
        return (None, None)

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        return self._steps[op.kind](state, op)

    @staticmethod
    def _read(state: tuple, op: Operation) -> tuple[bool, Any]:
        return op.returned_at is None or _pair(op.output) == state, state

    @staticmethod
    def _write(state: tuple, op: Operation) -> tuple[bool, Any]:
        return True, tuple(op.input)

    @staticmethod
    def _cas(state: tuple, op: Operation) -> tuple[bool, Any]:
        expected, value, version = op.input
        swapped = state[1] == expected
        if op.returned_at is not None and op.output != swapped:
            return False, state
        return True, (value, version) if swapped else state

    @staticmethod
    def _delete(state: tuple, op: Operation) -> tuple[bool, Any]:
        return True, (None, op.input)

    def observes(self, op: Operation) -> bool:
        return op.kind == "read" or (
            op.kind == "cas" and op.returned_at is not None and op.output is False)

    def drop_unneeded(self, ops: Sequence[Operation]) -> list[Operation]:
        """As `RegisterModel.drop_unneeded`, on versions: an unknown operation whose
        resulting (value, version) no known read returned and whose version no CAS
        expected, when no known CAS of a version that some operation makes failed."""
        ops = super().drop_unneeded(ops)
        try:
            made = {self._makes(op)[1] for op in ops if op.kind != "read"} | {None}
            if any(op.kind == "cas" and op.returned_at is not None and not op.output
                   and op.input[0] in made for op in ops):
                return ops
            read = {_pair(op.output) for op in ops
                    if op.kind == "read" and op.returned_at is not None}
            expected = {op.input[0] for op in ops if op.kind == "cas"}
            return [op for op in ops if op.returned_at is not None or op.kind == "read"
                    or self._makes(op) in read or self._makes(op)[1] in expected]
        except TypeError:
            return ops

    def overwrites(self, op: Operation) -> bool:
        return op.kind in ("write", "delete")

    def guard(self, op: Operation) -> Any:
        return op.input[0] if op.kind == "cas" else UNGUARDED

    def guard_of(self, state: Any) -> Any:
        return state[1]

    def requires(self, op: Operation) -> Any:
        return _pair(op.output) if op.kind == "read" else UNGUARDED

    @staticmethod
    def _makes(op: Operation) -> tuple:
        if op.kind == "write":
            return tuple(op.input)
        return tuple(op.input[1:]) if op.kind == "cas" else (None, op.input)

    def describe_state(self, state: Any) -> str:
        value, version = state
        return f"{'absent' if value is None else repr(value)} at version {version!r}"


def _pair(output: Any) -> tuple:
    """A versioned read's output as a state: a list from JSON is a tuple, None is "never
    written"."""
    return (None, None) if output is None else tuple(output)


def resolve_versions(history: Iterable[Operation]) -> list[Operation]:
    """The history with the missing versions of writes, CASes and deletes filled in, for
    `VersionedRegisterModel`: from a read that returned the operation's value, else an
    `UnseenVersion`. REQUIRES: each value is written at most once per key."""
    ops = list(history)
    seen: dict[tuple[Hashable, Any], Any] = {}
    for op in ops:
        if op.kind == "read" and not op.unknown and op.output is not None:
            value, version = op.output
            if value is not None:
                seen.setdefault((op.key, value), version)
    out = []
    for n, op in enumerate(ops):
        ident = n if op.index is None else op.index
        if op.kind in ("write", "cas") and op.input[-1] is None:
            value = op.input[-2]
            version = seen.get((op.key, value), UnseenVersion(ident))
            op = dataclasses.replace(op, input=(*op.input[:-1], version))
        elif op.kind == "delete" and op.input is None:
            op = dataclasses.replace(op, input=UnseenVersion(ident))
        out.append(op)
    return out


# ------------------------------------------------------------------ results


@dataclasses.dataclass(frozen=True, slots=True)
class KeyResult:
    """The verdict for one key. `ok` None: the budget ran out first. On failure, `culprit` is
    the operation the search could not get past (the history up to its return already has no
    linearization), `rejected_states` what the model held when it was tried, and `concurrent`
    the operations overlapping it. On success, `witness` is one linearization (unknown
    operations left out did not take effect). `steps` and `states` are the budget used."""

    key: Hashable
    ok: bool | None
    operations: int
    steps: int
    states: int
    explanation: str = ""
    culprit: Operation | None = None
    rejected_states: tuple[Any, ...] = ()
    concurrent: tuple[Operation, ...] = ()
    witness: tuple[Operation, ...] = ()
    unknown_dropped: int = 0  # operations of unknown outcome the model showed unneeded


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """The verdict for a whole history: False if any key is not linearizable, else None if
    any key ran out of budget, else True."""

    ok: bool | None
    keys: tuple[KeyResult, ...]

    @property
    def failures(self) -> list[KeyResult]:
        return [k for k in self.keys if k.ok is False]

    @property
    def undecided(self) -> list[KeyResult]:
        return [k for k in self.keys if k.ok is None]

    @property
    def explanation(self) -> str:
        """One paragraph per key that failed or ran out of budget; empty when ok."""
        return "\n".join(k.explanation for k in (*self.failures, *self.undecided))

    def describe(self) -> str:
        verdict = {True: "linearizable", False: "NOT linearizable", None: "unknown (budget)"}
        head = (f"{verdict[self.ok]}: {len(self.keys)} key{'s' if len(self.keys) != 1 else ''}, "
                f"{sum(k.operations for k in self.keys)} operations, "
                f"{sum(k.steps for k in self.keys)} steps")
        return head + ("\n" + self.explanation if self.explanation else "")


# ------------------------------------------------------------------ checking


def partition(history: Iterable[Operation]) -> dict[Hashable, list[Operation]]:
    """The history split by key, keys in order of first appearance."""
    out: dict[Hashable, list[Operation]] = {}
    for op in history:
        out.setdefault(op.key, []).append(op)
    return out


def check(history: Iterable[Operation] | Mapping[Hashable, Sequence[Operation]], model: Model,
          *, max_steps: int = DEFAULT_MAX_STEPS, max_states: int = DEFAULT_MAX_STATES) -> Result:
    """Whether `history` is linearizable against `model`, key by key. `history` is a list of
    operations (split by their `key`) or a mapping from key to that key's operations.
    `max_steps` and `max_states` are per key. Raises ValueError for an operation kind the
    model does not know."""
    by_key = dict(history) if isinstance(history, Mapping) else partition(history)
    results = tuple(check_key(ops, model, key=key, max_steps=max_steps, max_states=max_states)
                    for key, ops in by_key.items())
    if any(r.ok is False for r in results):
        ok: bool | None = False
    elif any(r.ok is None for r in results):
        ok = None
    else:
        ok = True
    return Result(ok, results)


def check_key(ops: Sequence[Operation], model: Model, *, key: Hashable = None,
              max_steps: int = DEFAULT_MAX_STEPS,
              max_states: int = DEFAULT_MAX_STATES) -> KeyResult:
    """Whether the operations of one key are linearizable against `model` (see the module
    docstring for the search). The keys of `ops` are not looked at."""
    if max_steps < 1 or max_states < 1:
        raise ValueError(f"max_steps and max_states must be positive, got {max_steps}, {max_states}")
    for op in ops:
        if op.kind not in model.kinds:
            raise ValueError(f"{op.describe()}: the {model.name} model knows only "
                             f"{', '.join(sorted(model.kinds))}, not {op.kind!r}")
    return _Search(ops, model, key, max_steps, max_states).run()


class _Search:
    """The depth-first search over one key's configurations.

    Known operations are numbered 0..k-1 in invocation order; their invocation ("call") and
    return nodes form a doubly linked list in time order, from HEAD to TAIL, and linearizing
    an operation unlinks both its nodes (Porcupine's lift), so the candidates are always the
    call nodes before the first return node. Unknown operations are kept apart, in classes of
    identical kind and input.
    """

    def __init__(self, ops: Sequence[Operation], model: Model, key: Hashable, max_steps: int,
                 max_states: int):
        self.model = model
        self.key = key
        self.max_steps = max_steps
        self.max_states = max_states
        self.all_ops = list(ops)
        ops = model.drop_unneeded(ops)
        self.unknown_dropped = len(self.all_ops) - len(ops)
        order = sorted(range(len(ops)), key=lambda n: ops[n].invoked_at)
        self.known = [ops[n] for n in order if ops[n].returned_at is not None]
        unknown = [ops[n] for n in order if ops[n].returned_at is None]

        # Classes of interchangeable unknown operations; each op gets its own bit in U. The
        # blind ones (Model.overwrites) come after the others, so that the search can pass
        # them all over at once; each group in order of first invocation.
        classes: dict[Hashable, list[int]] = {}
        for u, op in enumerate(unknown):
            try:
                ident: Hashable = (op.kind, op.input)
                hash(ident)
            except TypeError:
                ident = ("#", u)  # an unhashable input: on its own
            classes.setdefault(ident, []).append(u)
        groups = sorted(classes.values(),
                        key=lambda us: (model.overwrites(unknown[us[0]]), unknown[us[0]].invoked_at))
        self.unknown = unknown
        self.class_members = [[unknown[u] for u in us] for us in groups]
        self.class_bits = [[1 << u for u in us] for us in groups]
        self.class_first_t = [members[0].invoked_at for members in self.class_members]
        self.class_overwrites = [model.overwrites(members[0]) for members in self.class_members]
        self.blind_start = sum(1 for blind in self.class_overwrites if not blind)

        k = len(self.known)
        events = sorted([(op.invoked_at, 0, i) for i, op in enumerate(self.known)]
                        + [(op.returned_at, 1, i) for i, op in enumerate(self.known)])
        self.head, self.tail = 0, 2 * k + 1
        self.node_op = [-1] * (2 * k + 2)
        self.node_is_call = [False] * (2 * k + 2)
        self.nxt = [self.tail] * (2 * k + 2)
        self.prv = [self.head] * (2 * k + 2)
        self.match = [0] * (2 * k + 2)  # a call node's return node
        self.call_of = [0] * (2 * k + 2)  # a return node's call node
        call_node = [0] * k
        chain = [self.head]
        for n, (_, is_return, i) in enumerate(events, start=1):
            self.node_op[n] = i
            self.node_is_call[n] = not is_return
            if is_return:
                self.match[call_node[i]] = n
                self.call_of[n] = call_node[i]
            else:
                call_node[i] = n
            chain.append(n)
        chain.append(self.tail)
        for a, b in itertools.pairwise(chain):
            self.nxt[a] = b
            self.prv[b] = a

    # The configuration cache: (known part, state) -> the unknown sets U seen with it, kept
    # as an antichain (an int when there is one, the usual case).
    def _covered_or_add(self, cache: dict, known: int, unknown: int, state: Any) -> bool:
        # Most of `known` is a run of ones from bit 0 (everything before the blocking
        # return); storing its length and the rest keeps the stored key small.
        p = (~known & (known + 1)).bit_length() - 1
        ck = (p, known >> p, state)
        seen = cache.get(ck)
        if seen is None:
            cache[ck] = unknown
            return False
        if type(seen) is int:
            if seen & ~unknown == 0:
                return True
            cache[ck] = unknown if unknown & ~seen == 0 else [seen, unknown]
            return False
        if any(u & ~unknown == 0 for u in seen):
            return True
        seen[:] = [u for u in seen if unknown & ~u != 0]
        seen.append(unknown)
        return False

    def run(self) -> KeyResult:
        impossible = self.model.impossible(self.all_ops)
        if impossible:
            culprit = min(impossible, key=lambda op: op.returned_at)
            concurrent = self._concurrent_with(culprit)
            return KeyResult(
                self.key, False, len(self.all_ops), 0, 0,
                f"key {self.key!r}: not linearizable. No order of its operations lets "
                f"{culprit.describe()} take effect: the {self.model.name} never holds what it "
                f"needs ({len(impossible)} such operation{'s' if len(impossible) > 1 else ''}).",
                culprit, (), concurrent, unknown_dropped=self.unknown_dropped)
        known_ops = self.known
        n_known = len(known_ops)
        if n_known == 0:
            # Every operation's outcome is unknown: none of them need have taken effect.
            return KeyResult(self.key, True, len(self.all_ops), 0, 0,
                             unknown_dropped=self.unknown_dropped)
        step = self.model.step
        head = self.head
        nxt = self.nxt
        node_op, node_is_call = self.node_op, self.node_is_call
        class_members, class_bits = self.class_members, self.class_bits
        class_first_t = self.class_first_t
        blind_start = self.blind_start
        n_classes = len(class_members)
        any_overwrites = blind_start < n_classes
        class_guard = [self.model.guard(members[0]) for members in class_members]
        guard_of = self.model.guard_of
        blind_done: set[tuple] = set()
        class_count = [0] * n_classes
        covered = self._covered_or_add
        max_steps, max_states = self.max_steps, self.max_states
        observer = [self.model.observes(op) for op in known_ops]
        requires = [self.model.requires(op) for op in known_ops]

        cache: dict = {}
        state = self.model.init()
        known, unknown = 0, 0
        covered(cache, known, unknown, state)
        n_states = 1
        remaining = n_known
        # A frame is pushed for each operation linearized: (FORCED or KNOWN, its call node,
        # the state before) or (UNKNOWN, its class, the state before), followed, for KNOWN
        # and UNKNOWN, by what is needed to resume the choice at the configuration below:
        # its candidates, the next one to try, its blocking return node, the next class.
        stack: list[tuple] = []
        steps = 0
        rejected: dict[int, set] = {}
        furthest = -1  # the known operation whose return the search got stuck at, latest
        furthest_t = -math.inf
        # The choice being made at the current configuration.
        cands: list[tuple[int, Any]] = []
        pos = 0
        block = head
        first_class = 0
        skip_blind = False
        entering = True

        while True:
            if entering:
                # A new configuration: evaluate its known candidates, the call nodes before
                # the first return node.
                if remaining == 0:
                    return self._linearized(steps, n_states, stack)
                cands = []
                forced = -1
                node = nxt[head]
                while node_is_call[node]:
                    steps += 1
                    i = node_op[node]
                    needs = requires[i]
                    if needs is UNGUARDED or needs == state:
                        ok, new_state = step(state, known_ops[i])
                    else:
                        ok = False  # cheaper than asking the model
                    if ok:
                        if observer[i]:
                            forced = node
                            break
                        cands.append((node, new_state))
                    else:
                        seen = rejected.get(i)
                        if seen is None:
                            rejected[i] = {state}
                        elif len(seen) < REJECTED_STATES_KEPT:
                            seen.add(state)
                    node = nxt[node]
                if steps > max_steps:
                    return self._undecided(steps, n_states, furthest, f"max_steps={max_steps}")
                if forced >= 0:
                    # An operation that never changes the state (a read), accepted here,
                    # can be moved to the front of any linearization from here: linearize
                    # it and make no other choice here.
                    new_known = known | (1 << node_op[forced])
                    if not covered(cache, new_known, unknown, state):
                        n_states += 1
                        if n_states > max_states:
                            return self._undecided(steps, n_states, furthest,
                                                   f"max_states={max_states}")
                        stack.append((_FORCED, forced, state))
                        known = new_known
                        self._lift(forced)
                        remaining -= 1
                        continue
                    cands, pos, first_class = [], 0, n_classes  # seen: this one fails too
                else:
                    block = node
                    block_t = known_ops[node_op[node]].returned_at
                    if block_t > furthest_t:
                        furthest, furthest_t = node_op[node], block_t
                    if len(cands) > 1:
                        # The operation whose return comes first must be linearized before
                        # anything invoked after it: trying it first keeps the others free
                        # (a quarter fewer steps on the generated histories of the tests).
                        own = self.call_of[node]
                        for n, cand in enumerate(cands):
                            if cand[0] == own:
                                if n:
                                    cands.insert(0, cands.pop(n))
                                break
                    pos, first_class = 0, 0
                entering = False

            # The next choice at the current configuration: a known candidate, then an
            # unknown operation invoked before the blocking return.
            while pos < len(cands):
                node, new_state = cands[pos]
                pos += 1
                new_known = known | (1 << node_op[node])
                if covered(cache, new_known, unknown, new_state):
                    continue
                n_states += 1
                if n_states > max_states:
                    return self._undecided(steps, n_states, furthest, f"max_states={max_states}")
                stack.append((_KNOWN, node, state, cands, pos, block, first_class, skip_blind))
                known, state = new_known, new_state
                self._lift(node)
                remaining -= 1
                entering = True
                break
            if entering:
                continue

            if first_class < n_classes:
                block_t = known_ops[node_op[block]].returned_at
                here = guard_of(state)
                top = stack[-1] if stack and stack[-1][0] == _UNKNOWN else None
                if first_class == 0 and any_overwrites:
                    if top is not None:
                        # Absorbed: a blind operation right after another unknown one leads
                        # where it leads from below that one, which is tried there.
                        skip_blind = True
                    else:
                        # Where a blind operation leads does not depend on the state: from
                        # a second configuration with the same sets, they all lead where
                        # they did from the first.
                        p = (~known & (known + 1)).bit_length() - 1
                        sets = (p, known >> p, unknown)
                        skip_blind = sets in blind_done
                        blind_done.add(sets)
                c = first_class - 1
                while c + 1 < n_classes:
                    c += 1
                    steps += 1
                    if class_first_t[c] > block_t or (skip_blind and c >= blind_start):
                        if c >= blind_start or skip_blind:
                            break
                        c = blind_start - 1  # the rest of this group is invoked later
                        continue
                    n = class_count[c]
                    members = class_members[c]
                    if n == len(members) or members[n].invoked_at > block_t:
                        continue
                    guard = class_guard[c]
                    if guard is not UNGUARDED and guard != here:
                        continue  # would change nothing here
                    op = members[n]
                    ok, new_state = step(state, op)
                    if not ok or new_state == state:
                        continue  # no effect here: covered by this configuration itself
                    if top is not None:
                        # Absorption: right after another unknown operation, and that one
                        # makes no difference to where this one leads.
                        steps += 1
                        ok_before, from_before = step(top[2], op)
                        if ok_before and from_before == new_state:
                            continue
                    new_unknown = unknown | class_bits[c][n]
                    if covered(cache, known, new_unknown, new_state):
                        continue
                    n_states += 1
                    if n_states > max_states:
                        return self._undecided(steps, n_states, furthest,
                                               f"max_states={max_states}")
                    stack.append((_UNKNOWN, c, state, cands, pos, block, c + 1, skip_blind))
                    unknown, state = new_unknown, new_state
                    class_count[c] = n + 1
                    entering = True
                    break
                if steps > max_steps:
                    return self._undecided(steps, n_states, furthest, f"max_steps={max_steps}")
                if entering:
                    continue

            # Nothing left to try here: backtrack to the last configuration with a choice.
            while True:
                steps += 1
                if not stack:
                    return self._refuted(steps, n_states, furthest, rejected)
                frame = stack.pop()
                state = frame[2]
                if frame[0] == _UNKNOWN:
                    c = frame[1]
                    class_count[c] -= 1
                    unknown &= ~class_bits[c][class_count[c]]
                else:
                    known &= ~(1 << node_op[frame[1]])
                    self._unlift(frame[1])
                    remaining += 1
                if frame[0] != _FORCED:
                    _, _, _, cands, pos, block, first_class, skip_blind = frame
                    break
            if steps > max_steps:
                return self._undecided(steps, n_states, furthest, f"max_steps={max_steps}")

    def _lift(self, node: int) -> None:
        """Unlink a call node and its return node: the operation is linearized."""
        nxt, prv = self.nxt, self.prv
        ret = self.match[node]
        nxt[prv[node]] = nxt[node]
        prv[nxt[node]] = prv[node]
        nxt[prv[ret]] = nxt[ret]
        prv[nxt[ret]] = prv[ret]

    def _unlift(self, node: int) -> None:
        """Link them back, in the reverse order."""
        nxt, prv = self.nxt, self.prv
        ret = self.match[node]
        nxt[prv[ret]] = ret
        prv[nxt[ret]] = ret
        nxt[prv[node]] = node
        prv[nxt[node]] = node

    # ---------------------------------------------------------------- verdicts

    def _linearized(self, steps: int, n_states: int, stack: list[tuple]) -> KeyResult:
        witness = []
        counts = [0] * len(self.class_members)
        for frame in stack:
            if frame[0] != _UNKNOWN:
                witness.append(self.known[self.node_op[frame[1]]])
            else:
                c = frame[1]
                witness.append(self.class_members[c][counts[c]])
                counts[c] += 1
        return KeyResult(self.key, True, len(self.all_ops), steps, n_states,
                         witness=tuple(witness), unknown_dropped=self.unknown_dropped)

    def _concurrent_with(self, culprit: Operation) -> tuple[Operation, ...]:
        end = culprit.returned_at
        return tuple(
            op for op in self.all_ops
            if op is not culprit and op.invoked_at <= end
            and (op.returned_at is None or op.returned_at >= culprit.invoked_at))

    def _prefix_size(self, culprit: Operation) -> int:
        return sum(1 for op in self.all_ops if op.invoked_at <= culprit.returned_at)

    def _refuted(self, steps: int, n_states: int, furthest: int,
                 rejected: dict[int, set]) -> KeyResult:
        model = self.model
        culprit = self.known[furthest]
        states = tuple(rejected.get(furthest, ()))
        concurrent = self._concurrent_with(culprit)
        lines = [f"key {self.key!r}: not linearizable. The {self._prefix_size(culprit)} "
                 f"operations invoked up to t={_t(culprit.returned_at)} already have no "
                 f"linearization; the search cannot get past {culprit.describe()}."]
        if states:
            shown = sorted(model.describe_state(s) for s in states)
            more = " (and others)" if len(states) >= REJECTED_STATES_KEPT else ""
            needs = model.requires(culprit)
            wanted = "" if needs is UNGUARDED else \
                f"; only {model.describe_state(needs)} would do"
            lines.append(f"  Wherever it could take effect, the {model.name} held "
                         f"{' or '.join(shown)}{more}{wanted}.")
        else:
            lines.append("  It could take effect, but then an operation that returned before "
                         "it could not: no order of the operations overlapping it works.")
        if concurrent:
            lines.append(f"  Overlapping it ({len(concurrent)}):")
            lines.extend(f"    {op.describe()}" for op in concurrent[:CONCURRENT_OPS_SHOWN])
            if len(concurrent) > CONCURRENT_OPS_SHOWN:
                lines.append(f"    ... and {len(concurrent) - CONCURRENT_OPS_SHOWN} more")
        return KeyResult(self.key, False, len(self.all_ops), steps, n_states, "\n".join(lines),
                         culprit, states, concurrent, unknown_dropped=self.unknown_dropped)

    def _undecided(self, steps: int, n_states: int, furthest: int, limit: str) -> KeyResult:
        where = ""
        if furthest >= 0:
            # Not a verdict, but where to look: a linearizable history is usually passed
            # quickly, so the search stalling here suggests trouble at or before this point.
            culprit = self.known[furthest]
            where = (f" The search got no further than {culprit.describe()}, "
                     f"{self._prefix_size(culprit)} operations in: look there first.")
        return KeyResult(self.key, None, len(self.all_ops), steps, n_states,
                         f"key {self.key!r}: unknown, the budget ran out ({limit}, after "
                         f"{steps} steps and {n_states} stored configurations).{where}",
                         unknown_dropped=self.unknown_dropped)


# ------------------------------------------------------------------ adapters


def from_chaos(ops: Iterable[ChaosOp], workload: str) -> list[Operation]:
    """A chaos run's operations (ringkv.chaos.history) of one workload, as the checker's:
    `register` for `RegisterModel` (a read that saw siblings returns them as a sorted tuple,
    which no register state equals: a linearizable register has one value), `counter` for
    `CounterModel`. Failed operations (certainly without effect) and reads whose outcome is
    unknown (they constrain nothing) are left out; times are seconds since the run started.
    Raises ValueError for an operation it cannot convert (a CAS on versions the reads do not
    record): leaving one out would make the verdict wrong, not just incomplete."""
    if workload not in ("register", "counter"):
        raise ValueError(f"no model for the chaos workload {workload!r}: register or counter")
    convertible = {"register": ("read", "write", "delete"), "counter": ("read", "incr")}[workload]
    out = []
    for op in ops:
        if op.workload != workload or op.outcome == "fail":
            continue
        if op.f not in convertible:
            raise ValueError(f"op #{op.index} of {op.key!r} is a {op.f!r}, which from_chaos cannot "
                             f"turn into a {workload} model's operation (it knows "
                             f"{', '.join(convertible)})")
        known = op.outcome == "ok" and op.complete_s is not None
        returned = op.complete_s if known else None
        if op.f == "read":
            if not known:
                continue
            values = list(op.result or ())
            if len(values) > 1:
                output: Any = tuple(sorted(values))
            elif values:
                output = int(values[0]) if workload == "counter" else values[0]
            else:
                output = None
            out.append(Operation(op.process, "read", None, output, op.invoke_s, returned,
                                 op.key, op.index))
        elif op.f == "write":
            out.append(Operation(op.process, "write", op.value, None, op.invoke_s, returned,
                                 op.key, op.index))
        elif op.f == "delete":  # the reply does not say whether the key existed
            out.append(Operation(op.process, "delete", None, None, op.invoke_s, returned,
                                 op.key, op.index))
        else:
            out.append(Operation(op.process, "incr", op.value,
                                 op.result if known else None, op.invoke_s, returned, op.key,
                                 op.index))
    return out


def from_sim(history: SimHistory) -> list[Operation]:
    """The simulator's history (ringkv.testing.sim.history) as the checker's, for
    `RegisterModel`. Times are the simulator's event sequence numbers, which order every
    invocation and completion exactly. A write that failed or got no answer has an unknown
    outcome (a failed W is "not acknowledged", not "not written"); failed and unknown reads
    are left out. A read that saw siblings returns them as a sorted tuple."""
    out = []
    for op in history.ops:
        known = op.status == "ok" and op.completed_seq is not None
        returned = op.completed_seq if known else None
        if op.kind == "read":
            if not known:
                continue
            values = [] if op.record is None else sorted(
                s.value for s in op.record.siblings if s.value is not None)
            output = None if not values else values[0] if len(values) == 1 else tuple(values)
            out.append(Operation(op.client, "read", None, output, op.invoked_seq, returned,
                                 op.key, op.index))
        elif op.kind == "write":
            out.append(Operation(op.client, "write", op.value, None, op.invoked_seq, returned,
                                 op.key, op.index))
    return out
