"""The phi-accrual failure detector: how suspicious the silence of a peer is, as a number.

Contract: a detector keeps, per peer, a bounded window of the intervals between that peer's
heartbeats (in ms) and answers `phi(now_ms)` = -log10(P(a heartbeat arrives later than now)),
with the interval modelled as a normal distribution of the window's mean and standard
deviation (Hayashibara et al., "The phi accrual failure detector", 2004; the same model and
the same logistic approximation of the normal CDF as Akka's detector). phi 1 means a 10 %
chance that the peer is merely late, phi 8 one in 10^8. A peer is available while
phi < threshold. Implements docs/membership.md, "Failure detection".

Nothing here reads a clock: every call takes `now_ms` from the caller (a monotonic clock in
the node, virtual time in the simulator). For a fixed history phi is finite and
non-decreasing in `now_ms`; before the last heartbeat (the clock stepped back) it is 0.

Not thread-safe; the node calls it from its event loop only.
"""

from __future__ import annotations

import math
from collections import deque

from ringkv.cluster.ring import MAX_MEMBERS
from ringkv.errors import ConfigError, LimitError

DEFAULT_THRESHOLD = 8.0
DEFAULT_WINDOW_SIZE = 1000
MAX_WINDOW_SIZE = 100_000
DEFAULT_MIN_STD_DEVIATION_MS = 100.0
DEFAULT_ACCEPTABLE_HEARTBEAT_PAUSE_MS = 0.0
DEFAULT_FIRST_HEARTBEAT_ESTIMATE_MS = 1000.0

_LN10 = math.log(10.0)
# Beyond 10^6 standard deviations phi is ~3e16 and flat: clamping keeps y**3 from overflowing
# to inf for absurd gaps (or a tiny min_std_deviation_ms) while keeping phi monotone.
_Y_LIMIT = 1e6


def _check_positive(field: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(field, f"must be a finite number, got {value!r}")
    if value <= 0:
        raise ConfigError(field, f"must be > 0, got {value!r}")
    return float(value)


def _check_params(
    threshold: float,
    window_size: int,
    min_std_deviation_ms: float,
    acceptable_heartbeat_pause_ms: float,
    first_heartbeat_estimate_ms: float,
) -> tuple[float, int, float, float, float]:
    threshold = _check_positive("threshold", threshold)
    if (
        isinstance(window_size, bool)
        or not isinstance(window_size, int)
        or not 1 <= window_size <= MAX_WINDOW_SIZE
    ):
        raise ConfigError(
            "window_size", f"must be an integer in 1..{MAX_WINDOW_SIZE}, got {window_size!r}"
        )
    min_std_deviation_ms = _check_positive("min_std_deviation_ms", min_std_deviation_ms)
    pause = acceptable_heartbeat_pause_ms
    if isinstance(pause, bool) or not isinstance(pause, (int, float)) or not math.isfinite(pause):
        raise ConfigError(
            "acceptable_heartbeat_pause_ms", f"must be a finite number, got {pause!r}"
        )
    if pause < 0:
        raise ConfigError("acceptable_heartbeat_pause_ms", f"must be >= 0, got {pause!r}")
    first_heartbeat_estimate_ms = _check_positive(
        "first_heartbeat_estimate_ms", first_heartbeat_estimate_ms
    )
    return (
        threshold,
        window_size,
        min_std_deviation_ms,
        float(pause),
        first_heartbeat_estimate_ms,
    )


def phi_of(elapsed_ms: float, mean_ms: float, std_deviation_ms: float) -> float:
    """phi after `elapsed_ms` of silence, for intervals ~ Normal(mean_ms, std_deviation_ms).

    The normal CDF is approximated by the logistic 1 / (1 + e^-z), z = y (1.5976 + 0.070566 y²),
    y = (elapsed - mean) / std (error < 1.4e-4 over the whole line; Bowling et al. 2009, as
    Akka uses). Then phi = -log10(1 - F) = log10(1 + e^z), computed as a softplus so it
    neither overflows nor rounds to 0 in the tails.

    REQUIRES: std_deviation_ms > 0.
    """
    y = (elapsed_ms - mean_ms) / std_deviation_ms
    if y > _Y_LIMIT:
        y = _Y_LIMIT
    elif y < -_Y_LIMIT:
        y = -_Y_LIMIT
    z = y * (1.5976 + 0.070566 * y * y)
    if z > 0.0:
        return (z + math.log1p(math.exp(-z))) / _LN10
    return math.log1p(math.exp(z)) / _LN10


class PhiAccrualDetector:
    """The failure detector of one peer.

    `threshold`: phi at and above which the peer counts as unavailable (8 ≈ one false
    suspicion in 10^8 heartbeats under the model). `window_size`: how many intervals are kept
    (the oldest go first). `min_std_deviation_ms`: floor of the standard deviation, so a very
    regular peer is not suspected after a few ms of lateness. `acceptable_heartbeat_pause_ms`:
    added to the mean, a pause (GC, a busy loop) that is never suspicious by itself.
    `first_heartbeat_estimate_ms`: the interval assumed before any has been measured.

    The first heartbeat seeds the window with two intervals, estimate ± estimate/4, so that
    the peer starts with mean = estimate and standard deviation = estimate/4 (Akka's bootstrap).
    They leave the window as real intervals push them out.

    An interval is recorded only if the peer was available when its heartbeat came: the gap
    that ends an outage says nothing about the peer's normal rhythm and would make the
    detector slow to suspect it next time. A heartbeat at the same ms as the last one is the
    same heartbeat (gossip can report one version twice); a heartbeat before the last one (the
    clock stepped back) restarts the silence at `now_ms` without recording an interval.
    """

    __slots__ = (
        "_evictions",
        "_intervals",
        "_last_ms",
        "_mean_ms",
        "_std_ms",
        "_sum_ms",
        "_sum_sq_ms2",
        "acceptable_heartbeat_pause_ms",
        "first_heartbeat_estimate_ms",
        "min_std_deviation_ms",
        "threshold",
        "window_size",
    )

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        window_size: int = DEFAULT_WINDOW_SIZE,
        min_std_deviation_ms: float = DEFAULT_MIN_STD_DEVIATION_MS,
        acceptable_heartbeat_pause_ms: float = DEFAULT_ACCEPTABLE_HEARTBEAT_PAUSE_MS,
        first_heartbeat_estimate_ms: float = DEFAULT_FIRST_HEARTBEAT_ESTIMATE_MS,
    ):
        (
            self.threshold,
            self.window_size,
            self.min_std_deviation_ms,
            self.acceptable_heartbeat_pause_ms,
            self.first_heartbeat_estimate_ms,
        ) = _check_params(
            threshold,
            window_size,
            min_std_deviation_ms,
            acceptable_heartbeat_pause_ms,
            first_heartbeat_estimate_ms,
        )
        self._intervals: deque[float] = deque()
        self._sum_ms = 0.0
        self._sum_sq_ms2 = 0.0
        self._evictions = 0
        self._last_ms: float | None = None
        # Cached on every recorded interval: phi() runs far more often than heartbeat().
        self._mean_ms = self.first_heartbeat_estimate_ms + self.acceptable_heartbeat_pause_ms
        self._std_ms = max(self.first_heartbeat_estimate_ms / 4, self.min_std_deviation_ms)

    def __repr__(self) -> str:
        return (
            f"PhiAccrualDetector(last_heartbeat_ms={self._last_ms}, "
            f"intervals={len(self._intervals)}, mean_ms={self.mean_interval_ms:.1f}, "
            f"std_deviation_ms={self._std_ms:.1f})"
        )

    # -- inputs

    def heartbeat(self, now_ms: float) -> None:
        """The peer was heard from at `now_ms`."""
        last = self._last_ms
        if last is None:
            estimate = self.first_heartbeat_estimate_ms
            self._record(estimate - estimate / 4)
            self._record(estimate + estimate / 4)
        elif now_ms > last and self.is_available(now_ms):
            self._record(now_ms - last)
        self._last_ms = now_ms

    # -- outputs

    def phi(self, now_ms: float) -> float:
        """How suspicious the silence since the last heartbeat is at `now_ms`; 0 if never heard
        from, or if `now_ms` is before the last heartbeat."""
        last = self._last_ms
        if last is None:
            return 0.0
        elapsed = now_ms - last
        if not elapsed >= 0:  # the clock stepped back (or now_ms is NaN)
            return 0.0
        return phi_of(elapsed, self._mean_ms, self._std_ms)

    def is_available(self, now_ms: float) -> bool:
        """phi(now_ms) < threshold."""
        return self.phi(now_ms) < self.threshold

    @property
    def last_heartbeat_ms(self) -> float | None:
        return self._last_ms

    @property
    def sample_count(self) -> int:
        """Intervals in the window (the two bootstrap ones included), at most window_size."""
        return len(self._intervals)

    @property
    def mean_interval_ms(self) -> float:
        """Mean of the window, without the acceptable pause."""
        return self._mean_ms - self.acceptable_heartbeat_pause_ms

    @property
    def std_deviation_ms(self) -> float:
        """Standard deviation of the window, floored at min_std_deviation_ms."""
        return self._std_ms

    # -- internals

    def _record(self, interval_ms: float) -> None:
        intervals = self._intervals
        intervals.append(interval_ms)
        self._sum_ms += interval_ms
        self._sum_sq_ms2 += interval_ms * interval_ms
        if len(intervals) > self.window_size:
            old = intervals.popleft()
            self._evictions += 1
            if self._evictions >= self.window_size:
                # Running sums drift as floats come and go; rebuilding them once per window
                # length keeps the error from accumulating, at O(1) amortized cost.
                self._evictions = 0
                self._sum_ms = math.fsum(intervals)
                self._sum_sq_ms2 = math.fsum(x * x for x in intervals)
            else:
                self._sum_ms -= old
                self._sum_sq_ms2 -= old * old
        n = len(intervals)
        mean = self._sum_ms / n
        variance = max(0.0, self._sum_sq_ms2 / n - mean * mean)
        self._mean_ms = mean + self.acceptable_heartbeat_pause_ms
        self._std_ms = max(math.sqrt(variance), self.min_std_deviation_ms)


class FailureDetectors:
    """A phi-accrual detector per peer, all with the same parameters.

    A node never heard from is *unknown*: `phi` is 0 and `is_up` is True, so a node that has
    just started routes to the members it was given as it would with static membership, and
    only silence after a first heartbeat makes a peer suspect. The node feeds `heartbeat`
    whenever gossip shows a newer version of a peer's state, and calls `remove` when the peer
    leaves the membership (left, removed, or a tombstone expired).

    Bounded: at most `max_nodes` peers are tracked (default ring.MAX_MEMBERS, the most members
    a cluster can have); a heartbeat of one more is refused with LimitError.
    """

    __slots__ = ("_detectors", "_params", "max_nodes", "threshold")

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        window_size: int = DEFAULT_WINDOW_SIZE,
        min_std_deviation_ms: float = DEFAULT_MIN_STD_DEVIATION_MS,
        acceptable_heartbeat_pause_ms: float = DEFAULT_ACCEPTABLE_HEARTBEAT_PAUSE_MS,
        first_heartbeat_estimate_ms: float = DEFAULT_FIRST_HEARTBEAT_ESTIMATE_MS,
        max_nodes: int = MAX_MEMBERS,
    ):
        self._params = _check_params(
            threshold,
            window_size,
            min_std_deviation_ms,
            acceptable_heartbeat_pause_ms,
            first_heartbeat_estimate_ms,
        )
        self.threshold = self._params[0]
        if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
            raise ConfigError("max_nodes", f"must be an integer >= 1, got {max_nodes!r}")
        self.max_nodes = max_nodes
        self._detectors: dict[str, PhiAccrualDetector] = {}

    def __len__(self) -> int:
        return len(self._detectors)

    def __contains__(self, node: object) -> bool:
        return node in self._detectors

    def nodes(self) -> list[str]:
        """The peers heard from at least once, sorted."""
        return sorted(self._detectors)

    def detector(self, node: str) -> PhiAccrualDetector | None:
        return self._detectors.get(node)

    def heartbeat(self, node: str, now_ms: float) -> None:
        """`node` was heard from at `now_ms`. Raises LimitError for a new node past max_nodes."""
        detector = self._detectors.get(node)
        if detector is None:
            if len(self._detectors) >= self.max_nodes:
                raise LimitError(
                    f"failure detector tracks at most max_nodes={self.max_nodes} nodes; "
                    f"refused {node!r} (remove nodes that left)"
                )
            detector = self._detectors[node] = PhiAccrualDetector(*self._params)
        detector.heartbeat(now_ms)

    def phi(self, node: str, now_ms: float) -> float:
        """phi of `node` at `now_ms`; 0 for a node never heard from."""
        detector = self._detectors.get(node)
        return 0.0 if detector is None else detector.phi(now_ms)

    def is_up(self, node: str, now_ms: float) -> bool:
        """True unless `node` was heard from and has been silent past the threshold."""
        detector = self._detectors.get(node)
        return detector is None or detector.phi(now_ms) < self.threshold

    def down(self, now_ms: float) -> set[str]:
        """Every tracked node that is not up at `now_ms`: the `unavailable` set the ring's
        fallbacks take."""
        threshold = self.threshold
        return {n for n, d in self._detectors.items() if d.phi(now_ms) >= threshold}

    def remove(self, node: str) -> bool:
        """Forget `node` (it left or was removed); True if it was tracked."""
        return self._detectors.pop(node, None) is not None
