"""Quorum reads: ask a key's replicas, answer once R agree, repair the ones that answered less.

The decisions are the pure `cluster/plans.ReadPlan` (which replicas to ask, when the read is
decided, which replicas are stale); this module does the IO for it. The local replica, when it
is one of the key's, is read without a hop. With `read_fanout = "quorum"` (the default) a read
asks only as many replicas as R needs, the local copy counting as one (at ONE on a replica: no
message at all; at QUORUM of 3: one ReplicaGet); a replica that fails is replaced by the next
at once, and one that is slower than its recent p99 gets a **speculative retry**: a timer per
read, armed at the asked replica's p99 read latency (its answers to this node's reads over the
last second; at least `SPECULATE_FLOOR_MS`, at most the replica timeout), asks one more
replica when it fires before the read is decided. With `read_fanout = "all"` every replica is
asked, as every read did before; a session read always asks every replica (its entry settles
only when all answered alike, node/session_reads.py).

Replicas that answered with less than the merge get the merge back (read repair): after the
last answer by default, before the client's answer with `read_repair = "blocking"`. Only the
replicas asked can be repaired: anti-entropy heals the others. Background repairs are bounded
by MAX_REPAIRS_IN_FLIGHT; past it they are dropped (anti-entropy will find the difference) and
counted.

`read_many` reads many keys with one ReplicaGetMany per replica set and replica asked, each
key still decided by its own plan.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import operator
from collections.abc import Callable, Iterable
from time import perf_counter

from ringkv.cluster.plans import READ_FANOUTS, ReadPlan
from ringkv.cluster.quorum import DcNeed
from ringkv.errors import QuorumError, RemoteError
from ringkv.net.envelope import ErrorCode
from ringkv.node.local_store import LocalStore
from ringkv.node.messages import (
    MAX_KEYS_PER_GET_MANY,
    ReplicaDigest,
    ReplicaGet,
    ReplicaGetDigest,
    ReplicaGetMany,
    ReplicaPut,
    record_digest,
)
from ringkv.node.placement import Placement
from ringkv.node.replica_calls import ReplicaCalls, outcome

log = logging.getLogger("ringkv.cluster")

# Most records a background read repair holds before it drops new ones (a slow peer must
# not grow the node's memory without bound).
MAX_REPAIRS_IN_FLIGHT = 10_000
READ_REPAIR_MODES = ("background", "blocking", "off")
DEFAULT_READ_FANOUT = "quorum"
# Speculative retry: the p99 of each peer's answers to this node's reads over the last
# P99_REFRESH_S (at most WINDOW_READS of them; fewer than MIN_SAMPLES are kept for the next
# window, and until a peer has had one, SPECULATE_UNKNOWN_MS). Never sooner than the floor (a
# retry is a message too), never later than the replica timeout (its failure asks the next
# replica then). The delay is rounded up to whole milliseconds, plus one: uvloop's timers
# count whole milliseconds (rounded) of a truncated clock, so one set for d ms can fire
# after round(d) - 1 ms; one set for ceil(d) + 1 never fires before d.
WINDOW_READS = 1024
MIN_SAMPLES = 32
P99_REFRESH_S = 1.0
SPECULATE_FLOOR_MS = 1.0
SPECULATE_UNKNOWN_MS = 50.0
# A peer that refused a ReplicaGetDigest as a message it does not know (a node of an earlier
# build, mid rolling upgrade) is asked for whole records for this long before it is tried again.
NO_DIGEST_S = 60.0


def _timer_s(ms: float) -> float:
    """A timer's delay in seconds that does not fire before `ms` (see above)."""
    return (math.ceil(ms) + 1) / 1000


def p99(samples: list[float]) -> float:
    """The ceil(0.99 n)-th smallest of the samples."""
    return sorted(samples)[max(0, -(-99 * len(samples) // 100) - 1)]


class ReadPath:
    def __init__(self, placement: Placement, calls: ReplicaCalls, store: LocalStore, stats: dict[str, int], *,
                 read_repair: str = "background", fanout: str = DEFAULT_READ_FANOUT, digests: bool = False):
        if fanout not in READ_FANOUTS:
            raise ValueError(f"read_fanout must be quorum or all, got {fanout!r}")
        self.node_id = placement.node_id
        self.placement = placement
        self.calls = calls
        self.store = store
        self.stats = stats
        self.read_repair = read_repair
        self.background = read_repair == "background"
        self.fanout = fanout
        self.digest = record_digest if digests else None  # digest reads (ReadPlan's `digest`)
        self.no_digest: dict[str, float] = {}  # peer -> perf_counter() time until which it gets no digest ask
        self._repairs: set[asyncio.Task] = set()
        self._turn = 0  # where `read_spread` starts its next search for a replica
        # Speculative retry: per peer, the durations of its answers to reads in this window,
        # and the delay the last window gave.
        self.latencies: dict[str, list[float]] = {}
        self._cap_s = calls.timeout_ms / 1000
        self._unknown_s = min(_timer_s(SPECULATE_UNKNOWN_MS), self._cap_s)
        self._delays: dict[str, float] = {}  # peer -> seconds before a read that asked it speculates
        self._refresh_at = 0.0  # perf_counter() time of the next recomputation of `_delays`

    def _plan(self, skey: bytes, pref: tuple[str, ...], r: int, needs: tuple[DcNeed, ...] = (),
              fanout: str = DEFAULT_READ_FANOUT, digests: bool = True) -> ReadPlan:
        """The read's plan; `digests=False` for reads that ask for records whatever
        `read_digests` says (read_many's ReplicaGetMany)."""
        placement = self.placement
        plan = ReadPlan(pref, r, me=self.node_id, is_up=self.calls.up,
                        merge=placement.merger_of(skey), same=operator.eq,
                        down_reason=self.calls.liveness.why_down, needs=needs, fanout=fanout,
                        digest=self.digest if digests else None,
                        # across datacenters, this one's replicas are asked first
                        order=placement.local_first(pref) if placement.multi_dc and not needs else None)
        if plan.local:
            data = self.store.engine.get(skey)
            plan.on_record(self.node_id, None if data is None else bytes(data))
        return plan

    def speculate_after(self, node: str) -> float:
        """Seconds a read that asked `node` waits before it asks one more replica."""
        return self._delays.get(node, self._unknown_s)

    def _refresh(self, now: float) -> None:
        cap = self._cap_s
        for node, samples in self.latencies.items():
            if len(samples) >= MIN_SAMPLES:
                self._delays[node] = min(cap, _timer_s(max(SPECULATE_FLOOR_MS, p99(samples) * 1000)))
                samples.clear()
        self._refresh_at = now + P99_REFRESH_S

    async def read(self, skey: bytes, r: int, pref: tuple[str, ...] | None = None,
                   settled: Callable[[], None] | None = None, needs: tuple[DcNeed, ...] = (),
                   fanout: str | None = None) -> bytes | None:
        """The merge of what R replicas store for the key (None: none has a record).
        `settled` is called, once, if and when every replica has answered with the same
        version (after the answer, when R is less than N): each holds the result; such a
        read asks every replica, whatever the fan-out. `needs` (EACH_QUORUM): what each
        datacenter must answer, instead of R of all. `fanout`: "quorum" or "all", instead of
        the node's `read_fanout`."""
        started = perf_counter()
        self.stats["reads"] += 1
        if started >= self._refresh_at:
            self._refresh(started)
        if pref is None:
            pref = self.placement.replicas_of(skey)
        if settled is not None:
            fanout = "all"
        plan = self._plan(skey, pref, r, needs, fanout or self.fanout)
        asks = plan.start()
        if asks:
            read = _Read(self, plan, skey, settled)
            if self.digest is None:  # _Read.send's first loop, inline: 17-40 instructions a GET less
                calls, body, answered = self.calls, read.body, read.answered
                for node in asks:  # found up by the plan this moment
                    calls.send(node, body, known_up=True, on_done=functools.partial(answered, node, started))
            else:
                read.send(asks, started)
            if not plan.done:
                loop = asyncio.get_running_loop()
                decided = read.decided = loop.create_future()
                timer = None
                if plan.unasked:  # a replica is left to ask if the one asked is slow
                    delays, unknown = self._delays, self._unknown_s
                    after = (delays.get(asks[0], unknown) if len(asks) == 1
                             else max(delays.get(node, unknown) for node in asks))
                    timer = loop.call_later(after, read.speculate)
                try:
                    await decided
                finally:
                    if timer is not None:
                        timer.cancel()
        elif settled is not None and plan.unanimous:  # this node is the only replica
            settled()
        self.calls.figures.quorum["get"].observe(perf_counter() - started)
        if not plan.succeeded:
            self.stats["quorum_failures"] += 1
            raise plan.error
        if self.read_repair == "blocking":
            tasks = self.repair(skey, plan.result, plan.repairs())
            if tasks:
                await asyncio.wait(tasks)
        return plan.result

    async def read_spread(self, skey: bytes, pref: tuple[str, ...]) -> bytes | None:
        """A read at ONE of a hot key in a namespace with hot_reads = "spread" (docs/hot-keys.md):
        one replica is asked, the next one up in turn, instead of the first (or, with
        read_fanout = "all", every) replica; no read repair (the key's other reads and
        anti-entropy still repair it). When that replica fails, a read at ONE as usual. Across
        datacenters, the turn goes round this node's datacenter's replicas only (when it holds
        any): a replica across the WAN costs its round trip on every read sent there."""
        turn = pref
        placement = self.placement
        if placement.multi_dc:
            dc = placement.dc
            turn = tuple(node for node in pref if placement.dc_of(node) == dc) or pref
        n = len(turn)
        up = self.calls.up
        me = self.node_id
        start = self._turn = (self._turn + 1) % n
        for i in range(n):
            node = turn[(start + i) % n]
            if node == me or up(node):
                break
        else:
            return await self.read(skey, 1, pref)
        self.stats["hot_reads_spread"] += 1
        try:
            return await self.read(skey, 1, (node,))
        except QuorumError:
            return await self.read(skey, 1, pref)

    async def read_many(self, skeys: list[bytes], r_of: dict[int, int]) -> list[bytes | None]:
        """`read` of several keys; `r_of` maps a replica count N to the R to use for it."""
        started = perf_counter()
        if started >= self._refresh_at:
            self._refresh(started)
        many = _ReadMany(self, skeys)
        plans = many.plans
        for pref, idxs in many.groups().items():
            r = r_of[len(pref)]
            wanted: dict[str, list[int]] = {}
            for i in idxs:
                plan = plans[i] = self._plan(skeys[i], pref, r, fanout=self.fanout, digests=False)
                for node in plan.start():
                    wanted.setdefault(node, []).append(i)
                if not plan.done:
                    many.undecided += 1
            for node, asked in wanted.items():
                many.send(node, asked, started)
        if many.undecided:
            loop = asyncio.get_running_loop()
            many.decided = loop.create_future()
            timer = None
            if any(plan.unasked for plan in plans):
                timer = loop.call_later(max((self.speculate_after(node) for node in many.asked),
                                            default=self._unknown_s), many.speculate)
            try:
                await many.decided
            finally:
                if timer is not None:
                    timer.cancel()
        out = []
        for plan in plans:
            if not plan.succeeded:
                self.stats["quorum_failures"] += 1
                raise plan.error
            out.append(plan.result)
        self.stats["reads"] += len(skeys)
        return out

    def repair(self, skey: bytes, merged: bytes | None, stale: Iterable[str]) -> list[asyncio.Task]:
        """Send the merged record to replicas that answered with less; the local one at once."""
        tasks: list[asyncio.Task] = []
        if merged is None:
            return tasks
        for node in stale:
            self.stats["read_repairs"] += 1
            if node == self.node_id:
                self.store.apply_record(skey, merged)
                continue
            if len(self._repairs) >= MAX_REPAIRS_IN_FLIGHT:
                self.stats["repairs_dropped"] += 1
                continue
            task = asyncio.get_running_loop().create_task(self.calls.call(node, ReplicaPut(skey, merged)))
            self._repairs.add(task)
            task.add_done_callback(_repair_done)
            task.add_done_callback(self._repairs.discard)
            tasks.append(task)
        return tasks

    async def close(self) -> None:
        for task in list(self._repairs):
            task.cancel()
        if self._repairs:
            await asyncio.gather(*self._repairs, return_exceptions=True)


class _Read:
    """One `read` in flight: sends what its plan says, feeds it the answers, speculates when
    its timer fires. An object with slots, not closures that call each other (a reference
    cycle per read, left for the garbage collector: node/write_path._Replication says why
    that matters). The timer is the caller's to hold and cancel, so nothing here refers to
    it."""

    __slots__ = ("body", "decided", "path", "plan", "settled", "skey")

    def __init__(self, path: ReadPath, plan: ReadPlan, skey: bytes, settled: Callable[[], None] | None):
        self.path = path
        self.plan = plan
        self.skey = skey
        self.body = ReplicaGet(skey)
        self.settled = settled
        self.decided: asyncio.Future | None = None  # set once R answered or cannot

    def send(self, nodes: Iterable[str], sent: float) -> None:
        """Ask each node (found up by the plan this moment) for its record, or its digest when
        the plan says so and the node takes digest asks."""
        calls, body, answered, plan = self.path.calls, self.body, self.answered, self.plan
        if self.path.digest is None:
            for node in nodes:
                calls.send(node, body, known_up=True, on_done=functools.partial(answered, node, sent))
            return
        no_digest = self.path.no_digest
        for node in nodes:
            ask = body
            if plan.asks_digest(node) and not (no_digest and self._refuses_digests(node)):
                ask = ReplicaGetDigest(self.skey, plan.known)
            calls.send(node, ask, known_up=True, on_done=functools.partial(answered, node, sent))

    def _refuses_digests(self, node: str) -> bool:
        until = self.path.no_digest.get(node)
        if until is None:
            return False
        if perf_counter() < until:
            return True
        del self.path.no_digest[node]
        return False

    def answered(self, node: str, sent: float, fut: asyncio.Future) -> None:
        plan = self.plan
        path = self.path
        ok, reply = outcome(fut)
        if ok:
            samples = path.latencies.get(node)  # the peer's read latencies, for its p99
            if samples is None:
                samples = path.latencies[node] = []
            if len(samples) < WINDOW_READS:
                samples.append(perf_counter() - sent)
            if path.digest is None:
                plan.on_record(node, reply.record)
            else:
                if type(reply) is ReplicaDigest:
                    again = plan.on_digest(node, reply.digest)
                else:
                    if plan.asks_digest(node) and node not in path.no_digest:
                        path.stats["digest_mismatches"] += 1  # asked for a digest: it holds another record
                    again = plan.on_record(node, reply.record)
                if again:  # digests that match no record received: ask for the records
                    path.stats["digest_mismatches"] += len(again)
                    self.send(again, perf_counter())
        elif path.digest is not None and plan.asks_digest(node) and _unknown_message(fut):
            # a node of an earlier build: ask it for the record instead, and for a while
            path.no_digest[node] = perf_counter() + NO_DIGEST_S
            path.calls.send(node, self.body, known_up=True, on_done=functools.partial(self.answered, node, sent))
            return
        else:
            instead = plan.on_failure(node, reply)
            if instead:
                self.send(instead, perf_counter())
        if plan.done:
            decided = self.decided
            if decided is not None and not decided.done():
                decided.set_result(None)
        if plan.finished:
            if path.background:
                stale = plan.repairs()
                if stale:
                    path.repair(self.skey, plan.result, stale)
            settled = self.settled
            if settled is not None and plan.unanimous:
                settled()

    def speculate(self) -> None:
        """The timer: an asked replica is slower than its recent p99; ask one more."""
        plan = self.plan
        node = plan.speculate()
        if node is not None:
            self.path.stats["speculative_reads"] += 1
            self.send((node,), perf_counter())
        elif plan.done:  # the last replicas left were found down: the read failed
            decided = self.decided
            if decided is not None and not decided.done():
                decided.set_result(None)


class _ReadMany:
    """One `read_many` in flight (an object for the reason `_Read` is one): its plans, the
    ReplicaGetMany calls not answered yet, and the plans not decided yet."""

    __slots__ = ("asked", "decided", "outstanding", "path", "plans", "skeys", "undecided")

    def __init__(self, path: ReadPath, skeys: list[bytes]):
        self.path = path
        self.skeys = skeys
        self.plans: list[ReadPlan] = [None] * len(skeys)  # type: ignore[list-item]  # filled by read_many
        self.asked: set[str] = set()
        self.decided: asyncio.Future | None = None
        self.outstanding = 0
        self.undecided = 0

    def groups(self) -> dict[tuple[str, ...], list[int]]:
        """The keys' positions by replica set."""
        replicas_of = self.path.placement.replicas_of
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, skey in enumerate(self.skeys):
            groups.setdefault(replicas_of(skey), []).append(i)
        return groups

    def send(self, node: str, idxs: list[int], sent: float) -> None:
        """ReplicaGetMany of the keys at `idxs` (of one replica set) to `node`, at most
        MAX_KEYS_PER_GET_MANY a call."""
        skeys, calls = self.skeys, self.path.calls
        self.asked.add(node)
        for start in range(0, len(idxs), MAX_KEYS_PER_GET_MANY):
            chunk = idxs[start:start + MAX_KEYS_PER_GET_MANY]
            self.outstanding += 1
            calls.send(node, ReplicaGetMany([skeys[i] for i in chunk]), known_up=True,
                       on_done=functools.partial(self.answered, node, chunk, sent))

    def answered(self, node: str, chunk: list[int], sent: float, fut: asyncio.Future) -> None:
        ok, reply = outcome(fut)
        records = reply.records if ok else None
        reason = reply if not ok else ""
        if records is not None and len(records) != len(chunk):
            records, reason = None, f"answered {len(records)} records for {len(chunk)} keys"
        plans = self.plans
        instead: dict[tuple[tuple[str, ...], str], list[int]] = {}
        for pos, i in enumerate(chunk):
            plan = plans[i]
            was_done = plan.done
            if records is not None:
                plan.on_record(node, records[pos])
            else:
                for other in plan.on_failure(node, reason):
                    instead.setdefault((plan.pref, other), []).append(i)
            if plan.done and not was_done:
                self.undecided -= 1
        if instead:
            now = perf_counter()
            for (_, other), idxs in instead.items():
                self.send(other, idxs, now)
        self._wake()
        self.outstanding -= 1
        if self.outstanding == 0 and self.path.read_repair != "off":
            path, skeys = self.path, self.skeys
            for i, plan in enumerate(plans):
                if plan.has_result:
                    path.repair(skeys[i], plan.result, plan.repairs())

    def speculate(self) -> None:
        """The timer: the replicas asked are slower than their recent p99; each undecided key
        asks one more."""
        more: dict[tuple[tuple[str, ...], str], list[int]] = {}
        for i, plan in enumerate(self.plans):
            if plan.done:
                continue
            node = plan.speculate()
            if node is not None:
                more.setdefault((plan.pref, node), []).append(i)
            elif plan.done:
                self.undecided -= 1
        now = perf_counter()
        for (_, node), idxs in more.items():
            self.path.stats["speculative_reads"] += len(idxs)
            self.send(node, idxs, now)
        self._wake()

    def _wake(self) -> None:
        decided = self.decided
        if self.undecided == 0 and decided is not None and not decided.done():
            decided.set_result(None)


def _unknown_message(fut: asyncio.Future) -> bool:
    """The call failed because the peer does not know the message's type."""
    exc = None if fut.cancelled() else fut.exception()
    return isinstance(exc, RemoteError) and exc.code == ErrorCode.BAD_REQUEST


def _repair_done(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("read repair not delivered: %s", task.exception())
