"""Preference lists: which nodes hold a partition's replicas, and who stands in when some are down.

Pure functions over the ring's owner table (one owner per partition, see `ring.py`). Two ways to
fill a list after its owner, one per ring algorithm:

- walked ("dithered"): walk the ring clockwise from the partition (p, p+1, ..., wrapping) and
  collect the owners met;
- ranked ("bounded"): take the partition's own rendezvous ranking of the members, best first.

Either way, first one node per failure domain (rack) until there are N, then, if there are fewer
than N racks, more distinct nodes in the same order. Listing the rack-distinct nodes first makes
every prefix of the list a valid shorter list, so a namespace with a smaller N takes a prefix of
the cached list. Implements docs/ring.md ("Preference lists", "Fallbacks").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence, Set
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
    owners: Sequence[int], domains: Sequence[int], replicas: int
) -> list[tuple[int, ...]]:
    """The preference list of every partition, as indexes into the member table.

    `owners[p]` is the member index owning partition p; `domains[i]` is member i's failure
    domain (its rack, numbered). Only members that own a partition can appear: the walk meets
    nobody else. A list is shorter than `replicas` only when fewer members own partitions.
    """
    q = len(owners)
    owning = set(owners)
    wanted = min(replicas, len(owning))
    wanted_domains = min(wanted, len({domains[i] for i in owning}))
    lists: list[tuple[int, ...]] = []
    for p in range(q):
        # Pass 1: one node per rack, in walk order, until `wanted_domains` racks are covered.
        chosen: list[int] = []
        seen_domains: set[int] = set()
        j = p
        while len(chosen) < wanted_domains:
            node = owners[j]
            if domains[node] not in seen_domains:
                seen_domains.add(domains[node])
                chosen.append(node)
            j = j + 1 if j + 1 < q else 0
        if len(chosen) < wanted:
            # Pass 2 (fewer racks than N): fill with distinct nodes, again in walk order from p.
            # These go after the rack-distinct ones so that prefixes stay rack-diverse.
            taken = set(chosen)
            j = p
            while len(chosen) < wanted:
                node = owners[j]
                if node not in taken:
                    taken.add(node)
                    chosen.append(node)
                j = j + 1 if j + 1 < q else 0
        lists.append(tuple(chosen))
    return lists


def build_ranked_lists(
    owners: Sequence[int],
    ranking: Callable[[int], Iterable[int]],
    domains: Sequence[int],
    pool: Sequence[int],
    replicas: int,
) -> list[tuple[int, ...]]:
    """The preference list of every partition from the partition's own ranking of the members.

    `owners[p]` is the member index owning partition p, `ranking(p)` every member of `pool` (the
    members that may hold replicas) in partition p's order of preference, best first, and
    `domains[i]` member i's failure domain. A list is the owner, then the first members of the
    ranking on racks not yet in the list, then, with fewer racks than `replicas`, the first
    members not yet in it. It is shorter than `replicas` only when the pool is smaller.

    Unlike a walk of the ring, this ties a partition's replicas to that partition alone: a node
    joining enters the lists of the partitions that rank it among their first N and no others,
    and an owner that changes between two nodes of the list changes no replica (docs/ring.md).
    """
    wanted = min(replicas, len(pool))
    wanted_domains = min(wanted, len({domains[i] for i in pool}))
    lists: list[tuple[int, ...]] = []
    for p, owner in enumerate(owners):
        chosen = [owner]
        if wanted_domains > 1:
            seen = {domains[owner]}
            for node in ranking(p):
                if domains[node] not in seen:
                    seen.add(domains[node])
                    chosen.append(node)
                    if len(chosen) == wanted_domains:
                        break
        if len(chosen) < wanted:
            taken = set(chosen)
            for node in ranking(p):
                if node not in taken:
                    taken.add(node)
                    chosen.append(node)
                    if len(chosen) == wanted:
                        break
        lists.append(tuple(chosen))
    return lists


def walk_fallbacks(
    owners: Sequence[int],
    partition: int,
    primaries: Sequence[int],
    unavailable: Set[int],
    owning: int | None = None,
) -> list[tuple[int, int | None]]:
    """Primaries that are available, then a fallback for each unavailable primary.

    Returns (node, stands_in_for) pairs with `stands_in_for=None` for a primary. Fallbacks are
    the next distinct available owners met walking clockwise from `partition` that are not
    primaries, handed to the unavailable primaries in preference order. When the ring runs out
    of available nodes, the unavailable primaries left over get no fallback. `owning`, the
    number of distinct owners when the caller knows it, ends the walk once it has met them
    all instead of after a whole turn of the ring (every node of a datacenter down).
    """
    targets: list[tuple[int, int | None]] = [(i, None) for i in primaries if i not in unavailable]
    missing = [i for i in primaries if i in unavailable]
    if not missing:
        return targets
    q = len(owners)
    owning = q if owning is None else owning
    excluded = set(primaries)
    stands_in = iter(missing)
    j = partition
    for _ in range(q):
        node = owners[j]
        if node not in excluded:
            excluded.add(node)
            if node not in unavailable:
                targets.append((node, next(stands_in)))
                if len(targets) == len(primaries):
                    break
            if len(excluded) >= owning:
                break  # every owner met: the rest of the walk meets no one new
        j = j + 1 if j + 1 < q else 0
    return targets
