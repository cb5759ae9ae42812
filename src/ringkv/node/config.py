"""Node configuration: one typed object, defaults with units in the names.

Sources, later ones win: built-in defaults < TOML file (`--config`) < `RINGKV_*` environment
variables (`RINGKV_RESP_PORT=7400`) < command-line flags. Every value is checked at start-up;
a bad one stops the node with a message naming the field and where it came from.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from typing import Any

from ringkv.cluster.hotkeys import MAX_CAPACITY_KEYS as MAX_HOT_KEYS_CAPACITY
from ringkv.errors import ConfigError
from ringkv.service.limits import DEFAULT_MAX_VALUE_BYTES

MIB = 1024 * 1024


@dataclasses.dataclass
class NodeConfig:
    node_id: str = "n1"
    data_dir: str = "./ringkv-data/n1"
    host: str = "127.0.0.1"
    resp_port: int = 7379  # not Redis's 6379, so both can run side by side
    http_port: int = 7380
    rpc_port: int = 7381  # inter-node RPC (docs/formats/rpc.md)

    # Cluster. Static membership: every node is given the same `members` list, each entry
    # `node_id@host:rpc_port` with an optional `/rack`, comma-separated. Empty: a cluster of
    # one, served without RPC. `partitions` and `cluster_name` are fixed at cluster creation.
    cluster_name: str = "ringkv"
    members: str = ""
    partitions: int = 1024
    replicas: int = 3  # N of the default namespace
    # Replicas per datacenter (docs/multi-dc.md), "dc1=3,dc2=2"; in TOML also as
    # `replicas = { dc1 = 3, dc2 = 2 }`. Each member then names its datacenter in `members`
    # (`node_id@host:port/dc/rack`), N is the sum; a namespace may count its own per datacenter.
    dc_replicas: str = ""
    # How the ring places partitions (cluster/ring.py RING_ALGORITHMS, docs/ring.md): fixed at
    # cluster creation and the same on every node, like `partitions`.
    ring_algorithm: str = "dithered"
    # one | quorum | all | local_one | local_quorum | each_quorum | an integer r (w)
    read_consistency: str = "quorum"
    write_consistency: str = "quorum"
    replica_timeout_ms: int = 500  # how long a coordinator waits for one replica's answer
    read_repair: str = "background"  # background | blocking | off
    # Who a read asks: "quorum", as many replicas as R needs (the local copy counting), one more
    # when one fails or is slower than its recent p99; "all", every replica (node/read_path.py).
    read_fanout: str = "quorum"
    # Digest reads: of the replicas a read asks, one sends its record and the others only its
    # digest, or the record when it differs from the coordinator's (node/read_path.py). Off
    # by default: they halve the bytes a read moves but cost CPU to hash, and on the machines
    # measured CPU is the limit (docs/benchmarks/cluster.md, "Digest reads").
    read_digests: bool = False
    # Sessions (read-your-writes and monotonic reads, docs/consistency.md "Sessions"): the
    # keys a token remembers, its encoded length, and how long a session read looks for a
    # replica holding what the session saw before it answers an error.
    session_max_keys: int = 128
    session_max_token_bytes: int = 4096
    session_wait_ms: int = 1000
    # Hinted handoff (node/handoff.py): writes a replica missed, kept for it.
    max_hint_window_ms: int = 3 * 3600 * 1000
    max_hints: int = 1_000_000
    hint_delivery_rate_per_s: int = 1000
    # Gossip and failure detection (node/gossiper.py, docs/membership.md).
    gossip_interval_ms: int = 1000
    gossip_fanout: int = 2  # peers per round, 1..3
    phi_threshold: float = 8.0
    phi_acceptable_pause_ms: int = 1000
    # Anti-entropy (node/antientropy.py): one partition compared with one peer per interval;
    # 0 turns the background rounds off (`ringkv repair` still works).
    anti_entropy_interval_ms: int = 1000
    # What anti-entropy may exchange with replicas in other datacenters, all comparisons
    # together (docs/multi-dc.md); 0: unbounded.
    anti_entropy_wan_bytes_per_s: int = 1_000_000
    # Live membership (node/membership.py): start as a joining node and receive partitions;
    # how long a node waits after announcing a join or leave before moving data.
    join: bool = False
    membership_settle_ms: int = 3000
    # Authenticated members (docs/security.md): who may speak on the RPC port. A cluster
    # secret every member holds, proven by a challenge in every RPC handshake: a file (mode
    # 0600 or stricter; preferred) or, less safely, the secret itself. And/or mutual TLS: this
    # node's certificate and key, and the cluster CA every member's certificate comes from;
    # a certificate must name its node id (subject CN or a DNS SAN). An RPC address other
    # than loopback needs one of them, or rpc_insecure = true (unsafe: anyone who reaches the
    # port can read and write every key and change the ring).
    cluster_secret_file: str = ""
    cluster_secret: str = dataclasses.field(default="", repr=False)
    rpc_tls_cert: str = ""
    rpc_tls_key: str = ""
    rpc_tls_ca: str = ""
    rpc_insecure: bool = False
    # Tests and the chaos suite only: accept RINGKV.FAULT commands (node/faults.py).
    fault_injection: bool = False
    # Trying datacenters on one machine: hold every message to or from a node of another
    # datacenter this many ms each way (node/faults.WanTransport; 0: off).
    emulated_wan_delay_ms: int = 0
    # Atomic batches (docs/atomic-batches.md): a batch over several replica sets waits in the
    # batch log (<data_dir>/batchlog) of two nodes until every key is written. Every interval,
    # each node replays the entries it has held for longer than the delay (twice the delay
    # while their coordinator is up). New batches are refused (503) past either bound.
    batchlog_replay_delay_ms: int = 10_000
    batchlog_replay_interval_ms: int = 2_000
    batchlog_max_entries: int = 10_000
    batchlog_max_bytes: int = 256 * MIB

    # Storage and durability.
    sync: str = "interval"  # always | interval | never
    sync_interval_ms: int = 100
    memtable_bytes: int = 16 * MIB
    # Decoded blocks (Python lists) take ~1.7x their size on disk, and decoding is most of a
    # read's cost, so the cache is sized to hold a few hundred MiB of data decoded.
    block_cache_bytes: int = 256 * MIB
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    conflict_policy: str = "siblings"  # siblings | lww, of the default namespace
    # How commands that depend on the current value (INCR, CAS, SET NX, ...) run in the
    # default namespace: paxos (a consensus round per key, linearizable) or fast (serialized on
    # the key's first reachable replica, can lose an update during failures). docs/consistency.md.
    rmw: str = "paxos"
    # Hot keys (docs/hot-keys.md): each node counts the keys it coordinates in a bounded
    # summary (keys tracked, one request in about `hot_keys_sample_every` counted, counts
    # halved every `hot_keys_half_life_ms`); the default namespace's mitigations: hot_reads
    # all | spread (a read at ONE of a hot key asks one replica, in turn), hot_cache_ms (0: off).
    hot_keys_capacity: int = 64
    hot_keys_sample_every: int = 16
    hot_keys_half_life_ms: int = 10_000
    hot_reads: str = "all"
    hot_cache_ms: int = 0
    # Other namespaces, each with its own N and policy (node/namespaces.py): a TOML table
    # [namespaces.NAME] of replicas and conflict_policy, or as a string (environment, flags)
    # "NAME:replicas=2:conflict_policy=lww,NAME2:replicas=1". Identical on every node.
    namespaces: str = ""
    tombstone_grace_s: int = 864_000  # 10 days, as Cassandra's gc_grace_seconds
    # How the engine compacts the default namespace and every namespace without a compaction
    # of its own (docs/compaction.md): leveled | tiered | time_window, and that strategy's
    # settings (tiered: size ratio, runs merged at least, sorted runs a lookup probes at most;
    # time_window: window width, and the TTL rule: safe | aggressive). A namespace takes the
    # same settings in its [namespaces.NAME] table, and then has an LSM tree of its own.
    compaction: str = "leveled"
    compaction_size_ratio_percent: int = 100
    compaction_min_merge_runs: int = 4
    compaction_max_runs: int = 16
    compaction_window_s: int = 3600
    compaction_ttl_rule: str = "safe"
    # Quotas of the default namespace (0: no limit); other namespaces take the same settings in
    # their [namespaces.NAME] table (docs/namespaces.md, Quotas): live keys, bytes of keys and
    # values, and requests per second, of the whole cluster. A node refreshes its estimate of
    # what the other members hold every quota_refresh_interval_ms.
    max_keys: int = 0
    max_bytes: int = 0
    max_requests_per_s: int = 0
    quota_refresh_interval_ms: int = 1000
    # Free disk space a merge must find before it starts, as a percentage of its input bytes
    # (the most its output takes); a merge that cannot is refused, counted and retried, rather
    # than filling the disk midway (which would turn the engine read-only).
    compaction_headroom_percent: int = 100

    # Client-facing limits.
    max_connections: int = 10_000
    max_output_buffer_bytes: int = 64 * MIB
    max_args: int = 1024 * 1024
    max_inline_bytes: int = 64 * 1024
    max_query_buffer_bytes: int = 1024 * MIB
    keys_max_count: int = 100_000
    flush_enabled: bool = True
    expiry_index_max_keys: int = 1_000_000
    http_enabled: bool = True
    # Bounded clients (docs/security.md, "Bounded clients and cross-protocol"). A RESP
    # connection runs at most max_inflight_commands commands at once (reading pauses until
    # replies drain). A connection that sends nothing for client_idle_timeout_ms is closed (a
    # RESP one with no command running, an HTTP one mid-body; 0: never); an HTTP request head
    # must be complete within http_header_timeout_ms of its first byte (of the connection, for
    # the first request). Each port takes max_connections_per_ip connections per client
    # address (0: no limit). max_client_memory_bytes bounds every RESP connection's buffered
    # input and unsent output together (Redis's maxmemory-clients; 0: no bound): over it, the
    # largest connections are closed first.
    max_inflight_commands: int = 64
    client_idle_timeout_ms: int = 300_000
    http_header_timeout_ms: int = 10_000
    max_connections_per_ip: int = 1_000
    max_client_memory_bytes: int = 1024 * MIB
    # Host names the HTTP API answers for (comma-separated), besides IP addresses, "localhost",
    # `host` and the hosts in `members`; "*" answers any. Other names are answered 421: a web
    # page cannot reach a node by rebinding its own DNS name to the node's address.
    http_allowed_hosts: str = ""
    # TLS on the client ports (docs/security.md): the node's certificate and key (PEM), the CA
    # that client certificates must chain to, and whether clients must present one. RESP over
    # TLS listens on tls_port (-1: not served, 0: a free port), beside resp_port or instead of
    # it (resp_port = -1, as Redis's `port 0`); http_tls makes http_port serve HTTPS only.
    # Certificates are re-read on SIGHUP. A handshake not done within the timeout is dropped.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    tls_client_auth: str = "none"  # none | optional | required
    tls_port: int = -1
    http_tls: bool = False
    tls_handshake_timeout_ms: int = 5_000
    # Users and permissions on RESP and HTTP (docs/security.md). Protected mode: while the
    # default user needs no password (no user configured), only loopback clients are served.
    # On a new cluster, requirepass gives the default user a password (as Redis's) and
    # admin_password_file creates a user `admin` with every permission; both are ignored once
    # that user exists. A change of users reaches every node within acl_refresh_interval_ms;
    # each node caches at most acl_cache_max_users users, the cluster holds acl_max_users.
    # Failed authentications: after auth_backoff_after_failures per client address or user
    # name, each next attempt waits twice as long, from auth_backoff_base_ms up to
    # auth_backoff_max_ms (auth_backoff_max_tracked addresses and names remembered); at most
    # auth_max_pending password checks wait at once. HTTP bearer tokens live auth_token_ttl_s
    # unless asked for less or more (up to auth_token_max_ttl_s), auth_tokens_max_per_user each.
    protected_mode: bool = True
    requirepass: str = dataclasses.field(default="", repr=False)
    admin_password_file: str = ""
    acl_refresh_interval_ms: int = 1_000
    acl_cache_max_users: int = 10_000
    acl_max_users: int = 10_000
    auth_backoff_after_failures: int = 3
    auth_backoff_base_ms: int = 100
    auth_backoff_max_ms: int = 10_000
    auth_backoff_max_tracked: int = 10_000
    auth_max_pending: int = 64
    auth_token_ttl_s: int = 3_600
    auth_token_max_ttl_s: int = 86_400
    auth_tokens_max_per_user: int = 16
    # Encryption at rest (docs/security.md): a key file (mode 0600) of "<id> <base64 key>"
    # lines, or one 32-byte key; WAL records and SSTable blocks of every engine in data_dir are
    # sealed with AES-256-GCM under its highest id. Read at start: a new key takes effect for
    # new files at the next restart (`ringkv admin keys new`). Empty: nothing is sealed.
    encryption_key_file: str = ""

    # Operations.
    shutdown_drain_ms: int = 5_000
    log_level: str = "info"
    log_format: str = "text"  # text, or json: one JSON object per line (ringkv/logs.py)

    def validate(self) -> None:
        def require(cond: bool, name: str, message: str) -> None:
            if not cond:
                raise ConfigError(name, f"{message}, got {getattr(self, name)!r}")

        require(bool(self.node_id) and all(c.isalnum() or c in "-_." for c in self.node_id), "node_id",
                "must be letters, digits, '-', '_' or '.'")
        for port in ("http_port", "rpc_port"):
            require(0 <= getattr(self, port) <= 65535, port, "must be a TCP port 0..65535 (0 picks a free one)")
        for port in ("resp_port", "tls_port"):
            require(-1 <= getattr(self, port) <= 65535, port,
                    "must be a TCP port 0..65535 (0 picks a free one) or -1 (not served)")
        self.validate_tls()
        self.validate_access()
        require(self.sync in ("always", "interval", "never"), "sync", "must be always, interval or never")
        require(self.conflict_policy in ("siblings", "lww"), "conflict_policy", "must be siblings or lww")
        require(self.rmw in ("paxos", "fast"), "rmw", "must be paxos or fast")
        require(1 <= self.hot_keys_capacity <= MAX_HOT_KEYS_CAPACITY, "hot_keys_capacity",
                f"must be 1..{MAX_HOT_KEYS_CAPACITY} keys")
        require(self.hot_keys_sample_every >= 1, "hot_keys_sample_every", "must be >= 1")
        require(self.hot_keys_half_life_ms >= 1, "hot_keys_half_life_ms", "must be >= 1 ms")
        require(self.log_level in ("debug", "info", "warning", "error"), "log_level",
                "must be debug, info, warning or error")
        require(self.log_format in ("text", "json"), "log_format", "must be text or json")
        for name in ("sync_interval_ms", "memtable_bytes", "max_value_bytes", "max_connections",
                     "max_output_buffer_bytes", "max_args", "max_inline_bytes", "max_query_buffer_bytes",
                     "keys_max_count", "expiry_index_max_keys", "shutdown_drain_ms"):
            require(getattr(self, name) >= 1, name, "must be >= 1")
        self.validate_client_bounds()
        require(self.block_cache_bytes >= 0, "block_cache_bytes", "must be >= 0")
        require(self.tombstone_grace_s >= 0, "tombstone_grace_s", "must be >= 0")
        require(self.compaction_headroom_percent >= 0, "compaction_headroom_percent", "must be >= 0")
        require(self.max_value_bytes <= 32 * MIB, "max_value_bytes", "must be <= 33554432 (32 MiB)")
        require(self.memtable_bytes >= 64 * 1024, "memtable_bytes", "must be >= 65536")
        require(bool(self.cluster_name) and all(c.isalnum() or c in "-_." for c in self.cluster_name),
                "cluster_name", "must be letters, digits, '-', '_' or '.'")
        require(self.read_repair in ("background", "blocking", "off"), "read_repair",
                "must be background, blocking or off")
        require(self.read_fanout in ("quorum", "all"), "read_fanout",
                "must be quorum (ask as many replicas as R needs, with a speculative retry) or all "
                "(ask every replica)")
        require(self.replica_timeout_ms >= 1, "replica_timeout_ms", "must be >= 1")
        require(1 <= self.session_max_keys <= 65_536, "session_max_keys", "must be in 1..65536")
        require(256 <= self.session_max_token_bytes <= 1 << 20, "session_max_token_bytes",
                "must be in 256..1048576 (an HTTP header must hold the token)")
        require(0 <= self.session_wait_ms <= 60_000, "session_wait_ms", "must be in 0..60000")
        require(1 <= self.gossip_fanout <= 3, "gossip_fanout", "must be 1, 2 or 3")
        require(self.phi_threshold > 0, "phi_threshold", "must be > 0")
        require(self.membership_settle_ms >= 0, "membership_settle_ms", "must be >= 0")
        require(self.anti_entropy_interval_ms >= 0, "anti_entropy_interval_ms", "must be >= 0 (0: off)")
        require(self.anti_entropy_wan_bytes_per_s >= 0, "anti_entropy_wan_bytes_per_s", "must be >= 0 (0: unbounded)")
        require(self.phi_acceptable_pause_ms >= 0, "phi_acceptable_pause_ms", "must be >= 0")
        for name in ("max_hint_window_ms", "max_hints", "hint_delivery_rate_per_s", "gossip_interval_ms",
                     "batchlog_replay_interval_ms", "batchlog_max_entries", "batchlog_max_bytes"):
            require(getattr(self, name) >= 1, name, "must be >= 1")
        # A replay may run while the coordinator still applies the batch: harmless (applying a
        # batch twice writes once) but wasted, so the delay outlasts a forwarded part's timeout.
        require(self.batchlog_replay_delay_ms > 3 * self.replica_timeout_ms, "batchlog_replay_delay_ms",
                f"must be longer than a forwarded write's timeout, 3 x replica_timeout_ms = "
                f"{3 * self.replica_timeout_ms} ms")
        from ringkv.cluster.ring import MAX_REPLICAS, check_algorithm, check_partitions

        try:
            check_partitions(self.partitions)
        except ConfigError as exc:
            raise ConfigError("partitions", f"{exc}".split(": ", 1)[1]) from None
        check_algorithm(self.ring_algorithm)
        require(1 <= self.replicas <= MAX_REPLICAS, "replicas", f"must be in 1..{MAX_REPLICAS}")
        require(0 <= self.emulated_wan_delay_ms <= MAX_EMULATED_WAN_DELAY_MS, "emulated_wan_delay_ms",
                f"must be in 0..{MAX_EMULATED_WAN_DELAY_MS} (ms)")
        per_dc = self.dc_replication()
        if per_dc:
            total = sum(per_dc.values())
            require(self.replicas == total, "replicas",
                    f"must be the sum of dc_replicas ({total}) when replicas are counted per datacenter")
        names = ("one", "quorum", "all", "local_one", "local_quorum", "each_quorum")
        for name in ("read_consistency", "write_consistency"):
            value = getattr(self, name)
            require(value in names or (value.isdigit() and 1 <= int(value) <= self.replicas),
                    name, f"must be one of {', '.join(names)} or an integer in 1..replicas={self.replicas}")
        specs = self.namespace_specs()
        if per_dc:
            for spec in specs:
                if spec.replicas != self.replicas and not spec.dc_replicas:
                    raise ConfigError("namespaces", f"{spec.name}: replicas are counted per datacenter "
                                                    f"(dc_replicas), so a namespace counts its own per datacenter "
                                                    f"too (e.g. replicas=dc1=2;dc2=1) or has N = {self.replicas}; "
                                                    f"got replicas={spec.replicas}")
        require(self.quota_refresh_interval_ms >= 1, "quota_refresh_interval_ms", "must be >= 1")
        self.encryption_keys()
        members = self.member_list()
        if members:
            require(any(m.node_id == self.node_id for m in members), "members",
                    f"must include this node ({self.node_id})")
        if per_dc:
            # Replicas are counted per datacenter: a member in none would hold nothing.
            for m in members:
                dc = m.rack.rpartition("/")[0] if "/" in m.rack else ""
                if not dc:
                    raise ConfigError("members", f"{m.node_id} names no datacenter, but replicas are counted per "
                                                 f"datacenter ({self.dc_replicas}): write it "
                                                 f"{m.node_id}@{m.host}:{m.rpc_port}/dc/rack")
        self.validate_member_auth(members)

    def validate_client_bounds(self) -> None:
        """The bounded-clients settings (docs/security.md, "Bounded clients and cross-protocol")."""
        if self.max_inflight_commands < 1:
            raise ConfigError("max_inflight_commands", f"must be >= 1, got {self.max_inflight_commands}")
        if not 1 <= self.http_header_timeout_ms <= 3_600_000:
            raise ConfigError("http_header_timeout_ms", f"must be 1..3600000, got {self.http_header_timeout_ms}")
        for name in ("client_idle_timeout_ms", "max_connections_per_ip", "max_client_memory_bytes"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0 (0: no limit), got {getattr(self, name)}")
        # One client's largest request and its reply must fit, or that request could never be served.
        least = 2 * (self.max_value_bytes + 64 * 1024)
        if 0 < self.max_client_memory_bytes < least:
            raise ConfigError("max_client_memory_bytes", f"must be 0 (no bound) or >= {least} (twice max_value_bytes "
                                                         f"plus 64 KiB each), got {self.max_client_memory_bytes}")
        for name in self.http_allowed_hosts.split(","):
            name = name.strip()
            if name and not re.fullmatch(r"\*|[A-Za-z0-9_.:-]+|\[[0-9a-fA-F:.]+\]", name):
                raise ConfigError("http_allowed_hosts", f"{name[:100]!r} is not a host name, an address or *")

    def validate_member_auth(self, members: list[MemberAddress]) -> None:
        """The RPC port's authentication settings agree, their files can be used (read now,
        so a bad one stops the start naming the setting), and a node whose RPC port other
        hosts can reach has a secret or TLS, unless rpc_insecure (docs/security.md)."""
        if self.cluster_secret and self.cluster_secret_file:
            raise ConfigError("cluster_secret", "give cluster_secret_file or cluster_secret, not "
                                                "both (the file is the safer of the two)")
        tls = {name: getattr(self, name) for name in ("rpc_tls_cert", "rpc_tls_key", "rpc_tls_ca")}
        missing = [name for name, path in tls.items() if not path]
        if missing and len(missing) < len(tls):
            raise ConfigError(missing[0], "must be set too: RPC TLS takes rpc_tls_cert, "
                                          "rpc_tls_key and rpc_tls_ca together")
        security = self.rpc_security()
        me = next((m for m in members if m.node_id == self.node_id), None)
        if me is None or security.authenticates or self.rpc_insecure or is_loopback_host(me.host):
            return
        raise ConfigError(
            "cluster_secret_file",
            f"the RPC port of {self.node_id} listens on {me.host}:{me.rpc_port}, which is not a "
            "loopback address, and would take requests from anyone who reaches it. Give every "
            "member the same secret (`head -c 32 /dev/urandom | base64 > cluster.secret && chmod "
            "600 cluster.secret`, then cluster_secret_file = \"/path/to/cluster.secret\"), or "
            "mutual TLS (rpc_tls_cert, rpc_tls_key, rpc_tls_ca); rpc_insecure = true runs without "
            "(unsafe)")

    def member_auth(self) -> str:
        """How RPC peers are authenticated, from the settings: "mutual TLS", "cluster secret",
        both joined by "and", or "none"."""
        used = [name for name, on in (("mutual TLS", self.rpc_tls_cert),
                                      ("cluster secret", self.cluster_secret_file or self.cluster_secret)) if on]
        return " and ".join(used) or "none"

    def member_auth_description(self) -> str:
        auth = self.member_auth()
        if auth != "none":
            return auth
        return ("nothing (rpc_insecure = true): anyone who reaches the RPC port is taken for a member"
                if self.rpc_insecure else "nothing (loopback only: any local process is taken for a member)")

    def rpc_security(self):
        """How this node's RPC connections authenticate peers (net/auth.RpcSecurity), from the
        settings; ConfigError naming the setting when a file cannot be used."""
        from ringkv.net.auth import RpcSecurity, check_secret, read_secret_file
        from ringkv.net.tls import tls_contexts

        secret = None
        if self.cluster_secret_file:
            secret = read_secret_file(self.cluster_secret_file)
        elif self.cluster_secret:
            secret = check_secret(self.cluster_secret.strip().encode(), "cluster_secret")
        server_tls = client_tls = None
        if self.rpc_tls_cert:
            server_tls, client_tls = tls_contexts(self.rpc_tls_cert, self.rpc_tls_key, self.rpc_tls_ca)
        return RpcSecurity(secret, server_tls, client_tls)

    def validate_access(self) -> None:
        """The users' settings (docs/security.md); the admin password file is read now, so a
        bad one stops the start naming it. A password is never part of a message."""
        for name in ("acl_refresh_interval_ms", "acl_cache_max_users", "acl_max_users", "auth_backoff_base_ms",
                     "auth_backoff_max_tracked", "auth_max_pending", "auth_token_ttl_s", "auth_tokens_max_per_user"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)!r}")
        if self.auth_backoff_after_failures < 0:
            raise ConfigError("auth_backoff_after_failures", "must be >= 0")
        if self.auth_backoff_max_ms < self.auth_backoff_base_ms:
            raise ConfigError("auth_backoff_max_ms", f"must be >= auth_backoff_base_ms={self.auth_backoff_base_ms}")
        if self.auth_token_max_ttl_s < self.auth_token_ttl_s:
            raise ConfigError("auth_token_max_ttl_s", f"must be >= auth_token_ttl_s={self.auth_token_ttl_s}")
        if self.auth_tokens_max_per_user > 64:
            raise ConfigError("auth_tokens_max_per_user", "must be <= 64")
        if len(self.requirepass.encode()) > 4096:
            raise ConfigError("requirepass", "is at most 4096 bytes")
        self.admin_password()

    def admin_password(self) -> str:
        """The password in admin_password_file ("" when not set): its first line, stripped."""
        if not self.admin_password_file:
            return ""
        try:
            with open(self.admin_password_file, encoding="utf-8") as f:
                password = f.readline(4097).strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("admin_password_file", f"cannot read {self.admin_password_file}: "
                                                     f"{getattr(exc, 'strerror', None) or exc}") from None
        if not password or len(password.encode()) > 4096:
            raise ConfigError("admin_password_file", f"{self.admin_password_file} must hold a password of "
                                                     "1..4096 bytes on its first line")
        return password

    def encryption_keys(self):
        """The key ring of encryption_key_file (storage/sealing.KeyRing), None when unset;
        ConfigError naming encryption_key_file when the file is missing, malformed or readable
        by other users."""
        if not self.encryption_key_file:
            return None
        from ringkv.storage.sealing import load_key_file

        return load_key_file(self.encryption_key_file)

    def tls_enabled(self) -> bool:
        return self.tls_port >= 0 or self.http_tls

    def validate_tls(self) -> None:
        """The TLS settings agree with each other; the files themselves are read when the node
        starts (security/tls.py), with errors naming the setting and the file."""
        from ringkv.security.tls import CLIENT_AUTH_MODES, MAX_HANDSHAKE_TIMEOUT_MS

        if self.tls_client_auth not in CLIENT_AUTH_MODES:
            raise ConfigError("tls_client_auth", f"must be none, optional or required, got {self.tls_client_auth!r}")
        if not 1 <= self.tls_handshake_timeout_ms <= MAX_HANDSHAKE_TIMEOUT_MS:
            raise ConfigError("tls_handshake_timeout_ms", f"must be 1..{MAX_HANDSHAKE_TIMEOUT_MS}, "
                                                          f"got {self.tls_handshake_timeout_ms}")
        if self.resp_port == -1 and self.tls_port == -1:
            raise ConfigError("resp_port", "is -1 (no plain RESP) but tls_port is -1 too: set tls_port to "
                                           "serve RESP over TLS")
        if self.tls_enabled():
            self.tls_files()

    def tls_files(self):
        """The listeners' TLS files (security/tls.ServerTlsFiles); ConfigError naming a missing one."""
        from ringkv.security.tls import ServerTlsFiles

        return ServerTlsFiles(self.tls_cert_file, self.tls_key_file, self.tls_ca_file, self.tls_client_auth)

    def namespace_specs(self):
        """The cluster's namespaces (node/namespaces.py); ConfigError naming what is wrong."""
        from ringkv.cluster.ring import MAX_REPLICAS
        from ringkv.node.namespaces import Namespaces
        from ringkv.node.quotas import parse_quota

        for name in ("max_keys", "max_bytes", "max_requests_per_s"):  # a bad one names itself
            parse_quota({name: getattr(self, name)}, name)
        quota = parse_quota({n: getattr(self, n) for n in ("max_keys", "max_bytes", "max_requests_per_s")}, "max_keys")
        return Namespaces(self.replicas, self.conflict_policy, self.namespaces, MAX_REPLICAS, self.rmw,
                          self.compaction, self.compaction_settings(), quota=quota, hot_reads=self.hot_reads,
                          hot_cache_ms=self.hot_cache_ms, dc_replicas=self.dc_replication())

    def compaction_settings(self) -> dict:
        """The top-level compaction_* settings given a value other than their default: those
        are the ones that must belong to the strategy `compaction` names."""
        from ringkv.node.namespaces import COMPACTION_SETTINGS

        return {name: getattr(self, name) for name in COMPACTION_SETTINGS
                if getattr(self, name) != FIELDS[name].default}

    def dc_replication(self) -> dict[str, int]:
        """`dc_replicas` parsed ({} when replicas are not counted per datacenter); ConfigError
        naming the entry that is wrong."""
        from ringkv.cluster.ring import check_dc_replicas

        out: dict[str, int] = {}
        for entry in (e.strip() for e in self.dc_replicas.split(",")):
            if not entry:
                continue
            dc, sep, count = entry.partition("=")
            dc = dc.strip()
            if not sep or not _LABEL.fullmatch(dc) or not count.strip().isdigit():
                raise ConfigError("dc_replicas", f"entry {entry!r} is not dc=count (e.g. dc1=3,dc2=2)")
            if dc in out:
                raise ConfigError("dc_replicas", f"datacenter {dc!r} is listed twice")
            out[dc] = int(count)
        if out:
            try:
                check_dc_replicas(out)
            except ConfigError as exc:
                raise ConfigError("dc_replicas", str(exc).split(": ", 1)[1]) from None
        return out

    @property
    def ring_replication(self) -> int | dict[str, int]:
        """What the ring is built with: its N, or the count per datacenter."""
        return self.dc_replication() or self.ring_replicas

    @property
    def ring_replicas(self) -> int:
        """N of the ring: the largest of every namespace's (smaller ones use a prefix)."""
        return self.namespace_specs().max_replicas

    def member_list(self) -> list[MemberAddress]:
        """`members` parsed; raises ConfigError naming the entry that is wrong."""
        out: list[MemberAddress] = []
        seen: set[str] = set()
        for entry in (e.strip() for e in self.members.split(",")):
            if not entry:
                continue
            member = parse_member(entry)
            if member.node_id in seen:
                raise ConfigError("members", f"{member.node_id} is listed twice")
            seen.add(member.node_id)
            out.append(member)
        if not out and self.join:
            # A joining node given no members knows only itself until a member admits it
            # (node/admission.py) or it is given seeds: a cluster node, never a node of one.
            out.append(MemberAddress(self.node_id, self.host, self.rpc_port))
        return out


def is_loopback_host(host: str) -> bool:
    """Whether `host` is a loopback address (127.0.0.0/8, ::1) or "localhost". A wildcard
    address or any other name counts as reachable from other hosts: names are not resolved."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class MemberAddress:
    node_id: str
    host: str
    rpc_port: int
    rack: str = ""  # the location: "rack", or "dc/rack" (cluster/ring.Member.at reads it)


def parse_member(entry: str) -> MemberAddress:
    """One `node_id@host:rpc_port[/rack]` or `node_id@host:rpc_port/dc/rack` entry (the rack
    may be empty: `/dc/`); ConfigError naming it when malformed."""
    m = _MEMBER.fullmatch(entry.strip())
    if m is None:
        raise ConfigError("members", f"entry {entry!r} is not node_id@host:port[/rack] or node_id@host:port/dc/rack")
    node_id, host, port, rack = m.group(1), m.group(2), int(m.group(3)), m.group(4) or ""
    if not 1 <= port <= 65535:
        raise ConfigError("members", f"entry {entry!r}: port must be 1..65535")
    return MemberAddress(node_id, host, port, rack)


_MEMBER = re.compile(r"([A-Za-z0-9_.-]+)@([A-Za-z0-9_.:-]+|\[[0-9a-fA-F:]+\]):([0-9]{1,5})"
                     r"(?:/([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]*)?))?")
_LABEL = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_EMULATED_WAN_DELAY_MS = 10_000


FIELDS = {f.name: f for f in dataclasses.fields(NodeConfig)}


def _convert(name: str, raw: Any, source: str) -> Any:
    kind = FIELDS[name].type
    if name == "replicas" and isinstance(raw, str) and "=" in raw:
        return raw  # per datacenter, "dc1=3,dc2=2": load_config moves it to dc_replicas
    try:
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind == "int":
            if isinstance(raw, bool):
                raise ValueError("expected an integer")
            return int(raw)
        if kind == "float":
            if isinstance(raw, bool):
                raise ValueError("expected a number")
            value = float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError("expected a finite number")
            return value
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(name, f"bad value {raw!r} from {source}: {exc}") from None


def load_config(
    toml_path: str | None = None,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> NodeConfig:
    """Defaults < TOML < RINGKV_* environment < overrides (flags); validated."""
    values: dict[str, Any] = {}
    if toml_path:
        try:
            with open(toml_path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as exc:
            raise ConfigError("config", f"cannot read {toml_path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", f"{toml_path} is not valid TOML: {exc}") from None
        for key, raw in doc.items():
            if key not in FIELDS:
                raise ConfigError(key, f"unknown setting in {toml_path}")
            if key == "replicas" and isinstance(raw, dict):  # replicas = { dc1 = 3, dc2 = 2 }
                key, raw = "dc_replicas", ",".join(f"{dc}={n}" for dc, n in raw.items())
            if key == "namespaces" and isinstance(raw, dict):
                from ringkv.node.namespaces import format_namespaces

                raw = format_namespaces(raw)
            values[key] = _convert(key, raw, toml_path)
    env = os.environ if env is None else env
    for key, raw in env.items():
        if key.startswith("RINGKV_") and key not in ("RINGKV_TEST_FULL",):
            name = key[len("RINGKV_"):].lower()
            if name in FIELDS:
                values[name] = _convert(name, raw, f"environment variable {key}")
    for key, raw in (overrides or {}).items():
        if raw is not None:
            if key not in FIELDS:
                raise ConfigError(key, "unknown setting")
            values[key] = _convert(key, raw, f"flag --{key.replace('_', '-')}")
    if isinstance(values.get("replicas"), str):  # "dc1=3,dc2=2" given for replicas
        values["dc_replicas"] = values.pop("replicas")
    if values.get("dc_replicas") and "replicas" not in values:
        probe = NodeConfig(dc_replicas=values["dc_replicas"])
        values["replicas"] = sum(probe.dc_replication().values()) or NodeConfig.replicas
    config = NodeConfig(**values)
    config.validate()
    return config
