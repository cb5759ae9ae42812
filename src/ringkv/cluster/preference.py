"""Preference lists: which nodes hold a partition's replicas, and who stands in when some are down.

Pure functions over the ring's owner table (one owner per partition, see `ring.py`). A
partition's preference list walks the ring clockwise from the partition (p, p+1, ..., wrapping)
and collects the owners it meets: first one node per failure domain (rack) until it has N, then,
if there are fewer than N racks, more distinct nodes in walk order. Listing the rack-distinct
nodes first makes every prefix of the list a valid shorter list, so a namespace with a smaller
N takes a prefix of the cached list. Implements docs/ring.md ("Preference lists", "Fallbacks").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from typing import NamedTuple


class Holder(NamedTuple):
    """One node that holds a partition's copy for a request. `hint_for` names the primary a
    fallback stands in for.

    A fallback keeps what it receives as a hint and hands it to `hint_for` when that node is
    reachable again (hinted handoff); a primary has `hint_for=None`.
    """

    node_id: str
    hint_for: str | None = None

    @property
    def is_fallback(self) -> bool:
        return self.hint_for is not None


def build_preference_lists(
    owners: Sequence[int],
    domains: Sequence[int],
    replicas: int,
    dcs: Sequence[int] | None = None,
    quotas: Mapping[int, int] | None = None,
) -> list[tuple[int, ...]]:
    """The preference list of every partition, as indexes into the member table.

    `owners[p]` is the member index owning partition p; `domains[i]` is member i's failure
    domain (its datacenter and rack, numbered). Only members that own a partition can appear:
    the walk meets nobody else.

    Without `quotas`, the list has `replicas` nodes of any datacenter: one per domain first, in
    walk order, then (fewer domains than N) more distinct nodes in walk order. With `quotas`
    (datacenter number -> replicas there; `dcs[i]` is member i's datacenter), each datacenter
    gets its own count, chosen the same way among its own members, and `replicas` is ignored.
    A datacenter's part is shorter than asked only when fewer of its members own partitions.
    """
    q = len(owners)
    owning = set(owners)
    if quotas is None:
        dcs = [0] * len(domains)
        quotas = {0: replicas}
    assert dcs is not None
    # Per datacenter: how many nodes, and how many of them on distinct racks, the list can have.
    wanted: dict[int, int] = {}
    wanted_domains: dict[int, int] = {}
    for dc, count in quotas.items():
        members = [i for i in owning if dcs[i] == dc]
        wanted[dc] = min(count, len(members))
        wanted_domains[dc] = min(wanted[dc], len({domains[i] for i in members}))
    total_domains = sum(wanted_domains.values())
    total = sum(wanted.values())
    lists: list[tuple[int, ...]] = []
    for p in range(q):
        # Pass 1: one node per rack, in walk order, until each datacenter's racks are covered.
        chosen: list[int] = []
        seen_domains: set[int] = set()
        picked = dict.fromkeys(quotas, 0)
        j = p
        while len(chosen) < total_domains:
            node = owners[j]
            dc = dcs[node]
            if dc in picked and domains[node] not in seen_domains and picked[dc] < wanted_domains[dc]:
                seen_domains.add(domains[node])
                picked[dc] += 1
                chosen.append(node)
            j = j + 1 if j + 1 < q else 0
        if len(chosen) < total:
            # Pass 2 (fewer racks than N in some datacenter): fill with distinct nodes, again
            # in walk order from p, after the rack-distinct ones so that prefixes stay diverse.
            taken = set(chosen)
            j = p
            while len(chosen) < total:
                node = owners[j]
                dc = dcs[node]
                if node not in taken and dc in picked and picked[dc] < wanted[dc]:
                    taken.add(node)
                    picked[dc] += 1
                    chosen.append(node)
                j = j + 1 if j + 1 < q else 0
        lists.append(tuple(chosen))
    return lists


def walk_fallbacks(
    owners: Sequence[int],
    partition: int,
    primaries: Sequence[int],
    unavailable: Set[int],
    dcs: Sequence[int] | None = None,
) -> list[tuple[int, int | None]]:
    """Primaries that are available, then a fallback for each unavailable primary.

    Returns (node, stands_in_for) pairs with `stands_in_for=None` for a primary. Fallbacks are
    the next distinct available owners met walking clockwise from `partition` that are not
    primaries, handed to the unavailable primaries in preference order. With `dcs` (member ->
    datacenter number), a fallback stands in only for a primary of its own datacenter, so a
    datacenter's copies stay in it. When the ring runs out of available nodes, the unavailable
    primaries left over get no fallback.
    """
    targets: list[tuple[int, int | None]] = [(i, None) for i in primaries if i not in unavailable]
    missing = [i for i in primaries if i in unavailable]
    if not missing:
        return targets
    q = len(owners)
    excluded = set(primaries)
    j = partition
    for _ in range(q):
        node = owners[j]
        if node not in excluded:
            excluded.add(node)
            if node not in unavailable:
                for k, primary in enumerate(missing):
                    if dcs is None or dcs[primary] == dcs[node]:
                        targets.append((node, primary))
                        del missing[k]
                        break
                if not missing:
                    break
        j = j + 1 if j + 1 < q else 0
    return targets
