"""Node configuration: one typed object, defaults with units in the names.

Sources, later ones win: built-in defaults < TOML file (`--config`) < `RINGKV_*` environment
variables (`RINGKV_RESP_PORT=7400`) < command-line flags. Every value is checked at start-up;
a bad one stops the node with a message naming the field and where it came from.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from typing import Any

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
    read_consistency: str = "quorum"  # one | quorum | all | an integer r
    write_consistency: str = "quorum"  # one | quorum | all | an integer w
    replica_timeout_ms: int = 500  # how long a coordinator waits for one replica's answer
    read_repair: str = "background"  # background | blocking | off
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
    # Live membership (node/membership.py): start as a joining node and receive partitions;
    # how long a node waits after announcing a join or leave before moving data.
    join: bool = False
    membership_settle_ms: int = 3000
    # Tests and the chaos suite only: accept RINGKV.FAULT commands (node/faults.py).
    fault_injection: bool = False
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
    # Other namespaces, each with its own N and policy (node/namespaces.py): a TOML table
    # [namespaces.NAME] of replicas and conflict_policy, or as a string (environment, flags)
    # "NAME:replicas=2:conflict_policy=lww,NAME2:replicas=1". Identical on every node.
    namespaces: str = ""
    tombstone_grace_s: int = 864_000  # 10 days, as Cassandra's gc_grace_seconds

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

    # Operations.
    shutdown_drain_ms: int = 5_000
    log_level: str = "info"

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
        require(self.sync in ("always", "interval", "never"), "sync", "must be always, interval or never")
        require(self.conflict_policy in ("siblings", "lww"), "conflict_policy", "must be siblings or lww")
        require(self.rmw in ("paxos", "fast"), "rmw", "must be paxos or fast")
        require(self.log_level in ("debug", "info", "warning", "error"), "log_level",
                "must be debug, info, warning or error")
        for name in ("sync_interval_ms", "memtable_bytes", "max_value_bytes", "max_connections",
                     "max_output_buffer_bytes", "max_args", "max_inline_bytes", "max_query_buffer_bytes",
                     "keys_max_count", "expiry_index_max_keys", "shutdown_drain_ms"):
            require(getattr(self, name) >= 1, name, "must be >= 1")
        require(self.block_cache_bytes >= 0, "block_cache_bytes", "must be >= 0")
        require(self.tombstone_grace_s >= 0, "tombstone_grace_s", "must be >= 0")
        require(self.max_value_bytes <= 32 * MIB, "max_value_bytes", "must be <= 33554432 (32 MiB)")
        require(self.memtable_bytes >= 64 * 1024, "memtable_bytes", "must be >= 65536")
        require(bool(self.cluster_name) and all(c.isalnum() or c in "-_." for c in self.cluster_name),
                "cluster_name", "must be letters, digits, '-', '_' or '.'")
        require(self.read_repair in ("background", "blocking", "off"), "read_repair",
                "must be background, blocking or off")
        require(self.replica_timeout_ms >= 1, "replica_timeout_ms", "must be >= 1")
        require(1 <= self.gossip_fanout <= 3, "gossip_fanout", "must be 1, 2 or 3")
        require(self.phi_threshold > 0, "phi_threshold", "must be > 0")
        require(self.membership_settle_ms >= 0, "membership_settle_ms", "must be >= 0")
        require(self.anti_entropy_interval_ms >= 0, "anti_entropy_interval_ms", "must be >= 0 (0: off)")
        require(self.phi_acceptable_pause_ms >= 0, "phi_acceptable_pause_ms", "must be >= 0")
        for name in ("max_hint_window_ms", "max_hints", "hint_delivery_rate_per_s", "gossip_interval_ms",
                     "batchlog_replay_interval_ms", "batchlog_max_entries", "batchlog_max_bytes"):
            require(getattr(self, name) >= 1, name, "must be >= 1")
        # A replay may run while the coordinator still applies the batch: harmless (applying a
        # batch twice writes once) but wasted, so the delay outlasts a forwarded part's timeout.
        require(self.batchlog_replay_delay_ms > 3 * self.replica_timeout_ms, "batchlog_replay_delay_ms",
                f"must be longer than a forwarded write's timeout, 3 x replica_timeout_ms = "
                f"{3 * self.replica_timeout_ms} ms")
        from ringkv.cluster.ring import MAX_REPLICAS, check_partitions

        try:
            check_partitions(self.partitions)
        except ConfigError as exc:
            raise ConfigError("partitions", f"{exc}".split(": ", 1)[1]) from None
        require(1 <= self.replicas <= MAX_REPLICAS, "replicas", f"must be in 1..{MAX_REPLICAS}")
        for name in ("read_consistency", "write_consistency"):
            value = getattr(self, name)
            require(value in ("one", "quorum", "all") or (value.isdigit() and 1 <= int(value) <= self.replicas),
                    name, f"must be one, quorum, all or an integer in 1..replicas={self.replicas}")
        self.namespace_specs()
        members = self.member_list()
        if members:
            require(any(m.node_id == self.node_id for m in members), "members",
                    f"must include this node ({self.node_id})")

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

        return Namespaces(self.replicas, self.conflict_policy, self.namespaces, MAX_REPLICAS, self.rmw)

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


@dataclasses.dataclass(frozen=True)
class MemberAddress:
    node_id: str
    host: str
    rpc_port: int
    rack: str = ""


def parse_member(entry: str) -> MemberAddress:
    """One `node_id@host:rpc_port[/rack]` entry; ConfigError naming it when malformed."""
    m = _MEMBER.fullmatch(entry.strip())
    if m is None:
        raise ConfigError("members", f"entry {entry!r} is not node_id@host:port[/rack]")
    node_id, host, port, rack = m.group(1), m.group(2), int(m.group(3)), m.group(4) or ""
    if not 1 <= port <= 65535:
        raise ConfigError("members", f"entry {entry!r}: port must be 1..65535")
    return MemberAddress(node_id, host, port, rack)


_MEMBER = re.compile(r"([A-Za-z0-9_.-]+)@([A-Za-z0-9_.:-]+|\[[0-9a-fA-F:]+\]):([0-9]{1,5})(?:/([A-Za-z0-9_.-]+))?")


FIELDS = {f.name: f for f in dataclasses.fields(NodeConfig)}


def _convert(name: str, raw: Any, source: str) -> Any:
    kind = FIELDS[name].type
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
    config = NodeConfig(**values)
    config.validate()
    return config
