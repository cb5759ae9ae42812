"""Replicated writes: send a record this node holds to the key's other replicas, wait for W.

The decisions are the pure `cluster/plans.WritePlan`: which nodes get the record, when W is
met, which stand-in takes a failed replica's copy as a hint (sloppy quorum), and which nodes
the coordinator keeps a hint for once every answer is in. This module sends what the plan
says and feeds it the answers. The record is already in this node's store when `replicate` is
called, so this node counts as one replica at once when it is one of the key's; its log write
may still be deferred to the end of the loop iteration (node/local_store.py), and then nothing
is sent before it is done: a replica must never hold a version this node's log lacks.

`replicate_many` sends the records of one replica set in one ReplicaPutMany per other replica
(bounded by MAX_KEYS_PER_PUT_MANY and MAX_BYTES_PER_PUT_MANY); when too few replicas take a
batch, each key goes the single-key way (stand-ins, hints, the precise error), and a replica
that fails after W was met gets its records as hints.

`replicate_atomic` sends one replica set's part of an atomic batch (node/atomic_batches.py) in
ONE ReplicaPutMany per other replica, whatever its size (the batch's limits keep it within a
frame), so that each replica applies the part as one WriteBatch; short of W, it goes the
single-key way as `replicate_many` does.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from time import perf_counter

from ringkv.cluster.plans import Send, WritePlan
from ringkv.cluster.quorum import DcNeed
from ringkv.errors import RingkvError
from ringkv.node.handoff import HintStore
from ringkv.node.local_store import LocalStore
from ringkv.node.messages import (
    MAX_BYTES_PER_PUT_MANY,
    MAX_KEYS_PER_PUT_MANY,
    ReplicaPut,
    ReplicaPutMany,
    ReplicaPutRelay,
)
from ringkv.node.placement import Placement
from ringkv.node.replica_calls import ReplicaCalls, outcome


class WritePath:
    def __init__(self, placement: Placement, calls: ReplicaCalls, store: LocalStore, stats: dict[str, int],
                 hints: HintStore | None):
        self.node_id = placement.node_id
        self.placement = placement
        self.calls = calls
        self.store = store
        self.stats = stats
        self.hints = hints  # where writes a replica missed wait for it (node/handoff.py)

    def _plan(self, skey: bytes, pref: tuple[str, ...], w: int, strict: bool, needs: tuple[DcNeed, ...] = ()
              ) -> WritePlan:
        placement = self.placement
        sloppy = self.hints is not None and not strict and len(placement.ring.node_ids) > len(pref)
        extra = placement.extra_replicas_of(skey) if placement.moving else ()
        is_up = self.calls.up
        return WritePlan(pref, w, me=self.node_id, is_up=is_up,
                         fallbacks=placement.fallbacks_for(skey, is_up) if sloppy else None,
                         extra=extra, down_reason=self.calls.liveness.why_down, needs=needs)

    async def replicate(self, skey: bytes, data: bytes, pref: tuple[str, ...], w: int, strict: bool = False,
                        settled: Callable[[], None] | None = None, needs: tuple[DcNeed, ...] = ()) -> None:
        """Raises the plan's QuorumError when fewer than W replicas (or their stand-ins) took
        it, or the log write's error when this node's own log write (still deferred) fails.
        `settled` is called, once, if and when every replica of `pref` has acknowledged the
        record itself (after the answer, when W is less than N). `needs` (a datacenter level):
        what each datacenter must acknowledge, instead of W of all."""
        started = perf_counter()
        self.stats["writes"] += 1
        write = _Replication(self._plan(skey, pref, w, strict, needs), skey, data, self.calls, self.stats,
                             self.hints)
        if self.placement.multi_dc:
            write.placement = self.placement
        write.settled = settled
        if self.store.has_pending_writes:
            write.decided = asyncio.get_running_loop().create_future()
            self.store.after_commit(write.logged)
            await write.decided
        else:
            write.start(write.plan.start())
            if not write.plan.done:
                write.decided = asyncio.get_running_loop().create_future()
                await write.decided
        self.calls.figures.quorum["set"].observe(perf_counter() - started)
        plan = write.plan
        if not plan.succeeded:
            self.stats["quorum_failures"] += 1
            raise plan.error

    async def replicate_many(self, records: list[tuple[bytes, bytes]], pref: tuple[str, ...], w: int,
                             strict: bool = False) -> None:
        """`replicate` for several keys of one replica set, written here already."""
        me = self.node_id
        remote = [n for n in pref if n != me]
        need = w - (1 if me in pref else 0)
        if need <= 0 or not remote:
            await asyncio.gather(*(self.replicate(skey, data, pref, w, strict) for skey, data in records))
            return
        self.stats["writes"] += len(records)
        chunks: list[list[tuple[bytes, bytes]]] = [[]]
        size = 0
        for item in records:
            if chunks[-1] and size + len(item[1]) > MAX_BYTES_PER_PUT_MANY:
                chunks.append([])
                size = 0
            chunks[-1].append(item)
            size += len(item[1])
        calls: list[asyncio.Future] = []
        node_of: dict[int, str] = {}
        for node in remote:
            for chunk in chunks:
                fut = self.calls.send(node, ReplicaPutMany(chunk))
                fut.add_done_callback(functools.partial(self._hint_chunk, node, chunk))
                node_of[id(fut)] = node
                calls.append(fut)
        # A replica counts once all its chunks are in; W is met when `need` replicas are.
        per_node = len(chunks)
        acked: dict[str, int] = {}
        done_nodes = 0
        pending = set(calls)
        while pending and done_nodes < need:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for f in finished:
                if outcome(f)[0]:
                    node = node_of[id(f)]
                    acked[node] = acked.get(node, 0) + 1
                    if acked[node] == per_node:
                        done_nodes += 1
        if done_nodes < need:
            await asyncio.gather(*(self.replicate(skey, data, pref, w, strict) for skey, data in records))

    async def replicate_atomic(self, written: list[tuple[bytes, bytes]], kept: list[tuple[bytes, bytes]],
                               pref: tuple[str, ...], w: int, strict: bool = False) -> None:
        """Replicate one replica set's part of an atomic batch, written here already (this node
        is one of `pref`): `written`, the records the part made, in one ReplicaPutMany per
        other replica (and per new owner while a partition moves); `kept`, the records of keys
        this node already held at or after the batch, the way MSET's go (they only help the
        other replicas catch up). Returns once W replicas hold every record; short of W, each
        key goes the single-key way (stand-ins, hints, the precise QuorumError)."""
        sends = []
        if written:
            sends.append(self._replicate_whole(written, pref, w, strict))
        for i in range(0, len(kept), MAX_KEYS_PER_PUT_MANY):
            sends.append(self.replicate_many(kept[i:i + MAX_KEYS_PER_PUT_MANY], pref, w, strict))
        await asyncio.gather(*sends)

    async def _replicate_whole(self, records: list[tuple[bytes, bytes]], pref: tuple[str, ...], w: int,
                               strict: bool) -> None:
        me = self.node_id
        need = w - (1 if me in pref else 0)
        self.stats["writes"] += len(records)
        body = ReplicaPutMany(records)
        calls: list[asyncio.Future] = []
        for node in pref:
            if node != me:
                fut = self.calls.send(node, body)
                fut.add_done_callback(functools.partial(self._hint_chunk, node, records))
                calls.append(fut)
        placement = self.placement
        if placement.moving:  # new owners get it too, not counted toward W (as `replicate`'s extras)
            extra: dict[str, list[tuple[bytes, bytes]]] = {}
            for item in records:
                for node in placement.extra_replicas_of(item[0]):
                    if node != me and node not in pref:
                        extra.setdefault(node, []).append(item)
            for node, part in extra.items():
                self.calls.send(node, ReplicaPutMany(part)).add_done_callback(
                    functools.partial(self._hint_chunk, node, part))
        acked = 0
        pending = set(calls)
        while pending and acked < need:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            acked += sum(1 for f in finished if outcome(f)[0])
        if acked < need:
            await asyncio.gather(*(self.replicate(skey, data, pref, w, strict) for skey, data in records))

    def _hint_chunk(self, node: str, chunk: list[tuple[bytes, bytes]], fut: asyncio.Future) -> None:
        """A ReplicaPutMany that failed: its records wait for `node` as hints (the outcome is
        retrieved either way: nothing may wait on a batch once W is met)."""
        if not outcome(fut)[0]:
            self.stats["replica_failures"] += 1
            if self.hints is not None:
                for skey, data in chunk:
                    self.hints.add(node, skey, data)


class _Known:
    """A replica's answer that a relay reported, shaped as the finished call `outcome` reads:
    no failure, or a failure with its reason."""

    __slots__ = ("_failure",)

    def __init__(self, failure: str | None = None):
        self._failure = None if failure is None else RingkvError(failure)

    def cancelled(self) -> bool:
        return False

    def exception(self) -> BaseException | None:
        return self._failure

    def result(self) -> None:
        return None


class _Replication:
    """One `replicate` in flight: sends what its plan says and feeds it the answers. An object
    with slots, not closures that call each other: those would make a reference cycle per
    write, left for the garbage collector (whose collections then cost more than the rest of a
    SET's Python on the coordinator).

    Across datacenters (`placement` set), the replicas of each other datacenter get the record
    in one ReplicaPutRelay to the first of them, which stores it and sends it on to the others
    there: one message per remote datacenter crosses the WAN, not one per replica
    (docs/multi-dc.md). If the relay fails, the others are sent to directly."""

    __slots__ = ("calls", "data", "decided", "hinted_by_relay", "hints", "placement", "plain", "plan", "settled",
                 "skey", "stats")

    def __init__(self, plan: WritePlan, skey: bytes, data: bytes, calls: ReplicaCalls, stats: dict[str, int],
                 hints: HintStore | None):
        self.plan = plan
        self.skey = skey
        self.data = data
        self.plain = ReplicaPut(skey, data)
        self.calls = calls
        self.stats = stats
        self.hints = hints
        self.decided: asyncio.Future | None = None  # set once W is met or missed
        self.settled: Callable[[], None] | None = None  # told once every replica holds it
        self.placement: Placement | None = None  # set when the ring spans datacenters
        self.hinted_by_relay: set[str] | None = None  # failed replicas a relay keeps a hint for

    def start(self, sends: list[Send]) -> None:
        if not sends and self.settled is not None and self.plan.held_by_every_replica:
            self.settled()  # this node is the only replica: no answer will come
        if self.placement is not None and len(sends) > 1:
            sends = self._relay(sends)
        for send in sends:
            if send.hint_for is not None:
                self.stats["stand_ins"] += 1
                body = ReplicaPut(self.skey, self.data, send.hint_for)
            else:
                body = self.plain
            # A counted send's node was just found up by the plan (a replica) or the ring's
            # fallbacks (a stand-in); a new owner's (not counted) was not.
            self.calls.send(send.node, body, known_up=send.counts, on_done=functools.partial(self.answered, send))

    def _relay(self, sends: list[Send]) -> list[Send]:
        """Send each other datacenter's replicas their copy through one relay there; returns
        the sends still to make one by one."""
        placement = self.placement
        assert placement is not None
        here, dc_of = placement.dc, placement.dc_of
        remote: dict[str, list[Send]] = {}
        direct = []
        for send in sends:
            if send.hint_for is None and send.counts and (dc := dc_of(send.node)) != here:
                remote.setdefault(dc, []).append(send)
            else:
                direct.append(send)
        for group in remote.values():
            if len(group) == 1:
                direct.append(group[0])
                continue
            self.stats["relays_sent"] += 1
            # What this write's level needs from there (EACH_QUORUM: a majority), so the relay
            # answers without waiting on its slowest replica; a session write waits for every
            # copy (it settles only when each replica holds it).
            enough = 0 if self.settled is not None else self.plan.copies_needed_in(dc_of(group[0].node))
            body = ReplicaPutRelay(self.skey, self.data, [s.node for s in group[1:]], enough)
            # The relay waits up to a replica timeout on its targets before it answers.
            self.calls.send(group[0].node, body, 2 * self.calls.timeout_ms, known_up=True,
                            on_done=functools.partial(self.relayed, group))
        return direct

    def relayed(self, group: list[Send], fut: asyncio.Future) -> None:
        ok, reply = outcome(fut)
        if not ok:  # the relay may not hold it; the others are asked directly
            self.answered(group[0], _Known(f"{reply} (as relay)"))
            placement, self.placement = self.placement, None
            self.start(group[1:])
            self.placement = placement
            return
        failed = dict(reply.failed)
        acked = set(reply.acked)
        # Those the relay answered before: it goes on sending to them and keeps a hint for
        # each that fails, so the write is in hand for them as for a stand-in's hint. Counted
        # as acknowledged: the level was met without them, and the plan must finish for this
        # write's own hints (a failed replica in another datacenter) to be kept.
        acked.update(reply.pending)
        for send in group:
            if send.node in acked:
                self.answered(send, _Known())
            else:
                if self.hinted_by_relay is None:
                    self.hinted_by_relay = set()
                self.hinted_by_relay.add(send.node)
                reason = failed.get(send.node, "not reported by the relay")
                self.answered(send, _Known(f"{reason} (through relay {group[0].node})"))

    def answered(self, send: Send, fut: asyncio.Future | _Known) -> None:
        plan = self.plan
        ok, reason = outcome(fut)
        if ok:
            more = plan.on_ack(send)
        else:
            self.stats["replica_failures"] += 1
            more = plan.on_failure(send, reason)
        if more:
            self.start(more)
        decided = self.decided
        if plan.done and decided is not None and not decided.done():
            decided.set_result(None)
        if plan.finished:
            if self.hints is not None:
                relayed = self.hinted_by_relay or ()
                for node in plan.hints():
                    if node not in relayed:  # the relay keeps that one
                        self.hints.add(node, self.skey, self.data)
            if self.settled is not None and plan.held_by_every_replica:
                self.settled()

    def logged(self, error: BaseException | None) -> None:
        """Run by the store once this iteration's log write is done (or failed): the sends
        start from there, with no task switch in between."""
        if error is None:
            try:
                self.start(self.plan.start())
            except BaseException as exc:  # the waiting request gets it
                error = exc
        decided = self.decided
        if decided is None or decided.done():
            return  # the request was cancelled meanwhile; the sends went out all the same
        if error is not None:
            decided.set_exception(error)
        elif self.plan.done:
            decided.set_result(None)
