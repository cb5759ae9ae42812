"""Where a key lives: its replicas under the current ring, and where it is moving to.

`Placement` holds the ring this node routes by and, while nodes join or leave, the pending
ring (node/membership.py swaps both with `set_rings`). A namespace with a smaller N than the
ring's uses a prefix of each preference list (docs/namespaces.md), one with its own counts per
datacenter the first that many of each datacenter's part (docs/multi-dc.md): its layout. The
lists of every layout in use are computed once per ring. Storage keys carry their namespace, so every question here
takes a storage key and answers for that key's N and conflict policy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from ringkv.cluster.ring import Layout, Ring
from ringkv.errors import QuorumError
from ringkv.node.namespaces import Namespaces
from ringkv.service.levels import ConsistencyLevel, DcNeed, dc_needs
from ringkv.versioning import record as rec
from ringkv.versioning.record import ConflictPolicy

RawMerge = Callable[[bytes | None, bytes | None], bytes | None]


def merge_raw(a: bytes | None, b: bytes | None, policy: ConflictPolicy = ConflictPolicy.SIBLINGS) -> bytes | None:
    """Merge two replicas' stored records (bytes; None is no record) under `policy`."""
    if a is None or a == b:
        return b
    if b is None:
        return a
    return rec.encode_record(rec.merge(rec.decode_record(a), rec.decode_record(b), policy))


class Placement:
    def __init__(self, node_id: str, ring: Ring, namespaces: Namespaces):
        self.node_id = node_id
        self.namespaces = namespaces
        self._merges = {p: functools.partial(merge_raw, policy=p) for p in ConflictPolicy}
        self._default_merge = self._merges[namespaces.default.conflict_policy]
        self._shift = 64 - (ring.partitions.bit_length() - 1)
        self.set_rings(ring, None)

    def set_rings(self, ring: Ring, pending: Ring | None) -> None:
        """Route by `ring`; while nodes join or leave, also write to `pending`'s extra replicas
        of each partition."""
        self.ring = ring
        self.pending = pending
        self.multi_dc = len(ring.datacenters) > 1 or (pending is not None and len(pending.datacenters) > 1)
        self.dc = self.dc_of(self.node_id)
        self._prefs = tuple(ring.preference_list(p) for p in range(ring.partitions))
        # layout -> partition -> its replicas, for every layout but the whole list's
        self._prefs_by_layout = {layout: tuple(ring.replicas_for(p, layout) for p in range(ring.partitions))
                                 for layout in self.namespaces.layouts if layout != ring.replicas}
        self._default_prefs = self.prefs_for(self.namespaces.default.layout)
        # layout -> partition -> the pending ring's replicas that the ring lacks
        extra: dict[Layout, dict[int, tuple[str, ...]]] = {}
        if pending is not None:
            for layout in self.namespaces.layouts:
                for p, pref in enumerate(self.prefs_for(layout)):
                    more = tuple(x for x in pending.replicas_for(p, layout) if x not in pref)
                    if more:
                        extra.setdefault(layout, {})[p] = more
        self._extra = extra

    @property
    def moving(self) -> bool:
        """Whether some partition has replicas to add (a join, leave or removal in progress)."""
        return bool(self._extra)

    @property
    def known_nodes(self) -> tuple[str, ...]:
        """The ring's nodes and the pending ring's (joining nodes)."""
        nodes = set(self.ring.node_ids)
        if self.pending is not None:
            nodes |= set(self.pending.node_ids)
        return tuple(sorted(nodes))

    def dc_of(self, node: str) -> str:
        """A node's datacenter, as the ring (or, for a joining node, the pending ring) has it."""
        if self.pending is None or node in self.ring.node_ids:  # the usual case first: no tuple scan
            return self.ring.dc_of(node)
        return self.pending.dc_of(node)

    def dc_needs(self, level: ConsistencyLevel, pref: tuple[str, ...]) -> tuple[DcNeed, ...]:
        """What a datacenter level asks of each datacenter among `pref`, this node's being
        the local one."""
        return dc_needs(level, pref, self.dc_of, self.dc)

    def read_scope(self, level: ConsistencyLevel, pref: tuple[str, ...]
                   ) -> tuple[tuple[str, ...], int, tuple[DcNeed, ...]]:
        """(replicas to ask, R, per-datacenter needs) of a read at a datacenter level: a local
        level asks only this node's datacenter (it never waits on another's link); EACH_QUORUM
        asks all and needs a majority in each. QuorumError naming the datacenter when this
        node's holds no replica of the key."""
        if level is ConsistencyLevel.EACH_QUORUM:
            needs = self.dc_needs(level, pref)
            return pref, min(len(pref), sum(n.needed for n in needs)), needs
        dc = self.dc
        local = tuple(n for n in pref if self.dc_of(n) == dc)
        if not local:
            raise QuorumError(1, 0, {"(none)": "no replica of this key is in this datacenter"}, dc=dc or "(unnamed)")
        return local, 1 if level is ConsistencyLevel.LOCAL_ONE else len(local) // 2 + 1, ()

    def local_first(self, pref: tuple[str, ...]) -> tuple[str, ...]:
        """`pref` with this node's datacenter's replicas first (each part in order)."""
        if not self.multi_dc:
            return pref
        dc = self.dc
        return (*(n for n in pref if self.dc_of(n) == dc), *(n for n in pref if self.dc_of(n) != dc))

    def partition_of(self, skey: bytes) -> int:
        return int.from_bytes(skey[:8], "big") >> self._shift

    def prefs_for(self, layout: Layout) -> tuple[tuple[str, ...], ...]:
        """Every partition's replicas for a namespace of `layout` (its N, or its counts per
        datacenter: NamespaceSpec.layout)."""
        return self._prefs_by_layout.get(layout, self._prefs)

    def replicas_of(self, skey: bytes) -> tuple[str, ...]:
        if not skey[8]:
            return self._default_prefs[int.from_bytes(skey[:8], "big") >> self._shift]
        layout = self.namespaces.layout_of_skey(skey)
        return self.prefs_for(layout)[int.from_bytes(skey[:8], "big") >> self._shift]

    def extra_replicas_of(self, skey: bytes) -> tuple[str, ...]:
        """While a partition moves: the new owners a write to `skey` also goes to."""
        by_partition = self._extra.get(self.namespaces.layout_of_skey(skey))
        return () if by_partition is None else by_partition.get(self.partition_of(skey), ())

    def pending_replicas_of(self, skey: bytes) -> tuple[str, ...] | None:
        """While nodes join or leave: `skey`'s replicas under the pending ring (None when no
        change is in progress). A consensus round needs a majority of both lists."""
        if self.pending is None:
            return None
        return self.pending.replicas_for(self.partition_of(skey), self.namespaces.layout_of_skey(skey))

    def fallbacks_for(self, skey: bytes, is_up: Callable[[str], bool]
                      ) -> Callable[[frozenset[str]], list[tuple[str, str | None]]]:
        """The ring's sloppy-quorum list of `skey`'s partition, as a WritePlan asks for it:
        nodes held down are passed over as stand-ins (asking one would cost a timeout)."""
        partition = self.partition_of(skey)
        ring = self.ring
        layout = self.namespaces.layout_of_skey(skey)

        def fallbacks(failed: frozenset[str]) -> list[tuple[str, str | None]]:
            unavailable = failed | {node for node in ring.node_ids if not is_up(node)}
            return [(r.node_id, r.hint_for) for r in ring.fallbacks(partition, unavailable, layout)]
        return fallbacks

    def merger_of(self, skey: bytes) -> RawMerge:
        """merge_raw under the conflict policy of `skey`'s namespace."""
        if not skey[8] or self.namespaces.uniform:
            return self._default_merge
        return self._merges[self.namespaces.policy_of_skey(skey)]

    def holds(self, node: str, partition: int) -> frozenset[Layout]:
        """The layouts of which `node` holds `partition`'s keys: under the ring, or the
        pending ring's when the ring does not list it (a joining node)."""
        if node in self._prefs[partition]:
            return frozenset(lay for lay in self.namespaces.layouts if node in self.prefs_for(lay)[partition])
        if self.pending is not None:
            return frozenset(lay for lay in self.namespaces.layouts
                             if node in self.pending.replicas_for(partition, lay))
        return frozenset()

    def shared(self, partition: int, a: str, b: str) -> frozenset[Layout] | None:
        """The layouts whose keys of `partition` both `a` and `b` hold (what anti-entropy
        between them compares); None when that is every layout."""
        layouts = self.namespaces.layouts
        if len(layouts) == 1:
            return None
        both = self.holds(a, partition) & self.holds(b, partition)
        return None if both == layouts else both
