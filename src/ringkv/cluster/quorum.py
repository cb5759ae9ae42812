"""Quorum decisions of one read or write: replica answers in, an outcome out.

The coordinator sends a request to a partition's replicas (primaries and fallbacks) and feeds
every answer here: `on_success` or `on_failure` (a timeout is a failure it reports; this
module has no clock). The request succeeds once W (or R) replicas succeeded, and fails as soon
as too few replicas are left to get there. Once decided, the outcome is fixed; later answers
are still recorded, because the coordinator still applies them (read repair of late replies,
hints). Reads keep the merge of every version received, through `merge` and `same` functions
supplied by the caller, so this module does not know the record format. A datacenter level
(LOCAL_QUORUM, EACH_QUORUM, ...) gives per-datacenter needs instead of one count: the request
succeeds once every datacenter's need is met and fails as soon as one cannot be, naming that
datacenter. Implements docs/ring.md, "Quorum decisions", and docs/multi-dc.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from ringkv.errors import ConfigError, QuorumError
from ringkv.service.levels import ConsistencyLevel, DcNeed, parse_level, resolve

__all__ = ["ConsistencyLevel", "DcNeed", "ReadQuorum", "WriteQuorum", "parse_level", "resolve"]


# Per-replica state and its transitions: (state, answer) -> new state. A success after a
# failure counts, because a replica that timed out and answered later does hold the write; a
# success is final, so a duplicate or contradicting failure report after it changes nothing.
_PENDING, _SUCCEEDED, _FAILED = "pending", "succeeded", "failed"
_TRANSITIONS = {
    (_PENDING, _SUCCEEDED): _SUCCEEDED,
    (_PENDING, _FAILED): _FAILED,
    (_FAILED, _SUCCEEDED): _SUCCEEDED,
    (_FAILED, _FAILED): _FAILED,
    (_SUCCEEDED, _SUCCEEDED): _SUCCEEDED,
    (_SUCCEEDED, _FAILED): _SUCCEEDED,
}


class _Quorum:
    """Counting and the decision, shared by reads and writes."""

    __slots__ = (
        "_error",
        "_needs",
        "_outcome",
        "_pending",
        "_reasons",
        "_states",
        "_successes",
        "needed",
        "replicas",
    )

    def __init__(self, replicas: tuple[str, ...], needed: int, field: str, needs: tuple[DcNeed, ...] = ()):
        if type(replicas) is not tuple:
            replicas = tuple(replicas)
        n = len(replicas)
        if not n:
            raise ConfigError("replicas", "a request needs at least one replica")
        self._states = dict.fromkeys(replicas, _PENDING)
        if len(self._states) != n:
            twice = sorted(node for node, count in Counter(replicas).items() if count > 1)
            raise ConfigError("replicas", f"listed twice: {', '.join(twice)}")
        if type(needed) is not int or not 1 <= needed <= n:  # a bool's type is bool, not int
            raise ConfigError(field, f"must be in 1..{n} (the replicas asked), got {needed!r}")
        self.replicas = replicas
        self.needed = needed
        self._reasons: dict[str, str] = {}
        self._successes = 0
        self._pending = n
        self._outcome: bool | None = None
        self._error: QuorumError | None = None
        self._needs = needs  # per-datacenter needs; when given, they decide (not `needed`)

    def on_success(self, node: str, reply: Any = None) -> bool:
        """Record that `node` succeeded. True only for the answer that decided the outcome."""
        states = self._states
        if states.get(node) is _PENDING:  # the usual answer, once per replica: _move inlined
            states[node] = _SUCCEEDED
            self._pending -= 1
            self._successes += 1
            self._accept(node, reply)
        elif self._move(node, _SUCCEEDED):
            self._accept(node, reply)
        return self._outcome is None and self._decide()

    def on_failure(self, node: str, reason: str) -> bool:
        """Record that `node` failed, e.g. reason="timed out after 500 ms". True if decisive."""
        if self._move(node, _FAILED):
            self._reasons[node] = reason
        return self._decide()

    @property
    def done(self) -> bool:
        return self._outcome is not None

    @property
    def succeeded(self) -> bool:
        """True once enough replicas succeeded; False while undecided or after a failure."""
        return self._outcome is True

    @property
    def error(self) -> QuorumError | None:
        """The error to give the client if the request failed, as it stood at the decision."""
        return self._error

    @property
    def needs(self) -> tuple[DcNeed, ...]:
        """What each datacenter must answer (a datacenter level), or () for a count of all."""
        return self._needs

    @property
    def pending(self) -> tuple[str, ...]:
        """Replicas that have not answered yet, in replica order."""
        return tuple(n for n in self.replicas if self._states[n] is _PENDING)

    @property
    def failures(self) -> dict[str, str]:
        """Replicas that failed (and have not answered since), with their reasons."""
        return {n: self._reasons[n] for n in self.replicas if self._states[n] is _FAILED}

    def _move(self, node: str, answer: str) -> bool:
        """Apply one answer; True if the replica's state changed."""
        try:
            before = self._states[node]
        except KeyError:
            raise ValueError(f"{node!r} is not a replica of this request") from None
        after = _TRANSITIONS[before, answer]
        if after is before:
            return False
        self._states[node] = after
        if before is _PENDING:
            self._pending -= 1
        if after is _SUCCEEDED:
            self._successes += 1
            self._reasons.pop(node, None)
        return True

    def _decide(self) -> bool:
        if self._outcome is not None:
            return False
        if self._needs:
            return self._decide_per_dc()
        if self._successes >= self.needed:
            self._outcome = True
            return True
        if self._successes + self._pending < self.needed:
            self._outcome = False
            self._error = QuorumError(self.needed, self._successes, self.failures, self.pending)
            return True
        return False

    def _decide_per_dc(self) -> bool:
        states = self._states
        met = True
        for need in self._needs:
            succeeded = sum(1 for n in need.members if states.get(n) is _SUCCEEDED)
            if succeeded >= need.needed:
                continue
            met = False
            pending = [n for n in self.replicas if n in need.members and states[n] is _PENDING]
            if succeeded + len(pending) < need.needed:
                self._outcome = False
                failures = {n: r for n, r in self.failures.items() if n in need.members}
                if not need.members:
                    failures = {"(none)": "holds no replica of this key there"}
                self._error = QuorumError(need.needed, succeeded, failures, tuple(pending), dc=need.dc or "(unnamed)")
                return True
        if met:
            self._outcome = True
            return True
        return False

    def _accept(self, node: str, reply: Any) -> None:
        """Hook: a replica's first success, with its reply."""


class WriteQuorum(_Quorum):
    """Decides a write: succeeded when `w` of `replicas` acknowledged it."""

    __slots__ = ()

    def __init__(self, replicas: tuple[str, ...], w: int, needs: tuple[DcNeed, ...] = ()):
        super().__init__(replicas, w, "w", needs)


_NOTHING = object()


class ReadQuorum(_Quorum):
    """Decides a read and merges the versions the replicas returned.

    REQUIRES: `merge(a, b)` is commutative and associative (a causal merge of sibling sets is),
    so the result does not depend on the order replies arrive in; `same(a, b)` tells whether
    two versions are equivalent, so a replica whose reply is not `same` as the merge has
    missed something and gets the merged version by read repair; the merge of two `same`
    versions is `same` as either (so equal replies, the usual case, are not merged at all).
    """

    __slots__ = ("_merge", "_merged", "_mixed", "_same", "replies")

    def __init__(
        self,
        replicas: tuple[str, ...],
        r: int,
        merge: Callable[[Any, Any], Any],
        same: Callable[[Any, Any], bool],
        needs: tuple[DcNeed, ...] = (),
    ):
        super().__init__(replicas, r, "r", needs)
        self._merge = merge
        self._same = same
        self.replies: dict[str, Any] = {}  # replica -> its first successful reply (read-only outside)
        self._merged: Any = _NOTHING
        self._mixed = False  # whether any reply was not `same` as the merge before it

    @property
    def has_result(self) -> bool:
        return self._merged is not _NOTHING

    @property
    def result(self) -> Any:
        """The merge of every reply received so far, late ones included."""
        if self._merged is _NOTHING:
            raise RuntimeError("no replica has answered the read yet")
        return self._merged

    @property
    def unanimous(self) -> bool:
        """Every replica answered, each with a version `same` as the others'."""
        return len(self.replies) == len(self.replicas) and not self._mixed

    def stale_replicas(self) -> tuple[str, ...]:
        """Replicas that answered with something other than the merged result, in replica order.

        These are the read-repair targets. Replicas that failed or have not answered are not
        listed: nothing is known of what they hold. Call again after late replies arrive.
        """
        if not self._mixed:
            return ()  # every reply so far is `same` as the first: none is stale
        merged, same, replies = self._merged, self._same, self.replies
        return tuple(n for n in self.replicas if n in replies and not same(replies[n], merged))

    def _accept(self, node: str, reply: Any) -> None:
        self.replies[node] = reply
        merged = self._merged
        if merged is _NOTHING:
            self._merged = reply
        elif not self._same(merged, reply):
            self._merged = self._merge(merged, reply)
            self._mixed = True
