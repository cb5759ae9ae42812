"""Quorum reads: ask a key's replicas, answer once R agree, repair the ones that answered less.

The decisions are the pure `cluster/plans.ReadPlan` (which replicas to ask, when the read is
decided, which replicas are stale); this module does the IO for it. The local replica, when it
is one of the key's, is read without a hop. Replicas that answered with less than the merge
get the merge back (read repair): after the last answer by default, before the client's
answer with `read_repair = "blocking"`. Background repairs are bounded by
MAX_REPAIRS_IN_FLIGHT; past it they are dropped (anti-entropy will find the difference) and
counted.

`read_many` reads many keys with one ReplicaGetMany per replica set and replica, each key still
decided by its own plan.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import operator
from collections.abc import Callable, Iterable
from time import perf_counter

from ringkv.cluster.plans import ReadPlan
from ringkv.cluster.quorum import DcNeed
from ringkv.errors import QuorumError
from ringkv.node.local_store import LocalStore
from ringkv.node.messages import MAX_KEYS_PER_GET_MANY, ReplicaGet, ReplicaGetMany, ReplicaPut
from ringkv.node.placement import Placement
from ringkv.node.replica_calls import ReplicaCalls, outcome

log = logging.getLogger("ringkv.cluster")

# Most records a background read repair holds before it drops new ones (a slow peer must
# not grow the node's memory without bound).
MAX_REPAIRS_IN_FLIGHT = 10_000
READ_REPAIR_MODES = ("background", "blocking", "off")


class ReadPath:
    def __init__(self, placement: Placement, calls: ReplicaCalls, store: LocalStore, stats: dict[str, int], *,
                 read_repair: str = "background"):
        self.node_id = placement.node_id
        self.placement = placement
        self.calls = calls
        self.store = store
        self.stats = stats
        self.read_repair = read_repair
        self._repairs: set[asyncio.Task] = set()
        self._turn = 0  # where `read_spread` starts its next search for a replica

    def _plan(self, skey: bytes, pref: tuple[str, ...], r: int, needs: tuple[DcNeed, ...] = ()) -> ReadPlan:
        plan = ReadPlan(pref, r, me=self.node_id, is_up=self.calls.up,
                        merge=self.placement.merger_of(skey), same=operator.eq,
                        down_reason=self.calls.liveness.why_down, needs=needs)
        if plan.local:
            data = self.store.engine.get(skey)
            plan.on_record(self.node_id, None if data is None else bytes(data))
        return plan

    async def read(self, skey: bytes, r: int, pref: tuple[str, ...] | None = None,
                   settled: Callable[[], None] | None = None, needs: tuple[DcNeed, ...] = ()) -> bytes | None:
        """The merge of what R replicas store for the key (None: none has a record).
        `settled` is called, once, if and when every replica has answered with the same
        version (after the answer, when R is less than N): each holds the result. `needs`
        (EACH_QUORUM): what each datacenter must answer, instead of R of all."""
        started = perf_counter()
        self.stats["reads"] += 1
        if pref is None:
            pref = self.placement.replicas_of(skey)
        plan = self._plan(skey, pref, r, needs)
        asks = plan.start()
        decided: asyncio.Future | None = None
        background = self.read_repair == "background"

        def answered(node: str, fut: asyncio.Future) -> None:
            ok, reply = outcome(fut)
            if ok:
                plan.on_record(node, reply.record)
            else:
                plan.on_failure(node, reply)
            if plan.done and decided is not None and not decided.done():
                decided.set_result(None)
            if plan.finished and background:
                stale = plan.repairs()
                if stale:
                    self.repair(skey, plan.result, stale)
            if settled is not None and plan.unanimous:
                settled()

        if asks:
            body = ReplicaGet(skey)
            for node in asks:  # found up by the plan this moment
                self.calls.send(node, body, known_up=True, on_done=functools.partial(answered, node))
            if not plan.done:
                decided = asyncio.get_running_loop().create_future()
                await decided
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
        one replica is asked, the next one up in turn, instead of every replica; no read repair
        (the key's other reads and anti-entropy still repair it). When that replica fails, a
        read at ONE as usual."""
        n = len(pref)
        up = self.calls.up
        me = self.node_id
        start = self._turn = (self._turn + 1) % n
        for i in range(n):
            node = pref[(start + i) % n]
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
        me = self.node_id
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, skey in enumerate(skeys):
            groups.setdefault(self.placement.replicas_of(skey), []).append(i)
        plans: list[ReadPlan | None] = [None] * len(skeys)
        loop = asyncio.get_running_loop()
        decided = loop.create_future()
        undecided = 0
        outstanding = 0
        repair = self.read_repair != "off"

        def answered(fut: asyncio.Future, node: str, chunk: list[int]) -> None:
            nonlocal undecided, outstanding
            ok, reply = outcome(fut)
            records = reply.records if ok else None
            reason = reply if not ok else ""
            if records is not None and len(records) != len(chunk):
                records, reason = None, f"answered {len(records)} records for {len(chunk)} keys"
            for pos, i in enumerate(chunk):
                plan = plans[i]
                was_done = plan.done
                if records is not None:
                    plan.on_record(node, records[pos])
                else:
                    plan.on_failure(node, reason)
                if plan.done and not was_done:
                    undecided -= 1
            if undecided == 0 and not decided.done():
                decided.set_result(None)
            outstanding -= 1
            if outstanding == 0 and repair:
                for i, plan in enumerate(plans):
                    if plan.has_result:
                        self.repair(skeys[i], plan.result, plan.repairs())

        sends: list[tuple[str, ReplicaGetMany, list[int]]] = []
        for pref, idxs in groups.items():
            r = r_of[len(pref)]
            asks: list[str] = []
            for i in idxs:
                plan = self._plan(skeys[i], pref, r)
                asks = plan.start()  # the same for every key of the group: one pref, one instant
                plans[i] = plan
                if not plan.done:
                    undecided += 1
            remote = [n for n in pref if n != me]
            for start in range(0, len(idxs), MAX_KEYS_PER_GET_MANY):
                chunk = idxs[start:start + MAX_KEYS_PER_GET_MANY]
                body = ReplicaGetMany([skeys[i] for i in chunk])
                sends.extend((node, body, chunk) for node in remote if node in asks)
        outstanding = len(sends)
        for node, body, chunk in sends:  # found up by the plans this moment
            self.calls.send(node, body, known_up=True, on_done=lambda f, node=node, chunk=chunk: answered(f, node, chunk))
        if undecided:
            await decided
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


def _repair_done(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("read repair not delivered: %s", task.exception())
