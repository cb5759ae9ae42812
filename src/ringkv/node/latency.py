"""Latency and failure figures of a node's calls to its peers, read by /metrics at scrape time.

- `Histogram`: a fixed set of bucket bounds (seconds) and a count per bucket, Prometheus's
  cumulative `le` buckets computed only when read. `observe` is one bisect and two additions,
  cheap enough for every replica call.
- `CallFigures`: what the coordinator measures on its hot paths: the time from a request's
  first replica call to its R or W answers (or its failure), per operation (`get`, `set`),
  and per peer the time of each replica call and its failures by reason.

Peers are counted per node id; `MAX_PEERS_TRACKED` bounds how many (a long-lived node that
saw many members come and go keeps the first ones it met, and counts the rest under
`OTHER_PEERS`), so the number of labelled series a scrape returns stays bounded.

Not thread-safe: the node's event loop owns it; a scrape reads it from the same loop.
"""

from __future__ import annotations

from bisect import bisect_left

# A quorum on loopback answers in tens of microseconds; across a data centre in a millisecond
# or two; a replica that is paused or whose disk stalls holds a request until the replica
# timeout (seconds). The bounds resolve all three.
QUORUM_BUCKETS_S = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
)
PEER_BUCKETS_S = QUORUM_BUCKETS_S
QUORUM_OPERATIONS = ("get", "set")
FAILURE_REASONS = ("timeout", "unavailable", "error")
MAX_PEERS_TRACKED = 256
OTHER_PEERS = "_other"


class Histogram:
    """Counts of observations per bucket (`counts[i]`: those <= `bounds_s[i]` and above the
    bound before; the last count is those above every bound) and their sum."""

    __slots__ = ("bounds_s", "counts", "sum_s")

    def __init__(self, bounds_s: tuple[float, ...]):
        assert list(bounds_s) == sorted(bounds_s) and len(set(bounds_s)) == len(bounds_s), bounds_s
        self.bounds_s = bounds_s
        self.counts = [0] * (len(bounds_s) + 1)
        self.sum_s = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds_s, seconds)] += 1
        self.sum_s += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """[(upper bound, observations <= it)], ending with (inf, all of them)."""
        out = []
        total = 0
        for bound, n in zip((*self.bounds_s, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


class PeerFigures:
    """One peer: the duration of every replica call that got an answer or failed, and the
    failures by reason (`FAILURE_REASONS`)."""

    __slots__ = ("failures", "latency")

    def __init__(self) -> None:
        self.latency = Histogram(PEER_BUCKETS_S)
        self.failures = dict.fromkeys(FAILURE_REASONS, 0)


class CallFigures:
    """The coordinator's quorum latencies and the per-peer call figures of one node."""

    def __init__(self, max_peers: int = MAX_PEERS_TRACKED) -> None:
        self.quorum = {op: Histogram(QUORUM_BUCKETS_S) for op in QUORUM_OPERATIONS}
        self.peers: dict[str, PeerFigures] = {}
        self.max_peers = max_peers

    def peer(self, node: str) -> PeerFigures:
        figures = self.peers.get(node)
        if figures is None:
            if len(self.peers) >= self.max_peers:
                node = OTHER_PEERS
                figures = self.peers.get(node)
            if figures is None:
                figures = self.peers[node] = PeerFigures()
        return figures
