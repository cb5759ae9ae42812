"""A running node: its parts, its background tasks, its admin service, its orderly stop.

`Node` is what node/assembly.py builds: every part constructed with what it needs, nothing
patched in afterwards. It serves no client itself: the process (ringkv/server.py) puts the
protocol adapters in front of `node.service` (the data, a `KeyValueService`) and `node.admin`
(an `AdminService`), then calls `start(resp_address, http_address)`, which starts the
background work (gossip, hint delivery, anti-entropy, membership moves, active expiry, the
loop-stall probe). `stop()` ends the background work, closes the peers' transport and the
hint store, flushes the memtable and closes the engine: no acknowledged write is lost.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import resource
import shutil
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ringkv.clock import Clock
from ringkv.cluster.gossip import NodeStatus
from ringkv.errors import AdminConflictError, AdminRequestError, ConfigError
from ringkv.net.transport import Transport
from ringkv.node.admission import Admission, host_port, parse_node_address
from ringkv.node.antientropy import AntiEntropy
from ringkv.node.atomic_batches import AtomicBatches
from ringkv.node.backup_admin import BackupAdmin
from ringkv.node.config import NodeConfig
from ringkv.node.consensus import AcceptorStore
from ringkv.node.faults import FaultState
from ringkv.node.gossiper import Gossiper
from ringkv.node.handoff import HintDelivery, HintStore
from ringkv.node.identity import NodeIdentity
from ringkv.node.keyspace import Keyspace
from ringkv.node.local_store import LocalStore
from ringkv.node.membership import MembershipManager, MoveProgress
from ringkv.node.messages import NodeInfoReply
from ringkv.node.namespaces import compaction_strategy
from ringkv.node.operations import Operation, OperationRun, Operations, Progress
from ringkv.node.placement import Placement
from ringkv.node.quotas import QuotaRefresher, namespace_figures
from ringkv.node.read_path import ReadPath
from ringkv.node.replica import split_storage_key
from ringkv.node.replica_calls import ReplicaCalls
from ringkv.node.runtime_config import RuntimeSettings
from ringkv.node.stalls import StallMonitor
from ringkv.storage import Engine
from ringkv.storage.strategies import describe

log = logging.getLogger("ringkv.node")

EXPIRY_CYCLE_MS = 100
# Membership changes run one at a time on a node (each plans from the ring the others leave).
MEMBERSHIP_OPERATIONS = ("join", "decommission", "remove", "cleanup")
OPERATION_WAIT_MAX_S = 30.0  # one RINGKV.ADMIN WAIT / ?wait_ms answers within this at most

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MIB = 1024 * 1024


def resident_memory_bytes() -> int:
    """This process's resident memory now: /proc/self/statm on Linux (kernel memory, no disk
    read: cheap enough for the loop), else the peak from getrusage, the best figure there is.
    The compaction worker processes are not counted."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_BYTES
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


@dataclass
class ClusterParts:
    """The parts a node has when it is a member of a cluster (None for a cluster of one)."""

    transport: Transport
    placement: Placement
    calls: ReplicaCalls
    reads: ReadPath
    hints: HintStore
    acceptor_states: AcceptorStore
    handoff: HintDelivery
    gossiper: Gossiper
    anti_entropy: AntiEntropy
    membership: MembershipManager
    admission: Admission
    keyspace: Keyspace
    stats: dict[str, int]
    joining: bool  # start the join's moves once serving
    batches: AtomicBatches | None = None  # atomic batches and the replay of the batch log
    quotas: QuotaRefresher | None = None  # the other members' counts, for namespace quotas


class NodeFigures:
    """This node's figures as its peers ask for them (NodeInfo) and status shows them."""

    def __init__(self, node_id: str, identity: NodeIdentity, engine: Engine, store: LocalStore, clock: Clock,
                 moves: MoveProgress):
        self.node_id = node_id
        self.identity = identity
        self.engine = engine
        self.store = store
        self.clock = clock
        self.moves = moves  # updated by the membership manager (a cluster of one: never)
        self.started_ms = clock.now_ms()
        self.resp_address = ""  # "host:port" once serving, "" for a protocol not served
        self.http_address = ""

    def serving_at(self, resp_address: str, http_address: str) -> None:
        self.resp_address = resp_address
        self.http_address = http_address

    def __call__(self) -> NodeInfoReply:
        store = self.store
        moves = self.moves
        return NodeInfoReply(
            self.node_id, self.identity.actor.decode(), self.resp_address, self.http_address,
            store.live_keys, store.partition_keys(), self.engine.stats()["bytes_on_disk"],
            self.clock.now_ms() - self.started_ms, store.namespace_partition_keys(),
            resident_memory_bytes(), moves.kind, moves.phase, moves.total, moves.done,
            store.usage.partition_bytes_by_name())


class Node:
    def __init__(self, config: NodeConfig, clock: Clock, engine: Engine, store: LocalStore, service: Any,
                 figures: NodeFigures, faults: FaultState, cluster: ClusterParts | None, *, system: Any = None,
                 system_one: Any = None):
        self.config = config
        self.clock = clock
        self.engine = engine
        self.store = store
        self.service = service  # the KeyValueService at the configured levels
        self.system = system  # a KeyValueService of the system namespace at QUORUM: the users
        self.system_one = system_one  # the same at ONE (None on a node of one): users without a quorum
        self.figures = figures
        self.faults = faults
        self.cluster = cluster
        self.stalls = StallMonitor()
        # Long operations (node/operations.py): their state in data_dir/operations.json.
        self.operations = Operations(config.node_id, config.data_dir, clock)
        self.admin = NodeAdmin(self)
        # Snapshots, SAVE, cluster backup and restore (node/backup_admin.py); a backup cut off
        # by a stop goes on from its journal at the next start.
        self.backups = BackupAdmin(self)
        self.operations.resume_with("backup", self.backups.resume_backup)
        self._tasks: list[asyncio.Task] = []

    @property
    def node_id(self) -> str:
        return self.config.node_id

    def start(self, resp_address: str, http_address: str) -> None:
        """Begin the background work, now that clients can reach the node at these addresses
        ("host:port", "" for a protocol not served)."""
        self.figures.serving_at(resp_address, http_address)
        spawn = self._spawn
        c = self.cluster
        if c is not None:
            c.gossiper.membership.update_local(resp_address=resp_address, http_address=http_address)
            spawn(c.handoff.run(), "handoff")
            spawn(c.gossiper.run(), "gossip")
            if self.config.anti_entropy_interval_ms:
                spawn(c.anti_entropy.run(), "anti-entropy")
            c.membership.refresh()
            spawn(c.membership.run(), "membership")
            if c.batches is not None:
                spawn(c.batches.run(), "batch-replay")
            if c.quotas is not None:
                spawn(c.quotas.run(), "quotas")
        # Operations the last process left running resume (or are reported interrupted) now
        # that the background work they rely on runs.
        self.admin.register_resumers()
        self.operations.resume_interrupted()
        if c is not None and c.joining and not self.operations.running(["join"]):
            self.operations.start("join", lambda progress: c.membership.join(progress=progress),
                                  conflicts=MEMBERSHIP_OPERATIONS)
        if (c is not None and c.gossiper.membership.local.status is NodeStatus.LEAVING
                and not self.operations.running(["decommission"])):
            # Recorded as leaving, with no decommission to resume (operations.json lost): a
            # leaving node must finish leaving, or it would hold its partitions forever.
            self.admin._start("decommission")
        spawn(self._expiry_loop(), "expiry")
        spawn(self.stalls.run(), "stall-monitor")

    def _spawn(self, coro, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"ringkv-{name}"))

    async def _expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_CYCLE_MS / 1000)
            try:
                self.store.expire_cycle()
            except Exception:
                log.exception("active expiry cycle failed")

    async def stop(self) -> None:
        """End the background work and close everything; the adapters have stopped already."""
        await self.operations.close()  # left running in operations.json: resumed at the next start
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        loop = asyncio.get_running_loop()
        c = self.cluster
        if c is not None:
            await c.reads.close()
            await c.transport.close()
            await loop.run_in_executor(None, c.hints.close)
            await loop.run_in_executor(None, c.acceptor_states.close)
            if c.batches is not None:
                await loop.run_in_executor(None, c.batches.log.close)
        self.store.close()
        await loop.run_in_executor(None, self._close_engine)
        log.info("node %s stopped", self.node_id)

    def _close_engine(self) -> None:
        self.engine.flush()
        self.engine.close()


def _disk_figures(path: str) -> dict[str, int]:
    """Free and total bytes of the file system holding the data directory (for the "disk
    filling" alert); empty when it cannot be read."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return {}
    return {"free_bytes": usage.free, "total_bytes": usage.total}


def _info_text(text: str) -> str:
    """`text` as an INFO value: clients (redis-py) read a value with "," and "=" as a list of
    fields, so thousands separators go and other commas become semicolons."""
    return re.sub(r"(?<=\d),(?=\d{3})", "", text).replace(",", ";")


def _key_text(key: bytes) -> str:
    """A key as an INFO value shows it: its first 64 bytes, percent-escaped where a byte is
    not printable ASCII or is one of the separators clients split INFO lines on (, = and
    space), with "..." when it was longer."""
    text = urllib.parse.quote(key[:HOT_KEY_SHOWN_BYTES], safe="/:{}-_.~@!$'()*+;[]<>|^#?&")
    return text + ("..." if len(key) > HOT_KEY_SHOWN_BYTES else "")


HOT_KEYS_IN_INFO = 10  # INFO hotkeys lists this many keys
HOT_KEYS_IN_METRICS = 5  # /metrics labels this many keys (each a time series while it is in the top)
HOT_KEY_SHOWN_BYTES = 64


OperationStarter = Callable[[dict[str, Any]], OperationRun]


class NodeAdmin:
    """The node's `AdminService`.

    Long operations: `start_operation(kind, args)` looks `kind` up in `starters` (kind ->
    a function of the request's args giving the operation's coroutine) and runs it in the
    node's registry (node/operations.py). Another part of the node offering one (backup,
    restore) adds it with `add_operation_kind`.
    """

    def __init__(self, node: Node):
        self._node = node
        self.starters: dict[str, OperationStarter] = {}
        self.conflicts: dict[str, tuple[str, ...]] = {}
        self.resumers: dict[str, OperationStarter] = {}
        self.add_operation_kind("repair", lambda args: self._run_repair)
        self.add_operation_kind("cleanup", self._of_a_member(self._run_cleanup), conflicts=MEMBERSHIP_OPERATIONS)
        self.add_operation_kind("decommission", self._of_a_member(self._run_decommission),
                                conflicts=MEMBERSHIP_OPERATIONS, resumer=lambda args: self._run_decommission)
        self.add_operation_kind("remove", self._remove_starter, conflicts=MEMBERSHIP_OPERATIONS,
                                resumer=self._remove_resumer)
        # A join is started by the node itself (started with join = true), never by a request.
        # CONFIG GET / CONFIG SET (node/runtime_config.py): the node applies its own readers'
        # settings; the process adds the client servers' (`watch_settings`).
        self._settings: RuntimeSettings | None = None

    def add_operation_kind(self, kind: str, starter: OperationStarter, *, conflicts: tuple[str, ...] = (),
                           resumer: OperationStarter | None = None) -> None:
        """Offer operations of `kind`: `starter(args)` checks the request's args (raising
        AdminRequestError or AdminConflictError, which answer the request) and gives the
        coroutine to run. `conflicts`: kinds that may not run at the same time on this node.
        `resumer(args)`: the coroutine that finishes one the node was running when it stopped
        (picking up where it stood); without one, such an operation is reported interrupted."""
        self.starters[kind] = starter
        self.conflicts[kind] = conflicts
        if resumer is not None:
            self.resumers[kind] = resumer

    def register_resumers(self) -> None:
        """Tell the registry how to resume each resumable kind (Node.start, once)."""
        ops = self._node.operations
        for kind, resumer in self.resumers.items():
            ops.resume_with(kind, resumer)
        c = self._node.cluster

        def resume_join(params: dict[str, Any]) -> OperationRun:
            async def run(progress: Progress) -> dict:
                if c is None or c.gossiper.membership.local.status is not NodeStatus.JOINING:
                    return {"status": str(c.gossiper.membership.local.status) if c else "normal"}
                return await c.membership.join(progress=progress)
            return run

        ops.resume_with("join", resume_join)

    # ------------------------------------------------------------------ long operations

    def _start(self, kind: str, args: dict[str, Any] | None = None) -> Operation:
        starter = self.starters.get(kind)
        if starter is None:
            raise AdminRequestError(f"no operation of kind {kind!r}: this node starts "
                                    f"{', '.join(sorted(self.starters))}")
        args = dict(args or {})
        conflicts = self.conflicts.get(kind, ())
        self._node.operations.check_free(kind, conflicts)  # before the starter acts (remove does)
        run = starter(args)
        return self._node.operations.start(kind, run, params=args, conflicts=conflicts)

    async def start_operation(self, kind: str, args: dict[str, Any] | None = None) -> dict:
        return self._start(kind, args).as_dict()

    async def _run_sync(self, kind: str, args: dict[str, Any] | None = None) -> dict:
        op = self._start(kind, args)
        return await self._node.operations.wait_result(op.id)

    def operations(self, running_only: bool = False) -> list[dict]:
        return [op.as_dict() for op in self._node.operations.list(running_only)]

    def operation(self, operation_id: str) -> dict:
        return self._node.operations.get(operation_id).as_dict()

    async def wait_operation(self, operation_id: str, timeout_s: float) -> dict:
        if not 0 <= timeout_s <= OPERATION_WAIT_MAX_S:
            raise AdminRequestError(f"a wait lasts 0 to {OPERATION_WAIT_MAX_S:g} s, got {timeout_s:g} s: "
                                    "ask again to wait longer")
        return (await self._node.operations.wait(operation_id, timeout_s)).as_dict()

    async def _run_repair(self, progress: Progress) -> dict:
        c = self._node.cluster
        if c is None:
            return {"partitions": 0, "comparisons": 0, "in_sync": 0, "keys_pushed": 0, "keys_pulled": 0,
                    "traffic_bytes": 0, "seconds": 0.0, "errors": [], "error_count": 0,
                    "note": "a cluster of one has nothing to repair"}
        return await c.anti_entropy.repair_all(progress)

    async def _run_cleanup(self, progress: Progress) -> dict:
        return await self._membership().cleanup(progress)

    async def _run_decommission(self, progress: Progress) -> dict:
        return await self._membership().decommission(progress=progress)

    def _of_a_member(self, run: OperationRun) -> OperationStarter:
        """A starter of `run` that a cluster of one refuses at the request (no membership)."""
        def starter(args: dict[str, Any]) -> OperationRun:
            self._membership()
            return run
        return starter

    def _remove_starter(self, args: dict[str, Any]) -> OperationRun:
        """The removal itself is done here, at once (a refusal answers the request); the
        operation follows this node's rebuild of the partitions it gained."""
        node_id = args.get("node_id")
        if not isinstance(node_id, str) or not node_id:
            raise AdminRequestError("remove needs node_id: the member to take out of the ring")
        membership = self._membership()
        done = membership.remove(node_id, bool(args.get("force", False)))

        async def run(progress: Progress) -> dict:
            return {**done, **await membership.wait_rebuilt(progress)}
        return run

    def _remove_resumer(self, args: dict[str, Any]) -> OperationRun:
        """After a restart the removal is on disk (membership.json) and in gossip; what may be
        missing is the rebuild: a repair of every partition this node holds."""
        async def run(progress: Progress) -> dict:
            return {"removed": args.get("node_id"), "repair": await self._run_repair(progress)}
        return run

    @property
    def node_id(self) -> str:
        return self._node.node_id

    @property
    def backups(self) -> BackupAdmin:
        return self._node.backups

    def _membership(self) -> MembershipManager:
        if self._node.cluster is None:
            raise AdminConflictError("a cluster of one has no membership to change")
        return self._node.cluster.membership

    async def status(self) -> dict:
        node = self._node
        c = node.cluster
        if c is not None:
            doc = await c.keyspace.status()
            doc["membership"] = c.membership.status()
            doc["operations"] = self.operations(running_only=True)
            return doc
        # A cluster of one: the same document, one healthy member holding every key once.
        info = node.figures()
        partitions = node.config.partitions
        return {
            "cluster": {"partitions": partitions, "replicas": 1, "members": 1},
            "nodes": [{
                "node_id": info.node_id, "address": info.resp_address or None, "status": "healthy",
                "role": "member", "keys_count": info.live_keys,
                "memory_used_mb": round(info.rss_bytes / MIB, 1) if info.rss_bytes else None,
                "reachable": True, "in_ring": True, "primary_partitions": partitions,
                "replica_partitions": partitions, "share": 1.0, "actor": info.actor,
                "resp": info.resp_address, "http": info.http_address, "keys": info.live_keys,
                "bytes_on_disk": info.bytes_on_disk, "uptime_ms": info.uptime_ms, "rss_bytes": info.rss_bytes,
            }],
            "total_keys": info.live_keys,
            "total_keys_unknown_partitions": 0,
            "replication_factor": 1,
            "operations": self.operations(running_only=True),
        }

    async def repair(self) -> dict:
        return await self._run_sync("repair")

    async def join(self, seeds: list[str]) -> dict:
        return self._membership().add_seeds(seeds)

    async def admit(self, address: str) -> dict:
        parse_node_address(address)  # a malformed address is a 400 on a node of one too
        c = self._node.cluster
        if c is None:
            raise AdminConflictError(
                "this node runs as a cluster of one (started without members), which cannot admit another: "
                "start the cluster's nodes with --members (docs/cluster.md)")
        return await c.admission.admit(address)

    async def decommission(self) -> dict:
        self._membership()
        return await self._run_sync("decommission")

    async def remove(self, node_id: str, force: bool = False) -> dict:
        """The tombstone at once; the rebuild that follows runs as an operation (RINGKV.ADMIN
        REMOVE ... ASYNC answers it, to follow it)."""
        self._start("remove", {"node_id": node_id, "force": force})
        return {"removed": node_id}

    async def cleanup(self) -> dict:
        self._membership()
        return await self._run_sync("cleanup")

    def membership(self) -> dict:
        """The membership manager's status, with what a member admitting this node checks
        (node/admission.py): its id, RPC address, rack, cluster name, partitions and N."""
        doc = self._membership().status()
        c = self._node.cluster
        assert c is not None
        local = c.gossiper.membership.local
        doc.update(node_id=self.node_id, rpc_address=host_port(local.rpc_host, local.rpc_port), rack=local.rack,
                   cluster_name=self._node.config.cluster_name, partitions=c.placement.ring.partitions,
                   replicas=c.placement.ring.replicas, dc_replicas=dict(c.placement.ring.dc_replicas),
                   ring_algorithm=c.placement.ring.algorithm,
                   operations=self.operations(running_only=True))
        return doc

    def ring_view(self) -> dict:
        """Each partition's owner now and in the pending ring, the partitions whose replicas
        move, and the hints held here per target (the console: api/console.py)."""
        c = self._node.cluster
        if c is None:
            partitions = self._node.config.partitions
            return {"partitions": partitions, "replicas": 1, "nodes": [self.node_id], "owners": [0] * partitions,
                    "pending_nodes": None, "pending_owners": None, "moving": [], "hints_pending_for": {}}
        ring, pending = c.placement.ring, c.placement.pending
        index = {node: i for i, node in enumerate(ring.node_ids)}
        doc: dict[str, Any] = {
            "partitions": ring.partitions, "replicas": ring.replicas, "nodes": list(ring.node_ids),
            "owners": [index[ring.owner(p)] for p in range(ring.partitions)],
            "pending_nodes": None, "pending_owners": None, "moving": [],
            "hints_pending_for": {t: c.hints.pending(t) for t in c.hints.targets()},
        }
        if pending is not None:
            pending_index = {node: i for i, node in enumerate(pending.node_ids)}
            doc["pending_nodes"] = list(pending.node_ids)
            doc["pending_owners"] = [pending_index[pending.owner(p)] for p in range(ring.partitions)]
            doc["moving"] = [p for p in range(ring.partitions)
                             if ring.preference_list(p) != pending.preference_list(p)]
        return doc

    def fault(self, argv: list[bytes]) -> str:
        if not self._node.config.fault_injection:
            raise AdminRequestError("fault injection is disabled on this node (fault_injection = false)")
        return self._node.faults.apply(argv)

    def health(self) -> str | None:
        c = self._node.cluster
        if c is not None and c.membership.expelled:
            return c.membership.expelled
        engine = self._node.engine
        if engine.closed:
            return "the storage engine is closed"
        error = engine.stats()["background_error"]
        if error is not None:
            return f"the storage engine is read-only after a background error: {error}"
        return None

    # ------------------------------------------------------------------ settings at run time

    def config_get(self, patterns: list[str]) -> dict[str, str]:
        return self.settings.get(patterns)

    def config_set(self, pairs: list[tuple[str, str]]) -> None:
        changed = self.settings.set(pairs)
        if changed:
            log.info("settings changed at run time (CONFIG SET, not stored): %s",
                     ", ".join(f"{k}={v}" for k, v in changed.items()))

    @property
    def settings(self) -> RuntimeSettings:
        """The settings CONFIG GET and CONFIG SET see, made on first use (from the node's
        configuration, which exists once the node is assembled)."""
        if self._settings is None:
            self._settings = RuntimeSettings(self._node.config, self._resp_port)
            self._settings.watch(self._apply_settings)
        return self._settings

    def watch_settings(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call `listener(changed)` after every run-time change (ringkv/server.py applies them
        to the RESP and HTTP servers)."""
        self.settings.watch(listener)

    def _apply_settings(self, changed: dict[str, Any]) -> None:
        if "keys_max_count" in changed:
            self._node.store.keys_max_count = changed["keys_max_count"]
        if "log_level" in changed:
            logging.getLogger().setLevel(getattr(logging, changed["log_level"].upper()))

    def _resp_port(self) -> int:
        """The plain RESP port clients reach: the bound one when resp_port = 0 picked it, 0
        when plain RESP is not served (Redis's `port 0`)."""
        configured = self._node.config.resp_port
        if configured != 0:
            return max(configured, 0)
        address = self._node.figures.resp_address
        return int(address.rpartition(":")[2]) if address else 0

    def key_counts(self) -> dict[str, int]:
        store = self._node.store
        return {"keys": store.live_keys, "expired_keys": store.expired_keys}

    def info(self) -> dict[str, dict[str, Any]]:
        node = self._node
        st = node.engine.stats()
        return {
            "memory": {
                "used_memory_rss_bytes": resident_memory_bytes(),
                "used_memory_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "memtable_bytes": st["memtable_bytes"],
                "block_cache_used_bytes": st["block_cache"]["used_bytes"],
                "block_cache_hit_rate": round(st["block_cache"]["hit_rate"], 4),
                "resident_index_bloom_bytes": st["resident_bytes"],
            },
            "persistence": {
                "sync_policy": node.config.sync,
                "sstables": st["tables"],
                "bytes_on_disk": st["bytes_on_disk"],
                "flushes": st["flushes"],
                "compactions": st["compactions"],
                "write_amplification": round(st["write_amplification"], 3),
                "write_stalls": st["write_stalls"],
                "background_error": st["background_error"] or "",
                # Compaction strategies (docs/compaction.md): merges refused for want of disk
                # space (and the last refusal's message), expired tables deleted unread, and
                # each column family as Redis's keyspace lines read (db0:keys=...).
                "compaction_space_refusals": st["compaction_space_refusals"],
                "compaction_space_error": _info_text(st["compaction_space_error"] or ""),
                "expired_tables_dropped": st["expired_tables_dropped"],
                "expired_bytes_dropped": st["expired_bytes_dropped"],
                **{f"family_{name}": f"compaction={f['compaction']},sorted_runs={f['sorted_runs']},"
                                     f"tables={f['tables']},bytes={f['bytes']}"
                   for name, f in st["families"].items()},
            },
            "ringkv": self._ringkv_info(),
            "quotas": self._quotas_info(),
            "hotkeys": self._hot_keys_info(),
            "datacenters": self._datacenters_info(),
        }

    def _datacenters_info(self) -> dict[str, Any]:
        """INFO's `# Datacenters` (docs/multi-dc.md): this node's datacenter, the ring's, the
        replicas per datacenter, and the writes sent to and taken as a relay."""
        c = self._node.cluster
        if c is None:
            return {}
        ring = c.placement.ring
        return {"datacenter": c.placement.dc, "datacenters": ",".join(ring.datacenters),
                "dc_replicas": ",".join(f"{dc}={n}" for dc, n in ring.dc_replicas),
                "emulated_wan_delay_ms": self._node.config.emulated_wan_delay_ms,
                "relays_sent": c.stats["relays_sent"], "relayed_writes": c.stats["relayed_writes"],
                "relays_answered_early": c.stats["relays_answered_early"],
                "anti_entropy_wan_bytes_per_s": self._node.config.anti_entropy_wan_bytes_per_s,
                "anti_entropy_wan_waited_s": round(c.anti_entropy.wan.waited_s, 3) if c.anti_entropy.wan else 0,
                # Replica writes sent to other datacenters' nodes, counted where the WAN is emulated.
                "emulated_wan_writes_sent": getattr(c.transport, "far_writes", 0)}

    def _quotas_info(self) -> dict[str, Any]:
        """INFO's `# Quotas`: per namespace with a quota, the cluster estimate of its keys and
        bytes, its limits, requests admitted and refusals by quota (node/quotas.py)."""
        gate = self._node.store.quotas
        return gate.info() if gate is not None else {}

    def _ringkv_info(self) -> dict[str, Any]:
        node = self._node
        info: dict[str, Any] = {"node_id": node.node_id, **node.stalls.info()}
        c = node.cluster
        if c is None:
            return info
        ring = c.placement.ring
        address = c.transport.address
        info["cluster_name"] = node.config.cluster_name
        info["cluster_members"] = len(ring.node_ids)
        info["cluster_replicas"] = ring.replicas
        info["rpc_address"] = f"{address[0]}:{address[1]}"
        info.update({f"cluster_{k}": v for k, v in c.stats.items()})
        info.update(c.hints.stats)
        if c.batches is not None:
            info.update(c.batches.info())
        info["gossip_rounds"] = c.gossiper.rounds
        info["gossip_exchanges_failed"] = c.gossiper.exchanges_failed
        info["gossip_states_refused"] = c.gossiper.membership.refused_origin
        info.update(c.transport.handshake_stats())
        info["nodes_down"] = ",".join(sorted(c.gossiper.down()))
        st = c.anti_entropy.stats
        info.update(ae_comparisons=st.comparisons, ae_in_sync=st.in_sync, ae_keys_pushed=st.keys_pushed,
                    ae_keys_pulled=st.keys_pulled, ae_traffic_bytes=st.traffic_bytes,
                    ae_failures=st.failures, ae_partitions_completed=len(st.completed_ms))
        return info

    def hot_keys(self, limit: int) -> dict[str, Any]:
        sketch = self._node.store.hot_keys
        keys = [{**entry, "key": entry["key"].decode("utf-8", "backslashreplace"),
                 "key_base64": base64.b64encode(entry["key"]).decode()} for entry in self._hot_entries(limit)]
        return {"node_id": self._node.node_id, "sample_every": sketch.sample_every,
                "half_life_ms": sketch.half_life_ms, "sampled": sketch.total, "hot_count": len(sketch.hot),
                "keys": keys}

    def _hot_entries(self, limit: int) -> list[dict[str, Any]]:
        """The summary's `limit` most requested keys, each key as its bytes."""
        store = self._node.store
        sketch = store.hot_keys
        out = []
        for h in sketch.top(limit):
            namespace, key = split_storage_key(h.key)
            out.append({"namespace": store.namespaces.of_stored(namespace).name, "key": key, "per_s": h.per_s,
                        "count": h.count, "error": h.error, "reads": h.reads, "writes": h.writes,
                        "hot": h.key in sketch.hot})
        return out

    def _hot_keys_info(self) -> dict[str, Any]:
        """INFO's `# Hotkeys`: the summary's figures and its ten most requested keys."""
        store = self._node.store
        sketch = store.hot_keys
        info: dict[str, Any] = {"hotkeys_tracked": len(sketch), "hotkeys_hot": len(sketch.hot),
                                "hotkeys_sampled": sketch.total, "hotkeys_sample_every": sketch.sample_every}
        cache = store.hot_cache
        if cache is not None:
            info.update(hot_cache_keys=len(cache), hot_cache_hits=cache.hits, hot_cache_misses=cache.misses)
        for i, h in enumerate(self._hot_entries(HOT_KEYS_IN_INFO)):
            info[f"hotkey_{i}"] = (f"namespace={_info_text(h['namespace'])},key={_info_text(_key_text(h['key']))},"
                                   f"per_s={h['per_s']},reads={h['reads']},writes={h['writes']},"
                                   f"hot={int(h['hot'])}")
        return info

    def metrics(self) -> dict[str, Any]:
        node = self._node
        out: dict[str, Any] = {
            "engine": node.engine.stats(),
            "loop": {"max_stall_ms": node.stalls.max_stall_ms, "over_5ms": node.stalls.over_5ms,
                     "samples": node.stalls.samples},
            "expired_keys": node.store.expired_keys,
            "namespaces": namespace_figures(node.store.namespaces, node.store.usage, node.store.quotas),
            "disk": _disk_figures(node.config.data_dir),
            "hot_keys": self.hot_keys(HOT_KEYS_IN_METRICS),
        }
        c = node.cluster
        if c is not None:
            out["cluster"] = dict(c.stats)
            out["hints"] = dict(c.hints.stats)
            out["nodes_down"] = len(c.gossiper.down())
            out["anti_entropy"] = {"comparisons": c.anti_entropy.stats.comparisons,
                                   "keys_transferred": c.anti_entropy.stats.keys_pushed
                                   + c.anti_entropy.stats.keys_pulled,
                                   "failures": c.anti_entropy.stats.failures}
            out["moves"] = {"total": c.membership.moves.total, "done": c.membership.moves.done,
                            "moved": c.membership.moves.moved}
            # Per peer (api/http_metrics.py labels them): phi and up as this node's detector sees
            # them, and the replica calls' durations and failures (node/latency.py).
            # Them: the ring's members and every node gossip knows of (a joining one included).
            known = set(c.placement.ring.node_ids) | set(c.gossiper.status())
            known.discard(node.node_id)
            gossiper = c.gossiper
            out["peers"] = {peer: {"phi": round(gossiper.phi(peer), 2), "up": gossiper.is_up(peer)}
                            for peer in known}
            figures = c.calls.figures
            out["quorum_latency"] = {op: (h.cumulative(), h.sum_s) for op, h in figures.quorum.items()}
            for peer, calls in figures.peers.items():
                out["peers"].setdefault(peer, {}).update(
                    latency=(calls.latency.cumulative(), calls.latency.sum_s), failures=dict(calls.failures))
            out["gossip"] = {"rounds": c.gossiper.rounds, "exchanges_failed": c.gossiper.exchanges_failed}
            out["rpc_auth"] = {**c.transport.handshake_stats(),
                               "gossip_states_refused": c.gossiper.membership.refused_origin}
        return out

    def _compaction_family(self, namespace: str):
        """(the namespace's spec, the engine's column family holding its keys)."""
        namespaces = self._node.store.namespaces
        try:
            spec = namespaces.named(namespace)
        except ValueError as exc:
            raise AdminRequestError(str(exc)) from None
        return spec, namespaces.family_of(spec)

    def compaction(self, namespace: str) -> dict:
        """How a namespace's keys are compacted on this node now: {"namespace", "family",
        "compaction", the strategy's settings (the engine's names), "sorted_runs"}."""
        spec, family = self._compaction_family(namespace)
        engine = self._node.engine
        runs = engine.stats()["families"][family]["sorted_runs"]
        return {"namespace": spec.name, "family": family, **engine.families[family], "sorted_runs": runs}

    def set_compaction(self, namespace: str, compaction: str, settings: dict[str, Any] | None = None) -> dict:
        """Compact a namespace's LSM tree by another strategy from now on (docs/compaction.md):
        the merges picked from now on, and the tables they and later flushes write, follow it.
        Only on this node, and not stored: the configuration file keeps the strategy a restart
        takes. A namespace without a compaction setting of its own shares the default
        namespace's tree, and needs one (and a restart) first. A setting is named as in the
        configuration (`compaction_window_s`), or without its `compaction_` prefix."""
        spec, family = self._compaction_family(namespace)
        if spec is not self._node.store.namespaces.default and not spec.compaction:
            raise AdminRequestError(
                f"namespace {spec.name!r} shares the default namespace's LSM tree; give it one of its own "
                f"with [namespaces.{spec.name}] compaction = \"...\" in the configuration, and restart the node"
            )
        named = {k if k.startswith("compaction_") else f"compaction_{k}": v for k, v in (settings or {}).items()}
        try:
            strategy = compaction_strategy(compaction, named, "compaction")
            self._node.engine.set_strategy(family, strategy)
        except ConfigError as exc:
            raise AdminRequestError(str(exc)) from None
        return {"namespace": spec.name, "family": family, **describe(strategy)}
