"""Namespaces: separate keyspaces, each with its own replica count N and conflict policy.

A namespace is named in the node configuration, identically on every node:

    replicas = 3                  # N of the default namespace
    conflict_policy = "siblings"  # and its policy

    [namespaces.sessions]         # or, as one string (environment, flags):
    replicas = 2                  # namespaces = "sessions:replicas=2:conflict_policy=lww"
    conflict_policy = "lww"

The ring is built with the largest N of all namespaces; a namespace with a smaller N keeps
each key on the first N nodes of the key's preference list (every prefix of a preference
list is itself a valid one, docs/ring.md). Storage keys carry the namespace
(`token | len | namespace | key`, node/replica.py), so every layer that sees a storage key
can tell which N and policy apply to it: the coordinator (replica sets), the replicas
(merges), anti-entropy (which keys two replicas must both hold) and hinted handoff.

Clients pick a namespace per connection (RESP `RINGKV.NAMESPACE name`), per request (HTTP
`?namespace=`) or per client (`ringkv.Client(namespace=...)`); a service view is bound to
one (`KeyValueService.in_namespace`). An unknown name is refused, naming the ones configured.

A namespace with a `compaction` setting (`leveled`, `tiered` or `time_window`, and that
strategy's `compaction_*` settings) gets an LSM tree of its own in the node's engine: a column
family named after it, which `NamespaceRouter` sends its storage keys to (docs/compaction.md).
The others share the default namespace's family, compacted as the top-level `compaction` says.

A namespace may have quotas (`max_keys`, `max_bytes`, `max_requests_per_s`; the default
namespace's are the top-level settings of those names), checked by node/quotas.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ringkv.cluster.ring import Layout, namespace_layout
from ringkv.errors import ConfigError
from ringkv.node.quotas import QUOTA_FIELDS, Quota, parse_quota
from ringkv.service.contract import DEFAULT_NAMESPACE_NAME, NamespaceSpec
from ringkv.storage.strategies import DEFAULT_FAMILY, STRATEGY_NAMES, Strategy, strategy_from
from ringkv.versioning.record import ConflictPolicy

DEFAULT_NAME = DEFAULT_NAMESPACE_NAME  # how clients name the default namespace (stored as b"")
# The cluster's own records (users and their permissions: security/directory.py). Reserved:
# no client can name it (RINGKV.NAMESPACE, ?namespace=), SCAN and KEYS never list its keys,
# FLUSHALL spares it, and no configured namespace may start with "__". Its N is the cluster's
# (the largest of every namespace's), its policy the default namespace's, and its
# read-modify-writes take the consensus path, whatever `rmw` says.
SYSTEM_NAME = "__system"
RESERVED_PREFIX = "__"
MAX_NAMESPACES = 64
MAX_NAME_BYTES = 64
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
RMW_MODES = ("paxos", "fast")
HOT_READ_MODES = ("all", "spread")
MAX_HOT_CACHE_MS = 60_000
# A compaction setting of the configuration -> (the strategy it belongs to, the engine's name
# for it, how the configuration's value becomes the engine's).
COMPACTION_SETTINGS = {
    "compaction_size_ratio_percent": ("tiered", "size_ratio_percent", int),
    "compaction_min_merge_runs": ("tiered", "min_merge_runs", int),
    "compaction_max_runs": ("tiered", "max_runs", int),
    "compaction_window_s": ("time_window", "window_ms", lambda v: int(v) * 1000),
    "compaction_ttl_rule": ("time_window", "ttl_rule", str),
}
_FIELDS = ("replicas", "conflict_policy", "rmw", "compaction", *COMPACTION_SETTINGS, *QUOTA_FIELDS,
           "hot_reads", "hot_cache_ms")


def check_hot(hot_reads: str, hot_cache_ms: Any, field: str, where: str = "") -> tuple[str, int]:
    """A namespace's hot-key settings, checked: (hot_reads, hot_cache_ms as an int)."""
    def named(setting: str) -> str:  # a namespace's entry names the setting; a top-level field is it
        return f"{where}: {setting} " if where else ""

    if hot_reads not in HOT_READ_MODES:
        raise ConfigError(field, f"{named('hot_reads')}must be all or spread, got {hot_reads!r}")
    text = str(hot_cache_ms)
    if not text.isdigit() or int(text) > MAX_HOT_CACHE_MS:
        raise ConfigError(field, f"{named('hot_cache_ms')}must be an integer in 0..{MAX_HOT_CACHE_MS} (ms), "
                                 f"got {hot_cache_ms!r}")
    return hot_reads, int(text)


def compaction_strategy(compaction: str, settings: dict[str, Any], field: str, where: str = "") -> Strategy:
    """The engine's strategy for `compaction` ("leveled", "tiered", "time_window") and its
    `compaction_*` settings as the configuration gives them; ConfigError on `field`, naming
    the setting (prefixed by `where`, e.g. a namespace's name) when one is wrong."""
    prefix = f"{where}: " if where else ""
    if compaction not in STRATEGY_NAMES:
        raise ConfigError(field, f"{prefix}compaction must be one of {', '.join(STRATEGY_NAMES)}, got {compaction!r}")
    engine_settings: dict[str, Any] = {}
    for name, raw in settings.items():
        if name not in COMPACTION_SETTINGS:
            raise ConfigError(field, f"{prefix}unknown compaction setting {name!r} ({', '.join(COMPACTION_SETTINGS)})")
        owner, engine_name, convert = COMPACTION_SETTINGS[name]
        if owner != compaction:
            raise ConfigError(field, f"{prefix}{name} is a setting of {owner} compaction, not of {compaction}")
        try:
            engine_settings[engine_name] = convert(raw)
        except (TypeError, ValueError):
            raise ConfigError(field, f"{prefix}{name} must be an integer, got {raw!r}") from None
        if name == "compaction_window_s" and engine_settings[engine_name] < 1000:
            raise ConfigError(field, f"{prefix}compaction_window_s must be an integer >= 1, got {raw!r}")
    try:
        return strategy_from(compaction, engine_settings)
    except ConfigError as exc:
        engine_name = exc.field.rsplit(".", 1)[-1]
        name = next((n for n, (_, e, _) in COMPACTION_SETTINGS.items() if e == engine_name), engine_name)
        detail = str(exc).split(": ", 1)[-1]
        raise ConfigError(field, f"{prefix}{name} {detail}") from None


def _quota_fields(quota: Quota) -> dict[str, int]:
    """A namespace's quota as NamespaceSpec's fields (node/quotas.py)."""
    return {"max_keys": quota.max_keys, "max_bytes": quota.max_bytes, "max_requests_per_s": quota.max_requests_per_s}


class NamespaceRouter:
    """Sends a storage key (`token u64 | len u8 | namespace | key`) to the engine's column
    family of its namespace: the namespaces in `families` have one each, every other key goes
    to the default family. Picklable (it runs in flush workers too); `description` names the
    routing, so an engine opened with another one re-routes its tables (storage/strategies.py)."""

    __slots__ = ("_families", "description")

    def __init__(self, families: dict[bytes, str]):
        self._families = dict(families)
        self.description = ["namespace", sorted([ns, family] for ns, family in self._families.items())]

    def __call__(self, skey: bytes) -> str:
        n = skey[8] if len(skey) > 8 else 0
        if not n:
            return DEFAULT_FAMILY
        return self._families.get(skey[9 : 9 + n], DEFAULT_FAMILY)

    def __getstate__(self) -> dict:
        return {"families": self._families}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["families"])


def _dc_layout(name: str, text: str, cluster: Mapping[str, int]) -> Layout:
    """A namespace's `replicas = "dc1=2;dc2=1"` checked against the cluster's counts."""
    counts: dict[str, int] = {}
    for entry in (e.strip() for e in text.split(";")):
        dc, sep, count = entry.partition("=")
        if not sep or not dc.strip() or not count.strip().isdigit():
            raise ConfigError("namespaces", f"{name}: replicas entry {entry!r} is not dc=count "
                                            "(e.g. replicas=dc1=2;dc2=1)")
        if dc.strip() in counts:
            raise ConfigError("namespaces", f"{name}: replicas names datacenter {dc.strip()!r} twice")
        counts[dc.strip()] = int(count)
    try:
        return namespace_layout(cluster, counts)
    except ConfigError as exc:
        raise ConfigError("namespaces", f"{name}: replicas {str(exc).split(': ', 1)[1]}") from None


def parse_namespaces(text: str) -> list[tuple[str, dict[str, str]]]:
    """`name:field=value:field=value, name2:...` into (name, {field: value}); ConfigError
    naming the entry that is wrong. Values are checked by `Namespaces`."""
    out: list[tuple[str, dict[str, str]]] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, *fields = (part.strip() for part in entry.split(":"))
        values: dict[str, str] = {}
        for f in fields:
            key, sep, value = f.partition("=")
            if not sep or key.strip() not in _FIELDS:
                raise ConfigError("namespaces", f"entry {entry!r}: expected name:replicas=N:conflict_policy="
                                                "siblings|lww:rmw=paxos|fast:compaction=leveled|tiered|time_window"
                                                "[:compaction_...=...][:max_keys=N][:max_bytes=N]"
                                                "[:max_requests_per_s=N][:hot_reads=all|spread][:hot_cache_ms=N]")
            values[key.strip()] = value.strip()
        out.append((name, values))
    return out


def _field_text(key: str, value: Any) -> str:
    """A namespace's setting from its TOML table as the string form writes it."""
    if key == "replicas" and isinstance(value, dict):  # replicas = { dc1 = 2, dc2 = 1 }
        return ";".join(f"{dc}={n}" for dc, n in value.items())
    return str(value)


def format_namespaces(table: dict[str, Any]) -> str:
    """A TOML `[namespaces.NAME]` table in the string form `parse_namespaces` reads."""
    entries = []
    for name, fields in table.items():
        if not isinstance(fields, dict):
            raise ConfigError("namespaces", f"[namespaces.{name}] must be a table of replicas and conflict_policy")
        unknown = sorted(set(fields) - set(_FIELDS))
        if unknown:
            raise ConfigError("namespaces", f"[namespaces.{name}]: unknown setting {unknown[0]!r} "
                                            f"({', '.join(_FIELDS)})")
        entries.append(":".join([str(name)] + [f"{k}={_field_text(k, fields[k])}" for k in _FIELDS if k in fields]))
    return ",".join(entries)


class Namespaces:
    """The namespaces of a cluster: the default one and the configured ones."""

    def __init__(self, replicas: int, conflict_policy: str, text: str = "", max_replicas: int = 16,
                 rmw: str = "paxos", compaction: str = "leveled", compaction_settings: dict[str, Any] | None = None,
                 quota: Quota | None = None, hot_reads: str = "all", hot_cache_ms: int = 0,
                 dc_replicas: Mapping[str, int] | None = None):
        """`dc_replicas`: the cluster's replica counts per datacenter, when it counts them so
        ({} or None otherwise); a namespace may then give counts of its own."""
        if rmw not in RMW_MODES:
            raise ConfigError("rmw", f"must be paxos or fast, got {rmw!r}")
        check_hot(hot_reads, 0, "hot_reads")
        check_hot("all", hot_cache_ms, "hot_cache_ms")
        settings = dict(compaction_settings or {})
        compaction_strategy(compaction, settings, "compaction")  # checked before anything else
        self.default = NamespaceSpec(DEFAULT_NAME, replicas, ConflictPolicy(conflict_policy), rmw,
                                     compaction, tuple(sorted(settings.items())),
                                     **_quota_fields(quota or Quota()), hot_reads=hot_reads, hot_cache_ms=hot_cache_ms)
        self._by_stored: dict[bytes, NamespaceSpec] = {b"": self.default}
        for name, fields in parse_namespaces(text):
            if _NAME.fullmatch(name) is None:
                raise ConfigError("namespaces", f"name {name!r} must be 1..{MAX_NAME_BYTES} letters, digits, "
                                                "'-', '_' or '.'")
            if name.startswith(RESERVED_PREFIX):
                raise ConfigError("namespaces", f"{name!r}: names starting with {RESERVED_PREFIX!r} are reserved "
                                                f"({SYSTEM_NAME} holds the cluster's users)")
            if name == DEFAULT_NAME or name.encode() in self._by_stored:
                raise ConfigError("namespaces", f"{name!r} is defined twice (the default namespace is "
                                                "set by replicas and conflict_policy)")
            raw_n = fields.get("replicas", str(replicas))
            own_counts: tuple[tuple[str, int], ...] = ()
            if "=" in raw_n:  # counts per datacenter: dc1=2;dc2=1
                layout = _dc_layout(name, raw_n, dc_replicas or {})
                if isinstance(layout, tuple):
                    own_counts = layout
                raw_n = str(sum(c for _, c in own_counts) or layout)
            if not raw_n.isdigit() or not 1 <= int(raw_n) <= max_replicas:
                raise ConfigError("namespaces", f"{name}: replicas must be an integer in 1..{max_replicas}, "
                                                f"got {raw_n!r}")
            policy = fields.get("conflict_policy", conflict_policy)
            if policy not in ("siblings", "lww"):
                raise ConfigError("namespaces", f"{name}: conflict_policy must be siblings or lww, got {policy!r}")
            mode = fields.get("rmw", rmw)
            if mode not in RMW_MODES:
                raise ConfigError("namespaces", f"{name}: rmw must be paxos or fast, got {mode!r}")
            compaction_fields = {k: v for k, v in fields.items() if k in COMPACTION_SETTINGS}
            compaction = fields.get("compaction", "")
            if compaction_fields and not compaction:
                raise ConfigError("namespaces", f"{name}: {sorted(compaction_fields)[0]} needs a compaction "
                                                "(leveled, tiered or time_window)")
            if compaction:
                compaction_strategy(compaction, compaction_fields, "namespaces", name)
                compaction_fields = {k: v if k == "compaction_ttl_rule" else int(v) for k, v in compaction_fields.items()}
            hot = check_hot(fields.get("hot_reads", hot_reads), fields.get("hot_cache_ms", hot_cache_ms),
                            "namespaces", name)
            self._by_stored[name.encode()] = NamespaceSpec(
                name, int(raw_n), ConflictPolicy(policy), mode, compaction, tuple(sorted(compaction_fields.items())),
                **_quota_fields(parse_quota(fields, "namespaces", name)), hot_reads=hot[0], hot_cache_ms=hot[1],
                dc_replicas=own_counts)
            if len(self._by_stored) > MAX_NAMESPACES:
                raise ConfigError("namespaces", f"at most {MAX_NAMESPACES} namespaces")
        self.max_replicas = max(s.replicas for s in self._by_stored.values())
        self.min_replicas = min(s.replicas for s in self._by_stored.values())
        self.uniform = len({(s.layout, s.conflict_policy) for s in self._by_stored.values()}) == 1
        # Every namespace's layout (cluster/ring.py's Layout); the system namespace's, the
        # whole list, is among them (the default namespace's N is the largest).
        self.layouts = frozenset(s.layout for s in self._by_stored.values()) | {self.max_replicas}
        # Added last, with the largest N and the default's policy: it changes none of the above.
        self.system = NamespaceSpec(SYSTEM_NAME, self.max_replicas, self.default.conflict_policy, "paxos")
        self._by_stored[self.system.stored] = self.system

    def __iter__(self):
        """The namespaces clients can name (not the system namespace)."""
        return (s for s in self._by_stored.values() if s is not self.system)

    def __len__(self) -> int:
        return len(self._by_stored) - 1

    def named(self, name: str | bytes) -> NamespaceSpec:
        """The namespace a client names ("default" or "" for the default one); ValueError
        naming the configured ones if there is no such namespace."""
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if name in ("", DEFAULT_NAME):
            return self.default
        spec = self._by_stored.get(name.encode())
        if spec is self.system:
            raise ValueError(f"namespace {name!r} is reserved for the cluster's users and cannot be named")
        if spec is None:
            known = ", ".join(s.name for s in self)
            raise ValueError(f"unknown namespace {name!r}; this cluster has: {known}")
        return spec

    def of_stored(self, namespace: bytes) -> NamespaceSpec:
        """The spec of a namespace as stored; the default's for one no longer configured."""
        return self._by_stored.get(namespace, self.default)

    def of_skey(self, skey: bytes) -> NamespaceSpec:
        n = skey[8]
        if n == 0:
            return self.default
        return self._by_stored.get(bytes(skey[9:9 + n]), self.default)

    def policy_of_skey(self, skey: bytes) -> ConflictPolicy:
        return self.of_skey(skey).conflict_policy

    def replicas_of_skey(self, skey: bytes) -> int:
        return self.of_skey(skey).replicas

    def layout_of_skey(self, skey: bytes) -> Layout:
        return self.of_skey(skey).layout

    def layouts_of(self, stored: Iterable[bytes]) -> frozenset[Layout]:
        """The layouts of namespaces as stored (a name no longer configured: the default's)."""
        return frozenset(self.of_stored(ns).layout for ns in stored)

    # ------------------------------------------------------------------ the engine's families

    def strategy_of(self, spec: NamespaceSpec) -> Strategy:
        """The compaction strategy of `spec`'s family (the default namespace's for one without
        a `compaction` of its own)."""
        owner = spec if spec.compaction else self.default
        where = "" if owner is self.default else owner.name
        return compaction_strategy(owner.compaction, dict(owner.compaction_settings),
                                   "compaction" if not where else "namespaces", where)

    def family_of(self, spec: NamespaceSpec) -> str:
        """The engine's column family holding `spec`'s keys."""
        return spec.name if spec.compaction and spec is not self.default else DEFAULT_FAMILY

    def engine_families(self) -> tuple[Strategy, dict[str, Strategy], NamespaceRouter | None]:
        """What the node's engine is opened with: the default family's strategy, a family per
        namespace with a compaction of its own, and the router that sends keys to them."""
        own = [spec for spec in self if spec is not self.default and spec.compaction]
        families = {spec.name: self.strategy_of(spec) for spec in own}
        router = NamespaceRouter({spec.stored: spec.name for spec in own}) if own else None
        return self.strategy_of(self.default), families, router


