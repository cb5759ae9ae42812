"""The cluster coordinator: any node coordinates any request over the key's N replicas.

`Cluster` is what a node shares between requests: the ring, the transport to its peers, the
local replica (a `LocalCoordinator`) and the RPC handler that answers other nodes.
`ClusterCoordinator` is a view of it at one consistency level; `at()` makes another view (per
RESP connection with `RINGKV.CONSISTENCY`, per HTTP request with `Consistency-Level`). The
quorum decisions themselves are the pure `cluster/quorum.py`; this module does the IO.

Reads send `ReplicaGet` to every replica of the key (the local one is read without a hop),
answer once R have answered, and merge what they returned. Replicas that answered with less
than the merge get it back (read repair): after the last reply by default, before the answer
with `read_repair = "blocking"`.

Writes run on a replica of the key, which makes the new version (its actor names the dot) and
sends the resulting record to the other replicas with `ReplicaPut`, answering once W hold it.
A plain write (SET, MSET, RINGKV.PUTV) runs on this node when it is a replica of the key, else
on the first reachable one. Read-modify-write commands (INCR, APPEND, SET NX/XX/GET, GETDEL,
DEL, EXPIRE, ...) always run on the key's first reachable replica in preference-list order:
that node reads at R, applies the command and writes at W under a per-key lock, so such
commands on one key are serialized while it is up. What holds when it is not is in
docs/cluster.md, "Read-modify-write commands".
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from ringkv.cluster.quorum import ConsistencyLevel, ReadQuorum, WriteQuorum, parse_level, resolve
from ringkv.cluster.ring import Ring
from ringkv.errors import (
    ConfigError,
    PeerUnavailableError,
    QuorumError,
    RemoteError,
    RingkvError,
    RpcError,
    RpcTimeoutError,
)
from ringkv.net.rpc import NOT_HANDLED
from ringkv.net.transport import Transport
from ringkv.node.coordinator import (
    DEFAULT_NAMESPACE,
    MAX_KEY_BYTES,
    MAX_TOKEN,
    PENDING,
    CommandError,
    LocalCoordinator,
    Value,
    Versions,
)
from ringkv.node.handoff import HintStore
from ringkv.node.messages import (
    MAX_BYTES_PER_PUT_MANY,
    MAX_KEYS_PER_GET_MANY,
    MAX_KEYS_PER_PUT_MANY,
    AeDigests,
    AeList,
    FlushAll,
    FlushAllReply,
    Forward,
    ForwardReply,
    GossipStates,
    GossipSyn,
    NodeInfo,
    NodeInfoReply,
    Repair,
    RepairReply,
    ReplicaAck,
    ReplicaGet,
    ReplicaGetMany,
    ReplicaPut,
    ReplicaPutMany,
    ReplicaRecord,
    ReplicaRecords,
    ScanPage,
    ScanRange,
    SyncPartition,
    SyncPartitionReply,
)
from ringkv.node.namespaces import Namespaces
from ringkv.node.replica import now_ms, storage_key
from ringkv.versioning import record as rec
from ringkv.versioning.dvv import decode_context, encode_context
from ringkv.versioning.record import ConflictPolicy

log = logging.getLogger("ringkv.cluster")

Level = ConsistencyLevel | int

# The write methods of LocalCoordinator a replica runs for a coordinator (Forward.method).
# Each takes the key first and the namespace as a keyword; `delete` and `mset` take lists.
_WRITE_METHODS = frozenset({
    "set", "put", "put_versioned", "mset", "delete", "getdel", "incr_by", "incr_by_float",
    "append", "expire_at", "getex",
})
# msgpack has no tuple: results that are tuples come back as lists.
_TUPLE_RESULTS = frozenset({"set"})
# A forwarded command reads at R and writes at W on the replica: it may take two replica
# timeouts plus the hop.
_FORWARD_TIMEOUTS = 3
# Most records a background read repair holds before it drops new ones (a slow peer must
# not grow the node's memory without bound).
MAX_REPAIRS_IN_FLIGHT = 10_000
MAX_SYNC_SOURCES = 16  # sources of one SyncPartition: at most a preference list


def _reason(exc: BaseException) -> str:
    """A replica's failure as QuorumError lists it after the node id."""
    if isinstance(exc, RpcTimeoutError):
        return f"timed out after {exc.timeout_ms:g} ms"
    if isinstance(exc, PeerUnavailableError):
        return f"unavailable ({exc.reason})"
    if isinstance(exc, RemoteError):
        return f"failed: {exc.remote_message}"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return f"failed: {exc}"


class _FanOut:
    """One request sent to several replicas: feeds a quorum, wakes the coordinator once it is
    decided, and calls `after` when the last replica has answered (or failed)."""

    __slots__ = ("after", "decided", "outstanding", "quorum", "reply_of", "stand_in")

    def __init__(self, quorum, outstanding: int, after: Callable[[_FanOut], None] | None,
                 reply_of: Callable[[Any], Any]):
        self.quorum = quorum
        self.outstanding = outstanding
        self.after = after
        self.reply_of = reply_of
        self.decided: asyncio.Future[None] | None = None
        # Sloppy quorum: stand_in(node, reason, state) -> True when another node was asked to
        # take the write for `node`; it then reports through `resolved`.
        self.stand_in: Callable[[str, str, _FanOut], bool] | None = None

    def answered(self, node: str, task: asyncio.Future) -> None:
        if task.cancelled():
            self.resolved(node, False, "cancelled")
            return
        exc = task.exception()
        if exc is None:
            self.resolved(node, True, task.result())
            return
        reason = _reason(exc)
        if self.stand_in is not None:
            try:
                if self.stand_in(node, reason, self):
                    return
            except Exception:  # a bug here must not leave the request waiting forever
                log.exception("finding a stand-in for %s failed", node)
        self.resolved(node, False, reason)

    def resolved(self, node: str, ok: bool, reply_or_reason: Any) -> None:
        q = self.quorum
        if ok:
            q.on_success(node, self.reply_of(reply_or_reason))
        else:
            q.on_failure(node, reply_or_reason)
        if q.done and self.decided is not None and not self.decided.done():
            self.decided.set_result(None)
        self.outstanding -= 1
        if self.outstanding == 0 and self.after is not None:
            try:
                self.after(self)
            except Exception:
                log.exception("handling late replica answers failed")


_ACK = ReplicaAck()


def _record_bytes(reply: ReplicaRecord) -> bytes | None:
    return reply.record


def _ack(reply: Any) -> None:
    return None


class _ManyState:
    """Bookkeeping of one read_raw_many: wakes the caller once every key's quorum is decided,
    and read-repairs each key once every replica has answered."""

    __slots__ = ("decided", "outstanding", "undecided")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.decided: asyncio.Future[None] = loop.create_future()
        self.undecided = 0
        self.outstanding = 0

    def answered(self, fut: asyncio.Future, node: str, chunk: list[int], quorums, skeys, c) -> None:
        records = None
        reason = "cancelled"
        if not fut.cancelled():
            exc = fut.exception()
            if exc is None:
                records = fut.result().records
                if len(records) != len(chunk):
                    records, reason = None, f"answered {len(records)} records for {len(chunk)} keys"
            else:
                reason = _reason(exc)
        for pos, i in enumerate(chunk):
            q = quorums[i]
            was_done = q.done
            if records is not None:
                q.on_success(node, records[pos])
            else:
                q.on_failure(node, reason)
            if q.done and not was_done:
                self.undecided -= 1
        if self.undecided == 0 and not self.decided.done():
            self.decided.set_result(None)
        self.outstanding -= 1
        if self.outstanding == 0 and c.read_repair != "off":
            for i, q in enumerate(quorums):
                if q.has_result:
                    c.repair(skeys[i], q.result, q.stale_replicas())


class _KeyLocks:
    """Per-key mutual exclusion for read-modify-write commands. An entry exists only while a
    key is held, so the table is bounded by the commands in flight."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[bytes, deque[asyncio.Future[None]]] = {}

    async def acquire(self, skey: bytes) -> None:
        waiters = self._held.get(skey)
        if waiters is None:
            self._held[skey] = deque()
            return
        fut = asyncio.get_running_loop().create_future()
        waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(skey)  # handed the lock, then cancelled: pass it on
            raise

    def release(self, skey: bytes) -> None:
        waiters = self._held[skey]
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        del self._held[skey]

    def __len__(self) -> int:
        return len(self._held)


class Cluster:
    """This node's part in the cluster: ring, peers, local replica, and the RPC handler."""

    def __init__(
        self,
        node_id: str,
        local: LocalCoordinator,
        ring: Ring,
        transport: Transport,
        *,
        replica_timeout_ms: float = 500.0,
        read_repair: str = "background",
        info: Callable[[], NodeInfoReply] | None = None,
        hints: HintStore | None = None,
        namespaces: Namespaces | None = None,
    ):
        if read_repair not in ("background", "blocking", "off"):
            raise ConfigError("read_repair", f"must be background, blocking or off, got {read_repair!r}")
        self.node_id = node_id
        self.local = local
        # Each namespace's N and policy; without a configuration, one namespace of the ring's N.
        self.namespaces = namespaces or Namespaces(ring.replicas, local.policy.value)
        self._merges = {p: functools.partial(self.merge_raw, policy=p) for p in ConflictPolicy}
        self.engine = local.replica.engine
        self.ring = ring
        self.transport = transport
        self.replica_timeout_ms = replica_timeout_ms
        self.read_repair = read_repair
        self._info = info
        self.hints = hints  # where writes a replica missed wait for it (node/handoff.py)
        self.sloppy = hints is not None  # stand-ins for down replicas count toward W
        self.gossiper = None  # node/gossiper.py, once started: liveness of the other nodes
        self.anti_entropy = None  # node/antientropy.py
        self._shift = 64 - (ring.partitions.bit_length() - 1)
        self.set_rings(ring, None)
        self._locks = _KeyLocks()
        self._background: set[asyncio.Task] = set()
        self.stats = {
            "reads": 0, "writes": 0, "forwarded": 0, "read_repairs": 0, "quorum_failures": 0,
            "replica_failures": 0, "repairs_dropped": 0, "stand_ins": 0, "hints_taken": 0,
        }

    # ------------------------------------------------------------------ placement

    def set_rings(self, ring: Ring, pending: Ring | None) -> None:
        """Route by `ring`; while nodes join or leave, also write to `pending`'s extra replicas
        of each partition (node/membership.py)."""
        self.ring = ring
        self.pending = pending
        self._prefs = tuple(ring.preference_list(p) for p in range(ring.partitions))
        # A namespace with a smaller N than the ring's uses a prefix of each list.
        self._prefs_by_n = {n: tuple(pref[:n] for pref in self._prefs)
                            for n in {s.replicas for s in self.namespaces} if n < ring.replicas}
        self._default_prefs = self.prefs_for(self.namespaces.default.replicas)
        # n -> partition -> the pending ring's replicas that the ring lacks
        extra: dict[int, dict[int, tuple[str, ...]]] = {}
        if pending is not None:
            for n in {s.replicas for s in self.namespaces}:
                for p, pref in enumerate(self._prefs):
                    more = tuple(x for x in pending.preference_list(p)[:n] if x not in pref[:n])
                    if more:
                        extra.setdefault(n, {})[p] = more
        self._extra = extra

    @property
    def known_nodes(self) -> tuple[str, ...]:
        """The ring's nodes and the pending ring's (joining nodes)."""
        nodes = set(self.ring.node_ids)
        if self.pending is not None:
            nodes |= set(self.pending.node_ids)
        return tuple(sorted(nodes))

    def prefs_for(self, n: int) -> tuple[tuple[str, ...], ...]:
        """Every partition's preference list for a namespace of N = n."""
        return self._prefs_by_n.get(n, self._prefs)

    def replicas_of(self, skey: bytes) -> tuple[str, ...]:
        if not skey[8]:
            return self._default_prefs[int.from_bytes(skey[:8], "big") >> self._shift]
        n = self.namespaces.replicas_of_skey(skey)
        return self.prefs_for(n)[int.from_bytes(skey[:8], "big") >> self._shift]

    def extra_replicas_of(self, skey: bytes) -> tuple[str, ...] | None:
        """While a partition moves: the new owners a write to `skey` also goes to."""
        by_partition = self._extra.get(self.namespaces.replicas_of_skey(skey))
        return None if by_partition is None else by_partition.get(int.from_bytes(skey[:8], "big") >> self._shift)

    def merger_of(self, skey: bytes) -> Callable[[bytes | None, bytes | None], bytes | None]:
        """merge_raw under the conflict policy of `skey`'s namespace."""
        if not skey[8] or self.namespaces.uniform:
            return self.merge_raw
        return self._merges[self.namespaces.policy_of_skey(skey)]

    def position(self, node: str, partition: int) -> int:
        """`node`'s place in the partition's preference list (the pending ring's when it is
        not in the ring's); the ring's N when in neither."""
        pref = self._prefs[partition]
        if node in pref:
            return pref.index(node)
        if self.pending is not None:
            pending = self.pending.preference_list(partition)
            if node in pending:
                return pending.index(node)
        return self.ring.replicas

    # ------------------------------------------------------------------ fan-out

    def is_up(self, node: str) -> bool:
        """Whether the failure detector believes `node` up (always, without gossip)."""
        g = self.gossiper
        return g is None or g.is_up(node)

    def fan_out(self, nodes: Iterable[str], body: Any, state: _FanOut) -> None:
        transport = self.transport
        timeout = self.replica_timeout_ms
        gossiper = self.gossiper
        for node in nodes:
            if gossiper is not None and not gossiper.is_up(node):
                # Known down: fail it now rather than wait out a timeout (it may be partitioned
                # away, not refusing connections); stand-ins and hints take it from there.
                fut = asyncio.get_running_loop().create_future()
                fut.set_exception(PeerUnavailableError(node, f"down (phi {gossiper.phi(node):.1f})"))
                fut.add_done_callback(lambda f, node=node: state.answered(node, f))
                continue
            fut = transport.start_call(node, body, timeout)
            if fut is None:  # connecting, or no free slot: the full path, in a task
                fut = asyncio.get_running_loop().create_task(transport.call(node, body, timeout))
            fut.add_done_callback(lambda f, node=node: state.answered(node, f))

    async def call(self, node: str, body: Any, timeout_ms: float) -> Any:
        """transport.call in a task of its own: the RESP adapter drives commands outside any
        task, and the RPC client's connect path needs one (asyncio.timeout)."""
        return await asyncio.get_running_loop().create_task(self.transport.call(node, body, timeout_ms))

    def merge_raw(self, a: bytes | None, b: bytes | None, policy: ConflictPolicy | None = None) -> bytes | None:
        """Merge two replicas' stored records (bytes; None is no record) under `policy`
        (the default namespace's if None)."""
        if a is None or a == b:
            return b
        if b is None:
            return a
        merged = rec.merge(rec.decode_record(a), rec.decode_record(b), policy or self.local.policy)
        return rec.encode_record(merged)

    def repair(self, skey: bytes, merged: bytes | None, stale: Iterable[str]) -> list[asyncio.Task]:
        """Send the merged record to replicas that answered with less; local ones at once."""
        tasks = []
        if merged is None:
            return tasks
        for node in stale:
            self.stats["read_repairs"] += 1
            if node == self.node_id:
                self.local.apply_record(skey, merged)
                continue
            if len(self._background) >= MAX_REPAIRS_IN_FLIGHT:
                self.stats["repairs_dropped"] += 1
                continue
            task = asyncio.get_running_loop().create_task(
                self.transport.call(node, ReplicaPut(skey, merged), self.replica_timeout_ms))
            self._background.add(task)
            task.add_done_callback(_repair_done)
            task.add_done_callback(self._background.discard)
            tasks.append(task)
        return tasks

    # ------------------------------------------------------------------ serving peers

    def handle_now(self, peer: str, body: Any) -> Any:
        """The RPC fast path: replica reads, and replica writes that need no fsync wait, are
        answered on the connection's callback (net/rpc.FastHandler); the rest go to `handle`."""
        kind = type(body)
        if kind is ReplicaGet:
            data = self.engine.get(body.skey)
            return ReplicaRecord(None if data is None else bytes(data))
        if kind is AeDigests and self.anti_entropy is not None:
            return self.anti_entropy.on_digests(body)
        if kind is AeList and self.anti_entropy is not None:
            return self.anti_entropy.on_list(body)
        if kind is GossipSyn and self.gossiper is not None:
            return self.gossiper.on_syn(body)
        if kind is GossipStates and self.gossiper is not None:
            self.gossiper.on_states(body)
            return _ACK
        if kind is ReplicaGetMany:
            if len(body.skeys) > MAX_KEYS_PER_GET_MANY:
                raise CommandError(f"{len(body.skeys)} keys in one ReplicaGetMany; the limit is {MAX_KEYS_PER_GET_MANY}")
            get = self.engine.get
            return ReplicaRecords([None if (d := get(k)) is None else bytes(d) for k in body.skeys])
        if kind is ReplicaPut and body.hint_for:
            if self.hints is None or not self.hints.add(body.hint_for, body.skey, body.record):
                raise CommandError(f"cannot keep a hint for {body.hint_for}: hint store absent or full")
            self.stats["hints_taken"] += 1
            return _ACK
        if kind is ReplicaPut and not self.local.sync_always:
            # Deferred: before_reply writes the log before this acknowledgement leaves.
            self.local.apply_record(body.skey, body.record, defer=True)
            return _ACK
        if kind is ReplicaPutMany and not self.local.sync_always:
            self._check_put_many(body)
            apply = self.local.apply_record
            for skey, record in body.records:
                apply(skey, record, defer=True)
            return _ACK
        return NOT_HANDLED

    @staticmethod
    def _check_put_many(body: ReplicaPutMany) -> None:
        if len(body.records) > MAX_KEYS_PER_PUT_MANY:
            raise CommandError(f"{len(body.records)} records in one ReplicaPutMany; the limit is "
                               f"{MAX_KEYS_PER_PUT_MANY}")

    def before_reply(self) -> None:
        """Replicas acknowledge only what is in their log (net/rpc.RpcServer.before_reply)."""
        if self.local.has_pending_writes:
            self.local.commit_writes()

    async def handle(self, peer: str, body: Any) -> Any:
        """The RPC handler: what this node does for a coordinator elsewhere."""
        kind = type(body)
        if kind is ReplicaGet:
            data = self.engine.get(body.skey)
            return ReplicaRecord(None if data is None else bytes(data))
        if kind is ReplicaPut and body.hint_for:
            return self.handle_now(peer, body)
        if kind is ReplicaPut:
            lsn = self.local.apply_record(body.skey, body.record)
            if lsn and self.local.sync_always:
                await self.local.durable(lsn)
            return ReplicaAck()
        if kind is ReplicaPutMany:
            self._check_put_many(body)
            lsn = 0
            for skey, record in body.records:
                lsn = self.local.apply_record(skey, record) or lsn
            if lsn and self.local.sync_always:
                await self.local.durable(lsn)
            return ReplicaAck()
        if kind is Forward:
            return await self._forwarded(body)
        if kind is ScanRange:
            keys, examined, nxt = self.local.scan_range(
                body.start_token, body.end_token, max(1, min(body.count, 100_000)), body.match,
                body.namespace)
            return ScanPage(keys, examined, nxt)
        if kind is NodeInfo:
            return self.node_info()
        if kind is GossipSyn or kind is GossipStates or kind is AeDigests or kind is AeList:
            return self.handle_now(peer, body)
        if kind is Repair and self.anti_entropy is not None:
            return RepairReply(await self.anti_entropy.repair_all())
        if kind is SyncPartition and self.anti_entropy is not None:
            return await self._sync_partition(body)
        if kind is FlushAll:
            return FlushAllReply(await self.local.flushall())
        raise CommandError(f"unexpected message {kind.__name__}")

    async def _sync_partition(self, body: SyncPartition) -> SyncPartitionReply:
        if not 0 <= body.partition < self.ring.partitions or len(body.sources) > MAX_SYNC_SOURCES:
            raise CommandError(f"SyncPartition: partition {body.partition} out of range or more than "
                               f"{MAX_SYNC_SOURCES} sources")
        reply = SyncPartitionReply({}, 0, 0)
        for source, min_replicas in body.sources:
            if source == self.node_id:
                continue
            result = await self.anti_entropy.compare(body.partition, source, min_replicas)
            if result.error:
                reply.failed[source] = result.error
            reply.pulled += result.pulled
            reply.pushed += result.pushed
        return reply

    async def _forwarded(self, body: Forward) -> ForwardReply:
        if body.method not in _WRITE_METHODS:
            return ForwardReply(error=f"unknown forwarded method {body.method!r}")
        if not isinstance(body.args, dict):
            return ForwardReply(error="forwarded arguments must be a map")
        self.stats["forwarded"] += 1
        view = ClusterCoordinator(self, body.r, body.w, body.strict)
        try:
            result = await view.execute(body.method, body.namespace, body.key, body.args)
        except QuorumError as exc:
            return ForwardReply(error=str(exc), kind="ERR", status=503, quorum=True)
        except CommandError as exc:
            return ForwardReply(error=str(exc), kind=exc.kind, status=exc.status)
        except RingkvError as exc:
            return ForwardReply(error=str(exc), status=400)
        return ForwardReply(result=result)

    def node_info(self) -> NodeInfoReply:
        if self._info is not None:
            return self._info()
        return NodeInfoReply(self.node_id, "", "", "", self.local._live_keys,
                             self.local.partition_keys(), 0, 0, self.local.namespace_partition_keys())

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _repair_done(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("read repair not delivered: %s", task.exception())


class RemoteCommandError(CommandError):
    """A command that failed on the replica it was forwarded to, with that replica's message."""


class ClusterQuorumError(QuorumError):
    """A QuorumError raised on the replica a command was forwarded to, passed on verbatim."""

    def __init__(self, message: str):
        RingkvError.__init__(self, message)
        self.needed = 0
        self.answered = 0
        self.failures = {}


class ClusterCoordinator:
    """The coordinator of one node of a cluster, at one read and one write level.

    Same methods, arguments and results as LocalCoordinator, so the protocol adapters do not
    know whether they serve a cluster. `r` and `w` are levels (ConsistencyLevel or an explicit
    count), resolved per key against its replica count.
    """

    __slots__ = ("c", "r", "strict", "w")

    def __init__(self, cluster: Cluster, r: Level = ConsistencyLevel.QUORUM,
                 w: Level = ConsistencyLevel.QUORUM, strict: bool = False):
        self.c = cluster
        self.r = r
        self.w = w
        self.strict = strict  # refuse stand-ins: only the key's own replicas count toward W

    def at(self, r: Level | str | None = None, w: Level | str | None = None,
           strict: bool | None = None) -> ClusterCoordinator:
        """A view of the same node at other levels (None keeps the current one). Explicit
        counts are checked against the cluster's N here, so a bad one fails at once."""
        n = self.c.ring.replicas
        r = self.r if r is None else parse_level(r, "r")
        w = self.w if w is None else parse_level(w, "w")
        resolve(r, n, field="r")
        resolve(w, n, field="w")
        return ClusterCoordinator(self.c, r, w, self.strict if strict is None else strict)

    @property
    def levels(self) -> tuple[Level, Level, bool]:
        return self.r, self.w, self.strict

    # ------------------------------------------------------------------ delegated to the replica

    def __getattr__(self, name: str) -> Any:
        # Node plumbing (sync policy, INFO counters, active expiry, commits) is the local
        # replica's: the cluster adds nothing to it.
        return getattr(self.c.local, name)

    @property
    def has_pending_writes(self) -> bool:
        return self.c.local.has_pending_writes

    def commit_writes(self) -> None:
        self.c.local.commit_writes()

    # ------------------------------------------------------------------ reading

    async def read_raw(self, skey: bytes, pref: tuple[str, ...] | None = None) -> bytes | None:
        """The merge of what R replicas store for the key (None: none has a record)."""
        c = self.c
        c.stats["reads"] += 1
        if pref is None:
            pref = c.replicas_of(skey)
        me = c.node_id
        q = ReadQuorum(pref, resolve(self.r, len(pref), field="r"), c.merger_of(skey), _same_raw)
        remote = [n for n in pref if n != me]
        if len(remote) < len(pref):
            data = c.engine.get(skey)
            q.on_success(me, None if data is None else bytes(data))
        state = None
        if remote:
            after = None if c.read_repair == "off" else _repair_after(c, skey)
            state = _FanOut(q, len(remote), after, _record_bytes)
            c.fan_out(remote, ReplicaGet(skey), state)
            if not q.done:
                state.decided = asyncio.get_running_loop().create_future()
                await state.decided
        if not q.succeeded:
            c.stats["quorum_failures"] += 1
            raise q.error
        merged = q.result
        if c.read_repair == "blocking" and state is not None:
            tasks = c.repair(skey, merged, q.stale_replicas())
            if tasks:
                await asyncio.wait(tasks)
            state.after = None if state.outstanding else state.after
        return merged

    async def _record(self, key: bytes, namespace: bytes) -> rec.Record | None:
        self.c.local._check_key(key, namespace)
        data = await self.read_raw(storage_key(namespace, key))
        return None if data is None else rec.decode_record(data)

    async def get(self, key: bytes, namespace: bytes = DEFAULT_NAMESPACE) -> Value | None:
        record = await self._record(key, namespace)
        if record is None:
            return None
        w = record.winner(now_ms())
        if w is None:
            return None
        return Value(w.value, w.timestamp, w.expire_at_ms, encode_context(record.clock))

    async def get_value(self, key: bytes, namespace: bytes = DEFAULT_NAMESPACE) -> bytes | None:
        record = await self._record(key, namespace)
        if record is None:
            return None
        w = record.winner(now_ms())
        return None if w is None else w.value

    def get_value_now(self, key: bytes, namespace: bytes = DEFAULT_NAMESPACE):
        return PENDING

    async def get_versions(self, key: bytes, namespace: bytes = DEFAULT_NAMESPACE) -> Versions:
        record = await self._record(key, namespace)
        if record is None:
            return Versions([], None)
        sibs = [Value(s.value, s.timestamp, s.expire_at_ms, b"") for s in record.live_siblings(now_ms())]
        return Versions(sibs, encode_context(record.clock))

    async def exists(self, keys: Iterable[bytes], namespace: bytes = DEFAULT_NAMESPACE) -> int:
        values = await self.mget(list(keys), namespace)
        return sum(v is not None for v in values)

    async def mget(self, keys: list[bytes], namespace: bytes = DEFAULT_NAMESPACE) -> list[bytes | None]:
        if len(keys) == 1:
            return [await self.get_value(keys[0], namespace)]
        local = self.c.local
        for k in keys:
            local._check_key(k, namespace)
        now = now_ms()
        out: list[bytes | None] = []
        for data in await self.read_raw_many([storage_key(namespace, k) for k in keys]):
            w = None if data is None else rec.decode_record(data).winner(now)
            out.append(None if w is None else w.value)
        return out

    async def read_raw_many(self, skeys: list[bytes]) -> list[bytes | None]:
        """read_raw of several keys with one ReplicaGetMany per replica set and replica (keys
        are grouped by preference list), each key still decided by its own read quorum."""
        c = self.c
        me = c.node_id
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, skey in enumerate(skeys):
            groups.setdefault(c.replicas_of(skey), []).append(i)
        quorums: list[ReadQuorum | None] = [None] * len(skeys)
        loop = asyncio.get_running_loop()
        state = _ManyState(loop)
        for pref, idxs in groups.items():
            r = resolve(self.r, len(pref), field="r")
            for i in idxs:
                q = ReadQuorum(pref, r, c.merger_of(skeys[i]), _same_raw)
                quorums[i] = q
                if me in pref:
                    data = c.engine.get(skeys[i])
                    q.on_success(me, None if data is None else bytes(data))
                if not q.done:
                    state.undecided += 1
            remote = [n for n in pref if n != me]
            for start in range(0, len(idxs), MAX_KEYS_PER_GET_MANY):
                chunk = idxs[start:start + MAX_KEYS_PER_GET_MANY]
                body = ReplicaGetMany([skeys[i] for i in chunk])
                for node in remote:
                    state.outstanding += 1
                    if not c.is_up(node):
                        fut = loop.create_future()
                        fut.set_exception(PeerUnavailableError(node, "down (failure detector)"))
                    else:
                        fut = c.transport.start_call(node, body, c.replica_timeout_ms)
                        if fut is None:
                            fut = loop.create_task(c.transport.call(node, body, c.replica_timeout_ms))
                    fut.add_done_callback(
                        lambda f, node=node, chunk=chunk: state.answered(f, node, chunk, quorums, skeys, c))
        if state.undecided:
            await state.decided
        out = []
        for q in quorums:
            if not q.succeeded:
                c.stats["quorum_failures"] += 1
                raise q.error
            out.append(q.result)
        c.stats["reads"] += len(skeys)
        return out

    async def ttl_ms(self, key: bytes, namespace: bytes = DEFAULT_NAMESPACE) -> int:
        record = await self._record(key, namespace)
        now = now_ms()
        w = None if record is None else record.winner(now)
        if w is None:
            return -2
        if not w.expire_at_ms:
            return -1
        return max(0, w.expire_at_ms - now)

    # ------------------------------------------------------------------ writing

    async def execute(self, method: str, namespace: bytes, key: bytes, args: dict) -> Any:
        """Run a write method on this node, which must be a replica of the key: (for a
        read-modify-write) read at R under the key's lock, apply it locally, replicate at W."""
        c = self.c
        local = c.local
        skey = storage_key(namespace, key)
        pref = c.replicas_of(skey)
        rmw = _is_rmw(method, args)
        if rmw:
            await c._locks.acquire(skey)
        try:
            engine = c.engine
            if rmw:
                merged = await self.read_raw(skey, pref)
                if merged is not None:
                    stored = engine.get(skey)
                    if stored is None or bytes(stored) != merged:
                        local.apply_record(skey, merged)
            before = engine.get(skey)
            result = await _invoke(local, method, key, namespace, args)
            if local.has_pending_writes:
                local.commit_writes()  # in the log before any other replica is asked to hold it
            after = engine.get(skey)
            if after is not None and after is not before and after != before:
                await self._replicate(skey, bytes(after), pref)
            return result
        finally:
            if rmw:
                c._locks.release(skey)

    async def _replicate(self, skey: bytes, data: bytes, pref: tuple[str, ...]) -> None:
        c = self.c
        c.stats["writes"] += 1
        me = c.node_id
        q = WriteQuorum(pref, resolve(self.w, len(pref), field="w"))
        if me in pref:
            q.on_success(me)
        remote = [n for n in pref if n != me]
        if c._extra:
            extra = c.extra_replicas_of(skey)
            if extra:
                _write_extra(c, skey, data, extra)
        if remote:
            after = None if c.hints is None else _hint_after(c, skey, data)
            state = _FanOut(q, len(remote), after, _ack)
            if c.sloppy and not self.strict and len(c.ring.node_ids) > len(pref):
                state.stand_in = _StandIns(c, skey, data, pref)
            c.fan_out(remote, ReplicaPut(skey, data), state)
            if not q.done:
                state.decided = asyncio.get_running_loop().create_future()
                await state.decided
        if not q.succeeded:
            c.stats["quorum_failures"] += 1
            raise q.error

    async def _write(self, method: str, namespace: bytes, key: bytes, args: dict) -> Any:
        """Run a write where it must run: here if this node may, else forwarded to the first
        reachable replica of the key."""
        c = self.c
        c.local._check_key(key, namespace)
        skey = storage_key(namespace, key)
        pref = c.replicas_of(skey)
        me = c.node_id
        if me in pref and not _is_rmw(method, args):
            return await self.execute(method, namespace, key, args)
        failures: dict[str, str] = {}
        n = len(pref)
        body = None
        # The first replica the failure detector believes up (the list in order if none is).
        order = [node for node in pref if c.is_up(node)] or list(pref)
        for node in pref:
            if node not in order:
                failures[node] = "down (failure detector)"
        for node in order:
            if node == me:
                return await self.execute(method, namespace, key, args)
            if body is None:
                body = Forward(method, namespace, key, args, resolve(self.r, n, field="r"),
                               resolve(self.w, n, field="w"), self.strict)
            timeout = c.replica_timeout_ms * _FORWARD_TIMEOUTS
            try:
                reply = await c.call(node, body, timeout)
            except PeerUnavailableError as exc:
                failures[node] = _reason(exc)
                continue  # it never ran there: the next replica may run it
            except RpcTimeoutError:
                raise CommandError(
                    f"forwarded to replica {node}, which did not answer within {timeout:g} ms: "
                    "the write may or may not have been applied", status=504) from None
            except RpcError as exc:
                raise CommandError(f"forwarded to replica {node}: {exc}", status=502) from None
            if reply.error:
                if reply.quorum:
                    raise ClusterQuorumError(reply.error)
                raise RemoteCommandError(reply.error, reply.kind, reply.status)
            result = reply.result
            return tuple(result) if method in _TUPLE_RESULTS else result
        c.stats["quorum_failures"] += 1
        raise QuorumError(1, 0, failures)

    async def set(
        self,
        key: bytes,
        value: bytes,
        *,
        namespace: bytes = DEFAULT_NAMESPACE,
        expire_at_ms: int = 0,
        keep_ttl: bool = False,
        condition: str | None = None,
        return_old: bool = False,
    ) -> tuple[bool, bytes | None]:
        self.c.local._check_value(value)
        args = {"value": value}
        if expire_at_ms:
            args["expire_at_ms"] = expire_at_ms
        if keep_ttl:
            args["keep_ttl"] = True
        if condition is not None:
            args["condition"] = condition
        if return_old:
            args["return_old"] = True
        return await self._write("set", namespace, key, args)

    async def put(self, key: bytes, value: bytes, namespace: bytes = DEFAULT_NAMESPACE) -> None:
        """A plain SET. On a replica of the key, the common case, this is one local overwrite
        and one ReplicaPut per other replica; the adapter puts the local write in the log
        before it replies (deferred, see LocalCoordinator.put_now)."""
        c = self.c
        local = c.local
        if (
            len(value) <= local.max_value_bytes
            and len(key) + len(namespace) <= MAX_KEY_BYTES
            and local.policy is ConflictPolicy.SIBLINGS
            and (not namespace or local.namespaces.of_stored(namespace).conflict_policy is ConflictPolicy.SIBLINGS)
            and not local.sync_always
        ):
            skey = storage_key(namespace, key)
            pref = c.replicas_of(skey)
            if c.node_id in pref:
                await self._replicate(skey, local.overwrite_now(skey, value), pref)
                return
        local._check_value(value)
        await self._write("put", namespace, key, {"value": value})

    def put_now(self, key: bytes, value: bytes, namespace: bytes = DEFAULT_NAMESPACE):
        return PENDING

    async def put_versioned(
        self,
        key: bytes,
        value: bytes | None,
        context: bytes | None,
        *,
        namespace: bytes = DEFAULT_NAMESPACE,
        expire_at_ms: int = 0,
    ) -> bytes:
        if context:
            decode_context(context)  # a bad context fails here, before any hop
        if value is not None:
            self.c.local._check_value(value)
        return await self._write("put_versioned", namespace, key,
                                 {"value": value, "context": context, "expire_at_ms": expire_at_ms})

    async def mset(self, pairs: list[tuple[bytes, bytes]], namespace: bytes = DEFAULT_NAMESPACE) -> None:
        """Every key written at W. Keys this node is a replica of are written here and sent to
        their other replicas in one ReplicaPutMany per replica set and replica; the others
        are forwarded one by one (as SET is)."""
        c = self.c
        local = c.local
        unique = local._check_pairs(pairs, namespace)
        batchable = (
            len(unique) > 1 and not local.sync_always and not c._extra
            and local.namespaces.of_stored(namespace).conflict_policy is ConflictPolicy.SIBLINGS
        )
        if not batchable:
            await asyncio.gather(*(self._write("put", namespace, k, {"value": v}) for k, v in unique.items()))
            return
        groups: dict[tuple[str, ...], list[tuple[bytes, bytes]]] = {}
        elsewhere: list[tuple[bytes, bytes]] = []
        for key, value in unique.items():
            skey = storage_key(namespace, key)
            pref = c.replicas_of(skey)
            if c.node_id in pref:
                groups.setdefault(pref, []).append((skey, local.overwrite_now(skey, value)))
            else:
                elsewhere.append((key, value))
        local.commit_writes()  # in our log before any other replica is asked to hold them
        await asyncio.gather(
            *(self._write("put", namespace, k, {"value": v}) for k, v in elsewhere),
            *(self._replicate_many(records[i:i + MAX_KEYS_PER_PUT_MANY], pref)
              for pref, records in groups.items()
              for i in range(0, len(records), MAX_KEYS_PER_PUT_MANY)))

    async def _replicate_many(self, records: list[tuple[bytes, bytes]], pref: tuple[str, ...]) -> None:
        """_replicate for several keys of one replica set, written here already: one
        ReplicaPutMany per other replica (split by MAX_BYTES_PER_PUT_MANY). When too few
        replicas take a batch, each key goes the single-key way (stand-ins, hints, the precise
        error); a replica that fails after W was met gets hints, as for a single key."""
        c = self.c
        me = c.node_id
        remote = [n for n in pref if n != me]
        need = resolve(self.w, len(pref), field="w") - (1 if me in pref else 0)
        if need <= 0 or not remote:
            await asyncio.gather(*(self._replicate(skey, data, pref) for skey, data in records))
            return
        c.stats["writes"] += len(records)
        chunks: list[list[tuple[bytes, bytes]]] = [[]]
        size = 0
        for item in records:
            if chunks[-1] and size + len(item[1]) > MAX_BYTES_PER_PUT_MANY:
                chunks.append([])
                size = 0
            chunks[-1].append(item)
            size += len(item[1])
        loop = asyncio.get_running_loop()
        calls: list[asyncio.Future] = []
        for node in remote:
            for chunk in chunks:
                body = ReplicaPutMany(chunk)
                if not c.is_up(node):
                    fut = loop.create_future()
                    fut.set_exception(PeerUnavailableError(node, "down (failure detector)"))
                else:
                    fut = c.transport.start_call(node, body, c.replica_timeout_ms)
                    if fut is None:
                        fut = loop.create_task(c.transport.call(node, body, c.replica_timeout_ms))
                fut.add_done_callback(functools.partial(_hint_chunk, c, node, chunk))
                calls.append(fut)
        # A replica counts once all its chunks are in; W is met when `need` replicas are.
        per_node = len(chunks)
        acked: dict[str, int] = {}
        done_nodes = 0
        pending = set(calls)
        node_of = {id(f): remote[i // per_node] for i, f in enumerate(calls)}
        while pending and done_nodes < need:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for f in finished:
                if not f.cancelled() and f.exception() is None:
                    node = node_of[id(f)]
                    acked[node] = acked.get(node, 0) + 1
                    if acked[node] == per_node:
                        done_nodes += 1
        if done_nodes < need:
            await asyncio.gather(*(self._replicate(skey, data, pref) for skey, data in records))

    async def msetnx(self, pairs: list[tuple[bytes, bytes]], namespace: bytes = DEFAULT_NAMESPACE) -> bool:
        """All or nothing when no other client writes these keys meanwhile: the keys live on
        different replica sets, so the check and the writes are not one atomic step."""
        unique = self.c.local._check_pairs(pairs, namespace)
        if await self.exists(list(unique), namespace):
            return False
        await self.mset(list(unique.items()), namespace)
        return True

    async def delete(self, keys: Iterable[bytes], namespace: bytes = DEFAULT_NAMESPACE) -> int:
        keys = list(keys)
        for key in keys:
            self.c.local._check_key(key, namespace)
        counts = await asyncio.gather(*(self._write("delete", namespace, k, {}) for k in keys))
        return sum(counts)

    async def getdel(self, key: bytes, namespace: bytes = DEFAULT_NAMESPACE) -> bytes | None:
        return await self._write("getdel", namespace, key, {})

    async def incr_by(self, key: bytes, delta: int, namespace: bytes = DEFAULT_NAMESPACE) -> int:
        return await self._write("incr_by", namespace, key, {"delta": delta})

    async def incr_by_float(self, key: bytes, delta: float, namespace: bytes = DEFAULT_NAMESPACE) -> bytes:
        return await self._write("incr_by_float", namespace, key, {"delta": delta})

    async def append(self, key: bytes, value: bytes, namespace: bytes = DEFAULT_NAMESPACE) -> int:
        return await self._write("append", namespace, key, {"value": value})

    async def expire_at(
        self, key: bytes, expire_at_ms: int, condition: str | None = None, namespace: bytes = DEFAULT_NAMESPACE
    ) -> bool:
        return await self._write("expire_at", namespace, key,
                                 {"expire_at_ms": expire_at_ms, "condition": condition})

    async def getex(self, key: bytes, expire_at_ms: int | None, namespace: bytes = DEFAULT_NAMESPACE) -> bytes | None:
        if expire_at_ms is None:
            return await self.get_value(key, namespace)
        return await self._write("getex", namespace, key, {"expire_at_ms": expire_at_ms})

    async def flushall(self) -> int:
        """FLUSHALL on every member. A member that cannot be reached keeps its keys, and they
        return by read repair: the error names it."""
        c = self.c
        if not c.local.flush_enabled:
            raise CommandError("FLUSHALL and FLUSHDB are disabled on this node (flush_enabled = false)")
        removed = await c.local.flushall()
        others = [n for n in c.known_nodes if n != c.node_id]
        replies = await asyncio.gather(
            *(c.transport.call(n, FlushAll(), c.replica_timeout_ms * 4) for n in others),
            return_exceptions=True)
        failed = {n: _reason(r) for n, r in zip(others, replies, strict=True) if isinstance(r, BaseException)}
        if failed:
            detail = "; ".join(f"{n} {why}" for n, why in sorted(failed.items()))
            raise CommandError(f"FLUSHALL did not reach every member: {detail}", status=503)
        return removed + sum(r.removed for r in replies)

    # ------------------------------------------------------------------ the whole keyspace

    async def node_infos(self) -> dict[str, NodeInfoReply | str]:
        """Every member's figures, or why it did not answer."""
        c = self.c
        others = [n for n in c.known_nodes if n != c.node_id]
        replies = await asyncio.gather(
            *(c.transport.call(n, NodeInfo(), c.replica_timeout_ms) for n in others),
            return_exceptions=True)
        out: dict[str, NodeInfoReply | str] = {c.node_id: c.node_info()}
        for node, reply in zip(others, replies, strict=True):
            out[node] = _reason(reply) if isinstance(reply, BaseException) else reply
        return out

    async def dbsize(self, namespace: bytes = DEFAULT_NAMESPACE) -> int:
        """Live keys of `namespace` in the cluster: each partition counted on its first
        replica that answers."""
        infos = await self.node_infos()
        total = 0
        name = namespace.decode("utf-8", "replace")
        prefs = self.c.prefs_for(self.c.namespaces.of_stored(namespace).replicas)
        for p, pref in enumerate(prefs):
            for node in pref:
                info = infos.get(node)
                if isinstance(info, NodeInfoReply):
                    counts = info.namespace_partition_keys.get(name) if namespace else info.partition_keys
                    total += counts[p] if counts else 0
                    break
            else:
                detail = "; ".join(f"{n} {infos.get(n)}" for n in pref)
                raise CommandError(f"DBSIZE needs one replica of every partition; none answered for "
                                   f"partition {p}: {detail}", status=503)
        return total

    async def scan(
        self,
        cursor: int,
        count: int = 10,
        match: bytes | None = None,
        namespace: bytes = DEFAULT_NAMESPACE,
    ) -> tuple[int, list[bytes]]:
        """One page of the cluster's keys in token order; the cursor is the token to resume at.

        Each run of consecutive partitions is read from one replica (this node when it holds
        them), so a key is listed once; a key that replica has not received yet is missed
        (as a read at ONE would miss it).
        """
        if not 0 <= cursor <= MAX_TOKEN:
            raise CommandError("invalid cursor")
        c = self.c
        ring = c.ring
        prefs = c.prefs_for(c.namespaces.of_stored(namespace).replicas)
        me = c.node_id
        keys: list[bytes] = []
        examined = 0
        tok = cursor
        while True:
            p = ring.partition_of(tok)
            candidates = (me,) if me in prefs[p] else prefs[p]
            failures: dict[str, str] = {}
            for target in candidates:
                last = p
                while last + 1 < ring.partitions and target in prefs[last + 1]:
                    last += 1
                end_tok = ring.partition_range(last)[1]
                budget = count - examined
                if target == me:
                    page, ex, nxt = c.local.scan_range(tok, end_tok, budget, match, namespace)
                    break
                try:
                    reply = await c.call(target, ScanRange(namespace, tok, end_tok, budget, match),
                                                   c.replica_timeout_ms * 2)
                except RpcError as exc:
                    failures[target] = _reason(exc)
                    continue
                page, ex, nxt = reply.keys, reply.examined, reply.next_token
                break
            else:
                detail = "; ".join(f"{n} {why}" for n, why in failures.items())
                raise CommandError(f"SCAN needs one replica of partition {p}; none answered: {detail}",
                                   status=503)
            keys.extend(page)
            examined += ex
            if nxt is not None:
                return nxt, keys
            if end_tok == MAX_TOKEN:
                return 0, keys
            tok = end_tok + 1
            if examined >= count:
                return tok, keys

    async def keys(self, pattern: bytes, namespace: bytes = DEFAULT_NAMESPACE) -> list[bytes]:
        limit = self.c.local.keys_max_count
        out: list[bytes] = []
        cursor = 0
        while True:
            cursor, page = await self.scan(cursor, 1000, pattern, namespace)
            out.extend(page)
            if len(out) > limit:
                raise CommandError(
                    f"KEYS refused: more than keys_max_count={limit} keys match; use SCAN with "
                    "MATCH to page through them")
            if cursor == 0:
                return out

    async def cluster_status(self) -> dict:
        """Members, their partitions and keys (`ringkv cluster status`, INFO cluster)."""
        c = self.c
        infos = await self.node_infos()
        shares = c.ring.shares()
        nodes = []
        for node in sorted(set(c.known_nodes) | {c.node_id}):
            info = infos.get(node, "not asked")
            entry = {
                "node_id": node,
                "status": "up" if isinstance(info, NodeInfoReply) else "unreachable",
                "in_ring": node in c.ring.node_ids,
                "primary_partitions": len(c.ring.owned_partitions(node)),
                "replica_partitions": len(c.ring.replica_partitions(node)),
                "share": round(shares.get(node, 0.0), 4),
            }
            if c.gossiper is not None:
                gossip = c.gossiper.status().get(node)
                if gossip is not None:
                    entry.update(phi=gossip["phi"], detector="up" if gossip["up"] else "down",
                                 generation=gossip["generation"], heartbeat=gossip["heartbeat"])
            if isinstance(info, NodeInfoReply):
                entry.update(actor=info.actor, resp=info.resp_address, http=info.http_address,
                             keys=info.live_keys, bytes_on_disk=info.bytes_on_disk,
                             uptime_ms=info.uptime_ms)
            else:
                entry["error"] = info
            nodes.append(entry)
        return {"cluster": {"partitions": c.ring.partitions, "replicas": c.ring.replicas,
                            "members": len(c.ring.node_ids)},
                "nodes": nodes}


def _same_raw(a: bytes | None, b: bytes | None) -> bool:
    return a == b


def _repair_after(c: Cluster, skey: bytes) -> Callable[[_FanOut], None]:
    def after(state: _FanOut) -> None:
        q = state.quorum
        if q.has_result:
            c.repair(skey, q.result, q.stale_replicas())
    return after


class _StandIns:
    """Sloppy quorum for one write: when a replica fails, the next available node on the
    ring that is not a replica of the key (Ring.fallbacks) takes the record as a hint for it,
    and its acknowledgement counts toward W in the failed replica's place."""

    __slots__ = ("c", "data", "failed", "partition", "pref", "skey", "used")

    def __init__(self, c: Cluster, skey: bytes, data: bytes, pref: tuple[str, ...]):
        self.c = c
        self.skey = skey
        self.data = data
        self.pref = pref
        self.partition = int.from_bytes(skey[:8], "big") >> c._shift
        self.failed: set[str] = set()
        self.used: set[str] = set()

    def __call__(self, node: str, reason: str, state: _FanOut) -> bool:
        self.failed.add(node)
        candidates = [r.node_id for r in self.c.ring.fallbacks(self.partition, self.failed, len(self.pref))
                      if r.hint_for is not None and r.node_id not in self.used]
        if not candidates:
            return False
        stand_in = candidates[0]
        self.used.add(stand_in)
        self.c.stats["stand_ins"] += 1
        fut = self.c.transport.start_call(stand_in, ReplicaPut(self.skey, self.data, node),
                                          self.c.replica_timeout_ms)
        if fut is None:
            fut = asyncio.get_running_loop().create_task(self.c.transport.call(
                stand_in, ReplicaPut(self.skey, self.data, node), self.c.replica_timeout_ms))

        def done(f: asyncio.Future) -> None:
            if not f.cancelled() and f.exception() is None:
                state.resolved(node, True, f.result())
            else:
                why = "cancelled" if f.cancelled() else _reason(f.exception())
                state.resolved(node, False, f"{reason}, and stand-in {stand_in} {why}")
        fut.add_done_callback(done)
        return True


def _write_extra(c: Cluster, skey: bytes, data: bytes, nodes: tuple[str, ...]) -> None:
    """A write to the replicas a partition is moving to: not counted toward W, hinted on failure."""
    for node in nodes:
        if node == c.node_id:
            continue
        fut = c.transport.start_call(node, ReplicaPut(skey, data), c.replica_timeout_ms)
        if fut is None:
            fut = asyncio.get_running_loop().create_task(
                c.transport.call(node, ReplicaPut(skey, data), c.replica_timeout_ms))

        def done(f: asyncio.Future, node: str = node) -> None:
            if (f.cancelled() or f.exception() is not None) and c.hints is not None:
                c.hints.add(node, skey, data)
        fut.add_done_callback(done)


def _hint_chunk(c: Cluster, node: str, chunk: list[tuple[bytes, bytes]], fut: asyncio.Future) -> None:
    """A ReplicaPutMany that failed: its records wait for `node` as hints (the outcome is
    retrieved either way: nothing may wait on a batch once W is met)."""
    if (fut.cancelled() or fut.exception() is not None) and c.hints is not None:
        for skey, data in chunk:
            c.hints.add(node, skey, data)


def _hint_after(c: Cluster, skey: bytes, data: bytes) -> Callable[[_FanOut], None]:
    """Once every replica has answered a write: keep a hint for each that did not take it."""
    def after(state: _FanOut) -> None:
        for node in state.quorum.failures:
            c.hints.add(node, skey, data)
    return after


def _is_rmw(method: str, args: dict) -> bool:
    if method in ("put", "put_versioned", "mset"):
        return False
    if method == "set":
        return bool(args.get("condition") or args.get("return_old") or args.get("keep_ttl"))
    return True


def _invoke(local: LocalCoordinator, method: str, key: bytes, namespace: bytes, args: dict):
    if method == "delete":
        return local.delete([key], namespace=namespace)
    if method == "mset":
        return local.mset([(key, args["value"])], namespace=namespace)
    if method == "put_versioned":
        return local.put_versioned(key, args["value"], args["context"], namespace=namespace,
                                   expire_at_ms=args.get("expire_at_ms", 0))
    return getattr(local, method)(key, namespace=namespace, **args)


__all__ = ["Cluster", "ClusterCoordinator", "ConflictPolicy", "parse_level"]
