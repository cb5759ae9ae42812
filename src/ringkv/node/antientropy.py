"""Anti-entropy: replicas of a partition compare Merkle trees and exchange what differs.

Drives cluster/merkle.py (the trees and the comparison, docs/anti-entropy.md) over RPC:

    initiator                                   responder (another replica of the partition)
    TreeDiff.next_request()  -- AeDigests -->   its tree's digests at the asked level
                             <-- digests ---
    ... level by level, only into nodes that differ ...
    ListRequest              -- AeList -->      (storage key, record digest) of those nodes
    push what it lacks with ReplicaPut; pull what we lack with ReplicaGet

Trees are **rebuilt by a scan of the partition** when a comparison starts (and kept for
`TREE_TTL_S` on the responder, which answers several requests of one comparison from it). A
partition is one contiguous key range of the engine, so the scan is sequential and costs one
pass over the partition's records; comparisons run one partition at a time, every
`anti_entropy_interval_ms`, so the event loop is never held by more than one partition's scan.
The tree module also supports incremental maintenance on the write path; we do not hook it in
yet because every write path (put fast paths, replica applies, expiry, compaction drops) would
have to report old and new bytes exactly, and a tree that drifts would cost traffic on every
round. Rebuilding is always exact. Where the scans start to cost too much (large partitions),
the next step is building trees in a worker process from the engine's files.

Namespaces with a smaller N than the ring's (node/namespaces.py) keep a key on a prefix of
the preference list, and namespaces with counts of their own per datacenter on the first few
of each datacenter's part: each has a layout (cluster/ring.py). Two replicas of a partition
must agree only on the keys of the layouts both hold: both sides build their trees from those
keys alone (`layouts` in the messages, absent when they share every layout), and a key is
never copied to a node that should not hold it. Partition moves use the same rule with the
joining or leaving node's place in the new lists.

`repair_all()` (`ringkv repair`, `RINGKV.REPAIR`) compares every partition this node holds
with every other replica of it and reports what it fixed.

With a replica in another datacenter (docs/multi-dc.md), what a comparison exchanges (digests,
listings, records pushed and pulled) is paced by `WanPacer`: at most `wan_bytes_per_s` a
second from this node across datacenters, all comparisons together, so repairing after an
outage does not fill the WAN link that the requests use too.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from xxhash import xxh3_64_intdigest

from ringkv.clock import Clock
from ringkv.cluster.merkle import (
    DigestRequest,
    ListRequest,
    MerkleTree,
    RangeEntries,
    TreeDiff,
    pack_digests,
    unpack_digests,
)
from ringkv.cluster.ring import Layout, layout_text, parse_layout
from ringkv.errors import RingkvError, RpcError
from ringkv.node.local_store import LocalStore
from ringkv.node.messages import (
    AeDigests,
    AeDigestsReply,
    AeList,
    AeListReply,
    ReplicaGet,
    ReplicaPut,
)
from ringkv.node.namespaces import MAX_NAMESPACES
from ringkv.node.placement import Placement
from ringkv.node.replica_calls import ReplicaCalls

log = logging.getLogger("ringkv.antientropy")
T = TypeVar("T")
Layouts = frozenset[Layout] | None  # the layouts a comparison covers (None: all)


class _Shared:
    """`compare`'s default: the layouts both nodes hold."""


SHARED = _Shared()


def layouts_to_wire(layouts: Layouts) -> list[str] | None:
    return None if layouts is None else sorted(layout_text(lay) for lay in layouts)


def layouts_from_wire(texts: list[str] | None) -> Layouts:
    """A message's `layouts` (RingkvError naming what is wrong: a peer's bad message)."""
    if texts is None:
        return None
    if len(texts) > MAX_NAMESPACES + 1:
        raise RingkvError(f"at most {MAX_NAMESPACES + 1} layouts in a comparison, got {len(texts)}")
    try:
        return frozenset(parse_layout(t) for t in texts)
    except ValueError as exc:
        raise RingkvError(f"bad layout in a comparison: {exc}") from None

TREE_TTL_S = 30.0  # how long a responder keeps a tree it built for a comparison
# Comparisons this node runs at once (repairs, partition moves, SyncPartition requests): each
# is a few round trips one after the other, which a WAN link makes slow, so several overlap.
MAX_PARALLEL_COMPARISONS = 8
MAX_CACHED_TREES = 64
MAX_TRANSFER_KEYS_PER_ROUND = 100_000  # keys pushed plus pulled for one partition and peer
_TOKEN = struct.Struct(">Q")


@dataclass
class RoundResult:
    partition: int
    peer: str
    in_sync: bool
    pushed: int = 0
    pulled: int = 0
    traffic_bytes: int = 0
    round_trips: int = 0
    error: str = ""


@dataclass
class AntiEntropyStats:
    comparisons: int = 0
    in_sync: int = 0
    keys_pushed: int = 0
    keys_pulled: int = 0
    traffic_bytes: int = 0
    failures: int = 0
    # partition -> when its last complete round (every other replica compared) started, ms
    completed_ms: dict[int, int] = field(default_factory=dict)


class _Side:
    """One replica's view of one partition for one comparison: the tree and scanned ranges."""

    def __init__(self, tree: MerkleTree, engine, keep: Callable[[bytes], bool] | None = None):
        self.tree = tree
        self.entries = RangeEntries()
        self.engine = engine
        self.keep = keep
        self.built = time.monotonic()

    def _load_buckets(self, buckets: list[int]) -> None:
        for b in buckets:
            first, last = self.tree.bucket_range(b)
            if not self.entries.covers(first, last):
                self.entries.load(first, last, _scan_digests(self.engine, first, last, self.keep))

    def digests(self, level: int, indexes: list[int]):
        self._load_buckets(self.tree.buckets_to_load(level, indexes))
        return self.tree.digests(level, indexes, self.entries)

    def listing(self, nodes) -> dict[bytes, int]:
        # A listed node may span several leaf buckets: scan its range directly.
        out: dict[bytes, int] = {}
        for level, index in nodes:
            first, last = self.tree.node_range(level, index)
            out.update(_scan_digests(self.engine, first, last, self.keep))
        return out


def _scan_digests(engine, first: int, last: int, keep: Callable[[bytes], bool] | None = None):
    """(storage key, record digest) of the records with tokens in [first, last]; only those
    `keep` accepts, if given."""
    end = _TOKEN.pack(last + 1) if last < (1 << 64) - 1 else None
    with engine.scan(_TOKEN.pack(first), end) as it:
        if keep is None:
            return [(bytes(k), xxh3_64_intdigest(v)) for k, v in it]
        return [(bytes(k), xxh3_64_intdigest(v)) for k, v in it if keep(k)]


async def at_most(parallel: int, items: Iterable[T], run: Callable[[T], Awaitable[None]],
                  interval_s: float = 0.0) -> None:
    """`run(item)` for every item, at most `parallel` at once, and (with `interval_s`) the
    starts at least that far apart. An exception in one cancels the others and is raised."""
    pending = iter(items)
    next_start = time.monotonic()

    async def worker() -> None:
        nonlocal next_start
        for item in pending:  # one iterator shared by the workers: each item is run once
            if interval_s:
                now = time.monotonic()
                start = max(now, next_start)
                next_start = start + interval_s
                if start > now:
                    await asyncio.sleep(start - now)
            await run(item)

    async with asyncio.TaskGroup() as group:
        for _ in range(parallel):
            group.create_task(worker())


class WanPacer:
    """A token bucket in bytes: `spend(n)` returns at once while the bucket holds `n`, else
    sleeps until the rate has refilled it (a debt larger than the burst waits its share)."""

    def __init__(self, bytes_per_s: int, burst_bytes: int | None = None):
        self.rate = bytes_per_s
        self.burst = burst_bytes if burst_bytes is not None else max(bytes_per_s // 10, 64 * 1024)
        self._tokens = float(self.burst)
        self._at = time.monotonic()
        self.waited_s = 0.0  # total time spent waiting: how much the bound held comparisons back

    async def spend(self, n: int) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= n
        if self._tokens < 0:
            wait = -self._tokens / self.rate
            self.waited_s += wait
            await asyncio.sleep(wait)


class AntiEntropy:
    """Merkle-tree comparisons of this node's partitions with their other replicas.

    `completed_ms` (partition -> start of its last completed round) is shared with the
    compaction filter, which collects a tombstone only after such a round (node/expiry_filter.py).
    """

    def __init__(self, placement: Placement, calls: ReplicaCalls, store: LocalStore, clock: Clock, *,
                 interval_ms: int = 1000, completed_ms: dict[int, int] | None = None, wan_bytes_per_s: int = 0):
        self.placement = placement
        # Paces comparisons with replicas in other datacenters (None: unbounded, 0 configured).
        self.wan = WanPacer(wan_bytes_per_s) if wan_bytes_per_s > 0 else None
        self.node_id = placement.node_id
        self.calls = calls
        self.store = store
        self.engine = store.engine
        self.clock = clock
        self.interval_ms = interval_ms
        self.stats = AntiEntropyStats()
        if completed_ms is not None:
            self.stats.completed_ms = completed_ms
        self._cache: dict[tuple[int, Layouts], _Side] = {}  # (partition, layouts) -> tree
        self._next = 0
        self._peer_turn: dict[int, int] = {}
        self._round_started: dict[int, tuple[int, set[str]]] = {}
        self._slots = asyncio.Semaphore(MAX_PARALLEL_COMPARISONS)

    # ------------------------------------------------------------------ trees

    def _keep(self, layouts: Layouts) -> Callable[[bytes], bool] | None:
        """Which keys a comparison covers: those of namespaces of `layouts` (None: all)."""
        if layouts is None or layouts >= self.placement.namespaces.layouts:
            return None
        layout_of = self.placement.namespaces.layout_of_skey
        return lambda skey: layout_of(skey) in layouts

    def build(self, partition: int, layouts: Layouts = None) -> _Side:
        ring = self.placement.ring
        first, last = ring.partition_range(partition)
        keep = self._keep(layouts)
        items = _scan_digests(self.engine, first, last, keep)
        tree = MerkleTree.build_from_digests(partition, ring.partitions, items)
        return _Side(tree, self.engine, keep)

    def _responder_side(self, partition: int, layouts: Layouts) -> _Side:
        key = (partition, layouts)
        side = self._cache.get(key)
        if side is None or time.monotonic() - side.built > TREE_TTL_S:
            if len(self._cache) >= MAX_CACHED_TREES:
                oldest = min(self._cache, key=lambda k: self._cache[k].built)
                del self._cache[oldest]
            side = self._cache[key] = self.build(partition, layouts)
        return side

    # ------------------------------------------------------------------ serving peers

    def on_digests(self, body: AeDigests) -> AeDigestsReply:
        self._check_partition(body.partition)
        layouts = layouts_from_wire(body.layouts)
        if body.fresh:
            self._cache.pop((body.partition, layouts), None)
        side = self._responder_side(body.partition, layouts)
        req = DigestRequest(body.level, body.parents_level, tuple(body.parents))
        return AeDigestsReply(pack_digests(side.digests(req.level, req.indexes)))

    def on_list(self, body: AeList) -> AeListReply:
        self._check_partition(body.partition)
        side = self._responder_side(body.partition, layouts_from_wire(body.layouts))
        listing = side.listing([tuple(n) for n in body.nodes])
        return AeListReply(sorted(listing.items()))

    def _check_partition(self, partition: int) -> None:
        if not 0 <= partition < self.placement.ring.partitions:
            raise RingkvError(f"partition {partition} out of range")

    # ------------------------------------------------------------------ comparing

    async def compare(self, partition: int, peer: str, layouts: Layouts | _Shared = SHARED) -> RoundResult:
        """One comparison of `partition` with `peer`, and the transfers it calls for; of the
        keys of namespaces of `layouts` (None: all; SHARED: those both nodes hold, as the
        rings say; membership moves give theirs, node/membership.py)."""
        async with self._slots:
            return await self._compare(partition, peer, layouts)

    async def _compare(self, partition: int, peer: str, layouts: Layouts | _Shared) -> RoundResult:
        calls = self.calls
        store = self.store
        if isinstance(layouts, _Shared):
            layouts = self.placement.shared(partition, self.node_id, peer)
        elif layouts is not None and layouts >= self.placement.namespaces.layouts:
            layouts = None
        mine = self.build(partition, layouts)
        wire = layouts_to_wire(layouts)
        diff = TreeDiff(mine.tree)
        result = RoundResult(partition, peer, in_sync=False)
        timeout = calls.timeout_ms * 4
        first = True
        placement = self.placement
        wan = self.wan if self.wan is not None and placement.dc_of(peer) != placement.dc else None
        sent = 0  # diff.traffic_bytes already paced
        try:
            while (request := diff.next_request()) is not None:
                if isinstance(request, DigestRequest):
                    reply = await calls.call(peer, AeDigests(partition, request.level, request.parents_level,
                                                         list(request.parents), first, wire),
                                         timeout)
                    first = False
                    diff.receive_digests(request, mine.digests(request.level, request.indexes),
                                         unpack_digests(reply.digests))
                else:
                    assert isinstance(request, ListRequest)
                    reply = await calls.call(peer, AeList(partition, [list(n) for n in request.nodes], wire),
                                         timeout)
                    diff.receive_listing(request, mine.listing(request.nodes), dict(reply.entries))
                if wan is not None:
                    await wan.spend(diff.traffic_bytes - sent)
                    sent = diff.traffic_bytes
            result.in_sync = diff.in_sync
            they_need = diff.they_need[:MAX_TRANSFER_KEYS_PER_ROUND]
            i_need = diff.i_need[:MAX_TRANSFER_KEYS_PER_ROUND]
            for skey in they_need:
                data = self.engine.get(skey)
                if data is not None:
                    if wan is not None:
                        await wan.spend(len(skey) + len(data))
                    await calls.call(peer, ReplicaPut(skey, bytes(data)), timeout)
                    result.pushed += 1
            for skey in i_need:
                reply = await calls.call(peer, ReplicaGet(skey), timeout)
                if reply.record is not None:
                    store.apply_record(skey, reply.record)
                    result.pulled += 1
                    if wan is not None:
                        await wan.spend(len(skey) + len(reply.record))
            if store.has_pending_writes:
                store.commit_writes()
        except (RpcError, RingkvError, ValueError) as exc:
            result.error = str(exc)
            self.stats.failures += 1
        result.traffic_bytes = diff.traffic_bytes
        result.round_trips = diff.round_trips
        st = self.stats
        st.comparisons += 1
        st.in_sync += result.in_sync
        st.keys_pushed += result.pushed
        st.keys_pulled += result.pulled
        st.traffic_bytes += diff.traffic_bytes
        return result

    def _others(self, partition: int) -> list[str]:
        return [n for n in self.placement.ring.preference_list(partition) if n != self.node_id]

    async def repair_all(self, progress=None) -> dict:
        """Compare every partition this node holds with every other replica of it.
        `progress`: a node/operations.Progress, told the partitions in all and each one done."""
        started = time.monotonic()
        results: list[RoundResult] = []
        partitions = self.placement.ring.replica_partitions(self.node_id)
        if progress is not None:
            progress.update(total=len(partitions), phase="comparing", unit="partitions")

        async def repair(p: int) -> None:
            round_ms = self.clock.now_ms()
            ok = True
            for peer in self._others(p):
                r = await self.compare(p, peer)
                results.append(r)
                ok = ok and not r.error
            if ok:
                self.stats.completed_ms[p] = round_ms
            if progress is not None:
                progress.advance()

        await at_most(MAX_PARALLEL_COMPARISONS, partitions, repair)
        errors = [f"partition {r.partition} with {r.peer}: {r.error}" for r in results if r.error]
        return {
            "partitions": len(partitions),
            "comparisons": len(results),
            "in_sync": sum(r.in_sync for r in results),
            "keys_pushed": sum(r.pushed for r in results),
            "keys_pulled": sum(r.pulled for r in results),
            "traffic_bytes": sum(r.traffic_bytes for r in results),
            "seconds": round(time.monotonic() - started, 3),
            "errors": errors[:20],
            "error_count": len(errors),
        }

    async def run(self) -> None:
        """Background rounds: the next partition this node holds, with its next live peer."""
        while True:
            await asyncio.sleep(self.interval_ms / 1000)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("anti-entropy round failed")

    async def tick(self) -> RoundResult | None:
        partitions = self.placement.ring.replica_partitions(self.node_id)
        if not partitions:
            return None
        p = partitions[self._next % len(partitions)]
        self._next += 1
        others = [n for n in self._others(p) if self.calls.is_up(n)]
        if not others:
            return None
        turn = self._peer_turn.get(p, 0)
        self._peer_turn[p] = turn + 1
        peer = others[turn % len(others)]
        started_ms, seen = self._round_started.get(p, (self.clock.now_ms(), set()))
        result = await self.compare(p, peer)
        if result.error:
            self._round_started.pop(p, None)
            return result
        seen = seen | {peer}
        if seen >= set(self._others(p)):
            self.stats.completed_ms[p] = started_ms
            self._round_started.pop(p, None)
        else:
            self._round_started[p] = (started_ms, seen)
        return result
