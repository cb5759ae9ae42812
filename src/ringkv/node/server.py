"""The node process: `ringkv serve`.

One uvloop event loop runs the RESP server, the HTTP server and the background cycles (active
expiry, loop-stall monitor). The loop never waits on the disk: WAL fsyncs under
`sync="always"` are awaited in a thread pool (group commit inside the engine), and flushes and
compactions run in the engine's worker processes.

SIGTERM or SIGINT: stop accepting connections, let in-flight requests finish (up to
`shutdown_drain_ms`), close the servers, flush the memtable and close the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time

from ringkv.api.resp_server import RespLimits, RespServer
from ringkv.node.config import NodeConfig
from ringkv.node.coordinator import LocalCoordinator
from ringkv.node.handoff import HintDelivery, HintStore
from ringkv.node.identity import NodeIdentity
from ringkv.node.replica import Replica, now_ms
from ringkv.storage import Engine, Options
from ringkv.storage.options import MAX_VALUE_BYTES_CEILING
from ringkv.versioning import record as rec
from ringkv.versioning.record import ConflictPolicy

log = logging.getLogger("ringkv.node")

EXPIRY_CYCLE_MS = 100
STALL_PROBE_MS = 50


class ExpiredRecordFilter:
    """The engine's compaction filter for versioned records (runs in the worker process).

    Drops a record once every sibling is an expired value, or once every sibling is dead and
    the newest death is older than the tombstone grace period (so deletes keep shadowing older
    copies on other replicas for that long). In a cluster (`partitions` given), a record
    holding a tombstone is kept until, besides, an anti-entropy round of its partition that
    started after its grace period ended has completed (cluster/merkle.gc_horizon_ms): only
    then is every replica known to hold the delete, so dropping it cannot bring the value back.
    `completed_ms` (partition -> start of its last completed round) is updated by the node and
    travels to the worker with each compaction job, as the filter is pickled per job.
    """

    def __init__(self, tombstone_grace_ms: int, partitions: int | None = None):
        self.tombstone_grace_ms = tombstone_grace_ms
        self.partitions = partitions
        self.completed_ms: dict[int, int] = {}

    def __call__(self, key: bytes, value: bytes) -> bool:
        try:
            record = rec.decode_record(value)
        except Exception:
            return True  # never drop what we cannot read: reads will report the corruption
        now = now_ms()
        if all(s.value is not None for s in record.siblings):
            return not record.is_dead(now)
        if not record.is_dead(now, self.tombstone_grace_ms):
            return True
        if self.partitions is None:
            return False
        partition = int.from_bytes(key[:8], "big") >> (64 - (self.partitions.bit_length() - 1))
        started = self.completed_ms.get(partition)
        if started is None:
            return True  # no completed round yet: keep the tombstone
        deaths = [s.dead_since_ms() for s in record.siblings]
        newest = max(d for d in deaths if d is not None)
        return newest > started - self.tombstone_grace_ms


class StallMonitor:
    """Measures how late the loop runs a callback scheduled every STALL_PROBE_MS."""

    def __init__(self) -> None:
        self.max_stall_ms = 0.0
        self.recent: list[float] = []  # the 8 longest stalls, ms
        self.samples = 0
        self.over_5ms = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = STALL_PROBE_MS / 1000
        while True:
            start = loop.time()
            await asyncio.sleep(interval)
            late_ms = (loop.time() - start - interval) * 1000
            self.samples += 1
            if late_ms > 5:
                self.over_5ms += 1
            if late_ms > self.max_stall_ms:
                self.max_stall_ms = late_ms
            if len(self.recent) < 8 or late_ms > self.recent[-1]:
                self.recent.append(late_ms)
                self.recent.sort(reverse=True)
                del self.recent[8:]

    def info(self) -> dict:
        return {
            "loop_stall_max_ms": round(self.max_stall_ms, 2),
            "loop_stalls_over_5ms": self.over_5ms,
            "loop_stall_samples": self.samples,
            "loop_stall_longest_ms": ",".join(f"{x:.1f}" for x in self.recent),
        }


class Node:
    def __init__(self, config: NodeConfig):
        self.config = config
        self.engine: Engine | None = None
        self.coordinator: LocalCoordinator | None = None
        self.local: LocalCoordinator | None = None
        self.cluster = None
        self.transport = None
        self.rpc_address: tuple[str, int] | None = None
        self.hints = None
        self.handoff = None
        self.gossiper = None
        self.anti_entropy = None
        self.membership = None
        from ringkv.node.faults import FaultState

        self.faults = FaultState()
        self.resp: RespServer | None = None
        self.stalls = StallMonitor()
        self.resp_address: tuple[str, int] | None = None
        self.http_address: tuple[str, int] | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: list[asyncio.Task] = []
        self._http = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        cfg = self.config
        os.makedirs(cfg.data_dir, exist_ok=True)
        self.compaction_filter = ExpiredRecordFilter(
            cfg.tombstone_grace_s * 1000, cfg.partitions if cfg.member_list() else None)
        identity = NodeIdentity.load_or_create(cfg.data_dir, cfg.node_id)
        options = Options(
            sync=cfg.sync,
            sync_interval_ms=cfg.sync_interval_ms,
            memtable_bytes=cfg.memtable_bytes,
            block_cache_bytes=cfg.block_cache_bytes,
            # Records carry versions and may hold siblings: the user-value limit is enforced by
            # the coordinator, the engine only bounds the record.
            max_value_bytes=MAX_VALUE_BYTES_CEILING,
            compaction_filter=self.compaction_filter,
        )
        loop = asyncio.get_running_loop()
        # Opening replays the WAL: off the loop, though nothing else runs yet.
        self.engine = await loop.run_in_executor(None, Engine.open, os.path.join(cfg.data_dir, "engine"), options)
        replica = Replica(self.engine, identity.actor)
        self.coordinator = LocalCoordinator(
            replica,
            policy=ConflictPolicy(cfg.conflict_policy),
            sync_always=cfg.sync == "always",
            keys_max_count=cfg.keys_max_count,
            flush_enabled=cfg.flush_enabled,
            expiry_index_max_keys=cfg.expiry_index_max_keys,
            max_value_bytes=cfg.max_value_bytes,
            partitions=cfg.partitions,
            namespaces=cfg.namespace_specs(),
        )
        self.local = self.coordinator
        await loop.run_in_executor(None, self.coordinator.load)
        self.identity = identity
        self.started_ms = now_ms()
        members = cfg.member_list()
        if members:
            await self._join_cluster(members)
        limits = RespLimits(
            max_bulk_bytes=cfg.max_value_bytes + 64 * 1024,
            max_args=cfg.max_args,
            max_inline_bytes=cfg.max_inline_bytes,
            max_query_buffer_bytes=max(cfg.max_query_buffer_bytes, cfg.max_value_bytes + 64 * 1024),
            max_connections=cfg.max_connections,
            max_output_buffer_bytes=cfg.max_output_buffer_bytes,
        )
        self.resp = RespServer(
            self.coordinator,
            limits,
            info_sources={"memory": self._memory_info, "persistence": self._engine_info, "ringkv": self._ringkv_info},
            status_source=self.status,
            repair_source=self.repair,
            fault_source=self.fault if cfg.fault_injection else None,
            admin_source=self.admin,
        )
        server = await loop.create_server(self.resp.protocol_factory, cfg.host, cfg.resp_port, backlog=1024)
        self._servers.append(server)
        self.resp_address = server.sockets[0].getsockname()[:2]
        if cfg.http_enabled:
            from ringkv.api.http import start_http

            self._http, self.http_address = await start_http(self, cfg.host, cfg.http_port)
        if self.cluster is not None:
            self._start_gossip()
        self._tasks.append(asyncio.create_task(self._expiry_loop(), name="ringkv-expiry"))
        self._tasks.append(asyncio.create_task(self.stalls.run(), name="ringkv-stall-monitor"))
        log.info(
            "node %s (actor %s) serving RESP on %s:%d%s, data in %s",
            cfg.node_id,
            identity.actor.decode(),
            *self.resp_address,
            f", HTTP on {self.http_address[0]}:{self.http_address[1]}" if self.http_address else "",
            cfg.data_dir,
        )

    async def _join_cluster(self, members) -> None:
        """Static membership: build the ring from `members`, listen for peers, and coordinate
        through the cluster from now on."""
        from ringkv.cluster.quorum import parse_level
        from ringkv.cluster.ring import Member, Ring
        from ringkv.net.messages import MessageCodec
        from ringkv.net.transport import TcpTransport
        from ringkv.node.cluster import Cluster, ClusterCoordinator
        from ringkv.node.messages import MESSAGE_TYPES

        cfg = self.config
        ring = Ring([Member(m.node_id, rack=m.rack) for m in members], cfg.partitions, cfg.ring_replicas)
        me = next(m for m in members if m.node_id == cfg.node_id)
        transport = TcpTransport(cfg.node_id, cfg.cluster_name, MessageCodec(MESSAGE_TYPES),
                                 host=me.host, port=me.rpc_port)
        if cfg.fault_injection:
            from ringkv.node.faults import FaultyTransport

            transport = FaultyTransport(transport, self.faults)
        for m in members:
            if m.node_id != cfg.node_id:
                transport.set_peer_address(m.node_id, m.host, m.rpc_port)
        loop = asyncio.get_running_loop()
        self.hints = await loop.run_in_executor(None, lambda: HintStore(
            cfg.data_dir, max_hints=cfg.max_hints, max_hint_window_ms=cfg.max_hint_window_ms,
            policy=ConflictPolicy(cfg.conflict_policy), sync=cfg.sync,
            namespaces=self.local.namespaces))
        self.cluster = Cluster(cfg.node_id, self.local, ring, transport,
                               replica_timeout_ms=cfg.replica_timeout_ms, read_repair=cfg.read_repair,
                               info=self._node_info, hints=self.hints, namespaces=self.local.namespaces)
        self.handoff = HintDelivery(self.hints, self.cluster.call, rate_per_s=cfg.hint_delivery_rate_per_s,
                                    timeout_ms=cfg.replica_timeout_ms * 4)
        self._tasks.append(asyncio.create_task(self.handoff.run(), name="ringkv-handoff"))
        self.coordinator = ClusterCoordinator(self.cluster).at(
            parse_level(cfg.read_consistency, "read_consistency"),
            parse_level(cfg.write_consistency, "write_consistency"))
        await transport.start(self.cluster.handle, self.cluster.handle_now, self.cluster.before_reply)
        self.rpc_address = transport.address
        self.transport = transport
        log.info("node %s joined cluster %s of %d members (N=%d, %d partitions), RPC on %s:%d",
                 cfg.node_id, cfg.cluster_name, len(members), cfg.ring_replicas, cfg.partitions,
                 *self.rpc_address)

    def _start_gossip(self) -> None:
        from ringkv.cluster.gossip import NodeStatus
        from ringkv.node.gossiper import Gossiper, local_state
        from ringkv.node.membership import MembershipManager

        cfg = self.config

        def addr(a):
            return f"{a[0]}:{a[1]}" if a else ""

        me = next(m for m in cfg.member_list() if m.node_id == cfg.node_id)
        self.membership = MembershipManager(
            self, cfg.member_list(), settle_s=cfg.membership_settle_ms / 1000,
            progress_path=os.path.join(cfg.data_dir, "membership.json"))
        progress = self.membership._load_progress().get("status")
        joining = progress == "joining" or (cfg.join and progress not in ("normal", "left"))
        status = NodeStatus.JOINING if joining else NodeStatus.NORMAL
        state = local_state(cfg.node_id, now_ms(), self.rpc_address, addr(self.resp_address),
                            addr(self.http_address), me.rack, status)
        self.gossiper = Gossiper(
            state, [m.node_id for m in cfg.member_list()], self.cluster.call,
            interval_ms=cfg.gossip_interval_ms, fanout=cfg.gossip_fanout, phi_threshold=cfg.phi_threshold,
            acceptable_pause_ms=cfg.phi_acceptable_pause_ms,
            load=lambda: {"keys": self.local._live_keys},
            on_up=lambda node: self.handoff.poke(), on_change=self.membership.on_gossip)
        self.cluster.gossiper = self.gossiper
        self.handoff.is_up = self.gossiper.is_up
        self._tasks.append(asyncio.create_task(self.gossiper.run(), name="ringkv-gossip"))
        from ringkv.node.antientropy import AntiEntropy

        self.anti_entropy = AntiEntropy(self.cluster, interval_ms=max(1, cfg.anti_entropy_interval_ms),
                                        is_up=self.gossiper.is_up)
        # Completed rounds gate tombstone collection (ExpiredRecordFilter): the same dict.
        self.anti_entropy.stats.completed_ms = self.compaction_filter.completed_ms
        self.cluster.anti_entropy = self.anti_entropy
        if cfg.anti_entropy_interval_ms:
            self._tasks.append(asyncio.create_task(self.anti_entropy.run(), name="ringkv-anti-entropy"))
        self.membership.refresh()
        self._tasks.append(asyncio.create_task(self.membership.run(), name="ringkv-membership"))
        if joining:
            self._tasks.append(asyncio.create_task(self.membership.join(), name="ringkv-join"))

    async def admin(self, argv: list[bytes]) -> dict:
        """RINGKV.ADMIN DECOMMISSION | REMOVE node | JOIN seed... | CLEANUP | STATUS
        (node/membership.py)."""
        if self.membership is None:
            raise ValueError("a cluster of one has no membership to change")
        what = argv[0].lower() if argv else b""
        if what == b"decommission" and len(argv) == 1:
            return await self.membership.decommission()
        if what == b"remove" and len(argv) == 2:
            return self.membership.remove(argv[1].decode())
        if what == b"status" and len(argv) == 1:
            return self.membership.status()
        if what == b"cleanup" and len(argv) == 1:
            return await self.membership.cleanup()
        if what == b"join" and len(argv) >= 2:
            return self.membership.add_seeds([a.decode() for a in argv[1:]])
        raise ValueError("expected DECOMMISSION, REMOVE node, JOIN seed..., CLEANUP or STATUS")

    def fault(self, argv: list[bytes]) -> str:
        """RINGKV.FAULT PARTITION node... | HEAL | CLOCK_SKEW ms (node/faults.py)."""
        from ringkv.node.faults import SkewedClock

        if not argv:
            raise ValueError("expected PARTITION node..., HEAL or CLOCK_SKEW ms")
        what = argv[0].lower()
        if what == b"partition":
            self.faults.blocked |= {a.decode() for a in argv[1:]}
            return f"blocked {','.join(sorted(self.faults.blocked))}"
        if what == b"heal":
            self.faults.blocked.clear()
            return "healed"
        if what == b"clock_skew" and len(argv) == 2:
            skew = int(argv[1])
            replica = self.local.replica
            if not isinstance(replica.clock, SkewedClock):
                replica.clock = SkewedClock(replica.clock)
            replica.clock.skew_ms = skew
            return f"clock skew {skew} ms"
        raise ValueError("expected PARTITION node..., HEAL or CLOCK_SKEW ms")

    async def repair(self) -> dict:
        """`ringkv repair`: anti-entropy over every partition this node holds, now."""
        if self.anti_entropy is None:
            return {"partitions": 0, "comparisons": 0, "note": "a cluster of one has nothing to repair"}
        return await self.anti_entropy.repair_all()

    def _node_info(self):
        from ringkv.node.messages import NodeInfoReply

        def addr(a):
            return f"{a[0]}:{a[1]}" if a else ""

        return NodeInfoReply(
            self.config.node_id, self.identity.actor.decode(), addr(self.resp_address),
            addr(self.http_address), self.local._live_keys, self.local.partition_keys(),
            self.engine.stats()["bytes_on_disk"], now_ms() - self.started_ms,
            self.local.namespace_partition_keys())

    async def status(self) -> dict:
        """Members, partitions and keys per node (RINGKV.STATUS, `ringkv cluster status`)."""
        if self.cluster is not None:
            doc = await self.coordinator.cluster_status()
            if self.membership is not None:
                doc["membership"] = self.membership.status()
            return doc
        info = self._node_info()
        return {
            "cluster": {"partitions": self.config.partitions, "replicas": 1, "members": 1},
            "nodes": [{
                "node_id": info.node_id, "status": "up", "primary_partitions": self.config.partitions,
                "replica_partitions": self.config.partitions, "share": 1.0, "actor": info.actor,
                "resp": info.resp_address, "http": info.http_address, "keys": info.live_keys,
                "bytes_on_disk": info.bytes_on_disk, "uptime_ms": info.uptime_ms,
            }],
        }

    async def _expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_CYCLE_MS / 1000)
            try:
                self.local.expire_cycle()
            except Exception:
                log.exception("active expiry cycle failed")

    def _memory_info(self) -> dict:
        import resource

        st = self.engine.stats()
        return {
            "used_memory_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "memtable_bytes": st["memtable_bytes"],
            "block_cache_used_bytes": st["block_cache"]["used_bytes"],
            "block_cache_hit_rate": round(st["block_cache"]["hit_rate"], 4),
            "resident_index_bloom_bytes": st["resident_bytes"],
        }

    def _engine_info(self) -> dict:
        st = self.engine.stats()
        return {
            "sync_policy": self.config.sync,
            "sstables": st["tables"],
            "bytes_on_disk": st["bytes_on_disk"],
            "flushes": st["flushes"],
            "compactions": st["compactions"],
            "write_amplification": round(st["write_amplification"], 3),
            "write_stalls": st["write_stalls"],
            "background_error": st["background_error"] or "",
        }

    def _ringkv_info(self) -> dict:
        info = {"node_id": self.config.node_id, **self.stalls.info()}
        if self.cluster is not None:
            info["cluster_name"] = self.config.cluster_name
            info["cluster_members"] = len(self.cluster.ring.node_ids)
            info["cluster_replicas"] = self.cluster.ring.replicas
            info["rpc_address"] = f"{self.rpc_address[0]}:{self.rpc_address[1]}"
            info.update({f"cluster_{k}": v for k, v in self.cluster.stats.items()})
            info.update(self.hints.stats)
            if self.gossiper is not None:
                info["gossip_rounds"] = self.gossiper.rounds
                info["gossip_exchanges_failed"] = self.gossiper.exchanges_failed
                info["nodes_down"] = ",".join(sorted(self.gossiper.down()))
            if self.anti_entropy is not None:
                st = self.anti_entropy.stats
                info.update(ae_comparisons=st.comparisons, ae_in_sync=st.in_sync, ae_keys_pushed=st.keys_pushed,
                            ae_keys_pulled=st.keys_pulled, ae_traffic_bytes=st.traffic_bytes,
                            ae_failures=st.failures, ae_partitions_completed=len(st.completed_ms))
        return info

    def request_stop(self) -> None:
        self._stopping.set()

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    async def stop(self) -> None:
        """Drain and close: no acknowledged write is lost, the memtable is flushed."""
        for server in self._servers:
            server.close()
        # HTTP drains in parallel with RESP: shutdown takes one drain period, not two.
        http_closed = asyncio.ensure_future(self._http.close()) if self._http is not None else None
        deadline = time.monotonic() + self.config.shutdown_drain_ms / 1000
        while self.resp and any(c._pending for c in self.resp.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self.resp:
            for conn in list(self.resp.connections):
                conn.closing = True
                if conn.transport is not None:
                    conn.transport.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if http_closed is not None:
            await http_closed
        loop = asyncio.get_running_loop()
        if self.cluster is not None:
            await self.cluster.close()
        if self.transport is not None:
            await self.transport.close()
        if self.hints is not None:
            await loop.run_in_executor(None, self.hints.close)
        if self.local is not None:
            self.local.close()
        if self.engine is not None:
            await loop.run_in_executor(None, self._close_engine)
        log.info("node %s stopped", self.config.node_id)

    def _close_engine(self) -> None:
        self.engine.flush()
        self.engine.close()


# The cyclic garbage collector, tuned for a server (measured on a 3-node cluster under
# redis-benchmark SET load, 2026-11-23): with CPython's defaults a full collection walked every
# object the imports made (FastAPI, pydantic, uvicorn...) and paused a node for up to 77 ms,
# eight times in a 16-second run, which is most of the cluster's p99. Freezing what exists once
# the node has started takes those objects out of every later collection (pauses fell to 4-7
# ms), and a larger first-generation threshold stops request bursts from starting collections
# at all: a request frees what it allocates, and the collector only runs once 20,000 more
# container objects are alive than at the last collection. Cycles are still collected.
GC_GEN0_THRESHOLD = 20_000


def _settle_garbage_collector() -> None:
    import gc

    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


async def serve(config: NodeConfig) -> None:
    node = Node(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.request_stop)
    await node.start()
    _settle_garbage_collector()
    print(
        f"ringkv node {config.node_id} ready: RESP {node.resp_address[0]}:{node.resp_address[1]}"
        + (f", HTTP http://{node.http_address[0]}:{node.http_address[1]}" if node.http_address else ""),
        flush=True,
    )
    await node.wait_stopped()
    await node.stop()


def run(config: NodeConfig) -> None:
    import uvloop

    logging.basicConfig(
        level=getattr(logging, config.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    profile_out = os.environ.get("RINGKV_PROFILE_OUT")
    if not profile_out:
        uvloop.run(serve(config))
        return
    # For benchmarks: a cProfile of the whole node, written at a clean stop (SIGTERM).
    import cProfile

    profiler = cProfile.Profile(time.process_time)  # CPU time: idle waits do not count
    profiler.enable()
    try:
        uvloop.run(serve(config))
    finally:
        profiler.disable()
        profiler.dump_stats(profile_out)
