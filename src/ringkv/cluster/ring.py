"""The ring: keys to tokens, tokens to partitions, partitions to owner nodes and replicas.

Contract: a `Ring` is a pure function of (member set, partition count Q, replica count N,
algorithm). The order of the member list does not matter, nothing depends on the process (no
`hash()`, no clock, no randomness), so every node that knows the same members computes the
same ring. Partitions
are Q equal contiguous ranges of the 64-bit token space (Q a power of two, fixed at cluster
creation). Owners are chosen by weighted rendezvous hashing under a per-node capacity,
resolved as the unique stable matching between partitions and nodes. Two algorithms, fixed per
cluster: "bounded" (the default) caps a node at its weighted share + 2·√min(share, n) and
fills each preference list from the partition's own rendezvous ranking, so a join or leave
moves about the changed node's share; "dithered" (clusters created before it) caps a node
within 1.5 partitions of its share and walks the ring for the lists. Implements docs/ring.md,
which also gives measured balance and movement.

A `Ring` is immutable once built and safe to share between tasks.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Mapping, Set
from fractions import Fraction
from typing import NamedTuple

import msgspec
import numpy as np
from xxhash import xxh3_64_intdigest

from ringkv.cluster.preference import (
    Holder,
    build_preference_lists,
    build_ranked_lists,
    walk_fallbacks,
)
from ringkv.errors import ConfigError
from ringkv.service.elements import ELEMENT_MARK, owner_of

TOKEN_BITS = 64
DEFAULT_PARTITIONS = 1024
MAX_PARTITIONS = 1 << 16
DEFAULT_REPLICAS = 3
MAX_REPLICAS = 16
MAX_MEMBERS = 4096

_UNIT_53 = 2.0**-53  # scales a 53-bit integer into [0, 1) exactly
_HALF = Fraction(1, 2)
_CAPACITY_SEED = 0x52494E474B56  # "RINGKV": keeps the dither independent of rendezvous scores


# --- keys, tokens, partitions -----------------------------------------------------------------


def hash_part(key: bytes) -> bytes:
    """The part of a key its token is computed from: Redis Cluster's hash tag, the bytes
    between the first `{` and the first `}` after it when there is at least one, else the
    whole key. `{user1}:cart` and `{user1}:profile` share a token, so they share a partition
    and replica set (multi-key commands on them can be atomic).

    A collection's element key (service/elements.py) hashes as its collection's key, so the
    elements live in the collection's partition."""
    if key[:3] == ELEMENT_MARK:
        key = owner_of(key)
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


def token(namespace: bytes, key: bytes) -> int:
    """The 64-bit token of a key: xxh3_64 of len(namespace) as 4 bytes big-endian ‖ namespace ‖
    the key's hash part (`hash_part`: its hash tag, or the whole key).

    The length prefix keeps ("a", "bc") and ("ab", "c") apart. Storage keeps records under
    token (8 bytes big-endian) ‖ namespace ‖ key, so one partition is one contiguous key range.
    """
    return xxh3_64_intdigest(len(namespace).to_bytes(4, "big") + namespace + hash_part(key))


def check_partitions(partitions: int) -> int:
    """Validate a partition count Q and return log2(Q)."""
    if (
        isinstance(partitions, bool)
        or not isinstance(partitions, int)
        or partitions < 1
        or partitions & (partitions - 1)
    ):
        raise ConfigError("partitions", f"must be a power of two, got {partitions!r}")
    if partitions > MAX_PARTITIONS:
        raise ConfigError("partitions", f"must be at most {MAX_PARTITIONS}, got {partitions}")
    return partitions.bit_length() - 1


def partition_of(token_: int, partitions: int) -> int:
    """The partition holding a token: its top log2(Q) bits.

    REQUIRES: `partitions` passed `check_partitions` (not re-checked: this is on every request).
    """
    return token_ >> (TOKEN_BITS - (partitions.bit_length() - 1))


def partition_range(partition: int, partitions: int) -> tuple[int, int]:
    """The first and last token (both inclusive) of a partition."""
    shift = TOKEN_BITS - (partitions.bit_length() - 1)
    if not 0 <= partition < partitions:
        raise ValueError(f"partition {partition} out of range 0..{partitions - 1}")
    return partition << shift, ((partition + 1) << shift) - 1


# --- members ----------------------------------------------------------------------------------


class Member(msgspec.Struct, frozen=True):
    """A node as the ring sees it. `weight` scales its share; (dc, rack) is its failure domain."""

    node_id: str
    weight: float = 1.0
    rack: str = ""
    dc: str = ""

    @classmethod
    def at(cls, node_id: str, location: str = "", weight: float = 1.0) -> Member:
        """A member from its location as configured and gossiped: "rack", or "dc/rack" for a
        node in a named datacenter (the rack may then be empty: "dc/")."""
        dc, sep, rack = location.rpartition("/")
        return cls(node_id, weight, rack, dc if sep else "")


def location(dc: str, rack: str) -> str:
    """The location string `Member.at` reads: "rack" without a datacenter, else "dc/rack"."""
    return f"{dc}/{rack}" if dc else rack


def check_dc_replicas(replicas: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    """A per-datacenter replica count ({"dc1": 3, "dc2": 2}), checked and sorted by name."""
    if not replicas:
        raise ConfigError("replicas", "a per-datacenter replica count needs at least one datacenter")
    out = []
    for dc, count in sorted(replicas.items()):
        if not isinstance(dc, str) or not dc:
            raise ConfigError("replicas", f"datacenter names must be non-empty strings, got {dc!r}")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_REPLICAS:
            raise ConfigError("replicas", f"{dc}: must be an integer in 1..{MAX_REPLICAS}, got {count!r}")
        out.append((dc, count))
    total = sum(c for _, c in out)
    if total > MAX_REPLICAS:
        raise ConfigError("replicas", f"at most {MAX_REPLICAS} replicas in all, got {total}")
    return tuple(out)


# Which nodes of a partition's preference list hold a namespace's keys: N, the first N of the
# list, or a count per datacenter (sorted by name), the first that many of each datacenter's
# part, none of a datacenter it does not name (docs/multi-dc.md, "Counts per namespace").
Layout = int | tuple[tuple[str, int], ...]


def namespace_layout(cluster: Mapping[str, int], counts: Mapping[str, int]) -> Layout:
    """A namespace's per-datacenter counts checked against the cluster's: every datacenter
    one of the cluster's, each count in 0..the cluster's count there, at least one replica.
    The cluster's own counts come back as their sum (the whole preference list)."""
    if not cluster:
        raise ConfigError("replicas", "counts per datacenter need the cluster's counted per datacenter (dc_replicas)")
    out = []
    for dc, count in sorted(counts.items()):
        if dc not in cluster:
            raise ConfigError("replicas", f"datacenter {dc!r} has no replicas in this cluster "
                                          f"(dc_replicas names {', '.join(sorted(cluster))})")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= cluster[dc]:
            raise ConfigError("replicas", f"{dc}: must be an integer in 0..{cluster[dc]} (the cluster's count "
                                          f"there), got {count!r}")
        if count:
            out.append((dc, count))
    if not out:
        raise ConfigError("replicas", "at least one datacenter must hold a replica")
    if all(dict(out).get(dc, 0) == n for dc, n in cluster.items()):
        return sum(cluster.values())
    return tuple(out)


def layout_text(layout: Layout) -> str:
    """A layout as configured and as sent between nodes: "3" or "dc1=2;dc2=1"."""
    if isinstance(layout, int):
        return str(layout)
    return ";".join(f"{dc}={n}" for dc, n in layout)


def parse_layout(text: str) -> Layout:
    """`layout_text`'s form back (ValueError when it is not one)."""
    if "=" not in text:
        n = int(text)
        if not 1 <= n <= MAX_REPLICAS:
            raise ValueError(f"replicas must be in 1..{MAX_REPLICAS}, got {n}")
        return n
    out = []
    for entry in text.split(";"):
        dc, sep, count = entry.partition("=")
        if not sep or not dc or not count.isdigit():
            raise ValueError(f"{entry!r} is not dc=count")
        out.append((dc, int(count)))
    return tuple(sorted(out))


def take_layout(pref: tuple[str, ...], layout: Layout, dc_of) -> tuple[str, ...]:
    """The nodes of preference list `pref` that hold keys of `layout` (dc_of: a node's
    datacenter)."""
    if isinstance(layout, int):
        return pref[:layout]
    counts = dict(layout)
    seen: dict[str, int] = {}
    out = []
    for node in pref:
        dc = dc_of(node)
        k = seen.get(dc, 0)
        if k < counts.get(dc, 0):
            out.append(node)
        seen[dc] = k + 1
    return tuple(out)


def _validated_members(members: Iterable[Member]) -> tuple[Member, ...]:
    by_id: dict[str, Member] = {}
    for m in members:
        if not isinstance(m, Member):
            raise ConfigError("members", f"expected Member, got {type(m).__name__}")
        if not m.node_id:
            raise ConfigError("members", "node_id must not be empty")
        if not (math.isfinite(m.weight) and m.weight > 0):
            raise ConfigError("members", f"{m.node_id}: weight must be > 0, got {m.weight!r}")
        if m.node_id in by_id and by_id[m.node_id] != m:
            raise ConfigError("members", f"{m.node_id} is listed twice with different attributes")
        by_id[m.node_id] = m
    if not by_id:
        raise ConfigError("members", "a ring needs at least one member")
    if len(by_id) > MAX_MEMBERS:
        raise ConfigError("members", f"at most {MAX_MEMBERS} members, got {len(by_id)}")
    # Sorting by node id is what makes the ring independent of the order of the list.
    return tuple(sorted(by_id.values(), key=lambda m: m.node_id))


# --- ownership --------------------------------------------------------------------------------

# How owners and preference lists are computed. All nodes of a cluster must use the same one, so
# it is a cluster setting fixed at creation, like Q (docs/ring.md, "Two algorithms").
RING_BOUNDED = "bounded"  # bounded-load caps, ranked preference lists: less movement, less balance
RING_DITHERED = "dithered"  # the default: caps within 1.5 of the share, walked lists
RING_ALGORITHMS = (RING_BOUNDED, RING_DITHERED)
DEFAULT_ALGORITHM = RING_DITHERED


def check_algorithm(algorithm: str) -> str:
    """`algorithm` if it is one of `RING_ALGORITHMS`, else ConfigError on `ring_algorithm`."""
    if algorithm not in RING_ALGORITHMS:
        raise ConfigError(
            "ring_algorithm", f"must be one of {', '.join(RING_ALGORITHMS)}, got {algorithm!r}"
        )
    return algorithm


def bounded_slack(ideal: Fraction, members: int) -> Fraction:
    """How far above its ideal share a member's capacity lies under "bounded": 2·√min(ideal, n).

    Computed in integers (rounded down to a multiple of 2⁻³²), so every node gets the same value.
    2·√ideal is two standard deviations of the member's rendezvous share; capping the slack at
    2·√n gives small clusters, where each join moves many partitions per node anyway, their
    balance back (docs/ring.md, "Movement").
    """
    m = min(ideal, Fraction(members))
    return Fraction(math.isqrt(math.floor(4 * m * (1 << 64))), 1 << 32)


def capacities(
    members: tuple[Member, ...], partitions: int, algorithm: str = DEFAULT_ALGORITHM
) -> list[int]:
    """Each member's most partitions: its ideal share plus a slack, rounded by a per-node dither.

    ideal_i = Q * weight_i / total weight; cap_i = floor(ideal_i + slack_i + d_i) with d_i in
    [0, 1) a hash of the node id. "dithered": slack 1/2, so cap_i lies in (ideal_i - 1/2,
    ideal_i + 3/2). "bounded": slack `bounded_slack`, so cap_i < ideal_i + 2·√min(ideal_i, n) + 1.
    Were all nodes to round alike (ceil), every node of a weight would drop a unit of capacity at
    the same membership change and evict partitions all at once; dithered, a join lowers the caps
    of a few nodes whose total roughly matches the newcomer's share (docs/ring.md, "Movement").
    If the caps fall short of Q (under "bounded" only when shares are below 1/4 partition), the
    nodes furthest below their ideal get one more each. Fractions (exact for any float) make the
    result independent of summation order and of rounding, so every node computes the same caps.
    """
    check_algorithm(algorithm)
    weights = [Fraction(m.weight) for m in members]
    total = sum(weights)
    ideal = [partitions * w / total for w in weights]
    dither = [
        Fraction(xxh3_64_intdigest(m.node_id.encode(), _CAPACITY_SEED), 1 << 64) for m in members
    ]
    if algorithm == RING_DITHERED:
        caps = [math.floor(x + _HALF + d) for x, d in zip(ideal, dither)]
    else:
        n = len(members)
        caps = [math.floor(x + bounded_slack(x, n) + d) for x, d in zip(ideal, dither)]
    short = partitions - sum(caps)
    if short > 0:
        # "dithered": every term cap - ideal exceeds -1/2, so more than 2 * short nodes are below
        # their ideal, and one more unit keeps each of them under ideal + 1.
        below = sorted(range(len(caps)), key=lambda i: (caps[i] - ideal[i], members[i].node_id))
        for i in below[:short]:
            caps[i] += 1
    return caps


class _Preferences:
    """Rendezvous keys of (partition, member) pairs, computed only as far as needed ("dithered").

    score(p, i) = xxh3_64(p as 4 bytes, seed = xxh3_64(node id)). With equal weights the score
    itself is the key (higher wins), all integers. With unequal weights the key is
    ln(u) / weight with u = score mapped into (0, 1): the "exponential race" form of weighted
    rendezvous, under which member i tops a partition with probability weight_i / total.
    """

    __slots__ = ("_inv_weights", "_orders", "_seeds", "_weighted")

    def __init__(self, members: tuple[Member, ...]):
        self._seeds = [xxh3_64_intdigest(m.node_id.encode()) for m in members]
        self._weighted = len({m.weight for m in members}) > 1
        self._inv_weights = [1.0 / m.weight for m in members]
        # Full rankings, kept only for partitions that were turned away at least once.
        self._orders: dict[int, tuple[list, list[int]]] = {}

    def keys(self, p: int) -> list:
        pkey = p.to_bytes(4, "big")
        if self._weighted:
            log = math.log
            # (h >> 11) + 0.5 over 2**53 is a double strictly inside (0, 1).
            return [
                log(((xxh3_64_intdigest(pkey, s) >> 11) + 0.5) * _UNIT_53) * iw
                for s, iw in zip(self._seeds, self._inv_weights)
            ]
        return [xxh3_64_intdigest(pkey, s) for s in self._seeds]

    def first_choice(self, p: int) -> tuple[object, int]:
        """(key, member) of the partition's favourite member."""
        row = self.keys(p)
        best = max(row)
        # Ties (never seen in practice) go to the lowest index, i.e. the smallest node id.
        return best, row.index(best)

    def choice(self, p: int, rank: int) -> tuple[object, int]:
        """(key, member) of the partition's `rank`-th favourite member (0 = first)."""
        cached = self._orders.get(p)
        if cached is None:
            row = self.keys(p)
            # sorted() is stable under reverse=True, so ties keep the lowest index first.
            cached = (row, sorted(range(len(row)), key=row.__getitem__, reverse=True))
            self._orders[p] = cached
        row, order = cached
        i = order[rank]
        return row[i], i


# XXH3's 64-bit hash of a 4-byte input under a seed, vectorized: the constants of the xxHash
# specification ("XXH3_len_4to8_64b"). test_ring.py checks the result against xxhash itself.
_XXH3_BITFLIP_4TO8 = 0xC73AB174C5ECD5A2  # readLE64(kSecret + 8) ^ readLE64(kSecret + 16)
_XXH3_PRIME_MX2 = np.uint64(0x9FB21C651E98DF25)
_BLOCK = 1 << 20  # (partition, member) pairs scored at once


def _bitflip(seed: int) -> int:
    """What a seed contributes to the XXH3 hash of a 4-to-8-byte input."""
    swapped = int.from_bytes((seed & 0xFFFFFFFF).to_bytes(4, "little"), "big")
    return (_XXH3_BITFLIP_4TO8 - (seed ^ (swapped << 32))) % (1 << 64)


def _scores(first: int, stop: int, bitflips: np.ndarray) -> np.ndarray:
    """xxh3_64(p as 4 bytes big-endian, seed_i) for partitions first..stop-1 (rows) and the
    members whose `_bitflip`s are given (columns), as uint64: `_Preferences`' scores, in bulk."""
    u64 = np.uint64
    word = np.arange(first, stop, dtype=np.uint32).byteswap().astype(np.uint64)  # readLE32
    h = (word | (word << u64(32)))[:, None] ^ bitflips[None, :]
    h ^= ((h << u64(49)) | (h >> u64(15))) ^ ((h << u64(24)) | (h >> u64(40)))
    h *= _XXH3_PRIME_MX2
    h ^= (h >> u64(35)) + u64(4)
    h *= _XXH3_PRIME_MX2
    h ^= h >> u64(28)
    return h


class _Ranking:
    """Every partition's ranking of the members ("bounded"), by `_Preferences`' keys.

    The first `depth` places of every partition are computed up front with numpy, a block of
    partitions at a time; a partition's whole ranking only when asked. Keys are compared exactly
    as `_Preferences` defines them: uint64 scores, or for unequal weights ln(u) / weight through
    `math.log`. numpy's own log, which may differ from the C library's in the last bit, only
    picks the candidates for the first places (with a margin far above that difference), and
    their order comes from `math.log`. Ties go to the lower index (the smaller node id).
    """

    __slots__ = ("_bitflips", "_first_keys", "_inv_weights", "_keep", "_n", "_orders", "_top", "_weighted")

    def __init__(self, members: tuple[Member, ...], partitions: int, depth: int):
        n = self._n = len(members)
        self._bitflips = np.array(
            [_bitflip(xxh3_64_intdigest(m.node_id.encode())) for m in members], dtype=np.uint64
        )
        self._weighted = len({m.weight for m in members}) > 1
        self._inv_weights = [1.0 / m.weight for m in members]
        self._orders: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._keep = True  # whether whole rankings are kept once computed
        self._top: list[list[int]] = []
        self._first_keys: list = []
        depth = max(1, min(depth, n))
        rows = max(1, _BLOCK // n)
        for start in range(0, partitions, rows):
            self._first_places(start, _scores(start, min(partitions, start + rows), self._bitflips), depth)

    def _exact(self, scores: list[int], members) -> list:
        """The keys of these scores of these members, exactly as `_Preferences.keys`."""
        if not self._weighted:
            return scores
        log, iw = math.log, self._inv_weights
        return [log(((h >> 11) + 0.5) * _UNIT_53) * iw[i] for h, i in zip(scores, members)]

    def _first_places(self, start: int, h: np.ndarray, depth: int) -> None:
        n = self._n
        if self._weighted:
            inv = np.array(self._inv_weights)
            approx = np.log(((h >> np.uint64(11)).astype(np.float64) + 0.5) * _UNIT_53) * inv[None, :]
        else:
            approx = h
        if depth < n:
            cand = np.argpartition(approx, n - depth, axis=1)[:, n - depth:]
            kth = np.take_along_axis(approx, cand, axis=1).min(axis=1)
            if self._weighted:
                kth = kth - np.abs(kth) * 2.0**-30  # far wider than two logs can differ
            exact_rows = np.flatnonzero((approx >= kth[:, None]).sum(axis=1) != depth)
        else:
            cand = np.broadcast_to(np.arange(n), h.shape)
            exact_rows = np.empty(0, dtype=np.intp)
        special = set(exact_rows.tolist())
        cand_scores = np.take_along_axis(h, cand, axis=1).tolist()
        for r, (members, scores) in enumerate(zip(cand.tolist(), cand_scores)):
            if r in special:
                # Ties or near-ties at the last place: every member within the margin competes.
                members = np.flatnonzero(approx[r] >= kth[r]).tolist()
                scores = h[r, members].tolist()
            keys = self._exact(scores, members)
            order = sorted(range(len(members)), key=lambda k: (keys[k], -members[k]), reverse=True)
            self._top.append([members[k] for k in order[:depth]])
            self._first_keys.append(keys[order[0]])

    def _order(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        cached = self._orders.get(p)
        if cached is None:
            scores = _scores(p, p + 1, self._bitflips)[0]
            if self._weighted:
                row = np.array(self._exact(scores.tolist(), range(self._n)))
                order = np.lexsort((np.arange(self._n), -row))
            else:
                row = scores
                order = np.lexsort((np.arange(self._n), ~row))
            cached = (row, order)
            if self._keep:
                self._orders[p] = cached
        return cached

    def first_choice(self, p: int) -> tuple[object, int]:
        """(key, member) of the partition's favourite member."""
        return self._first_keys[p], self._top[p][0]

    def choice(self, p: int, rank: int) -> tuple[object, int]:
        """(key, member) of the partition's `rank`-th favourite member (0 = first)."""
        row, order = self._order(p)
        i = int(order[rank])
        return row[i].item(), i

    def ranking(self, p: int) -> Iterator[int]:
        """Every member, the partition's favourite first."""
        top = self._top[p]
        yield from top
        if len(top) < self._n:
            yield from self._order(p)[1][len(top):].tolist()

    def forget(self) -> None:
        """Drop the whole rankings kept while matching, and keep none from now on: building
        lists asks for each partition's at most twice (with racks of very unequal sizes, for
        many partitions: 16 kB each at 1000 members)."""
        self._orders.clear()
        self._keep = False


def _stable_matching(prefs: _Preferences | _Ranking, caps: list[int], partitions: int) -> list[int]:
    """The owner (member index) of every partition: the stable matching under `caps`."""
    held: list[list[tuple[object, int]]] = [[] for _ in caps]  # min-heaps of (key, partition)
    owner = [-1] * partitions
    rank = [0] * partitions
    free = list(range(partitions - 1, -1, -1))
    while free:
        p = free.pop()
        key, i = prefs.first_choice(p) if rank[p] == 0 else prefs.choice(p, rank[p])
        rank[p] += 1
        entry = (key, p)
        heap = held[i]
        if len(heap) < caps[i]:
            heapq.heappush(heap, entry)
            owner[p] = i
        elif heap and heap[0] < entry:  # a member whose capacity is 0 turns everyone away
            _, evicted = heapq.heapreplace(heap, entry)
            owner[p] = i
            owner[evicted] = -1
            free.append(evicted)
        else:
            free.append(p)
    # Sum of capacities >= Q, so every partition found a member before running out of choices.
    assert -1 not in owner
    return owner


def _owners(
    members: tuple[Member, ...], partitions: int, algorithm: str, depth: int
) -> tuple[list[int], _Ranking | None]:
    """The owners, and under "bounded" the rankings (first `depth` places at hand)."""
    if algorithm == RING_DITHERED:
        return _stable_matching(_Preferences(members), capacities(members, partitions, algorithm), partitions), None
    ranking = _Ranking(members, partitions, depth)
    owners = _stable_matching(ranking, capacities(members, partitions, algorithm), partitions)
    ranking.forget()
    return owners, ranking


def _depth(replicas: int) -> int:
    """How many first places of each ranking to compute up front for lists of `replicas`: enough
    that finding N racks rarely needs a whole ranking (which costs some 0.1 ms at 1000 members)."""
    return 2 * replicas + 4


def assign_owners(
    members: tuple[Member, ...], partitions: int, algorithm: str = DEFAULT_ALGORITHM
) -> list[int]:
    """The owner (index into `members`) of every partition.

    Every partition ranks the members by its rendezvous key; every member ranks partitions by
    the same key and takes at most its capacity (`capacities`, which is where the algorithms
    differ). The result is the stable matching: no partition would rather be with a member
    that would rather have it. Because both sides rank by one key per pair, that matching is
    unique, so the order in which proposals are processed does not change it. Partitions
    propose (Gale-Shapley); most are accepted by their first choice, so the full ranking is
    computed for few of them.
    """
    return _owners(members, partitions, check_algorithm(algorithm), 1)[0]


def _preference_lists(
    owners: list[int],
    ranking: _Ranking | None,
    pool: list[int],
    domains: list[int],
    replicas: int,
) -> list[tuple[int, ...]]:
    """Preference lists over global member indexes; `owners` are global, `ranking` (None under
    "dithered") ranks the members `pool` lists, by their index in it."""
    if ranking is None:
        return build_preference_lists(owners, domains, replicas)
    return build_ranked_lists(
        owners, lambda p: map(pool.__getitem__, ranking.ranking(p)), domains, pool, replicas
    )


# --- the ring ---------------------------------------------------------------------------------


class PartitionChange(NamedTuple):
    """How one partition differs between two rings: what streaming has to move."""

    partition: int
    old_owner: str
    new_owner: str
    old_replicas: tuple[str, ...]
    new_replicas: tuple[str, ...]

    @property
    def gained(self) -> tuple[str, ...]:
        """Nodes that become replicas and must receive the partition's data."""
        return tuple(n for n in self.new_replicas if n not in self.old_replicas)

    @property
    def lost(self) -> tuple[str, ...]:
        """Nodes that stop being replicas and may drop the partition once it is streamed."""
        return tuple(n for n in self.old_replicas if n not in self.new_replicas)


class Ring:
    """Owners and preference lists of Q partitions for a set of members.

    `replicas` is N, or a count per datacenter ({"dc1": 3, "dc2": 2}): then every datacenter
    of the counts is a ring of its own (its members own all Q partitions among themselves,
    by the same matching), each preference list holds that many nodes of each datacenter's
    ring (rack-distinct within it first), N is their sum, a fallback stands in only for a
    replica of its own datacenter, and a member joining or leaving one datacenter changes
    nothing in the others (docs/multi-dc.md).

    `algorithm` is how owners and lists are computed (`RING_ALGORITHMS`): "bounded", the
    default, or "dithered", the ring of clusters created before it (docs/ring.md).

    REQUIRES: every node of a cluster builds its ring with the same `partitions`, `replicas`
    and `algorithm`; they are cluster settings, fixed at creation. Lookups by partition are O(1).
    """

    __slots__ = (
        "_dc_owners",
        "_index",
        "_owned",
        "_owner_idx",
        "_owners",
        "_pref_idx",
        "_preference",
        "_replica_of",
        "algorithm",
        "dc_replicas",
        "members",
        "node_ids",
        "partitions",
        "replicas",
    )

    def __init__(
        self,
        members: Iterable[Member],
        partitions: int = DEFAULT_PARTITIONS,
        replicas: int | Mapping[str, int] = DEFAULT_REPLICAS,
        algorithm: str = DEFAULT_ALGORITHM,
    ):
        check_partitions(partitions)
        self.algorithm = check_algorithm(algorithm)
        self.dc_replicas: tuple[tuple[str, int], ...] = ()
        if isinstance(replicas, Mapping):
            self.dc_replicas = check_dc_replicas(replicas)
            replicas = sum(c for _, c in self.dc_replicas)
        if (
            isinstance(replicas, bool)
            or not isinstance(replicas, int)
            or not 1 <= replicas <= MAX_REPLICAS
        ):
            raise ConfigError(
                "replicas", f"must be an integer in 1..{MAX_REPLICAS}, got {replicas!r}"
            )
        self.members = _validated_members(members)
        self.partitions = partitions
        self.replicas = replicas
        self.node_ids = tuple(m.node_id for m in self.members)
        self._index = {node: i for i, node in enumerate(self.node_ids)}
        domain_numbers: dict[tuple[str, str], int] = {}
        domains = [
            domain_numbers.setdefault((m.dc, m.rack), len(domain_numbers)) for m in self.members
        ]
        # datacenter -> (its owner table as member indexes, how many distinct owners)
        self._dc_owners: dict[str, tuple[tuple[int, ...], int]] = {}
        if self.dc_replicas:
            self._pref_idx = self._per_dc_lists(domains)
            owners = [lst[0] if lst else -1 for lst in self._pref_idx]
        else:
            owners, ranking = _owners(self.members, partitions, algorithm, _depth(replicas))
            everyone = list(range(len(self.members)))
            self._pref_idx = _preference_lists(owners, ranking, everyone, domains, replicas)
        self._owner_idx = tuple(owners)
        self._owners = tuple(self.node_ids[i] if i >= 0 else "" for i in owners)
        owned: dict[str, list[int]] = {node: [] for node in self.node_ids}
        for p, node in enumerate(self._owners):
            if node:
                owned[node].append(p)
        self._owned = {node: tuple(ps) for node, ps in owned.items()}
        names = self.node_ids
        self._preference = tuple(tuple(names[i] for i in lst) for lst in self._pref_idx)
        replica_of: dict[str, list[int]] = {node: [] for node in self.node_ids}
        for p, lst in enumerate(self._preference):
            for node in lst:
                replica_of[node].append(p)
        self._replica_of = {node: tuple(ps) for node, ps in replica_of.items()}

    def _per_dc_lists(self, domains: list[int]) -> list[tuple[int, ...]]:
        """Every partition's preference list from one ring per datacenter of the counts: each
        datacenter's members own all Q partitions among themselves, its part of a list is
        built from its own owners, and the parts follow each other in datacenter order turned
        by the partition (partition p starts at the (p mod D)-th datacenter), so that each
        datacenter's nodes come first, and own, about 1/D of the partitions."""
        parts: list[list[tuple[int, ...]]] = []
        for dc, count in self.dc_replicas:
            local = [i for i, m in enumerate(self.members) if m.dc == dc]
            if not local:
                continue
            owners, ranking = _owners(
                tuple(self.members[i] for i in local), self.partitions, self.algorithm, _depth(count)
            )
            table = tuple(local[j] for j in owners)
            self._dc_owners[dc] = (table, len(set(table)))
            parts.append(_preference_lists(list(table), ranking, local, domains, count))
        lists: list[tuple[int, ...]] = []
        d = len(parts)
        for p in range(self.partitions):
            first = p % d if d else 0
            lists.append(tuple(i for k in range(d) for i in parts[(first + k) % d][p]))
        return lists

    def __repr__(self) -> str:
        replicas = dict(self.dc_replicas) if self.dc_replicas else self.replicas
        return (f"Ring({len(self.members)} members, partitions={self.partitions}, replicas={replicas}, "
                f"algorithm={self.algorithm!r})")

    # -- datacenters

    @property
    def replication(self) -> int | dict[str, int]:
        """The `replicas` this ring was built with: N, or the count per datacenter."""
        return dict(self.dc_replicas) if self.dc_replicas else self.replicas

    def dc_of(self, node_id: str) -> str:
        """The datacenter of a member ("" when none is named, or not a member)."""
        i = self._index.get(node_id)
        return "" if i is None else self.members[i].dc

    @property
    def datacenters(self) -> tuple[str, ...]:
        """The datacenters of the members and of the per-datacenter replica counts, sorted."""
        return tuple(sorted({m.dc for m in self.members} | {dc for dc, _ in self.dc_replicas}))

    # -- keys to partitions

    def partition_of(self, token_: int) -> int:
        return partition_of(token_, self.partitions)

    def partition_range(self, partition: int) -> tuple[int, int]:
        return partition_range(partition, self.partitions)

    def partition_for_key(self, namespace: bytes, key: bytes) -> int:
        return partition_of(token(namespace, key), self.partitions)

    # -- partitions to nodes

    def owner(self, partition: int) -> str:
        return self._owners[self._checked(partition)]

    def preference_list(self, partition: int) -> tuple[str, ...]:
        """The partition's N replicas, owner first, rack-distinct nodes before the rest.

        A namespace with a smaller N uses a prefix: every prefix is itself rack-diverse.
        Shorter than N only when fewer than N members own partitions. With per-datacenter
        counts, each datacenter's part from its own ring, the parts in datacenter order turned
        by the partition (`_per_dc_lists`); shorter only when a datacenter has fewer members
        than its count. Prefixes are then not balanced across datacenters: a namespace with
        fewer replicas counts them per datacenter (`replicas_for`).
        """
        return self._preference[self._checked(partition)]

    def replicas_for(self, partition: int, layout: Layout) -> tuple[str, ...]:
        """The nodes of the partition's preference list that hold keys of `layout`."""
        return take_layout(self._preference[self._checked(partition)], layout, self.dc_of)

    def fallbacks(
        self, partition: int, unavailable: Set[str], n: Layout | None = None
    ) -> tuple[Holder, ...]:
        """Where a sloppy-quorum request for `partition` goes when `unavailable` nodes are down.

        The nodes of the preference list that hold keys of layout `n` (default: all N) and are
        available, in order, then for each unavailable one the next available node walking
        clockwise that is not among them (of its own datacenter, with per-datacenter counts),
        with `hint_for` naming the primary it stands in for. Fewer entries only when the ring
        has no more available nodes.
        """
        primaries = self._pref_idx[self._checked(partition)]
        if isinstance(n, tuple):
            members = self.members
            primaries = take_layout(primaries, n, lambda i: members[i].dc)
        elif n is not None:
            if not 1 <= n <= self.replicas:
                raise ValueError(f"n must be in 1..{self.replicas}, got {n}")
            primaries = primaries[:n]
        names = self.node_ids
        if unavailable.isdisjoint(names[i] for i in primaries):
            return tuple(Holder(names[i]) for i in primaries)
        down = {self._index[node] for node in unavailable if node in self._index}
        if not self.dc_replicas:
            pairs = walk_fallbacks(self._owner_idx, partition, primaries, down)
        else:
            # Each datacenter's stand-ins from its own ring, after every available primary.
            pairs = [(i, None) for i in primaries if i not in down]
            for dc, (table, owning) in self._dc_owners.items():
                mine = [i for i in primaries if self.members[i].dc == dc]
                if not down.isdisjoint(mine):
                    pairs += [pair for pair in walk_fallbacks(table, partition, mine, down, owning)
                              if pair[1] is not None]
        return tuple(Holder(names[i], None if f is None else names[f]) for i, f in pairs)

    def owned_partitions(self, node_id: str) -> tuple[int, ...]:
        """Partitions `node_id` owns (is first in the preference list of), ascending."""
        return self._owned.get(node_id, ())

    def replica_partitions(self, node_id: str) -> tuple[int, ...]:
        """Partitions whose preference list includes `node_id`, ascending."""
        return self._replica_of.get(node_id, ())

    def shares(self) -> dict[str, float]:
        """Fraction of the token space each member owns (0.0 for a member that owns none)."""
        return {node: len(ps) / self.partitions for node, ps in self._owned.items()}

    def _checked(self, partition: int) -> int:
        # Negative indexes would silently wrap around the tuple.
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} out of range 0..{self.partitions - 1}")
        return partition


def diff(old: Ring, new: Ring) -> tuple[PartitionChange, ...]:
    """Partitions whose owner or preference list differ between two rings, ascending.

    This is the streaming plan of a join or leave: each change's `gained` nodes need the
    partition's data, its `lost` nodes can drop it afterwards.
    """
    if old.partitions != new.partitions:
        raise ConfigError(
            "partitions",
            f"cannot compare rings of {old.partitions} and {new.partitions} partitions",
        )
    changes = []
    for p in range(old.partitions):
        before, after = old._preference[p], new._preference[p]
        if before != after or old._owners[p] != new._owners[p]:
            changes.append(PartitionChange(p, old._owners[p], new._owners[p], before, after))
    return tuple(changes)
