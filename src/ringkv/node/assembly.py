"""Building a node: every part constructed with what it needs, in dependency order.

    clock, identity, engine ─ LocalStore ─┬─ LocalService                   (a cluster of one)
                                          └─ Placement, Liveness, transport, ReplicaCalls,
                                             HintStore, ReadPath, WritePath, Forwarder,
                                             AntiEntropy, HintDelivery, Gossiper, Keyspace,
                                             MembershipManager, Admission, ReplicaService,
                                             ClusterService                  (a cluster member)

The only link made after construction is a subscription: the membership follows the
gossiper's state changes (`Gossiper.subscribe`), and the liveness the calls consult watches the
gossiper's failure detectors (`Liveness.watch`), because the gossiper itself sends through the
calls. `open_node` returns a `Node` whose transport already answers peers; the process starts
its client adapters and then `Node.start`.
"""

from __future__ import annotations

import asyncio
import os
import signal

from ringkv.clock import Clock
from ringkv.cluster.gossip import NodeStatus
from ringkv.cluster.hotkeys import HotKeys
from ringkv.cluster.ring import Member, Ring
from ringkv.errors import ConfigError
from ringkv.net.envelope import MessageCodec
from ringkv.net.transport import TcpTransport, Transport
from ringkv.node.admission import Admission
from ringkv.node.antientropy import AntiEntropy
from ringkv.node.atomic_batches import AtomicBatches
from ringkv.node.batchlog import BatchLog
from ringkv.node.cluster_service import ClusterService, DataPath
from ringkv.node.config import NodeConfig
from ringkv.node.consensus import Acceptor, AcceptorStore, Proposer
from ringkv.node.expiry_filter import ExpiredRecordFilter, RecordExpiry
from ringkv.node.faults import FaultState, FaultyTransport, WanTransport
from ringkv.node.forwarding import Forwarder
from ringkv.node.gossiper import Gossiper, local_state
from ringkv.node.handoff import HintDelivery, HintStore
from ringkv.node.hot_cache import HotCache
from ringkv.node.identity import NodeIdentity
from ringkv.node.keyspace import Keyspace
from ringkv.node.local_service import LocalService
from ringkv.node.local_store import LocalStore
from ringkv.node.membership import (
    MEMBERSHIP_FILE,
    MembershipManager,
    MembershipRecord,
    MoveProgress,
)
from ringkv.node.messages import MESSAGE_TYPES
from ringkv.node.node import ClusterParts, Node, NodeFigures
from ringkv.node.placement import Placement
from ringkv.node.quotas import NamespaceUsage, Quota, QuotaGate, QuotaRefresher
from ringkv.node.read_path import ReadPath
from ringkv.node.replica import Replica
from ringkv.node.replica_calls import Liveness, ReplicaCalls
from ringkv.node.replica_service import ReplicaService
from ringkv.node.score_index import ScoreIndex
from ringkv.node.session_reads import SessionReads
from ringkv.node.write_path import WritePath
from ringkv.service.contract import ServiceLimits
from ringkv.service.levels import ConsistencyLevel, Levels, parse_level
from ringkv.service.session import SessionCodec
from ringkv.storage import Engine, Options
from ringkv.storage.options import MAX_VALUE_BYTES_CEILING

CLUSTER_STATS = ("reads", "replica_reads", "replica_digest_reads", "digest_mismatches", "speculative_reads",
                 "hot_reads_spread", "hot_cache_hits", "writes", "forwarded", "read_repairs",
                 "quorum_failures", "replica_failures", "repairs_dropped", "stand_ins", "hints_taken", "paxos_commands",
                 "paxos_reads", "paxos_chosen", "paxos_leased", "paxos_retries", "paxos_stale_leases", "session_searches",
                 "session_failures", "relays_sent", "relayed_writes", "relays_answered_early")


def data_engine_options(cfg: NodeConfig, clock: Clock, compaction_filter=None, keys=None) -> Options:
    """The options of a node's data engine (`data_dir/engine`); `ringkv admin keys reseal`
    opens it with them too, so its column families keep their strategies and routing."""
    # A namespace with a compaction of its own is a column family of the engine (docs/compaction.md).
    default_compaction, families, router = cfg.namespace_specs().engine_families()
    return Options(
        sync=cfg.sync,
        sync_interval_ms=cfg.sync_interval_ms,
        memtable_bytes=cfg.memtable_bytes,
        block_cache_bytes=cfg.block_cache_bytes,
        # Records carry versions and may hold siblings: the user-value limit is enforced by
        # the store, the engine only bounds the record.
        max_value_bytes=MAX_VALUE_BYTES_CEILING,
        compaction_filter=compaction_filter,
        compaction=default_compaction,
        families=families,
        family_router=router,
        # Always given, so a family can be switched to time_window on the running node.
        expiry_of=RecordExpiry(cfg.tombstone_grace_s * 1000, clustered=bool(cfg.member_list())),
        now_ms=clock.now_ms,  # the clock the filter judges expiry by
        compaction_headroom_percent=cfg.compaction_headroom_percent,
        encryption_keys=keys,
    )


def stop_serving(reason: str) -> None:
    """A node expelled from the cluster (node/membership.py) stops as `ringkv serve` does on
    SIGTERM: drain, flush, exit; its record keeps it from starting again on this data. In a
    process without that handler (a test running nodes in-process) it only stops answering
    as ready (NodeAdmin.health)."""
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None):
        os.kill(os.getpid(), signal.SIGTERM)


async def open_node(config: NodeConfig, clock: Clock | None = None) -> Node:
    cfg = config
    clock = clock or Clock()
    loop = asyncio.get_running_loop()
    os.makedirs(cfg.data_dir, exist_ok=True)
    members = cfg.member_list()
    # The durable membership (node/membership.py): a node that left or was removed does not
    # open its old data at all.
    record = MembershipRecord(os.path.join(cfg.data_dir, MEMBERSHIP_FILE), cfg.node_id)
    problem = record.start_problem(cfg.data_dir)
    if problem is not None:
        raise ConfigError("data_dir", problem)
    expiry = ExpiredRecordFilter(cfg.tombstone_grace_s * 1000, clock, cfg.partitions if members else None)
    identity = NodeIdentity.load_or_create(cfg.data_dir, cfg.node_id)
    namespaces = cfg.namespace_specs()
    keys = cfg.encryption_keys()  # sealing the hints, batch log and paxos engines too
    options = data_engine_options(cfg, clock, expiry, keys)
    # Opening replays the WAL: off the loop, though nothing else runs yet.
    engine = await loop.run_in_executor(None, Engine.open, os.path.join(cfg.data_dir, "engine"), options)
    # Quotas per namespace (node/quotas.py): None when no namespace has one.
    quotas = (QuotaGate(namespaces, NamespaceUsage(cfg.partitions), members=max(1, len(members)))
              if any(Quota(s.max_keys, s.max_bytes, s.max_requests_per_s).any for s in namespaces) else None)
    store = LocalStore(
        Replica(engine, identity.actor, clock), clock,
        namespaces=namespaces,
        sync_always=cfg.sync == "always",
        keys_max_count=cfg.keys_max_count,
        flush_enabled=cfg.flush_enabled,
        expiry_index_max_keys=cfg.expiry_index_max_keys,
        max_value_bytes=cfg.max_value_bytes,
        partitions=cfg.partitions,
        quotas=quotas,
        hot_keys=HotKeys(clock.now_ms, capacity=cfg.hot_keys_capacity, sample_every=cfg.hot_keys_sample_every,
                         half_life_ms=cfg.hot_keys_half_life_ms),
        hot_cache=HotCache(cfg.hot_keys_capacity) if any(s.hot_cache_ms for s in namespaces) else None,
        score_index=ScoreIndex.open(cfg.data_dir, keys),
    )
    await loop.run_in_executor(None, store.load)  # fills the score index too
    moves = MoveProgress()  # the membership manager's, reported by the figures
    figures = NodeFigures(cfg.node_id, identity, engine, store, clock, moves)
    faults = FaultState(clock)
    if not members:
        return Node(cfg, clock, engine, store, LocalService(store), figures, faults, None,
                    system=LocalService(store, namespaces.system))

    # --- a member of a cluster
    me = next(m for m in members if m.node_id == cfg.node_id)
    # The members the record holds; the command line's only for a node whose record knows none.
    members = record.start_members(members, me)
    in_ring = [m for m in members if record.ring_status(m.node_id) in ("normal", "leaving")] or members
    ring = Ring([Member.at(m.node_id, m.rack) for m in in_ring], cfg.partitions, cfg.ring_replication,
                cfg.ring_algorithm)
    placement = Placement(cfg.node_id, ring, namespaces)
    liveness = Liveness()
    transport: Transport = TcpTransport(cfg.node_id, cfg.cluster_name, MessageCodec(MESSAGE_TYPES),
                                        host=me.host, port=me.rpc_port, security=cfg.rpc_security())
    if cfg.fault_injection:
        transport = FaultyTransport(transport, faults)
    if cfg.emulated_wan_delay_ms:
        transport = WanTransport(transport, cfg.emulated_wan_delay_ms,
                                 lambda peer: placement.dc_of(peer) != placement.dc)
    for m in members:
        if m.node_id != cfg.node_id:
            transport.set_peer_address(m.node_id, m.host, m.rpc_port)
    calls = ReplicaCalls(cfg.node_id, transport, liveness, cfg.replica_timeout_ms)
    hints = await loop.run_in_executor(None, lambda: HintStore(
        cfg.data_dir, clock, max_hints=cfg.max_hints, max_hint_window_ms=cfg.max_hint_window_ms,
        policy=namespaces.default.conflict_policy, sync=cfg.sync, namespaces=namespaces, encryption_keys=keys))
    stats = dict.fromkeys(CLUSTER_STATS, 0)
    reads = ReadPath(placement, calls, store, stats, read_repair=cfg.read_repair, fanout=cfg.read_fanout,
                     digests=cfg.read_digests)
    writes = WritePath(placement, calls, store, stats, hints)
    acceptor_states = await loop.run_in_executor(None, lambda: AcceptorStore(cfg.data_dir, cfg.sync, keys))
    acceptor = Acceptor(acceptor_states, store)
    proposer = Proposer(cfg.node_id, identity.actor, placement, calls, store, acceptor, hints, clock, stats)
    # FLUSHALL forgets what would bring a flushed key back: accepted values, leases, hints.
    store.flush_listeners += [acceptor_states.forget_values, proposer.forget_leases, hints.forget]
    forwarder = Forwarder(placement, calls, store, reads, writes, proposer, stats)
    anti_entropy = AntiEntropy(placement, calls, store, clock, interval_ms=max(1, cfg.anti_entropy_interval_ms),
                               wan_bytes_per_s=cfg.anti_entropy_wan_bytes_per_s,
                               completed_ms=expiry.completed_ms)
    handoff = HintDelivery(hints, calls.call, is_up=liveness.is_up, rate_per_s=cfg.hint_delivery_rate_per_s,
                           timeout_ms=cfg.replica_timeout_ms * 4)
    batch_log = await loop.run_in_executor(None, lambda: BatchLog(
        cfg.data_dir, clock, max_entries=cfg.batchlog_max_entries, max_bytes=cfg.batchlog_max_bytes, sync=cfg.sync,
        encryption_keys=keys))
    store.flush_listeners.append(batch_log.forget)
    batches = AtomicBatches(placement, calls, store, writes, batch_log, faults, clock,
                            replay_delay_ms=cfg.batchlog_replay_delay_ms,
                            replay_interval_ms=cfg.batchlog_replay_interval_ms,
                            max_age_ms=cfg.tombstone_grace_s * 1000)

    progress_path = os.path.join(cfg.data_dir, MEMBERSHIP_FILE)
    saved = record.status
    joining = saved == "joining" or (cfg.join and saved is None)
    local_status = NodeStatus.JOINING if joining else NodeStatus.LEAVING if saved == "leaving" else NodeStatus.NORMAL
    address = (me.host, me.rpc_port)
    gossiper = Gossiper(
        local_state(cfg.node_id, clock.now_ms(), address, "", "", me.rack, local_status),
        [m.node_id for m in members], calls.call, clock,
        interval_ms=cfg.gossip_interval_ms, fanout=cfg.gossip_fanout, phi_threshold=cfg.phi_threshold,
        acceptable_pause_ms=cfg.phi_acceptable_pause_ms,
        load=lambda: {"keys": store.live_keys},
        on_up=lambda node: handoff.poke(),
        admit=record.admit)
    # What the record knows of the others (statuses, tombstones) until gossip brings news.
    gossiper.membership.merge(record.known_states(), clock.now_ms())
    liveness.watch(gossiper.is_up, gossiper.phi)
    keyspace = Keyspace(placement, calls, store, figures, gossiper.status)
    membership = MembershipManager(placement, calls, transport, store, anti_entropy, gossiper, clock, members,
                                   settle_s=cfg.membership_settle_ms / 1000, progress_path=progress_path,
                                   moves=moves, record=record, on_expelled=stop_serving)
    admission = Admission(cfg.node_id, cfg.cluster_name, placement, gossiper, membership)
    peers = ReplicaService(placement, store, forwarder, acceptor, gossiper, anti_entropy, hints, stats, figures,
                           batches=batches, refused=record.refused)
    await transport.start(peers.handle, peers.handle_now, peers.before_reply)
    if transport.address is not None:
        gossiper.membership.update_local(rpc_host=transport.address[0], rpc_port=transport.address[1])
    local = gossiper.membership.local
    record.set_own(str(local.status), clock.now_ms(), rpc=f"{local.rpc_host}:{local.rpc_port}", rack=me.rack,
                   generation=local.generation)

    limits = ServiceLimits(cfg.max_value_bytes, cfg.keys_max_count, cfg.flush_enabled)
    security = cfg.rpc_security()
    sessions = SessionCodec(cfg.cluster_name, security.secret, max_keys=cfg.session_max_keys,
                            max_token_bytes=cfg.session_max_token_bytes)
    session_reads = SessionReads(reads, hints, stats, wait_ms=cfg.session_wait_ms)
    path = DataPath(cfg.node_id, clock, store, placement, reads, writes, forwarder, keyspace, limits, batches,
                    sessions=sessions, session_reads=session_reads)
    levels = Levels(parse_level(cfg.read_consistency, "read_consistency"),
                    parse_level(cfg.write_consistency, "write_consistency"), False)
    service = ClusterService(path).at(levels.r, levels.w)
    # The users' namespace (security/directory.py), always at QUORUM whatever the defaults.
    system = ClusterService(path, Levels(ConsistencyLevel.QUORUM, ConsistencyLevel.QUORUM, False), namespaces.system)
    # ... and at ONE, read only when no quorum answers at start (security/access.py).
    system_one = ClusterService(path, Levels(ConsistencyLevel.ONE, ConsistencyLevel.QUORUM, False), namespaces.system)
    refresher = None
    if quotas is not None:
        refresher = QuotaRefresher(quotas, cfg.node_id, namespaces, keyspace.node_infos, lambda n: placement.prefs_for(n),
                                   lambda: len(placement.ring.node_ids), cfg.quota_refresh_interval_ms)
    parts = ClusterParts(transport, placement, calls, reads, hints, acceptor_states, handoff, gossiper, anti_entropy,
                         membership, admission, keyspace, stats, joining, batches, refresher)
    return Node(cfg, clock, engine, store, service, figures, faults, parts, system=system, system_one=system_one)
