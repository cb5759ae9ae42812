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
"""

from __future__ import annotations

import re
from typing import Any

from ringkv.errors import ConfigError
from ringkv.service.contract import DEFAULT_NAMESPACE_NAME, NamespaceSpec
from ringkv.versioning.record import ConflictPolicy

DEFAULT_NAME = DEFAULT_NAMESPACE_NAME  # how clients name the default namespace (stored as b"")
MAX_NAMESPACES = 64
MAX_NAME_BYTES = 64
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_FIELDS = ("replicas", "conflict_policy", "rmw")
RMW_MODES = ("paxos", "fast")


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
                                                "siblings|lww:rmw=paxos|fast")
            values[key.strip()] = value.strip()
        out.append((name, values))
    return out


def format_namespaces(table: dict[str, Any]) -> str:
    """A TOML `[namespaces.NAME]` table in the string form `parse_namespaces` reads."""
    entries = []
    for name, fields in table.items():
        if not isinstance(fields, dict):
            raise ConfigError("namespaces", f"[namespaces.{name}] must be a table of replicas and conflict_policy")
        unknown = sorted(set(fields) - set(_FIELDS))
        if unknown:
            raise ConfigError("namespaces", f"[namespaces.{name}]: unknown setting {unknown[0]!r} "
                                            "(replicas, conflict_policy, rmw)")
        entries.append(":".join([str(name)] + [f"{k}={fields[k]}" for k in _FIELDS if k in fields]))
    return ",".join(entries)


class Namespaces:
    """The namespaces of a cluster: the default one and the configured ones."""

    def __init__(self, replicas: int, conflict_policy: str, text: str = "", max_replicas: int = 16,
                 rmw: str = "paxos"):
        if rmw not in RMW_MODES:
            raise ConfigError("rmw", f"must be paxos or fast, got {rmw!r}")
        self.default = NamespaceSpec(DEFAULT_NAME, replicas, ConflictPolicy(conflict_policy), rmw)
        self._by_stored: dict[bytes, NamespaceSpec] = {b"": self.default}
        for name, fields in parse_namespaces(text):
            if _NAME.fullmatch(name) is None:
                raise ConfigError("namespaces", f"name {name!r} must be 1..{MAX_NAME_BYTES} letters, digits, "
                                                "'-', '_' or '.'")
            if name == DEFAULT_NAME or name.encode() in self._by_stored:
                raise ConfigError("namespaces", f"{name!r} is defined twice (the default namespace is "
                                                "set by replicas and conflict_policy)")
            raw_n = fields.get("replicas", str(replicas))
            if not raw_n.isdigit() or not 1 <= int(raw_n) <= max_replicas:
                raise ConfigError("namespaces", f"{name}: replicas must be an integer in 1..{max_replicas}, "
                                                f"got {raw_n!r}")
            policy = fields.get("conflict_policy", conflict_policy)
            if policy not in ("siblings", "lww"):
                raise ConfigError("namespaces", f"{name}: conflict_policy must be siblings or lww, got {policy!r}")
            mode = fields.get("rmw", rmw)
            if mode not in RMW_MODES:
                raise ConfigError("namespaces", f"{name}: rmw must be paxos or fast, got {mode!r}")
            self._by_stored[name.encode()] = NamespaceSpec(name, int(raw_n), ConflictPolicy(policy), mode)
            if len(self._by_stored) > MAX_NAMESPACES:
                raise ConfigError("namespaces", f"at most {MAX_NAMESPACES} namespaces")
        self.max_replicas = max(s.replicas for s in self._by_stored.values())
        self.min_replicas = min(s.replicas for s in self._by_stored.values())
        self.uniform = len({(s.replicas, s.conflict_policy) for s in self._by_stored.values()}) == 1

    def __iter__(self):
        return iter(self._by_stored.values())

    def __len__(self) -> int:
        return len(self._by_stored)

    def named(self, name: str | bytes) -> NamespaceSpec:
        """The namespace a client names ("default" or "" for the default one); ValueError
        naming the configured ones if there is no such namespace."""
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if name in ("", DEFAULT_NAME):
            return self.default
        spec = self._by_stored.get(name.encode())
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


