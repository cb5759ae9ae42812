"""Merkle trees of one ring partition, and the comparison two replicas run over them.

Implements docs/anti-entropy.md, which also gives the saved-tree format and measured traffic.

Theory of operation. The digest of any token range is (sum of its keys' entry hashes mod 2^64,
number of keys), where a key's entry hash is xxh3_64 of its storage key seeded with the xxh3_64
of its stored record bytes. Sums are order-independent and can be undone, so one write moves
one leaf by a delta; and a node's digest is defined by its token range alone, never by how a
tree was built. A `MerkleTree` keeps the digests of a partition's token range cut in halves
`depth` times (2^depth leaf buckets) in memory. Below its leaves the same binary cuts go on,
down to single tokens; the digests of those deeper nodes are computed on demand from a scan of
the leaf bucket (`RangeEntries`), so traffic stays proportional to the differences however
many keys a bucket holds, while memory stays fixed.

Two replicas compare like this (the initiator runs a `TreeDiff`, the responder only answers):
root digests first; then, for nodes that differ, the digests of their descendants
`step_levels` levels down, level by level, until a differing node holds at most
`list_at_keys` keys on one side (or is a single token); then the responder lists the
(storage key, record digest) pairs of those nodes and `diff_buckets` names the keys each side
must send the other.

Contract: pure. No IO, clock or randomness; the shell in `ringkv.node` scans storage, sends
the messages and feeds the answers in. A tree is owned by one task (not thread-safe), and the
caller keeps it in step with storage: every stored record change goes through `update` with
the exact old and new record bytes.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import crc32c
from xxhash import xxh3_64_intdigest

from ringkv.cluster.ring import TOKEN_BITS, check_partitions
from ringkv.errors import CorruptionError, LimitError

# --- shape and limits -------------------------------------------------------------------------

DEFAULT_DEPTH = 10  # 1,024 leaf buckets: 16 KiB of leaves per partition replica
MAX_DEPTH = 16  # 65,536 leaves; a tree's arrays then take 2 MiB

DEFAULT_STEP_LEVELS = 2  # each round trip descends 2 levels: 4 children per differing node
MAX_STEP_LEVELS = 8
DEFAULT_LIST_AT_KEYS = 8  # list a differing node's keys once one side holds this few
MAX_LIST_AT_KEYS = 4096
MAX_NODES_PER_REQUEST = 4096  # digests in one reply: 48 KiB of payload
MAX_LIST_NODES_PER_REQUEST = 1024

# --- wire sizes, for the traffic model (docs/anti-entropy.md, "Traffic") ----------------------

HASH_BYTES = 8
COUNT_BYTES = 4
DIGEST_BYTES = HASH_BYTES + COUNT_BYTES  # one node's digest, as pack_digests writes it
RECORD_DIGEST_BYTES = 8  # per key in a listing, besides the storage key
LEVEL_BYTES = 1
NODE_INDEX_BYTES = 8  # node indexes below level 32 need more than 4 bytes
MESSAGE_OVERHEAD_BYTES = 32  # frame header, envelope, request id, partition: an estimate

# --- saved tree format ------------------------------------------------------------------------

FORMAT_MAGIC = b"ringkvMT"
FORMAT_VERSION = 1
# magic, version, depth, partition bits, reserved (0), partition, lsn, key count
_HEADER = struct.Struct("<8sBBBBIQQ")
_LEAF = struct.Struct("<QQ")  # hash, count
_CRC = struct.Struct("<I")
HEADER_BYTES = _HEADER.size  # 32
LEAF_BYTES = _LEAF.size  # 16
CRC_BYTES = _CRC.size  # 4

_MASK = (1 << 64) - 1
_DIGEST = struct.Struct("<QI")
_MAX_COUNT = (1 << (8 * COUNT_BYTES)) - 1


class Digest(NamedTuple):
    """A node's digest: the sum of its keys' entry hashes mod 2^64, and how many keys it has."""

    hash: int
    count: int


EMPTY = Digest(0, 0)


def record_digest(record: bytes) -> int:
    """The 64-bit digest of a stored record's bytes (equal records have equal bytes)."""
    return xxh3_64_intdigest(record)


def entry_hash(skey: bytes, digest: int) -> int:
    """A key's contribution to every node above it.

    The record digest is the seed rather than appended to the key: no concatenation on the
    write path, and xxh3 derives its whole secret from the seed.
    """
    return xxh3_64_intdigest(skey, digest)


def _token(skey: bytes) -> int:
    return int.from_bytes(skey[:8], "big")


def _check_depth(depth: int) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be an integer in 0..{MAX_DEPTH}, got {depth!r}")


# --- the tree ---------------------------------------------------------------------------------


class MerkleTree:
    """Digests of one partition's token range, cut in halves `depth` times.

    Level L has 2^L nodes; node (L, i) covers the tokens whose bits after the partition's
    log2(Q) bits start with the L bits of i. Leaves (level `depth`) are kept current by
    `update`; inner levels are recomputed from the dirty leaves when next read, so a write
    costs two hashes and a set insert, whatever the depth.
    """

    __slots__ = (
        "_counts",
        "_dirty",
        "_hashes",
        "_leaf_shift",
        "depth",
        "first_token",
        "last_token",
        "max_level",
        "partition",
        "partition_bits",
        "partitions",
    )

    def __init__(self, partition: int, partitions: int, depth: int = DEFAULT_DEPTH):
        self.partition_bits = check_partitions(partitions)
        _check_depth(depth)
        if isinstance(partition, bool) or not isinstance(partition, int):
            raise ValueError(f"partition must be an integer, got {partition!r}")
        if not 0 <= partition < partitions:
            raise ValueError(f"partition {partition} out of range 0..{partitions - 1}")
        self.partition = partition
        self.partitions = partitions
        self.depth = depth
        # Below max_level a node would be narrower than one token.
        self.max_level = TOKEN_BITS - self.partition_bits
        span = self.max_level
        self.first_token = partition << span
        self.last_token = ((partition + 1) << span) - 1
        self._leaf_shift = span - depth
        self._hashes = [array("Q", bytes(8 << level)) for level in range(depth + 1)]
        self._counts = [array("Q", bytes(8 << level)) for level in range(depth + 1)]
        self._dirty: set[int] = set()

    @classmethod
    def build(
        cls,
        partition: int,
        partitions: int,
        items: Iterable[tuple[bytes, bytes]],
        depth: int = DEFAULT_DEPTH,
    ) -> MerkleTree:
        """A tree of (storage key, record bytes) pairs, e.g. from a scan of the partition.

        REQUIRES: each storage key appears once.
        """
        tree = cls(partition, partitions, depth)
        for skey, record in items:
            tree.update_digest(skey, None, xxh3_64_intdigest(record))
        return tree

    @classmethod
    def build_from_digests(
        cls,
        partition: int,
        partitions: int,
        items: Iterable[tuple[bytes, int]],
        depth: int = DEFAULT_DEPTH,
    ) -> MerkleTree:
        """A tree of (storage key, record digest) pairs. REQUIRES: each key appears once."""
        tree = cls(partition, partitions, depth)
        for skey, digest in items:
            tree.update_digest(skey, None, digest)
        return tree

    def __repr__(self) -> str:
        return (
            f"MerkleTree(partition={self.partition}/{self.partitions}, depth={self.depth}, "
            f"keys={self.key_count})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MerkleTree):
            return NotImplemented
        return (
            self.partition == other.partition
            and self.partitions == other.partitions
            and self.depth == other.depth
            and self._hashes[-1] == other._hashes[-1]
            and self._counts[-1] == other._counts[-1]
        )

    __hash__ = None  # mutable

    # -- keeping it current

    def update(self, skey: bytes, old: bytes | None, new: bytes | None) -> None:
        """Account for one stored record change: None for "absent" on either side.

        REQUIRES: `old` is exactly the bytes storage held (None if the key was absent) and
        `skey` lies in this tree's partition (checked: a key of another partition is a bug
        that would corrupt both trees' comparisons).
        """
        if old == new:
            return
        self.update_digest(
            skey,
            None if old is None else xxh3_64_intdigest(old),
            None if new is None else xxh3_64_intdigest(new),
        )

    def update_digest(self, skey: bytes, old: int | None, new: int | None) -> None:
        """`update` for a caller that has the record digests rather than the bytes."""
        token = _token(skey)
        if len(skey) < 9 or token >> self.max_level != self.partition:
            raise ValueError(
                f"storage key {skey[:24].hex()} is not in partition "
                f"{self.partition}/{self.partitions}"
            )
        delta = 0
        dcount = 0
        if old is not None:
            delta -= xxh3_64_intdigest(skey, old)
            dcount -= 1
        if new is not None:
            delta += xxh3_64_intdigest(skey, new)
            dcount += 1
        leaf = (token >> self._leaf_shift) & ((1 << self.depth) - 1)
        counts = self._counts[-1]
        count = counts[leaf] + dcount
        if count < 0:
            raise ValueError(
                f"bucket {leaf} of partition {self.partition} would hold {count} keys: the "
                "tree is out of step with storage (removed a key it never had); rebuild it"
            )
        counts[leaf] = count
        hashes = self._hashes[-1]
        hashes[leaf] = (hashes[leaf] + delta) & _MASK
        self._dirty.add(leaf)

    def _refresh(self) -> None:
        dirty = self._dirty
        if not dirty:
            return
        if len(dirty) * self.depth >= 1 << self.depth:
            # Most paths are dirty (a build, a restore): one bottom-up pass is cheaper.
            for level in range(self.depth - 1, -1, -1):
                h, c = self._hashes[level], self._counts[level]
                ch, cc = self._hashes[level + 1], self._counts[level + 1]
                for i in range(1 << level):
                    h[i] = (ch[2 * i] + ch[2 * i + 1]) & _MASK
                    c[i] = cc[2 * i] + cc[2 * i + 1]
        else:
            nodes = dirty
            for level in range(self.depth - 1, -1, -1):
                nodes = {i >> 1 for i in nodes}
                h, c = self._hashes[level], self._counts[level]
                ch, cc = self._hashes[level + 1], self._counts[level + 1]
                for i in nodes:
                    h[i] = (ch[2 * i] + ch[2 * i + 1]) & _MASK
                    c[i] = cc[2 * i] + cc[2 * i + 1]
        dirty.clear()

    # -- reading it

    def root(self) -> Digest:
        """The digest of the whole partition: the only thing an in-sync check exchanges."""
        self._refresh()
        return Digest(self._hashes[0][0], self._counts[0][0])

    @property
    def key_count(self) -> int:
        return sum(self._counts[-1])

    def digests(
        self, level: int, indexes: Sequence[int], entries: RangeEntries | None = None
    ) -> list[Digest]:
        """The digests of nodes `indexes` at `level`, in that order.

        Levels down to `depth` come from the tree. Deeper levels come from `entries`, which
        must hold the leaf buckets `buckets_to_load(level, indexes)` names. Both arguments may
        come from a peer: they are checked (ValueError, LimitError).
        """
        self._check_nodes(level, indexes)
        if level <= self.depth:
            self._refresh()
            h, c = self._hashes[level], self._counts[level]
            return [Digest(h[i], c[i]) for i in indexes]
        if entries is None:
            raise ValueError(
                f"level {level} is below this tree's leaves (depth {self.depth}): pass the "
                "RangeEntries of the buckets buckets_to_load() names"
            )
        return [entries.digest(*self.node_range(level, i)) for i in indexes]

    def _check_nodes(self, level: int, indexes: Sequence[int]) -> None:
        if isinstance(level, bool) or not isinstance(level, int):
            raise ValueError(f"level must be an integer, got {level!r}")
        if not 0 <= level <= self.max_level:
            raise ValueError(f"level {level} out of range 0..{self.max_level}")
        if len(indexes) > MAX_NODES_PER_REQUEST:
            raise LimitError(
                f"{len(indexes)} nodes asked for at once; MAX_NODES_PER_REQUEST is "
                f"{MAX_NODES_PER_REQUEST}"
            )
        end = 1 << level
        for i in indexes:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < end:
                raise ValueError(f"node index {i!r} out of range 0..{end - 1} at level {level}")

    # -- token ranges, for the shell's scans

    def node_range(self, level: int, index: int) -> tuple[int, int]:
        """First and last token (both inclusive) of node `index` at `level`."""
        span = self.max_level - level
        first = self.first_token + (index << span)
        return first, first + (1 << span) - 1

    def bucket_of(self, token: int) -> int:
        """The leaf bucket holding `token`. REQUIRES: the token is in this partition."""
        return (token >> self._leaf_shift) & ((1 << self.depth) - 1)

    def bucket_range(self, bucket: int) -> tuple[int, int]:
        """First and last token (both inclusive) of a leaf bucket."""
        if not 0 <= bucket < 1 << self.depth:
            raise ValueError(f"bucket {bucket} out of range 0..{(1 << self.depth) - 1}")
        return self.node_range(self.depth, bucket)

    def buckets_to_load(self, level: int, indexes: Iterable[int]) -> list[int]:
        """Leaf buckets a `RangeEntries` must hold to answer `digests(level, indexes)`.

        Empty for the levels the tree keeps; otherwise the buckets the nodes lie in, ascending.
        """
        if level <= self.depth:
            return []
        shift = level - self.depth
        return sorted({i >> shift for i in indexes})

    # -- saving it (docs/anti-entropy.md, "Saved tree format")

    def to_bytes(self, *, lsn: int = 0) -> bytes:
        """The tree's leaves in the saved format. `lsn` is the caller's: the storage position
        the tree is current with, so a restart can tell whether the saved tree is usable."""
        leaves = self._hashes[-1]
        counts = self._counts[-1]
        parts = [
            _HEADER.pack(
                FORMAT_MAGIC,
                FORMAT_VERSION,
                self.depth,
                self.partition_bits,
                0,
                self.partition,
                lsn,
                sum(counts),
            )
        ]
        parts.extend(_LEAF.pack(leaves[i], counts[i]) for i in range(1 << self.depth))
        body = b"".join(parts)
        return body + _CRC.pack(crc32c.crc32c(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> tuple[MerkleTree, int]:
        """(tree, lsn) from `to_bytes` output; CorruptionError if any check fails."""
        data = bytes(data)
        if len(data) < HEADER_BYTES + CRC_BYTES:
            raise CorruptionError(f"saved Merkle tree is {len(data)} bytes, shorter than a header")
        magic, version, depth, bits, reserved, partition, lsn, keys = _HEADER.unpack_from(data)
        if magic != FORMAT_MAGIC:
            raise CorruptionError(f"not a saved Merkle tree (magic {magic!r})")
        if version != FORMAT_VERSION:
            raise CorruptionError(f"saved Merkle tree has unknown format version {version}")
        if depth > MAX_DEPTH:
            raise CorruptionError(f"saved Merkle tree has depth {depth} > {MAX_DEPTH}")
        expected = HEADER_BYTES + (LEAF_BYTES << depth) + CRC_BYTES
        if len(data) != expected:
            raise CorruptionError(
                f"saved Merkle tree of depth {depth} must be {expected} bytes, got {len(data)}"
            )
        (stored_crc,) = _CRC.unpack_from(data, expected - CRC_BYTES)
        if crc32c.crc32c(data[: expected - CRC_BYTES]) != stored_crc:
            raise CorruptionError("saved Merkle tree fails its checksum")
        # A matching checksum over a wrong header is a writer bug: still never wrong data.
        partitions = 1 << bits
        if reserved != 0 or bits > 16 or partition >= partitions:
            raise CorruptionError(
                f"saved Merkle tree header is invalid (partition {partition}, "
                f"partition bits {bits}, reserved {reserved})"
            )
        tree = cls(partition, partitions, depth)
        leaves, counts = tree._hashes[-1], tree._counts[-1]
        for i in range(1 << depth):
            leaves[i], counts[i] = _LEAF.unpack_from(data, HEADER_BYTES + i * LEAF_BYTES)
        if sum(counts) != keys:
            raise CorruptionError(
                f"saved Merkle tree counts {sum(counts)} keys in its leaves, {keys} in its header"
            )
        tree._dirty.update(range(1 << depth))
        return tree, lsn


# --- below the leaves: digests and listings from a scan ---------------------------------------


class RangeEntries:
    """The keys of some token ranges one side scanned: (storage key, record digest) pairs.

    Answers the digests of nodes below a tree's leaves and the listings of differing nodes.
    A query must lie inside one loaded range (checked), so a bucket the shell forgot to scan
    is an error, never an empty range that looks like missing data.
    """

    __slots__ = ("_chunks", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        # first token -> (last token, tokens, skeys, record digests, prefix sums of entry hashes)
        self._chunks: dict[int, tuple[int, list[int], list[bytes], list[int], list[int]]] = {}

    def load(self, first_token: int, last_token: int, items: Iterable[tuple[bytes, int]]) -> None:
        """Hold every key of tokens first..last (inclusive). Reloading the same range replaces
        it; a range overlapping another loaded one is refused."""
        if first_token > last_token:
            raise ValueError(f"empty range {first_token}..{last_token}")
        pos = bisect_right(self._starts, last_token)
        if pos and first_token in self._chunks:
            if self._chunks[first_token][0] != last_token:
                raise ValueError(f"range {first_token}..{last_token} overlaps a loaded range")
        elif pos and self._chunks[self._starts[pos - 1]][0] >= first_token:
            raise ValueError(f"range {first_token}..{last_token} overlaps a loaded range")
        pairs = sorted(items)
        tokens, skeys, digests, prefix = [], [], [], [0]
        total = 0
        for skey, digest in pairs:
            token = _token(skey)
            if not first_token <= token <= last_token:
                raise ValueError(
                    f"storage key {skey[:24].hex()} is outside {first_token}..{last_token}"
                )
            if skeys and skeys[-1] == skey:
                raise ValueError(f"storage key {skey[:24].hex()} listed twice")
            tokens.append(token)
            skeys.append(skey)
            digests.append(digest)
            total += xxh3_64_intdigest(skey, digest)
            prefix.append(total)
        if first_token not in self._chunks:
            self._starts.insert(pos, first_token)
        self._chunks[first_token] = (last_token, tokens, skeys, digests, prefix)

    def covers(self, first_token: int, last_token: int) -> bool:
        pos = bisect_right(self._starts, first_token)
        return pos > 0 and self._chunks[self._starts[pos - 1]][0] >= last_token

    def _chunk(self, first_token: int, last_token: int):
        pos = bisect_right(self._starts, first_token)
        if pos:
            chunk = self._chunks[self._starts[pos - 1]]
            if chunk[0] >= last_token:
                return chunk
        raise ValueError(f"tokens {first_token}..{last_token} were not loaded")

    def _slice(self, first_token: int, last_token: int):
        chunk = self._chunk(first_token, last_token)
        tokens = chunk[1]
        return chunk, bisect_left(tokens, first_token), bisect_right(tokens, last_token)

    def digest(self, first_token: int, last_token: int) -> Digest:
        """The digest of the keys with tokens first..last."""
        chunk, lo, hi = self._slice(first_token, last_token)
        prefix = chunk[4]
        return Digest((prefix[hi] - prefix[lo]) & _MASK, hi - lo)

    def listing(self, first_token: int, last_token: int) -> dict[bytes, int]:
        """storage key -> record digest of the keys with tokens first..last."""
        chunk, lo, hi = self._slice(first_token, last_token)
        return dict(zip(chunk[2][lo:hi], chunk[3][lo:hi]))


# --- the comparison ---------------------------------------------------------------------------


class DigestRequest(NamedTuple):
    """Ask for the digests at `level` of every descendant of `parents` (nodes at
    `parents_level`). The first request of a comparison asks for the root itself."""

    level: int
    parents_level: int
    parents: tuple[int, ...]

    @property
    def indexes(self) -> list[int]:
        """The nodes asked for, parent by parent. Checked, as a request may come from a peer."""
        shift = self.level - self.parents_level
        if not 0 <= shift <= MAX_STEP_LEVELS:
            raise ValueError(
                f"a request from level {self.parents_level} to {self.level} is not 0.."
                f"{MAX_STEP_LEVELS} levels down"
            )
        width = 1 << shift
        if len(self.parents) * width > MAX_NODES_PER_REQUEST:
            raise LimitError(
                f"{len(self.parents)} parents x {width} children is over "
                f"MAX_NODES_PER_REQUEST={MAX_NODES_PER_REQUEST}"
            )
        return [(p << shift) + j for p in self.parents for j in range(width)]

    def wire_bytes(self) -> int:
        return MESSAGE_OVERHEAD_BYTES + 2 * LEVEL_BYTES + NODE_INDEX_BYTES * len(self.parents)


class ListRequest(NamedTuple):
    """Ask for the (storage key, record digest) pairs of `nodes`, each a (level, index)."""

    nodes: tuple[tuple[int, int], ...]

    def wire_bytes(self) -> int:
        return MESSAGE_OVERHEAD_BYTES + (LEVEL_BYTES + NODE_INDEX_BYTES) * len(self.nodes)


def digest_reply_bytes(count: int) -> int:
    """Wire size of a reply carrying `count` digests (packed by `pack_digests`)."""
    return MESSAGE_OVERHEAD_BYTES + DIGEST_BYTES * count


def listing_bytes(listing: Mapping[bytes, int]) -> int:
    """Wire size of a listing: each storage key with its record digest."""
    return MESSAGE_OVERHEAD_BYTES + sum(len(k) + RECORD_DIGEST_BYTES for k in listing)


def pack_digests(digests: Sequence[Digest]) -> bytes:
    """Digests as DIGEST_BYTES each (hash u64, count u32, little-endian), for a reply."""
    if len(digests) > MAX_NODES_PER_REQUEST:
        raise LimitError(
            f"{len(digests)} digests; MAX_NODES_PER_REQUEST is {MAX_NODES_PER_REQUEST}"
        )
    out = bytearray()
    for h, c in digests:
        if c > _MAX_COUNT:
            raise LimitError(f"a node of {c} keys; a digest counts at most {_MAX_COUNT}")
        out += _DIGEST.pack(h, c)
    return bytes(out)


def unpack_digests(data: bytes) -> list[Digest]:
    """The digests of a reply; ValueError if the length is not a whole number of them."""
    if len(data) % DIGEST_BYTES or len(data) > DIGEST_BYTES * MAX_NODES_PER_REQUEST:
        raise ValueError(
            f"digest reply of {len(data)} bytes is not 0..{MAX_NODES_PER_REQUEST} digests"
        )
    return [Digest(*_DIGEST.unpack_from(data, o)) for o in range(0, len(data), DIGEST_BYTES)]


def diff_buckets(
    mine: Mapping[bytes, int], theirs: Mapping[bytes, int]
) -> tuple[list[bytes], list[bytes]]:
    """(they_need, i_need) from two listings of the same token ranges (storage key -> record
    digest), each ascending. A key both sides hold with different records is in both lists:
    each side merges the other's record, and merge is commutative, so both end up equal."""
    they_need = sorted(k for k, d in mine.items() if theirs.get(k) != d)
    i_need = sorted(k for k, d in theirs.items() if mine.get(k) != d)
    return they_need, i_need


class TreeDiff:
    """The initiator's side of one comparison with one peer, over one partition.

    Loop: `next_request()`; send it; answer a DigestRequest with `receive_digests` (the peer's
    digests and ours, both from `MerkleTree.digests`), a ListRequest with `receive_listing`
    (the peer's listing of the request's nodes and ours); until `next_request()` is None.
    Then `they_need` and `i_need` name the keys to push and to pull; the round is complete
    once both transfers are applied. One request is outstanding at a time.

    Data may change while a comparison runs: a difference that lasts the whole comparison is
    found; one that comes or goes meanwhile may be found or not (the next round catches it),
    and transferring a key that was already equal is harmless, as merge is idempotent.
    """

    __slots__ = (
        "_frontier",
        "_outstanding",
        "_started",
        "_to_list",
        "_tree",
        "digests_compared",
        "i_need",
        "in_sync",
        "list_at_keys",
        "listed_nodes",
        "max_nodes_per_request",
        "round_trips",
        "step_levels",
        "they_need",
        "traffic_bytes",
    )

    def __init__(
        self,
        tree: MerkleTree,
        *,
        step_levels: int = DEFAULT_STEP_LEVELS,
        list_at_keys: int = DEFAULT_LIST_AT_KEYS,
        max_nodes_per_request: int = MAX_NODES_PER_REQUEST,
    ):
        if not 1 <= step_levels <= MAX_STEP_LEVELS:
            raise ValueError(f"step_levels must be in 1..{MAX_STEP_LEVELS}, got {step_levels}")
        if not 0 <= list_at_keys <= MAX_LIST_AT_KEYS:
            raise ValueError(f"list_at_keys must be in 0..{MAX_LIST_AT_KEYS}, got {list_at_keys}")
        if not 1 << step_levels <= max_nodes_per_request <= MAX_NODES_PER_REQUEST:
            raise ValueError(
                f"max_nodes_per_request must be in {1 << step_levels}..{MAX_NODES_PER_REQUEST}"
            )
        self._tree = tree
        self.step_levels = step_levels
        self.list_at_keys = list_at_keys
        self.max_nodes_per_request = max_nodes_per_request
        self._started = False
        self._outstanding: DigestRequest | ListRequest | None = None
        self._frontier: dict[int, list[int]] = {}  # level -> differing nodes still to descend
        self._to_list: list[tuple[int, int]] = []
        self.in_sync: bool | None = None  # known after the root compare
        self.listed_nodes: list[tuple[int, int]] = []  # the differing ranges, finest found
        self.they_need: list[bytes] = []
        self.i_need: list[bytes] = []
        self.traffic_bytes = 0
        self.round_trips = 0
        self.digests_compared = 0

    @property
    def done(self) -> bool:
        return (
            self._started and self._outstanding is None and not self._frontier and not self._to_list
        )

    def next_request(self) -> DigestRequest | ListRequest | None:
        if self._outstanding is not None:
            raise RuntimeError("the previous request has not been answered")
        tree = self._tree
        if not self._started:
            self._started = True
            request: DigestRequest | ListRequest = DigestRequest(0, 0, (0,))
        elif self._frontier:
            level = min(self._frontier)
            nodes = self._frontier[level]
            if level < tree.depth:
                # Stop at the leaves so that rounds inside the tree never need a scan.
                child_level = min(level + self.step_levels, tree.depth)
            else:
                child_level = min(level + self.step_levels, tree.max_level)
            per_request = self.max_nodes_per_request >> (child_level - level)
            parents, rest = nodes[:per_request], nodes[per_request:]
            if rest:
                self._frontier[level] = rest
            else:
                del self._frontier[level]
            request = DigestRequest(child_level, level, tuple(parents))
        elif self._to_list:
            batch = self._to_list[:MAX_LIST_NODES_PER_REQUEST]
            del self._to_list[:MAX_LIST_NODES_PER_REQUEST]
            request = ListRequest(tuple(batch))
        else:
            return None
        self._outstanding = request
        self.traffic_bytes += request.wire_bytes()
        self.round_trips += 1
        return request

    def _take(self, request: DigestRequest | ListRequest) -> None:
        if request is not self._outstanding:
            raise ValueError("this answer is not for the outstanding request")
        self._outstanding = None

    def receive_digests(
        self, request: DigestRequest, mine: Sequence[Digest], theirs: Sequence[Digest]
    ) -> None:
        """Compare the digests of `request.indexes`: ours and the peer's, in that order."""
        indexes = request.indexes
        if len(mine) != len(indexes) or len(theirs) != len(indexes):
            raise ValueError(
                f"expected {len(indexes)} digests, got {len(mine)} of ours and "
                f"{len(theirs)} of theirs"
            )
        self._take(request)
        self.traffic_bytes += digest_reply_bytes(len(theirs))
        self.digests_compared += len(theirs)
        level = request.level
        descend = []
        for i, a, b in zip(indexes, mine, theirs):
            if a == b:
                continue
            # Once one side holds few keys, listing them costs about as much as the keys that
            # differ; descending further would only add round trips.
            if level == self._tree.max_level or min(a[1], b[1]) <= self.list_at_keys:
                self._to_list.append((level, i))
            else:
                descend.append(i)
        if descend:
            self._frontier.setdefault(level, []).extend(descend)
        if level == 0:
            self.in_sync = mine[0] == theirs[0]

    def receive_listing(
        self, request: ListRequest, mine: Mapping[bytes, int], theirs: Mapping[bytes, int]
    ) -> tuple[list[bytes], list[bytes]]:
        """Diff the listings of `request.nodes`: ours and the peer's (storage key -> record
        digest). Returns this batch's (they_need, i_need) and adds them to the totals."""
        ranges = sorted(self._tree.node_range(level, i) for level, i in request.nodes)
        starts = [first for first, _ in ranges]
        for listing, side in ((mine, "our"), (theirs, "their")):
            for skey in listing:
                token = _token(skey)
                pos = bisect_right(starts, token)
                if not pos or ranges[pos - 1][1] < token:
                    raise ValueError(
                        f"{side} listing holds storage key {skey[:24].hex()}, outside the "
                        "requested nodes"
                    )
        self._take(request)
        they_need, i_need = diff_buckets(mine, theirs)
        self.listed_nodes.extend(request.nodes)
        self.they_need.extend(they_need)
        self.i_need.extend(i_need)
        self.traffic_bytes += listing_bytes(theirs)
        if i_need:
            # The pull: the keys we ask the peer for (the records themselves are payload).
            self.traffic_bytes += MESSAGE_OVERHEAD_BYTES + sum(len(k) for k in i_need)
        return they_need, i_need


# --- tombstone collection ---------------------------------------------------------------------


def gc_horizon_ms(grace_ms: int, round_started_ms: int | None) -> int | None:
    """Tombstones of a partition dead since this time or earlier may be collected; None: none.

    `round_started_ms` is when the replica's last *completed* anti-entropy round of the
    partition started (compared with every other primary replica, both transfers applied).
    A tombstone qualifies when that round started after its grace period ended: grace bounds
    how late a write may still arrive (hints expire before it), so the tombstone was here
    when the round started and the round pushed it to every replica (docs/anti-entropy.md).
    """
    if round_started_ms is None:
        return None
    return round_started_ms - grace_ms
