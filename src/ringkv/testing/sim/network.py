"""A simulated network: per-message loss, delay with jitter, duplication, and partitions.

Every copy of a message is lost with probability `loss`, else delivered after a delay drawn
uniformly from [min_delay_ms, max_delay_ms]; independent delays are what reorder messages. A
message is duplicated (two independent copies, each lost or delayed on its own) with
probability `duplication`. With a `topology` (topology.py) the delay range is instead the one
for the pair of datacenters the two nodes are in: short within one, a WAN delay between two.
A partition splits the nodes into groups that cannot talk: a message between groups is
dropped when sent and, if the partition began while it was in flight, when it arrives; a
group may be whole datacenters (`Topology.nodes_in`).

All randomness comes from the `random.Random` the simulation hands in, drawn in the order
messages are sent, so one seed gives one history.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ringkv.errors import ConfigError
from ringkv.testing.sim.events import EventQueue
from ringkv.testing.sim.topology import Topology


@dataclass(frozen=True)
class NetworkConditions:
    """How the simulated network treats every message."""

    loss: float = 0.0  # probability that one copy is lost
    min_delay_ms: float = 1.0
    max_delay_ms: float = 1.0
    duplication: float = 0.0  # probability that a message is sent twice
    # Datacenters: when set, a message's delay range is the topology's for the pair of
    # datacenters of its two nodes, and min_delay_ms and max_delay_ms are not used.
    topology: Topology | None = None

    def __post_init__(self) -> None:
        for field in ("loss", "duplication"):
            value = getattr(self, field)
            if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                raise ConfigError(field, f"must be a probability in [0, 1), got {value!r}")
        lo, hi = self.min_delay_ms, self.max_delay_ms
        if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo <= hi):
            raise ConfigError(
                "max_delay_ms", f"need 0 <= min_delay_ms <= max_delay_ms, got {lo!r}, {hi!r}"
            )

    def describe(self) -> str:
        if self.topology is not None:
            delay = self.topology.describe()
        elif self.min_delay_ms == self.max_delay_ms:
            delay = f"delay {self.min_delay_ms:g} ms"
        else:
            delay = f"delay {self.min_delay_ms:g}-{self.max_delay_ms:g} ms"
        return f"loss {self.loss:.0%}, {delay}, duplication {self.duplication:.0%}"


# Delivery: (src, dst, message, dst_generation at send time) -> None.
Deliver = Callable[[str, str, Any, int], None]


class SimulatedNetwork:
    """Carries messages between simulated nodes through the event queue."""

    __slots__ = (
        "_deliver",
        "_group",
        "_queue",
        "_rng",
        "conditions",
        "copies_lost",
        "dropped_by_partition",
        "duplicated",
        "sent",
    )

    def __init__(
        self,
        conditions: NetworkConditions,
        rng: random.Random,
        queue: EventQueue,
        deliver: Deliver,
    ):
        self.conditions = conditions
        self._rng = rng
        self._queue = queue
        self._deliver = deliver
        self._group: dict[str, int] = {}  # node -> partition group; empty: no partition
        self.sent = 0
        self.copies_lost = 0
        self.duplicated = 0
        self.dropped_by_partition = 0

    # -- partitions

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Split the network: nodes of different groups cannot talk. Nodes in no group form
        one more group together. Replaces any earlier partition."""
        group: dict[str, int] = {}
        for number, members in enumerate(groups, start=1):
            for node in members:
                if node in group:
                    raise ConfigError("groups", f"{node} is listed in two groups")
                group[node] = number
        self._group = group

    def heal(self) -> None:
        self._group = {}

    @property
    def partitioned(self) -> bool:
        return bool(self._group)

    def can_talk(self, a: str, b: str) -> bool:
        group = self._group
        return not group or group.get(a, 0) == group.get(b, 0)

    # -- sending

    def send(self, src: str, dst: str, message: Any, dst_generation: int) -> None:
        self.sent += 1
        if not self.can_talk(src, dst):
            self.dropped_by_partition += 1
            return
        c = self.conditions
        rng = self._rng
        copies = 1
        if c.duplication and rng.random() < c.duplication:
            copies = 2
            self.duplicated += 1
        now = self._queue.now_ms
        if c.topology is None:
            lo, hi = c.min_delay_ms, c.max_delay_ms
        else:
            lo, hi = c.topology.delay_range_ms(src, dst)
        for _ in range(copies):
            if c.loss and rng.random() < c.loss:
                self.copies_lost += 1
                continue
            # Drawn only when there is a range, as before topologies existed, so that a seed
            # without one replays the history it always did.
            delay = rng.uniform(lo, hi) if hi > lo else lo
            self._queue.schedule(now + delay, self._arrive, src, dst, message, dst_generation)

    def _arrive(self, src: str, dst: str, message: Any, dst_generation: int) -> None:
        if not self.can_talk(src, dst):  # the partition began while it was in flight
            self.dropped_by_partition += 1
            return
        self._deliver(src, dst, message, dst_generation)
