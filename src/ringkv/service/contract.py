"""The typed protocols the adapters call and the node implements.

`KeyValueService` is one client's view of the data: bound to one namespace and one set of
consistency levels. `at()` and `in_namespace()` give views at other levels or namespaces (per
RESP connection with RINGKV.CONSISTENCY / RINGKV.NAMESPACE, per HTTP request with its headers
and query); a view is cheap and holds no state of its own. A node of one and a cluster node
implement the same protocol, so the adapters never know which they serve.

Contracts every implementation keeps:
- Keys are bytes of at most `limits.MAX_KEY_BYTES` less the namespace; values at most
  `limits.max_value_bytes`. Over either: `CommandError` with status 413, naming the limit.
- Bad input raises a `ringkv.errors.RingkvError` subclass whose message a client can act on;
  anything else raised is a bug, which the adapters log and answer as an internal error.
- Coroutines never block the loop. `get_value_now` and `put_now` answer without a coroutine
  when they can (a single node, a local replica) and `PENDING` when they cannot.
- Writes made while an adapter handles one batch of input may be deferred: the adapter calls
  `commit_writes()` (when `has_pending_writes`) before it sends any reply, so that what is
  acknowledged is in the log, and one `write()` carries a whole pipeline.

`AdminService` is the operator's side: status, repair, membership changes, INFO sections and
metric figures. Its errors are typed: `AdminRequestError` (bad arguments) and
`AdminConflictError` (not now: another change runs, a member is down).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, Protocol

from ringkv.service.levels import ConsistencyLevel, Levels
from ringkv.service.session import SessionCodec, SessionToken
from ringkv.service.values import ANY_VERSION, AnyVersion, AtomicWrite, SiblingSet, Value, Written
from ringkv.versioning.record import ConflictPolicy

DEFAULT_NAMESPACE_NAME = "default"  # how clients name the default namespace (stored as b"")


@dataclasses.dataclass(frozen=True)
class NamespaceSpec:
    """A namespace: its name as clients give it, its N and its conflict policy."""

    name: str
    replicas: int
    conflict_policy: ConflictPolicy
    # How commands that depend on the current value run: "paxos" (linearizable, a consensus
    # round per key) or "fast" (serialized on the key's first reachable replica; can lose an
    # update when two replicas both believe they are first).
    rmw: str = "paxos"
    # How the node's engine compacts the namespace's keys (docs/compaction.md): "leveled",
    # "tiered" or "time_window" gives it an LSM tree of its own; "" shares the default
    # namespace's. `compaction_settings` are that strategy's `compaction_*` settings, as
    # (name, value) pairs in name order, as the configuration gave them.
    compaction: str = ""
    compaction_settings: tuple[tuple[str, Any], ...] = ()
    # Quotas (node/quotas.py, docs/namespaces.md): live keys, bytes of keys and values, and
    # requests per second of the whole cluster; 0 is no limit.
    max_keys: int = 0
    max_bytes: int = 0
    max_requests_per_s: int = 0
    # Hot keys (docs/hot-keys.md): "spread" sends a read at ONE of a key the coordinator
    # finds hot to one replica in turn instead of every replica ("all"); `hot_cache_ms` > 0
    # lets the coordinator answer such reads from a cache at most that many ms old.
    hot_reads: str = "all"
    hot_cache_ms: int = 0
    # With replicas counted per datacenter: this namespace's own counts, sorted by name, when
    # they are not the cluster's (`replicas` is then their sum; docs/multi-dc.md).
    dc_replicas: tuple[tuple[str, int], ...] = ()

    @property
    def layout(self) -> int | tuple[tuple[str, int], ...]:
        """Which nodes of a preference list hold this namespace's keys (cluster/ring.py's
        Layout): the first N, or the first that many of each datacenter's part."""
        return self.dc_replicas or self.replicas

    @property
    def stored(self) -> bytes:
        """The namespace bytes in storage keys (empty for the default namespace)."""
        return b"" if self.name == DEFAULT_NAMESPACE_NAME else self.name.encode()

    def as_dict(self) -> dict:
        out = {"name": self.name, "replicas": self.replicas,
               "conflict_policy": self.conflict_policy.value, "rmw": self.rmw}
        if self.compaction:
            out["compaction"] = self.compaction
            out.update(self.compaction_settings)
        for name in ("max_keys", "max_bytes", "max_requests_per_s", "hot_cache_ms"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        if self.hot_reads != "all":
            out["hot_reads"] = self.hot_reads
        if self.dc_replicas:
            out["dc_replicas"] = dict(self.dc_replicas)
        return out


@dataclasses.dataclass(frozen=True)
class ServiceLimits:
    """The limits of a node that depend on its configuration (the fixed ones are in
    `service.limits`)."""

    max_value_bytes: int
    keys_max_count: int  # KEYS refuses to answer more
    flush_enabled: bool  # FLUSHALL / FLUSHDB allowed


class KeyValueService(Protocol):
    """The data commands, in one namespace at one set of levels (see the module docstring)."""

    @property
    def namespace(self) -> NamespaceSpec: ...
    @property
    def levels(self) -> Levels: ...
    @property
    def limits(self) -> ServiceLimits: ...

    def at(self, r: ConsistencyLevel | int | str | None = None, w: ConsistencyLevel | int | str | None = None,
           strict: bool | None = None) -> KeyValueService:
        """This view at other levels (None keeps one); ConfigError for a count over N."""

    def in_namespace(self, name: str | bytes) -> KeyValueService:
        """This view in another namespace ("default" or "" for the default one), same levels;
        UnknownNamespaceError naming the configured ones."""

    @property
    def sessions(self) -> SessionCodec:
        """How this node encodes and checks session tokens (service/session.py)."""

    def with_session(self, session: SessionToken | None) -> KeyValueService:
        """This view, reading and writing in `session` (None: in none): every read answers a
        version at least as new as what the session wrote or read of the key, at any level,
        or SessionError; every read and write updates the token. Views made from it (`at`,
        `in_namespace`) stay in the session."""

    def namespaces(self) -> list[NamespaceSpec]: ...
    def ring_map(self) -> dict:
        """Where this namespace's keys live, for token-aware clients: `partitions`,
        `token_rule`, `nodes` ([{node_id, resp, datacenter, up}]) and `replicas` (per
        partition, indexes into `nodes` in preference order)."""
    def now_ms(self) -> int:
        """The node's clock, for adapters turning relative expiries into absolute ones."""

    def admit(self) -> None:
        """Count one client request in this view's namespace against its max_requests_per_s
        (adapters call it once per data command or request); QuotaExceededError (429) when
        the namespace is over it on this node."""

    # False when no namespace has a quota (fixed when the node starts): `admit` does nothing,
    # and an adapter's hot path may skip the call.
    rate_limited: bool

    # --- reads
    async def get(self, key: bytes) -> Value | None: ...
    async def get_value(self, key: bytes) -> bytes | None: ...
    def get_value_now(self, key: bytes) -> Any:
        """bytes, None, or PENDING (then await get_value)."""

    async def get_versions(self, key: bytes) -> SiblingSet: ...
    async def hash_field_versions(self, key: bytes, field: bytes) -> SiblingSet:
        """Every value of one hash field (siblings of concurrent HSETs), with its record's
        context; WRONGTYPE for a key that holds no hash."""
    async def zset_score_versions(self, key: bytes, member: bytes) -> SiblingSet:
        """Every score of one sorted-set member (siblings of concurrent ZADDs) as ZSCORE's
        text, with its record's context; WRONGTYPE for a key that holds no sorted set."""
    async def exists(self, keys: Iterable[bytes]) -> int: ...
    async def mget(self, keys: list[bytes]) -> list[bytes | None]: ...
    async def ttl_ms(self, key: bytes) -> int:
        """Milliseconds left, -1 without expiry, -2 for a missing key (Redis's PTTL)."""

    # --- writes
    async def set(self, key: bytes, value: bytes, *, expire_at_ms: int = 0, keep_ttl: bool = False,
                  condition: str | None = None, return_old: bool = False,
                  match: bytes | None = None) -> tuple[bool, bytes | None]:
        """SET with its options: (applied, old value when `return_old`). `condition`: None, nx,
        xx, or Redis 8.4's ifeq / ifne (the current value compared with `match`) and ifdeq /
        ifdne (its digest compared with `match`)."""

    async def put(self, key: bytes, value: bytes) -> None: ...
    def put_now(self, key: bytes, value: bytes) -> Any:
        """A plain SET without a coroutine: the LSN to wait for (`durable`) under sync=always,
        0 when there is nothing to wait for, or PENDING (then await put)."""

    async def durable(self, lsn: int) -> None: ...
    async def put_versioned(self, key: bytes, value: bytes | None, context: bytes | None, *,
                            expire_at_ms: int = 0) -> bytes:
        """A sibling-aware write replacing exactly what `context` saw (None: blind); value None
        deletes. Returns the new context."""

    async def mset(self, pairs: list[tuple[bytes, bytes]]) -> None: ...
    async def write_atomic(self, items: list[tuple[bytes, bytes, int]]) -> AtomicWrite:
        """Write every (key, value, expire_at_ms) or none of them (docs/atomic-batches.md): keys
        of one replica set (the same replicas, e.g. one hash tag) commit together on each
        replica; across replica sets the batch is first logged durably on two nodes and
        replayed until every key is written (`pending`: keys the replay still has to write).
        Every value carries the batch's timestamp; a key's write stamped at or after it wins.
        Raises with nothing written when an item is over a limit (413, 400) or the batch cannot
        be logged (503). A batch of one replica set short of W raises as a SET does
        (QuorumError; a timeout: 504), its outcome unknown but the same for every key.
        Not isolated: readers may see some keys written and others not yet meanwhile."""
    async def msetnx(self, pairs: list[tuple[bytes, bytes]]) -> bool:
        """Set every pair, or none if any key exists; True when set. In a cluster the keys must
        share one hash tag (one key needs none): one consensus round of the tag's register,
        atomic and linearizable; keys of several tags raise CommandError kind CROSSSLOT with
        nothing written (docs/consistency.md, "Hash tags")."""
    async def delete(self, keys: Iterable[bytes]) -> int: ...
    async def getdel(self, key: bytes) -> bytes | None: ...
    async def delete_if(self, key: bytes, condition: str | None = None, match: bytes | None = None) -> int:
        """DELEX: delete the key if the condition (as SET's ifeq...ifdne; None: it exists)
        holds; 1 when it was deleted."""

    async def cas(self, key: bytes, expected: bytes | None, value: bytes | None, *,
                  expire_at_ms: int = 0) -> tuple[bool, bytes | None]:
        """Compare-and-set on the key's version (the context a read returned; None: no live
        value): write `value` (None: delete) only if it is still `expected`. (True, the new
        version) or (False, the current version). Linearizable on the consensus path."""
    async def write(self, key: bytes, value: bytes | None, *, expire_at_ms: int = 0,
                    expected: bytes | int | AnyVersion | None = ANY_VERSION) -> Written:
        """Write `value` (None: delete) and answer the version it makes, if the key is at
        `expected`: ANY_VERSION (a plain overwrite, replacing every sibling the executing
        replica holds; a delete of a missing key writes nothing), None (no live value), a
        causal context a read returned (exactly that version) or an int (that
        `version_number`). Any expectation but ANY_VERSION is a compare-and-set: linearizable on
        the consensus path."""
    async def incr_by(self, key: bytes, delta: int) -> int: ...
    async def incr_by_versioned(self, key: bytes, delta: int) -> tuple[int, bytes]:
        """INCRBY that also answers the version its write makes."""
    async def incr_by_float(self, key: bytes, increment: bytes) -> bytes:
        """INCRBYFLOAT: `increment` as the client wrote it, added in Redis's long double."""
    async def append(self, key: bytes, value: bytes) -> int: ...
    async def expire_at(self, key: bytes, expire_at_ms: int, condition: str | None = None) -> bool:
        """Set (0: remove) the expiry; condition nx, xx, gt, lt. A past time deletes."""

    async def getex(self, key: bytes, expire_at_ms: int | None) -> bytes | None: ...
    async def flushall(self) -> int:
        """Every key of every namespace, on every member."""

    async def flushdb(self) -> int:
        """Every key of this view's namespace (all of them in the default namespace)."""

    # --- data types (service/datatypes; docs/data-types.md)
    async def type_command(self, name: str, args: list[bytes]) -> Any:
        """A data-type or whole-key command (HSET, SMEMBERS, LPUSH, ZRANGE, SMOVE, RENAME, TYPE,
        ...: `service.datatypes.COMMANDS`) by its upper-case name, with its arguments after the
        name, its arity checked by the caller; its reply (base.py says the shapes). A write runs
        on the key's write path (in a cluster the consensus path: linearizable), a command that
        writes several keys as one consensus round, so in a cluster its keys must share a hash
        tag (else CommandError kind CROSSSLOT, nothing written); a read at the view's R, one key
        at a time (a read of several keys in several partitions is not one snapshot).
        WrongTypeError (WRONGTYPE) when a key holds another type; a collection whose encoding
        would pass max_value_bytes is refused (413) with nothing written."""

    # --- the keyspace
    async def dbsize(self) -> int: ...
    async def scan(self, cursor: int, count: int = 10, match: bytes | None = None) -> tuple[int, list[bytes]]:
        """One page in token order; the cursor is the token to resume at, 0 when done."""

    async def keys(self, pattern: bytes) -> list[bytes]: ...

    # --- batching (see the module docstring)
    @property
    def has_pending_writes(self) -> bool: ...
    def commit_writes(self) -> None: ...


class BackupAdminService(Protocol):
    """Snapshots of one node, and cluster backup and restore (docs/backup.md). Errors:
    AdminRequestError (a bad name, no such snapshot or operation, a backup this cluster cannot
    restore), AdminConflictError (exists already, another backup or restore runs)."""

    async def snapshot(self, name: str | None = None, replace: bool = False) -> dict:
        """Take a named snapshot of this node's store now (a timestamped name when None):
        {"name", "node_id", "created_ms", "hlc", "encrypted", "engine": what was linked and
        copied, "path"}."""

    def snapshot_list(self) -> list[dict]:
        """The snapshots kept on this node, oldest first (each also with "bytes")."""

    async def snapshot_remove(self, name: str) -> dict: ...
    async def save(self) -> dict:
        """SAVE: the node's one SAVE snapshot, replaced."""

    def bgsave(self) -> bool:
        """BGSAVE: SAVE in the background; False when one already runs."""

    def lastsave_s(self) -> int:
        """LASTSAVE: unix seconds of the last snapshot taken by this process, 0 before any."""

    def backup(self, directory: str, replicas_per_partition: int | None = None) -> dict:
        """Start a backup of the whole cluster into `directory` (on this node's file system),
        each partition read from `replicas_per_partition` replicas (None: a quorum of N), or
        resume the unfinished one there. The operation's document (its "id" to follow)."""

    def restore(self, directory: str, with_users: bool = False) -> dict:
        """Start restoring the backup in `directory` into this cluster; the operation's document."""

    def operation(self, op_id: str) -> dict:
        """A long operation's document (node/operations.py) by id."""


class AdminService(Protocol):
    """The operator's calls (`ringkv admin`, RINGKV.ADMIN, /api/v1/admin)."""

    @property
    def node_id(self) -> str: ...
    @property
    def backups(self) -> BackupAdminService:
        """Snapshots, SAVE/BGSAVE, cluster backup and restore."""

    async def status(self) -> dict:
        """Members (each with node_id, address, status, role, keys_count, memory_used_mb,
        partitions, liveness, a joining node's progress), total_keys, replication_factor, and
        membership progress: the document docs/http.md describes."""

    async def repair(self) -> dict:
        """Anti-entropy over every partition this node holds, now."""

    async def join(self, seeds: list[str]) -> dict:
        """On a joining node: the members to learn the cluster from (node_id@host:port)."""

    async def admit(self, address: str) -> dict:
        """On a member: admit the node whose client (RESP) port is at `address` ("host:port"),
        running as a joining node: check it, give it the members as seeds, answer the join's
        start and progress. AdminRequestError for a malformed address; AdminConflictError
        when it cannot be admitted now (unreachable, already a member, not joining, its node
        id taken, another membership change in progress), naming why."""

    async def decommission(self) -> dict: ...
    async def remove(self, node_id: str, force: bool = False) -> dict:
        """Take a dead member out of the ring. AdminConflictError while the failure detector
        holds it up, unless `force` (decommission a live node instead)."""
    async def cleanup(self) -> dict: ...

    # --- long operations (docs/operations.md): an operation document is {"id", "kind",
    # "node_id", "params", "state" (running, done, failed, interrupted), "unit", "done",
    # "total", "phase", "started_ms", "updated_ms", "finished_ms", "eta_s" (null: unknown),
    # "result" (when done), "error" (when failed or interrupted), "resumed" (restarts it
    # was resumed after)}.
    async def start_operation(self, kind: str, args: dict[str, Any] | None = None) -> dict:
        """Start a long operation of `kind` (repair, cleanup, decommission, remove with args
        node_id and force; others the node offers, e.g. backup) and answer its document at
        once. AdminRequestError for an unknown kind or bad args; AdminConflictError while a
        conflicting operation runs on this node (naming it) or the change is refused now."""

    def operations(self, running_only: bool = False) -> list[dict]:
        """This node's operations, newest first (the last ones finished, and every running one)."""

    def operation(self, operation_id: str) -> dict:
        """One operation's document; AdminRequestError for an id this node does not know."""

    async def wait_operation(self, operation_id: str, timeout_s: float) -> dict:
        """The operation's document once it has finished or after `timeout_s` (0 to 30),
        whichever comes first."""

    def membership(self) -> dict:
        """The ring, the pending ring and the progress of a change."""

    def ring_view(self) -> dict:
        """The ring as the console draws it: {"partitions", "replicas", "nodes" (the ring's
        members), "owners" (per partition, an index into "nodes"), "pending_nodes" and
        "pending_owners" (the same for the ring being moved to; null when none), "moving"
        (partitions whose replicas change), "hints_pending_for" (target node -> hints this
        node holds for it)}. A cluster of one owns every partition."""

    def health(self) -> str | None:
        """None when the node can serve; else why not (the engine closed, or read-only after a
        background error)."""

    def key_counts(self) -> dict[str, int]:
        """{"keys": live keys on this replica, "expired_keys": removed by active expiry}."""

    def info(self) -> dict[str, dict[str, Any]]:
        """INFO sections of the node beside the adapters' own: memory, persistence, keyspace
        figures, ringkv (cluster, gossip, hints, anti-entropy)."""

    def metrics(self) -> dict[str, Any]:
        """Figures for /metrics: engine, keys, cluster counters (see api/http_metrics.py)."""

    def hot_keys(self, limit: int) -> dict[str, Any]:
        """The keys this node coordinated most lately (docs/hot-keys.md), at most `limit`:
        {"node_id", "sample_every", "half_life_ms", "sampled" (the decayed count of sampled
        requests), "hot_count" (keys in the hot set), "keys": [{"namespace", "key" (UTF-8 text,
        undecodable bytes escaped), "key_base64", "per_s", "count", "error", "reads", "writes",
        "hot"}], most requested first}: a JSON document as it is."""

    def compaction(self, namespace: str) -> dict:
        """How `namespace`'s keys are compacted on this node now: {"namespace", "family",
        "compaction", the strategy's settings, "sorted_runs"}. AdminRequestError for an
        unknown namespace."""

    def set_compaction(self, namespace: str, compaction: str, settings: dict[str, Any] | None = None) -> dict:
        """Compact `namespace` by `compaction` (leveled, tiered, time_window) with its
        `compaction_*` settings (the prefix may be left out), on this node, from now on (not
        stored: the configuration is); {"namespace", "family", "compaction", and the strategy's
        settings}. AdminRequestError for an unknown namespace, a bad setting, or a namespace
        without a compaction of its own (it shares the default namespace's tree)."""

    def fault(self, argv: list[bytes]) -> str:
        """RINGKV.FAULT (only when the node runs with fault_injection): PARTITION node..., HEAL,
        CLOCK_SKEW ms. AdminRequestError when fault injection is off or the request is bad."""

    def config_get(self, patterns: list[str]) -> dict[str, str]:
        """CONFIG GET: this node's settings whose names match any of the glob `patterns` (any
        case), name -> value as text, sorted by name: every setting by its configuration-file
        name, and the Redis names with a ringkv equivalent or a fixed answer (node/
        runtime_config.py lists them). Secrets (cluster_secret, requirepass) are never answered."""

    def config_set(self, pairs: list[tuple[str, str]]) -> None:
        """CONFIG SET on this node: every (name, value) pair or none, validated together as the
        configuration loader validates a start; only the settings a running node takes
        (runtime_config.LIVE_SETTINGS and their Redis names), not stored (a restart takes the
        configuration's values). ConfigSetError naming the first argument refused: unknown,
        read at start only, a bad value (the field and its rule), given twice."""
