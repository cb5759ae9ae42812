"""Quotas per namespace: live keys, bytes, and requests per second (docs/namespaces.md, Quotas).

A namespace's `max_keys`, `max_bytes` and `max_requests_per_s` (0: no limit) come from its
configuration. What is counted:

- keys: live keys, as DBSIZE counts them (a key whose TTL passed counts until it is collected);
- bytes: of each live key, the key's bytes plus the bytes of every value it holds (siblings
  included); versions, timestamps and the storage prefix are not counted;
- requests: commands that act on the namespace's data (reads and writes, SCAN, DBSIZE), as
  clients send them to this node; forwarded and replicated copies are not requests.

How a node knows a namespace's size, cluster-wide. Every node counts exactly what its own
replica holds, per namespace and per ring partition (`NamespaceUsage`, kept by
node/local_store.py at every write, merge, delete, expiry and removal). Every
`quota_refresh_interval_ms` a node of a cluster asks every member for its counts (the
NodeInfo figures DBSIZE uses) and keeps, per namespace, the sum over the partitions it does
not hold of the counts of each partition's first replica that answered (`remote_usage`;
a member that does not answer is counted as it last answered). Its estimate of a namespace is
then its own count, always current, plus that sum. So with every node a replica of every key
(N = members) the estimate is this node's exact count; otherwise the part it does not hold is
as old as the last refresh. The quota is soft: a namespace may go over its limit by the keys
(bytes) written in it through other nodes, to partitions this node does not hold, during one
refresh interval, plus the writes in flight at the same moment (each is checked before any of
them is counted). A replica that missed writes (down, or behind on hints) undercounts until
repair reaches it.

Growth, never shrinking, is refused: a write is checked only when it adds a key (a new key,
or a value over a deleted one) or adds bytes, and is refused when the estimate plus what it
adds is over the limit. Deletes, expiries and overwrites that do not grow the namespace always
pass; an overwrite with a longer value passes while it fits.

Requests per second are per node: each node refills a token bucket at max_requests_per_s
divided by the ring's members (at least 1/s), holding at most one second of them, so the
cluster admits about max_requests_per_s when clients spread their requests over the nodes, and
a client that talks to one node only gets that node's share.

Pure parts (`TokenBucket`, `NamespaceUsage`, `growth`, `remote_usage`, `Quota`) take time and
counts as inputs; `QuotaGate` is what the node checks against; `QuotaRefresher` is the async
loop that brings the other members' counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ringkv.errors import ConfigError, QuotaExceededError
from ringkv.versioning.record import Record

log = logging.getLogger("ringkv.quotas")

QUOTA_FIELDS = ("max_keys", "max_bytes", "max_requests_per_s")
MAX_QUOTA = 1 << 62  # larger limits are refused at start (they would mean "none" anyway)
DEFAULT_REFRESH_INTERVAL_MS = 1000


@dataclass(frozen=True, slots=True)
class Quota:
    """A namespace's limits; 0 is no limit."""

    max_keys: int = 0
    max_bytes: int = 0
    max_requests_per_s: int = 0

    @property
    def sized(self) -> bool:
        """Whether writes must be checked (a key or byte limit)."""
        return bool(self.max_keys or self.max_bytes)

    @property
    def any(self) -> bool:
        return bool(self.max_keys or self.max_bytes or self.max_requests_per_s)


def parse_quota(fields: dict[str, Any], field: str, where: str = "") -> Quota:
    """The quota fields among `fields` (strings or ints, as the configuration gives them)
    checked: ConfigError on `field`, naming the setting (after `where`, e.g. a namespace)."""
    prefix = f"{where}: " if where else ""
    values: dict[str, int] = {}
    for name in QUOTA_FIELDS:
        raw = fields.get(name, 0)
        text = str(raw).strip()
        if isinstance(raw, bool) or not text.isdigit() or int(text) > MAX_QUOTA:
            label = f"{prefix}{name} " if where or field != name else ""
            raise ConfigError(field, f"{label}must be an integer in 0..{MAX_QUOTA} (0: no limit), got {raw!r}")
        values[name] = int(text)
    return Quota(**values)


# ---------------------------------------------------------------------- requests per second


class TokenBucket:
    """At most `capacity` requests at once, refilled at `rate_per_s`. Time is given (ms)."""

    __slots__ = ("capacity", "last_ms", "rate_per_s", "tokens")

    def __init__(self, rate_per_s: float, capacity: float, now_ms: float):
        if rate_per_s <= 0 or capacity < 1:
            raise ValueError(f"a token bucket needs rate_per_s > 0 and capacity >= 1, got {rate_per_s}, {capacity}")
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self.tokens = capacity
        self.last_ms = now_ms

    def take(self, now_ms: float, n: int = 1) -> bool:
        """Take `n` tokens if there are that many (True), else take none (False)."""
        if now_ms > self.last_ms:
            self.tokens = min(self.capacity, self.tokens + (now_ms - self.last_ms) * self.rate_per_s / 1000)
            self.last_ms = now_ms
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


# ---------------------------------------------------------------------- keys and bytes


def live_bytes(record: Record | None, key_len: int) -> int:
    """The bytes a record counts for: 0 unless it holds a value; else the key's bytes plus
    every value's."""
    if record is None:
        return 0
    total = 0
    live = False
    for s in record.siblings:
        if s.value is not None:
            live = True
            total += len(s.value)
    return key_len + total if live else 0


def growth(old: Record | None, new: Record | None, key_len: int) -> tuple[int, int]:
    """(keys added, bytes added) going from `old` to `new` (negative when it shrinks)."""
    return int(_holds_value(new)) - int(_holds_value(old)), live_bytes(new, key_len) - live_bytes(old, key_len)


def write_growth(old: Record | None, value: bytes | None, key_len: int, replaces: bool) -> tuple[int, int]:
    """What a write of `value` (None: a delete) over `old` adds, before it is made: a write that
    `replaces` every value held leaves one; another (a blind write beside siblings) is counted
    as adding its value to those held (an upper bound: it may replace some)."""
    if value is None:
        return 0, 0
    old_bytes = live_bytes(old, key_len)
    was_live = _holds_value(old)
    if replaces or not was_live:
        return (0 if was_live else 1), key_len + len(value) - old_bytes
    return 0, len(value)


def _holds_value(record: Record | None) -> bool:
    return record is not None and any(s.value is not None for s in record.siblings)


class NamespaceUsage:
    """Live keys and bytes this replica holds: per namespace (as stored; b"" is the default),
    in total, and bytes per ring partition (the keys per partition are LocalStore's)."""

    __slots__ = ("_bytes", "_keys", "_partition_bytes", "_shift", "partitions")

    def __init__(self, partitions: int):
        self.partitions = partitions
        self._shift = 64 - (partitions.bit_length() - 1)
        self._keys: dict[bytes, int] = {}
        self._bytes: dict[bytes, int] = {}
        self._partition_bytes: dict[bytes, list[int]] = {}

    def add(self, skey: bytes, keys: int, nbytes: int) -> None:
        """Count a change of the record at storage key `skey`."""
        n = skey[8]
        ns = bytes(skey[9:9 + n]) if n else b""
        if keys:
            self._keys[ns] = self._keys.get(ns, 0) + keys
        if nbytes:
            self._bytes[ns] = self._bytes.get(ns, 0) + nbytes
            parts = self._partition_bytes.get(ns)
            if parts is None:
                parts = self._partition_bytes[ns] = [0] * self.partitions
            parts[int.from_bytes(skey[:8], "big") >> self._shift] += nbytes

    def keys(self, ns: bytes) -> int:
        return self._keys.get(ns, 0)

    def bytes(self, ns: bytes) -> int:
        return self._bytes.get(ns, 0)

    def clear(self, keep: Iterable[bytes] = ()) -> None:
        """Forget every namespace's counts but those of `keep` (FLUSHALL keeps the system one)."""
        kept = set(keep)
        for table in (self._keys, self._bytes, self._partition_bytes):
            for ns in [ns for ns in table if ns not in kept]:
                del table[ns]

    def partition_bytes_by_name(self) -> dict[str, list[int]]:
        """Bytes per partition of every namespace, by name ("" for the default), for NodeInfo."""
        return {ns.decode("utf-8", "replace"): list(parts) for ns, parts in self._partition_bytes.items()}


def remote_usage(me: str, prefs: Iterable[tuple[str, ...]], counts: dict[str, tuple[list[int], list[int]]]) -> tuple[int, int]:
    """The keys and bytes of the partitions `me` does not hold (given each partition's
    preference list, for the namespace's N): each counted at its first replica in `counts`
    (node -> (keys per partition, bytes per partition); empty lists for none). A partition
    none of whose replicas is in `counts` adds nothing."""
    keys = nbytes = 0
    for p, pref in enumerate(prefs):
        if me in pref:
            continue
        for node in pref:
            found = counts.get(node)
            if found is not None:
                k, b = found
                keys += k[p] if p < len(k) else 0
                nbytes += b[p] if p < len(b) else 0
                break
    return keys, nbytes


# ---------------------------------------------------------------------- the gate


class QuotaGate:
    """What a node checks writes and requests against (module docstring). `usage` is the
    local replica's counts; `monotonic_ms` the clock the token buckets run on."""

    def __init__(self, specs: Iterable[Any], usage: NamespaceUsage, *, members: int = 1,
                 monotonic_ms: Callable[[], float] | None = None):
        self.usage = usage
        self._now = monotonic_ms or (lambda: time.monotonic() * 1000)
        self.quotas: dict[bytes, Quota] = {}
        self.names: dict[bytes, str] = {}
        for spec in specs:
            quota = Quota(spec.max_keys, spec.max_bytes, spec.max_requests_per_s)
            self.names[spec.stored] = spec.name
            if quota.any:
                self.quotas[spec.stored] = quota
        self.sized: dict[bytes, Quota] = {ns: q for ns, q in self.quotas.items() if q.sized}
        self.remote: dict[bytes, tuple[int, int]] = {}  # ns -> (keys, bytes) of partitions held elsewhere
        self.remote_age_ms = 0.0  # when the remote counts were last refreshed (monotonic ms)
        self.refusals: dict[tuple[str, str], int] = {}  # (namespace, quota field) -> requests refused
        self.requests: dict[bytes, int] = {}  # requests admitted per rate-limited namespace
        self.members = 1
        self._buckets: dict[bytes, TokenBucket] = {}
        self.set_members(members)

    # ------------------------------------------------------------------ sizes

    def estimate(self, ns: bytes) -> tuple[int, int]:
        """The namespace's keys and bytes in the cluster, as this node estimates them."""
        rk, rb = self.remote.get(ns, (0, 0))
        return self.usage.keys(ns) + rk, self.usage.bytes(ns) + rb

    def check(self, ns: bytes, keys: int, nbytes: int) -> None:
        """QuotaExceededError when a write adding `keys` keys and `nbytes` bytes to namespace
        `ns` would take it over a limit; nothing happens for a write that does not grow it."""
        quota = self.sized.get(ns)
        if quota is None or (keys <= 0 and nbytes <= 0):
            return
        held_keys, held_bytes = self.estimate(ns)
        name = self.names.get(ns, ns.decode("utf-8", "replace"))
        if keys > 0 and quota.max_keys and held_keys + keys > quota.max_keys:
            self._refused(name, "max_keys")
            raise QuotaExceededError(name, "max_keys", quota.max_keys,
                                     f"namespace {name} holds {held_keys} keys, max_keys={quota.max_keys}")
        if nbytes > 0 and quota.max_bytes and held_bytes + nbytes > quota.max_bytes:
            self._refused(name, "max_bytes")
            raise QuotaExceededError(name, "max_bytes", quota.max_bytes,
                                     f"namespace {name} holds {held_bytes} bytes, max_bytes={quota.max_bytes} "
                                     f"(this write adds {nbytes})")

    def check_records(self, ns: bytes, key_len: int, old: Record | None, new: Record | None) -> None:
        """`check` for a write whose old and new records are known."""
        if ns in self.sized:
            self.check(ns, *growth(old, new, key_len))

    def check_batch(self, ns: bytes, items: Iterable[tuple[bytes, bytes]], current: Iterable[bytes | None]) -> None:
        """`check` for several (key, value) writes over keys holding `current` (None: no value),
        as one: all of them fit or none is written."""
        keys = nbytes = 0
        for (key, value), old in zip(items, current, strict=True):
            if old is None:
                keys += 1
                nbytes += len(key) + len(value)
            else:
                nbytes += len(value) - len(old)
        self.check(ns, keys, nbytes)

    def batch_upper_bound(self, ns: bytes, items: Iterable[tuple[bytes, bytes]]) -> bool:
        """Whether the batch fits even if every key is new (then no read is needed to check it)."""
        quota = self.sized.get(ns)
        if quota is None:
            return True
        items = list(items)
        held_keys, held_bytes = self.estimate(ns)
        return ((not quota.max_keys or held_keys + len(items) <= quota.max_keys)
                and (not quota.max_bytes or held_bytes + sum(len(k) + len(v) for k, v in items) <= quota.max_bytes))

    def _refused(self, name: str, field: str) -> None:
        key = (name, field)
        self.refusals[key] = self.refusals.get(key, 0) + 1

    # ------------------------------------------------------------------ requests per second

    def set_members(self, members: int) -> None:
        """The ring's members: each node's bucket refills at max_requests_per_s / members."""
        members = max(1, members)
        if members == self.members and self._buckets:
            return
        self.members = members
        now = self._now()
        self._buckets = {}
        for ns, quota in self.quotas.items():
            if quota.max_requests_per_s:
                rate = max(1.0, quota.max_requests_per_s / members)
                self._buckets[ns] = TokenBucket(rate, max(1.0, rate), now)

    def admit(self, ns: bytes, n: int = 1) -> None:
        """Count `n` requests in namespace `ns`; QuotaExceededError when its bucket is empty."""
        bucket = self._buckets.get(ns)
        if bucket is None:
            return
        if bucket.take(self._now(), n):
            self.requests[ns] = self.requests.get(ns, 0) + n
            return
        quota = self.quotas[ns]
        name = self.names.get(ns, ns.decode("utf-8", "replace"))
        self._refused(name, "max_requests_per_s")
        limit = quota.max_requests_per_s
        if self.members == 1:
            detail = f"namespace {name} at {limit} requests/s, max_requests_per_s={limit}"
        else:
            detail = (f"namespace {name} at {bucket.rate_per_s:g} requests/s on this node, its share of "
                      f"max_requests_per_s={limit} over {self.members} nodes")
        raise QuotaExceededError(name, "max_requests_per_s", limit, detail)

    # ------------------------------------------------------------------ figures

    def namespaces_info(self) -> list[dict[str, Any]]:
        """Per namespace with a quota: its estimate, limits and refusals."""
        out = []
        for ns, quota in self.quotas.items():
            name = self.names.get(ns, "")
            keys, nbytes = self.estimate(ns)
            out.append({"namespace": name, "keys": keys, "bytes": nbytes,
                        "local_keys": self.usage.keys(ns), "local_bytes": self.usage.bytes(ns),
                        "max_keys": quota.max_keys, "max_bytes": quota.max_bytes,
                        "max_requests_per_s": quota.max_requests_per_s,
                        "requests": self.requests.get(ns, 0),
                        "refused": {f: self.refusals.get((name, f), 0) for f in QUOTA_FIELDS}})
        return out

    def info(self) -> dict[str, Any]:
        """INFO's `# Quotas` section: one line per namespace with a quota."""
        out: dict[str, Any] = {"quota_refresh_age_ms": int(self._now() - self.remote_age_ms) if self.remote_age_ms
                               else 0}
        for doc in self.namespaces_info():
            refused = doc["refused"]
            out[f"ns_{doc['namespace']}"] = (
                f"keys={doc['keys']},bytes={doc['bytes']},max_keys={doc['max_keys']},max_bytes={doc['max_bytes']},"
                f"max_requests_per_s={doc['max_requests_per_s']},requests={doc['requests']},"
                f"refused_keys={refused['max_keys']},refused_bytes={refused['max_bytes']},"
                f"refused_requests={refused['max_requests_per_s']}")
        return out


def namespace_figures(specs: Iterable[Any], usage: NamespaceUsage, gate: QuotaGate | None) -> dict[str, Any]:
    """/metrics figures: every namespace's keys and bytes on this replica; for those with a
    quota, the cluster estimate and the limits; refusals by (namespace, quota)."""
    spaces: dict[str, Any] = {}
    for spec in specs:
        ns = spec.stored
        doc: dict[str, Any] = {"keys": usage.keys(ns), "bytes": usage.bytes(ns)}
        if gate is not None and ns in gate.quotas:
            quota = gate.quotas[ns]
            doc["estimated_keys"], doc["estimated_bytes"] = gate.estimate(ns)
            doc["limits"] = {f: getattr(quota, f) for f in QUOTA_FIELDS if getattr(quota, f)}
        spaces[spec.name] = doc
    return {"namespaces": spaces, "refusals": dict(gate.refusals) if gate is not None else {}}


# ---------------------------------------------------------------------- the refresher


class QuotaRefresher:
    """Every `interval_ms`, the other members' counts into `gate.remote` (module docstring).
    `node_infos` is Keyspace.node_infos; `prefs_for(layout)` the preference lists of a namespace layout;
    `members()` the ring's members now."""

    def __init__(self, gate: QuotaGate, node_id: str, specs: Iterable[Any], node_infos: Callable[[], Any],
                 prefs_for: Callable[[Any], Any], members: Callable[[], int], interval_ms: int):
        self.gate = gate
        self.node_id = node_id
        self.specs = [s for s in specs if s.stored in gate.sized]
        self.node_infos = node_infos
        self.prefs_for = prefs_for
        self.members = members
        self.interval_ms = interval_ms
        self.last: dict[str, tuple[dict[str, list[int]], dict[str, list[int]]]] = {}  # node -> (keys, bytes)
        self.refreshes = 0
        self.failures = 0

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failures += 1
                log.exception("quota refresh failed")
            await asyncio.sleep(self.interval_ms / 1000)

    async def refresh(self) -> None:
        self.gate.set_members(self.members())
        if not self.specs:
            return
        infos = await self.node_infos()
        for node, info in infos.items():
            if node == self.node_id or isinstance(info, str):
                continue  # a member that did not answer keeps what it last answered
            keys = dict(info.namespace_partition_keys)
            keys[""] = info.partition_keys
            self.last[node] = (keys, dict(info.namespace_partition_bytes))
        for spec in self.specs:
            name = "" if not spec.stored else spec.name
            counts = {node: (k.get(name) or [], b.get(name) or []) for node, (k, b) in self.last.items()}
            self.gate.remote[spec.stored] = remote_usage(self.node_id, self.prefs_for(spec.layout), counts)
        self.gate.remote_age_ms = self.gate._now()
        self.refreshes += 1


def quota_checked(apply: Callable, gate: QuotaGate | None, ns: bytes, key_len: int) -> Callable:
    """A consensus round's `apply(current, earlier) -> (new record bytes or None, result,
    dot)` (node/consensus.py) that first checks the write it makes against `gate`: the round
    proposes nothing that would take the namespace over a quota."""
    if gate is None or ns not in gate.sized:
        return apply
    from ringkv.versioning.record import decode_record

    def checked(current: bytes | None, earlier: Any) -> Any:
        out = apply(current, earlier)
        if out[0] is not None:
            old = None if current is None else decode_record(current)
            gate.check_records(ns, key_len, old, decode_record(out[0]))
        return out

    return checked
