"""Plans of one quorum read and one replicated write: who is asked, when the outcome is
decided, who stands in for a failed replica, and who needs a hint. Answers in, sends out.

A plan is a state machine per request, as h11's connection is per HTTP exchange: the shell
(node/read_path.py and node/write_path.py, or the simulator's testing/sim/kv.py) calls `start()` and sends what it
returns, reports every answer with `on_ack`/`on_record` or `on_failure` (a timeout is a failure
the shell reports: plans own no timers), and sends what those return in turn; a read's shell
also calls `ReadPlan.speculate()` when its own timer says an asked replica is slow, and sends
what it returns. It replies to the client the first time `done` is true, and acts on
`hints()` / `repairs()` once `finished`.
The counting is cluster/quorum.py's (`ReadQuorum`, `WriteQuorum`); docs/ring.md ("Quorum
decisions", "Fallbacks") and docs/cluster.md ("The path of a request", "Hinted handoff") are
the rules implemented here.

Rules of the module:
- A read asks as many replicas as R needs (`fanout="quorum"`), or every one (`"all"`); one that
  fails is replaced by the next unasked one at once, and `speculate()` adds one more.
- A replica the failure detector holds down (`is_up` is false) is not asked: it fails at once,
  so a partitioned node costs no timeout. The coordinator itself (`me`) is never sent to: it
  reads its own copy (`ReadPlan.local`) or already holds the write (it counts as one ack).
- Sloppy quorum (writes, `fallbacks` given): a replica that fails gets at most one stand-in,
  the first node of `fallbacks(failed replicas so far)` that stands in for somebody
  (`hint_for` set) and has not stood in for another replica of this write. The stand-in is
  sent the record as a hint for the failed replica; its ack counts toward W in that
  replica's place; if it fails too, the replica fails with both reasons. A stand-in is never
  replaced: one extra round trip at most per replica.
- A moving partition's new owners (`extra`) get the record too; they never count toward W
  and the coordinator keeps a hint for each that fails.
- Each send is answered once: the first answer counts and later ones are ignored, as the RPC
  layer completes a call once (a duplicate, or a reply after its timeout, changes nothing).
- After the decision, answers are still recorded: reads merge late records (read repair of
  late replicas, among those asked), writes learn which replicas missed the record (hints).

Pure: no clock, no randomness, no IO. One plan belongs to one request; not thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ringkv.cluster.quorum import DcNeed, ReadQuorum, WriteQuorum
from ringkv.errors import ConfigError, QuorumError

DOWN_REASON = "down (failure detector)"
# Who a read asks: "quorum", as many replicas as R needs (more only when one fails or is
# slow); "all", every replica at once.
READ_FANOUTS = ("quorum", "all")


def _no_detector_reason(node: str) -> str:
    return DOWN_REASON


_NO_RECORD = object()  # a digest that matches no record received (a record may be None)
# A plan without digests: its digest state, empty for good (read, never written).
_NO_DIGESTS: tuple[dict, list, frozenset, frozenset, dict] = ({}, [], frozenset(), frozenset(), {})


class Send(NamedTuple):
    """One message a plan asks the shell to send: a ReplicaPut for a write (a ReplicaGet for a
    read is just the node's name). Equal sends are the same send: within one plan a node gets
    at most one send per role, so the value identifies it when its answer comes back. A named
    tuple: a plan keeps its sends in sets, and a tuple hashes and compares in C."""

    node: str  # where the message goes
    hint_for: str | None = None  # set when `node` is a stand-in keeping the record as a hint for that replica
    counts: bool = True  # False for writes to a moving partition's new owners (not counted toward W)


# fallbacks(failed replicas) -> the ring's sloppy-quorum list for these failures, as
# (node, hint_for) pairs: Ring.fallbacks(partition, failed, n) gives Holder(node_id, hint_for).
Fallbacks = Callable[[frozenset[str]], Sequence[tuple[str, str | None]]]


class ReadPlan:
    """One quorum read of one key: ask the replicas it needs, succeed once `r` answered, merge.

    `fanout` says who is asked. "quorum" (the node's default, `read_fanout`): only as many
    replicas as R needs, the local copy counting as one, in preference order (`order`, when
    given: the same replicas in the order to ask them, e.g. this datacenter's first),
    skipping those held down; when an asked replica fails, the next unasked one is asked at
    once (`on_failure` returns it); `speculate()`, which the shell calls when an asked replica
    is slower than its recent p99, returns one more to ask while the read is undecided. "all":
    every replica is asked at `start()`, as every read did before (session reads need it:
    `unanimous` means every replica answered with the same version).

    `digest` (digest reads): a function of a record to its digest (bytes; equal records, equal
    digests). Given, one replica asked sends its whole record and the others only its digest,
    as Cassandra's reads do: the first replica asked while the plan holds no record and asks
    nobody for one is a data ask, every other a digest ask (`asks_digest(node)`); a digest ask
    carries `known`, the digest of the record the plan holds (None before it holds one), so a
    replica whose record differs answers with the record itself and costs no second round
    trip. A digest that matches a record received counts as that record; one that matches none
    (or arrives with no record received and none asked for) has its replica asked again for the
    record (`on_digest` returns it); one that arrives while a record is on its way waits for it.
    A replica counts toward R only once its record or a matching digest is in.

    `needs` (a datacenter level): what each datacenter must answer, instead of `r` of all; a
    "quorum" fan-out asks enough in each. The caller reads its own copy when `local` and
    reports it with `on_record(me, record)`, before `start()` (as the node does: its own copy
    is at hand first, so it counts toward R before anybody is asked, and a quorum error then
    counts it among those that answered). REQUIRES, as ReadQuorum: `merge` is commutative and
    associative, so the result does not depend on the order answers arrive in.
    """

    __slots__ = ("_answered", "_by_digest", "_data_open", "_digest", "_digesting", "_down_reason", "_held", "_is_up",
                 "_needs", "_open", "_started", "_undigested", "fanout", "local", "pref", "quorum", "unasked")

    def __init__(
        self,
        pref: tuple[str, ...],
        r: int,
        *,
        me: str | None,
        is_up: Callable[[str], bool],
        merge: Callable[[Any, Any], Any],
        same: Callable[[Any, Any], bool],
        down_reason: Callable[[str], str] = _no_detector_reason,
        needs: tuple[DcNeed, ...] = (),
        fanout: str = "quorum",
        order: tuple[str, ...] | None = None,
        digest: Callable[[Any], bytes] | None = None,
    ):
        if fanout not in READ_FANOUTS:
            raise ConfigError("read_fanout", f"must be quorum or all, got {fanout!r}")
        self.quorum = ReadQuorum(pref, r, merge, same, needs)
        self.pref = self.quorum.replicas
        self.fanout = fanout
        self._is_up = is_up
        self._down_reason = down_reason  # the failure of a replica held down, e.g. with its phi
        self._needs = needs
        if order is None:
            unasked = list(self.pref)
        elif sorted(order) == sorted(self.pref):
            unasked = list(order)
        else:
            raise ValueError(f"order {order!r} is not the replicas {self.pref!r}")
        self.local = local = me is not None and me in unasked
        if local:
            unasked.remove(me)
        # Remote replicas neither asked nor found held down yet, in the order to ask them.
        self.unasked = unasked
        self._open = {me} if local else set()  # asked (or read here) and not answered yet
        self._answered = self.quorum.replies  # replica -> its record (None: no record), for those that answered
        self._started = False
        # Digest reads: the digest function; the records received, by digest; the replicas
        # asked for a digest and for a record, not answered yet; those whose digest waits for
        # a record to compare with.
        # Without digests they stay the shared empty ones, never written (every write below
        # is under `_digest is not None`): a read's plan costs what it did before digests.
        self._digest = digest
        if digest is None:
            self._by_digest, self._undigested, self._digesting, self._data_open, self._held = _NO_DIGESTS
        else:
            self._by_digest = {}
            self._undigested = []  # records received whose digest is not computed yet
            self._digesting = set()
            self._data_open = set()
            self._held = {}

    def start(self) -> list[str]:
        """The remote replicas to send a ReplicaGet to, in the order to ask them. Replicas held
        down are not among them: those met on the way have failed already."""
        if self._started:
            raise RuntimeError("a read plan is started once")
        self._started = True
        if self.fanout == "all":
            out: list[str] = []
            is_up, digests = self._is_up, self._digest is not None
            for node in self.unasked:
                if is_up(node):
                    if digests:
                        self._open_node(node)
                    else:
                        self._open.add(node)
                    out.append(node)
                else:
                    self.quorum.on_failure(node, self._down_reason(node))
            self.unasked.clear()
            return out
        if self._needs:
            return self._top_up()
        return self._ask(self.quorum.needed - len(self._answered) - len(self._open) - len(self._held))

    def on_record(self, node: str, record: Any) -> list[str]:
        """`node` answered with `record` (None: it holds no record of the key). Returns the
        replicas to ask for their record (digest reads: those whose digest waited for a record
        and matches none received)."""
        opened = self._open
        if node in opened:
            opened.discard(node)
            self.quorum.on_success(node, record)
            if self._digest is not None:
                self._digesting.discard(node)
                self._data_open.discard(node)
                self._undigested.append(record)  # digested when a digest is compared or sent
                if self._held:
                    return self._resolve_held()
        elif node not in self.quorum.replicas:
            raise ValueError(f"{node!r} is not a replica of this read")
        return []

    def on_digest(self, node: str, digest: bytes) -> list[str]:
        """`node` answered a digest ask with the digest of what it holds. Returns the replicas
        to ask for their record: `node` itself when the digest matches no record received and
        none is on its way (or none can be compared yet and none is asked for)."""
        if self._digest is None:
            raise RuntimeError("a digest answered a read plan made without digests")
        opened = self._open
        if node not in opened:
            if node not in self.quorum.replicas:
                raise ValueError(f"{node!r} is not a replica of this read")
            return []
        opened.discard(node)
        self._digesting.discard(node)
        by_digest = self._digests()
        record = by_digest.get(digest, _NO_RECORD)
        if record is not _NO_RECORD:
            self.quorum.on_success(node, record)
            return []
        if not by_digest and self._data_open:
            self._held[node] = digest  # compared when the record asked for comes
            return []
        self._open_data(node)
        return [node]

    def asks_digest(self, node: str) -> bool:
        """Whether `node`, just returned to be asked, is asked for a digest (else its record)."""
        return node in self._digesting

    @property
    def known(self) -> bytes | None:
        """The digest a digest ask carries: of the first record received (the coordinator's
        own copy, when it holds one), or None before any."""
        for digest in self._digests():
            return digest
        return None

    def on_failure(self, node: str, reason: str) -> list[str]:
        """`node` did not answer: reason as QuorumError lists it, e.g. "timed out after 500 ms".
        Returns the replicas to ask in its place (none once the read is decided, or when every
        replica was asked)."""
        opened = self._open
        if node in opened:
            opened.discard(node)
            quorum = self.quorum
            quorum.on_failure(node, reason)
            if self._digest is not None:
                self._digesting.discard(node)
                data_open = self._data_open
                if node in data_open:
                    data_open.discard(node)
                    held = self._held
                    if held and not data_open and not self._digests():
                        # the record the held digests waited for will not come: ask one of them
                        other = next(iter(held))
                        del held[other]
                        self._open_data(other)
                        return [other, *self._top_up()] if self.unasked and not quorum.done else [other]
            if self.unasked and not quorum.done:
                return self._top_up()
        elif node not in self.quorum.replicas:
            raise ValueError(f"{node!r} is not a replica of this read")
        return []

    def speculate(self) -> str | None:
        """One more replica to ask, because one asked is slow (the shell's timer): the next
        unasked replica up (with datacenter needs, of a datacenter whose need is not met yet),
        or None when the read is decided or no replica is left. At most one per call."""
        quorum = self.quorum
        if not self._started or quorum.done:
            return None
        unasked, needs = self.unasked, self._needs
        while unasked:
            if needs:
                answered = self._answered
                unmet = [n.members for n in needs if len(n.members & answered.keys()) < n.needed]
                node = next((n for n in unasked if any(n in members for members in unmet)), None)
                if node is None:
                    return None
                unasked.remove(node)
            else:
                node = unasked.pop(0)
            if self._is_up(node):
                self._open_node(node)
                return node
            quorum.on_failure(node, self._down_reason(node))
            if quorum.done:
                return None
        return None

    @property
    def done(self) -> bool:
        return self.quorum.done

    @property
    def succeeded(self) -> bool:
        return self.quorum.succeeded

    @property
    def has_result(self) -> bool:
        return self.quorum.has_result

    @property
    def result(self) -> Any:
        """The merge of every record received so far, late ones included."""
        return self.quorum.result

    @property
    def error(self) -> QuorumError | None:
        return self.quorum.error

    @property
    def finished(self) -> bool:
        """Every replica asked answered or failed, and none will be asked any more: read
        repair may run."""
        return self._started and not self._open and not self._held

    @property
    def unanimous(self) -> bool:
        """Finished, every replica answered, and all with the same version: each holds the
        result (a session may count it settled, service/session.py). Only a read that asked
        every replica can be: fan-out "all", or R = N."""
        return self.finished and self.quorum.unanimous

    def repairs(self) -> list[str]:
        """Replicas that answered with less than the merge, in preference order: read-repair
        targets (the coordinator's own copy included when it is one of them). A replica not
        asked is not among them: anti-entropy finds what it lacks."""
        return list(self.quorum.stale_replicas())

    # -- internals

    def _top_up(self) -> list[str]:
        """Ask enough unasked replicas that those answered plus those asked and waiting reach R
        again (per datacenter with needs)."""
        needs = self._needs
        if not needs:
            return self._ask(self.quorum.needed - len(self._answered) - len(self._open) - len(self._held))
        out: list[str] = []
        answered, opened, held, unasked, quorum = self._answered, self._open, self._held, self.unasked, self.quorum
        for need in needs:
            members = need.members
            want = (need.needed - len(members & answered.keys()) - len(members & opened)
                    - len(members & held.keys()))
            for node in [n for n in unasked if n in members]:
                if want <= 0 or quorum.done:
                    break
                unasked.remove(node)
                if self._is_up(node):
                    self._open_node(node)
                    out.append(node)
                    want -= 1
                else:
                    quorum.on_failure(node, self._down_reason(node))
        return out

    def _ask(self, want: int) -> list[str]:
        """The next `want` unasked replicas up, in order; those held down on the way fail."""
        out: list[str] = []
        unasked, is_up = self.unasked, self._is_up
        digests = self._digest is not None
        while want > 0 and unasked:
            node = unasked.pop(0)
            if is_up(node):
                if digests:
                    self._open_node(node)
                else:
                    self._open.add(node)
                out.append(node)
                want -= 1
            else:
                self.quorum.on_failure(node, self._down_reason(node))
        return out

    def _open_node(self, node: str) -> None:
        """`node` is asked: for a digest when digests are on and a record is held or asked for
        already, else for its record."""
        self._open.add(node)
        if self._digest is not None:
            if self._by_digest or self._undigested or self._data_open:
                self._digesting.add(node)
            else:
                self._data_open.add(node)

    def _digests(self) -> dict[bytes, Any]:
        """The records received, by digest (computed only when one is compared or sent: a read
        decided by the coordinator's own copy hashes nothing)."""
        by_digest, undigested = self._by_digest, self._undigested
        if undigested:
            digest = self._digest
            for record in undigested:
                by_digest.setdefault(digest(record), record)  # type: ignore[misc]  # set with _undigested
            undigested.clear()
        return by_digest

    def _open_data(self, node: str) -> None:
        """`node`, which answered a digest ask, is asked again, for its record."""
        self._open.add(node)
        self._data_open.add(node)

    def _resolve_held(self) -> list[str]:
        """A record came: the held digests that match one count; the others' replicas are
        asked for their records."""
        by_digest, quorum, held = self._digests(), self.quorum, self._held
        again: list[str] = []
        for node, digest in list(held.items()):
            del held[node]
            record = by_digest.get(digest, _NO_RECORD)
            if record is not _NO_RECORD:
                quorum.on_success(node, record)
            else:
                self._open_data(node)
                again.append(node)
        return again


class WritePlan:
    """One replicated write of one record: who gets it, when W is met, stand-ins and hints.

    `me` in `pref`: the coordinator already holds the write (it counts as one ack at once).
    `fallbacks` None means strict: no stand-ins (STRICT, no hint store, or no node beyond the
    preference list). `extra`: a moving partition's new owners, sent the record too, never
    counted toward W, hinted when they fail. `needs` (a datacenter level): what each
    datacenter must acknowledge, instead of `w` of all.
    """

    __slots__ = (
        "_down_reason",
        "_extra_failed",
        "_failed",
        "_fallbacks",
        "_is_up",
        "_me",
        "_open",
        "_reasons",
        "_sent",
        "_started",
        "_used",
        "acked_by",
        "extra",
        "pref",
        "quorum",
    )

    def __init__(
        self,
        pref: tuple[str, ...],
        w: int,
        *,
        me: str | None,
        is_up: Callable[[str], bool],
        fallbacks: Fallbacks | None = None,
        extra: tuple[str, ...] = (),
        down_reason: Callable[[str], str] = _no_detector_reason,
        needs: tuple[DcNeed, ...] = (),
    ):
        self.quorum = WriteQuorum(pref, w, needs)
        self.pref = self.quorum.replicas
        self._me = me
        self._is_up = is_up
        self._fallbacks = fallbacks
        self._down_reason = down_reason
        # The coordinator never sends to itself, and a new owner already in the list needs
        # no second copy.
        self.extra = tuple(dict.fromkeys(n for n in extra if n != me and n not in self.pref)) if extra else ()
        self._open: set[Send] = set()  # sends not answered yet
        self._sent: set[Send] = set()  # every send made, answered or not
        self._failed: set[str] = set()  # replicas that failed so far: what fallbacks() is given
        self._used: set[str] = set()  # stand-ins already asked, for any replica
        self._reasons: dict[str, str] = {}  # replica waiting on its stand-in -> its own failure
        self._extra_failed: list[str] = []
        # replica -> the node whose ack counted for it (itself, or its stand-in)
        self.acked_by: dict[str, str] = {}
        self._started = False
        if me is not None and me in self.pref:
            self.acked_by[me] = me
            self.quorum.on_success(me)

    def start(self) -> list[Send]:
        """The sends of the write: every other replica in preference order (one held down
        fails at once and may yield its stand-in's send instead), then the extra nodes."""
        if self._started:
            raise RuntimeError("a write plan is started once")
        self._started = True
        me = self._me
        out: list[Send] = []
        is_up, opened, sent = self._is_up, self._open, self._sent
        for node in self.pref:
            if node == me:
                continue
            if is_up(node):
                send = Send(node)  # _send, inlined: once per replica of every write
                opened.add(send)
                sent.add(send)
                out.append(send)
            else:
                out.extend(self._replica_failed(node, self._down_reason(node)))
        for node in self.extra:
            # Not asked of the failure detector, as node/cluster._write_extra does today: a
            # new owner held down fails by timeout, and then gets a hint.
            out.append(self._send(Send(node, counts=False)))
        return out

    def on_ack(self, send: Send) -> list[Send]:
        """`send`'s node holds the record (as data, or as a hint when it stands in)."""
        opened = self._open
        if send in opened:  # _take, inlined: once per replica of every write
            opened.discard(send)
        elif not self._take(send):
            return []
        if send.counts:
            replica = send.hint_for or send.node
            self.acked_by.setdefault(replica, send.node)
            self.quorum.on_success(replica)
        return []

    def on_failure(self, send: Send, reason: str) -> list[Send]:
        """`send` failed (reason as QuorumError lists it). Returns the stand-in's send when a
        failed replica gets one."""
        if not self._take(send):
            return []
        if not send.counts:
            self._extra_failed.append(send.node)
            return []
        if send.hint_for is None:
            return self._replica_failed(send.node, reason)
        replica = send.hint_for
        first = self._reasons.pop(replica)
        self.quorum.on_failure(replica, f"{first}, and stand-in {send.node} {reason}")
        return []

    @property
    def done(self) -> bool:
        return self.quorum.done

    @property
    def succeeded(self) -> bool:
        return self.quorum.succeeded

    @property
    def error(self) -> QuorumError | None:
        return self.quorum.error

    @property
    def finished(self) -> bool:
        """Every send answered, stand-ins and extra nodes included: hints() is final."""
        return self._started and not self._open

    def hints(self) -> list[str]:
        """The nodes the coordinator must keep a hint for: replicas whose write failed with no
        stand-in to take it (preference order), then the extra nodes that failed.

        REQUIRES: finished (before, a replica may still be waiting on its stand-in)."""
        if not self.finished:
            raise RuntimeError("hints() is known once every send has been answered")
        return [*self.quorum.failures, *self._extra_failed]

    def copies_needed_in(self, dc: str) -> int:
        """How many of datacenter `dc`'s replicas must acknowledge for this write's level, when
        the level counts per datacenter and names `dc` (EACH_QUORUM: a majority there); 0 when
        every answer counts (ALL, QUORUM across datacenters, or a level with no need there)."""
        for need in self.quorum.needs:
            if need.dc == dc:
                return need.needed
        return 0

    @property
    def held_by_every_replica(self) -> bool:
        """Every send answered and every replica of the preference list acknowledged the
        record itself (no stand-in took it for one, none failed): a session may count the
        write settled (service/session.py)."""
        if not self.finished or len(self.acked_by) != len(self.pref):
            return False
        return all(r == n for r, n in self.acked_by.items())

    @property
    def stand_ins(self) -> Mapping[str, str]:
        """Replica -> the stand-in whose ack counted in its place."""
        return {r: n for r, n in self.acked_by.items() if r != n}

    # -- internals

    def _take(self, send: Send) -> bool:
        """Close `send`; False if it was answered already (or never sent)."""
        if send in self._open:
            self._open.discard(send)
            return True
        if send not in self._sent:
            raise ValueError(f"{send!r} was not sent by this write")
        return False

    def _send(self, send: Send) -> Send:
        self._open.add(send)
        self._sent.add(send)
        return send

    def _replica_failed(self, node: str, reason: str) -> list[Send]:
        if self._fallbacks is not None:
            self._failed.add(node)
            used, me = self._used, self._me
            for candidate, hint_for in self._fallbacks(frozenset(self._failed)):
                # The first fallback the ring hands to anyone: which failed primary the ring
                # pairs it with depends on the order of failures, and the record it takes
                # names `node` either way. A coordinator outside the list (the node never is:
                # writes run on a replica) does not send to itself; it keeps hints anyway.
                if hint_for is not None and candidate not in used and candidate != me:
                    used.add(candidate)
                    self._reasons[node] = reason
                    return [self._send(Send(candidate, hint_for=node))]
        self.quorum.on_failure(node, reason)
        return []


__all__ = ["DOWN_REASON", "READ_FANOUTS", "Fallbacks", "ReadPlan", "Send", "WritePlan"]
