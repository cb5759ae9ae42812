"""Datacenters for the simulator: where each node is (datacenter and rack), and how long a
message takes between two nodes, by the pair of their datacenters.

A node's place is its location as the node configures and gossips it, "dc/rack"
(`cluster/ring.Member.at` reads the same string), so the gossip runs and the ring's placement
measure one cluster. Within a datacenter a message takes `local_ms`; between two, `wan_ms`,
or the range `wan_ms_by_pair` names for that pair (either order). Each range is one way,
drawn uniformly per message by the network (network.py, `NetworkConditions.topology`), so
the width of a range is its jitter.

A `Topology` is immutable and pure: no randomness of its own, no clock. The simulation's
network draws the delays from the seed's stream, so one seed still gives one history.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

from ringkv.cluster.ring import MAX_MEMBERS, Member
from ringkv.errors import ConfigError

MAX_DATACENTERS = 16  # more than any deployment we plan for; keeps the delay table small
LOCAL_DELAY_MS = (0.5, 2.0)  # one way, within a datacenter
WAN_DELAY_MS = (30.0, 80.0)  # one way, between two datacenters


class DelayRange(NamedTuple):
    """One-way delay of a message, drawn uniformly from [min_ms, max_ms]."""

    min_ms: float
    max_ms: float

    @classmethod
    def checked(cls, field: str, value: tuple[float, float]) -> DelayRange:
        try:
            lo, hi = (float(x) for x in value)
        except (TypeError, ValueError):
            raise ConfigError(field, f"must be (min_ms, max_ms), got {value!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo <= hi):
            raise ConfigError(field, f"need 0 <= min_ms <= max_ms, got {lo!r}, {hi!r}")
        return cls(lo, hi)

    @property
    def mean_ms(self) -> float:
        return (self.min_ms + self.max_ms) / 2

    def describe(self) -> str:
        if self.min_ms == self.max_ms:
            return f"{self.min_ms:g} ms"
        return f"{self.min_ms:g}-{self.max_ms:g} ms"


def grid_locations(datacenters: int, nodes_per_dc: int, racks_per_dc: int = 1) -> dict[str, str]:
    """Node -> location for `datacenters` datacenters dc1, dc2, ... of `nodes_per_dc` nodes each,
    spread round-robin over racks r1..r{racks_per_dc}. Nodes are named dc1-n00, dc1-n01, ...
    (zero-padded: names sort in numeric order, and a datacenter's nodes sort together)."""
    for field, value, low in (
        ("datacenters", datacenters, 1),
        ("nodes_per_dc", nodes_per_dc, 1),
        ("racks_per_dc", racks_per_dc, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(field, f"must be an integer >= {low}, got {value!r}")
    width = len(str(nodes_per_dc - 1))
    return {
        f"dc{d}-n{i:0{width}d}": f"dc{d}/r{i % racks_per_dc + 1}"
        for d in range(1, datacenters + 1)
        for i in range(nodes_per_dc)
    }


class Topology:
    """Which datacenter and rack each node is in, and the one-way delay between each pair of
    datacenters. Immutable once built; safe to share between simulations."""

    __slots__ = (
        "_dc_number",
        "_delay",
        "_members",
        "_nodes_in",
        "_place",
        "datacenters",
        "local_ms",
        "nodes",
        "wan_ms",
        "wan_ms_by_pair",
    )

    def __init__(
        self,
        locations: Mapping[str, str],
        local_ms: tuple[float, float] = LOCAL_DELAY_MS,
        wan_ms: tuple[float, float] = WAN_DELAY_MS,
        wan_ms_by_pair: Mapping[tuple[str, str], tuple[float, float]] | None = None,
    ):
        """`locations`: node -> "dc/rack" (the rack may be empty: "dc/"). The nodes keep the
        mapping's order. `wan_ms_by_pair`: (dc, other dc) -> range, overriding `wan_ms` for
        that pair in both directions."""
        if not 1 <= len(locations) <= MAX_MEMBERS:
            raise ConfigError("locations", f"need 1..{MAX_MEMBERS} nodes, got {len(locations)}")
        place: dict[str, tuple[str, str]] = {}
        for node, where in locations.items():
            if not isinstance(node, str) or not node:
                raise ConfigError(
                    "locations", f"node names must be non-empty strings, got {node!r}"
                )
            dc, sep, rack = str(where).rpartition("/")
            if not sep or not dc:
                raise ConfigError("locations", f"{node}: location must be 'dc/rack', got {where!r}")
            place[node] = (dc, rack)
        self._place = place
        self.nodes: tuple[str, ...] = tuple(place)
        self.datacenters: tuple[str, ...] = tuple(sorted({dc for dc, _ in place.values()}))
        if len(self.datacenters) > MAX_DATACENTERS:
            raise ConfigError(
                "locations",
                f"at most {MAX_DATACENTERS} datacenters, got {len(self.datacenters)}",
            )
        self._dc_number = {dc: i for i, dc in enumerate(self.datacenters)}
        self._nodes_in = {
            dc: tuple(n for n in self.nodes if place[n][0] == dc) for dc in self.datacenters
        }
        self.local_ms = DelayRange.checked("local_ms", local_ms)
        self.wan_ms = DelayRange.checked("wan_ms", wan_ms)
        by_pair: dict[frozenset[str], DelayRange] = {}
        for pair, value in (wan_ms_by_pair or {}).items():
            a, b = pair
            for dc in (a, b):
                if dc not in self._dc_number:
                    raise ConfigError("wan_ms_by_pair", f"no node is in datacenter {dc!r}")
            if a == b:
                raise ConfigError("wan_ms_by_pair", f"({a}, {b}) is one datacenter: see local_ms")
            key = frozenset(pair)
            if key in by_pair:
                raise ConfigError("wan_ms_by_pair", f"({a}, {b}) is given twice")
            by_pair[key] = DelayRange.checked("wan_ms_by_pair", value)
        self.wan_ms_by_pair = by_pair
        # The network asks for every message: a table by datacenter number, filled once.
        k = len(self.datacenters)
        self._delay = [
            [
                self.local_ms
                if i == j
                else by_pair.get(frozenset((self.datacenters[i], self.datacenters[j])), self.wan_ms)
                for j in range(k)
            ]
            for i in range(k)
        ]
        self._members = tuple(Member.at(n, f"{dc}/{rack}") for n, (dc, rack) in place.items())

    @classmethod
    def grid(
        cls,
        datacenters: int,
        nodes_per_dc: int,
        racks_per_dc: int = 1,
        local_ms: tuple[float, float] = LOCAL_DELAY_MS,
        wan_ms: tuple[float, float] = WAN_DELAY_MS,
    ) -> Topology:
        """Equal datacenters dc1..dc{datacenters}: see `grid_locations`."""
        return cls(grid_locations(datacenters, nodes_per_dc, racks_per_dc), local_ms, wan_ms)

    def __repr__(self) -> str:
        return f"Topology({self.describe()})"

    def __len__(self) -> int:
        return len(self.nodes)

    # -- where nodes are

    def dc_of(self, node: str) -> str:
        return self._place[node][0]

    def rack_of(self, node: str) -> str:
        return self._place[node][1]

    def nodes_in(self, *dcs: str) -> tuple[str, ...]:
        """The nodes of the named datacenters, in the topology's order: a group to hand to
        `Simulation.partition` to cut whole datacenters off."""
        for dc in dcs:
            if dc not in self._nodes_in:
                raise ConfigError(
                    "dcs", f"no datacenter {dc!r}: one of {', '.join(self.datacenters)}"
                )
        wanted = set(dcs)
        return tuple(n for n in self.nodes if self._place[n][0] in wanted)

    def same_dc(self, a: str, b: str) -> bool:
        return self._place[a][0] == self._place[b][0]

    def members(self) -> tuple[Member, ...]:
        """The nodes as `cluster/ring.Ring` sees them, weight 1 (`Member.at(node, "dc/rack")`)."""
        return self._members

    # -- delays

    def delay_range_ms(self, src: str, dst: str) -> DelayRange:
        """The one-way delay range of a message from `src` to `dst`. REQUIRES: both are nodes
        of the topology (KeyError otherwise: a message to nowhere is the scenario's bug)."""
        number = self._dc_number
        place = self._place
        return self._delay[number[place[src][0]]][number[place[dst][0]]]

    def describe(self) -> str:
        if len(self.datacenters) == 1:
            return f"1 datacenter of {len(self.nodes)} nodes, delay {self.local_ms.describe()}"
        sizes = {len(v) for v in self._nodes_in.values()}
        size = (
            f"{sizes.pop()} nodes each"
            if len(sizes) == 1
            else ", ".join(f"{dc} {len(v)}" for dc, v in self._nodes_in.items())
        )
        pairs = "".join(
            f", {' and '.join(sorted(pair))} {delay.describe()}"
            for pair, delay in sorted(self.wan_ms_by_pair.items(), key=lambda kv: sorted(kv[0]))
        )
        return (
            f"{len(self.datacenters)} datacenters of {size}, delay {self.local_ms.describe()} "
            f"within one and {self.wan_ms.describe()} between two{pairs} (one way)"
        )
