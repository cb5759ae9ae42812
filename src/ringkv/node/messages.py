"""The node-to-node messages of the cluster protocol (bodies of net.envelope.Request/Response).

Records travel as their stored bytes (versioning/record.py's encoding), so a replica answers a
read with what its engine returned, without decoding it, and stores an incoming record after
one merge. Keys travel as storage keys (token ‖ namespace ‖ key, node/replica.py), so the
receiver never hashes. Every type is tagged and array-like (net.envelope.MessageCodec); new
fields may only be appended, with defaults.
"""

from __future__ import annotations

from hashlib import sha256
from typing import Any

import msgspec

from ringkv.cluster.gossip import NodeState
from ringkv.node.commands import KeyCommand


class ReplicaGet(msgspec.Struct, tag="ReplicaGet", array_like=True):
    """Read one record from the replica. Reply: ReplicaRecord."""

    skey: bytes


class ReplicaRecord(msgspec.Struct, tag="ReplicaRecord", array_like=True):
    """A replica's stored record of a key (None: it has none)."""

    record: bytes | None


class ReplicaGetDigest(msgspec.Struct, tag="ReplicaGetDigest", array_like=True):
    """A digest read of one record (docs/cluster.md, "Digest reads"). `known`: the digest
    (`record_digest`) of the record the coordinator holds, or None when it holds none yet.
    Reply: ReplicaDigest, the digest of the replica's record, when it is `known` or `known` is
    None; otherwise ReplicaRecord, the record itself, so that a replica that differs costs no
    second round trip."""

    skey: bytes
    known: bytes | None


class ReplicaDigest(msgspec.Struct, tag="ReplicaDigest", array_like=True):
    digest: bytes


# The digest of a record in ReplicaGetDigest and ReplicaDigest: SHA-256 of its stored bytes,
# the first 16 bytes; no record, b"". Two replicas' digests match exactly when their records
# are the same bytes, which is when a read counts them the same (node/read_path.py). SHA-256
# rather than BLAKE2b: processors with SHA extensions (x86 since about 2017, ARMv8) hash it
# twice as fast, 6-7 us for 10 KB against 12 (docs/benchmarks/cluster.md, "Digest reads").
DIGEST_BYTES = 16


def record_digest(record: bytes | None) -> bytes:
    if record is None:
        return b""
    return sha256(record).digest()[:DIGEST_BYTES]


class ReplicaGetMany(msgspec.Struct, tag="ReplicaGetMany", array_like=True):
    """Read several records from the replica (MGET, EXISTS): at most MAX_KEYS_PER_GET_MANY.
    Reply: ReplicaRecords, in the same order."""

    skeys: list[bytes]


class ReplicaRecords(msgspec.Struct, tag="ReplicaRecords", array_like=True):
    records: list[bytes | None]


MAX_KEYS_PER_GET_MANY = 1000
MAX_KEYS_PER_PUT_MANY = 1000
MAX_BYTES_PER_PUT_MANY = 4 * 1024 * 1024


class ReplicaPut(msgspec.Struct, tag="ReplicaPut", array_like=True):
    """Merge a record into the replica's copy (replication, read repair). Reply: ReplicaAck
    once it is in the replica's log (and fsynced under sync=always).

    With `hint_for`, the receiver is a stand-in (sloppy quorum): it keeps the record as a hint
    for that node, to deliver when it is back, and does not store it as its own data."""

    skey: bytes
    record: bytes
    hint_for: str = ""


class ReplicaPutMany(msgspec.Struct, tag="ReplicaPutMany", array_like=True):
    """ReplicaPut of several keys of one replica set (MSET, atomic batches): at most
    MAX_KEYS_PER_PUT_MANY records, MAX_BYTES_PER_PUT_MANY bytes of them in all (a larger single
    record goes alone; an atomic batch's part goes whole, up to MAX_ATOMIC_BATCH_BYTES). The
    replica applies them in one WriteBatch: all or none reach its log. Reply: ReplicaAck once
    every one is in the replica's log."""

    records: list[tuple[bytes, bytes]]  # (storage key, record)


class ReplicaAck(msgspec.Struct, tag="ReplicaAck", array_like=True):
    ok: bool = True


MAX_RELAY_TARGETS = 15  # a preference list's replicas, less the relay itself


class ReplicaPutRelay(msgspec.Struct, tag="ReplicaPutRelay", array_like=True):
    """A write sent once to another datacenter (docs/multi-dc.md): merge `record` here as
    ReplicaPut does, then send it on to `targets`, the key's other replicas in this datacenter
    (at most MAX_RELAY_TARGETS). Reply: RelayReply, once `enough` of this datacenter's replicas
    hold it (the relay itself counting as one), or every target answered or timed out; 0 means
    every target (ALL, QUORUM across datacenters, a session write: the coordinator counts each
    answer). The relay keeps a hint for each target that fails, before or after it replied."""

    skey: bytes
    record: bytes
    targets: list[str]
    enough: int = 0


class RelayReply(msgspec.Struct, tag="RelayReply", array_like=True):
    """Which of a relay's targets hold the record (the relay itself included), why the others
    do not ([node, reason] pairs), and which had not answered when `enough` had (`pending`:
    the relay goes on sending to them, and keeps a hint for each that fails)."""

    acked: list[str]
    failed: list[list[str]]
    pending: list[str] = msgspec.field(default_factory=list)


class Forward(msgspec.Struct, tag="Forward", array_like=True):
    """Run a key's write command on this replica, as its coordinator (read-modify-write
    commands, and writes that reached a node that holds no replica of the key). Reply:
    ForwardReply. `r`/`w` are the levels the client asked for, resolved to counts;
    `w_level` names a datacenter write level (local_quorum, ...), which the replica
    replicates at per datacenter, its own datacenter the local one ("": a count)."""

    namespace: bytes
    key: bytes
    command: KeyCommand
    r: int
    w: int
    strict: bool = False  # refuse stand-ins (sloppy quorum) when replicating
    w_level: str = ""


class ForwardReply(msgspec.Struct, tag="ForwardReply", array_like=True):
    """The command's result, or the error the client is to see (`kind` is the Redis error
    prefix, `status` the HTTP status, `quorum` true for a QuorumError)."""

    result: Any = None
    error: str = ""
    kind: str = "ERR"
    status: int = 400
    quorum: bool = False


class ScanRange(msgspec.Struct, tag="ScanRange", array_like=True):
    """One page of keys whose tokens lie in [start_token, end_token]. Reply: ScanPage."""

    namespace: bytes
    start_token: int
    end_token: int
    count: int
    match: bytes | None


class ScanPage(msgspec.Struct, tag="ScanPage", array_like=True):
    """`next_token` is where to resume inside the range, None when the range is done."""

    keys: list[bytes]
    examined: int
    next_token: int | None


class NodeInfo(msgspec.Struct, tag="NodeInfo", array_like=True):
    """Ask a node for its figures. Reply: NodeInfoReply."""


class NodeInfoReply(msgspec.Struct, tag="NodeInfoReply", array_like=True):
    node_id: str
    actor: str
    resp_address: str
    http_address: str
    live_keys: int
    partition_keys: list[int]  # live keys per ring partition, for the partitions it holds
    bytes_on_disk: int
    uptime_ms: int
    # partition_keys of every namespace but the default (which partition_keys counts), by name
    namespace_partition_keys: dict[str, list[int]] = msgspec.field(default_factory=dict)
    rss_bytes: int = 0  # the node process's resident memory (0: unknown)
    # The partition moves of its current or last membership change (node/membership.py
    # MoveProgress), so every member's status shows a joining node's progress.
    move_kind: str = ""
    move_phase: str = ""
    move_partitions_total: int = 0
    move_partitions_done: int = 0
    # Bytes of live keys and values per ring partition, by namespace name ("" for the default
    # namespace): what the quotas of other nodes estimate a namespace's size from (node/quotas.py).
    namespace_partition_bytes: dict[str, list[int]] = msgspec.field(default_factory=dict)


class FlushAll(msgspec.Struct, tag="FlushAll", array_like=True):
    """FLUSHALL on this node's replica. Reply: FlushAllReply."""


class FlushAllReply(msgspec.Struct, tag="FlushAllReply", array_like=True):
    removed: int


class GossipSyn(msgspec.Struct, tag="GossipSyn", array_like=True):
    """Gossip, first step: what the caller holds, as (node_id, generation, version) per node.
    Reply: GossipAck."""

    digest: list[tuple[str, int, int]]


class GossipAck(msgspec.Struct, tag="GossipAck", array_like=True):
    """States the caller lacks or holds older, and the nodes whose states we want."""

    states: list[NodeState]
    request: list[str]


class GossipStates(msgspec.Struct, tag="GossipStates", array_like=True):
    """Gossip, last step: the states the peer asked for. Reply: ReplicaAck."""

    states: list[NodeState]


class AeDigests(msgspec.Struct, tag="AeDigests", array_like=True):
    """Anti-entropy: the digests at `level` of the descendants of `parents` (at
    `parents_level`) in the responder's Merkle tree of `partition` (cluster/merkle.py).
    `fresh`: rebuild the tree first (the first request of a comparison). Reply: AeDigestsReply."""

    partition: int
    level: int
    parents_level: int
    parents: list[int]
    fresh: bool = False
    # Compare only keys of namespaces of these layouts ("3", "dc1=2;dc2=1"; None: all): those
    # both replicas hold (node/antientropy.py, cluster/ring.py's Layout).
    layouts: list[str] | None = None


class AeDigestsReply(msgspec.Struct, tag="AeDigestsReply", array_like=True):
    digests: bytes  # merkle.pack_digests: 12 bytes each


class AeList(msgspec.Struct, tag="AeList", array_like=True):
    """Anti-entropy: the (storage key, record digest) pairs under tree nodes (level, index).
    Reply: AeListReply."""

    partition: int
    nodes: list[list[int]]
    layouts: list[str] | None = None  # as in AeDigests


class AeListReply(msgspec.Struct, tag="AeListReply", array_like=True):
    entries: list[tuple[bytes, int]]


class Repair(msgspec.Struct, tag="Repair", array_like=True):
    """Run anti-entropy over every partition the receiver holds. Reply: RepairReply."""


class RepairReply(msgspec.Struct, tag="RepairReply", array_like=True):
    summary: dict[str, Any]


class SyncPartition(msgspec.Struct, tag="SyncPartition", array_like=True):
    """A membership move: compare `partition` with each (source, layouts) in turn, over the
    keys AeDigests' layouts says, receiving what the receiver lacks. Reply: SyncPartitionReply."""

    partition: int
    sources: list[tuple[str, list[str] | None]]


class SyncPartitionReply(msgspec.Struct, tag="SyncPartitionReply", array_like=True):
    failed: dict[str, str]  # source -> why its comparison failed
    pulled: int
    pushed: int


class PaxosPrepare(msgspec.Struct, tag="PaxosPrepare", array_like=True):
    """Consensus, phase 1, for one register (node/consensus.py): promise `ballot`. Reply:
    PaxosPromise. `skey` is the register's key: the key itself, or for keys with a hash tag
    the tag's group register; then `keys` names the storage keys (of that tag) whose records
    the promise carries."""

    skey: bytes
    ballot: tuple[int, str]
    keys: list[bytes] = []


class PaxosPromise(msgspec.Struct, tag="PaxosPromise", array_like=True):
    """`ok`: promised, with what the acceptor accepted last and knows committed, and its
    stored record of the key (the read folded into the prepare). Else `promised` is the
    higher ballot it promised before."""

    ok: bool
    promised: tuple[int, str]
    accepted: tuple[int, str] = (0, "")
    value: bytes | None = None
    committed: tuple[int, str] = (0, "")
    record: bytes | None = None


class PaxosPropose(msgspec.Struct, tag="PaxosPropose", array_like=True):
    """Consensus, phase 2: accept `value` (an encoded record) at `ballot`. With `base` (the
    encoded clock the proposer built the value on, sent when it skipped phase 1), refuse if
    the stored record holds a write the base has not seen. Reply: PaxosAccepted."""

    skey: bytes
    ballot: tuple[int, str]
    value: bytes
    base: bytes | None = None


class PaxosAccepted(msgspec.Struct, tag="PaxosAccepted", array_like=True):
    """`ok`: accepted. Else `promised` is the higher ballot it promised, or `stale` says the
    stored record has a write the proposal's base had not seen."""

    ok: bool
    promised: tuple[int, str] = (0, "")
    stale: bool = False


class PaxosCommit(msgspec.Struct, tag="PaxosCommit", array_like=True):
    """The value of `ballot` is chosen: store `record` as this replica's data (merged) and
    forget the accepted value it supersedes. Reply: ReplicaAck."""

    skey: bytes
    ballot: tuple[int, str]
    record: bytes


class AtomicPart(msgspec.Struct, tag="AtomicPart", array_like=True):
    """Run one replica set's part of an atomic batch here, a replica of every key of it
    (docs/atomic-batches.md): write the items in one WriteBatch stamped `timestamp` (0: the
    receiver chooses it), then replicate them in one ReplicaPutMany per other replica and wait
    for `w`. Reply: AtomicPartReply. At most MAX_ATOMIC_BATCH_ITEMS items."""

    namespace: bytes
    items: list[tuple[bytes, bytes, int]]  # (key, value, expire_at_ms)
    timestamp: int
    w: int
    strict: bool = False
    catch_up: bool = False  # a replay: merge the other replicas' copies of the keys in first


class AtomicPartReply(msgspec.Struct, tag="AtomicPartReply", array_like=True):
    """The part's timestamp once `w` replicas hold it; or the error (as ForwardReply's)."""

    timestamp: int = 0
    error: str = ""
    kind: str = "ERR"
    status: int = 400
    quorum: bool = False


class BatchLogStore(msgspec.Struct, tag="BatchLogStore", array_like=True):
    """Keep a copy of an atomic batch in this node's batch log (node/batchlog.py), durably,
    before answering: `entry` is an encoded BatchLogEntry. Reply: ReplicaAck."""

    entry: bytes


class BatchLogRemove(msgspec.Struct, tag="BatchLogRemove", array_like=True):
    """Every key of the batch is written at W: drop this node's copy. Reply: ReplicaAck."""

    batch_id: bytes


class HintGet(msgspec.Struct, tag="HintGet", array_like=True):
    """A session read (node/session_reads.py): the merge of the hints this node keeps for the
    key `skey` on behalf of any of `targets` (its home replicas), without delivering them.
    Reply: ReplicaRecord (None: no hint). At most MAX_HINT_GET_TARGETS targets."""

    skey: bytes
    targets: list[str]


class ForwardVersioned(msgspec.Struct, tag="ForwardVersioned", array_like=True):
    """`forward` as a Forward, for a session: the reply also carries the key's clock on the
    replica that ran it, after it ran. Reply: ForwardVersionedReply."""

    forward: Forward


class ForwardVersionedReply(msgspec.Struct, tag="ForwardVersionedReply", array_like=True):
    """`reply` as a Forward's; `clock`: the encoded clock of the key's record on the replica
    that ran the command, after it (None: no record)."""

    reply: ForwardReply
    clock: bytes | None = None


MAX_HINT_GET_TARGETS = 16  # a preference list's replicas


class BackupRange(msgspec.Struct, tag="BackupRange", array_like=True):
    """A cluster backup (node/backup.py) reading this replica's records of `partition`, after
    storage key `after` (None: from the partition's start): at most `max_records` records and
    about `max_bytes` bytes of them. Reply: BackupPage."""

    partition: int
    after: bytes | None
    max_records: int
    max_bytes: int


class BackupPage(msgspec.Struct, tag="BackupPage", array_like=True):
    """(storage key, stored record) pairs in key order; `done` when the partition has no more."""

    records: list[tuple[bytes, bytes]]
    done: bool


class ReplicaGetRange(msgspec.Struct, tag="ReplicaGetRange", array_like=True):
    """Read this replica's records of the storage keys in [start, end), from just after `after`
    (None: from `start`), in key order: at most `max_records` (capped at MAX_RANGE_RECORDS) and
    about `max_bytes` (capped at MAX_RANGE_BYTES; one record always fits). The range lies under
    one token (a collection's elements, service/elements.py), so one replica set holds all of
    it. Reply: ReplicaRange, tombstones included (a read merges them like any record).

    With `index`, the range is one of this replica's score index (node/score_index.py): the
    pairs are (index key, empty), what the index holds, not records."""

    start: bytes
    end: bytes
    after: bytes | None
    max_records: int
    max_bytes: int
    index: bool = False


class ReplicaRange(msgspec.Struct, tag="ReplicaRange", array_like=True):
    """(storage key, stored record) pairs in key order; `done` when the range has no more."""

    records: list[tuple[bytes, bytes]]
    done: bool


MAX_RANGE_RECORDS = 1000
MAX_RANGE_BYTES = 4 * 1024 * 1024


MESSAGE_TYPES = (
    ReplicaGet, ReplicaRecord, ReplicaGetDigest, ReplicaDigest, ReplicaGetMany, ReplicaRecords, ReplicaPut, ReplicaAck, Forward, ForwardReply, ScanRange,
    ScanPage, NodeInfo, NodeInfoReply, FlushAll, FlushAllReply, GossipSyn, GossipAck, GossipStates,
    AeDigests, AeDigestsReply, AeList, AeListReply, Repair, RepairReply, SyncPartition, SyncPartitionReply,
    ReplicaPutMany, PaxosPrepare, PaxosPromise, PaxosPropose, PaxosAccepted, PaxosCommit,
    AtomicPart, AtomicPartReply, BatchLogStore, BatchLogRemove,
    HintGet, ForwardVersioned, ForwardVersionedReply, BackupRange, BackupPage, ReplicaPutRelay, RelayReply,
    ReplicaGetRange, ReplicaRange,
)
