"""The cluster benchmark's latency sweep says what the target asks: the worst p99 at every load
up to half the maximum throughput, and the load up to which p99 stays under 1 ms."""

from __future__ import annotations

from ringkv.bench.cluster import render_sweep, sweep_points, sweep_verdict
from ringkv.bench.server import Result


def _runs(points: dict[int, tuple[float, float, float]]) -> dict[int, list[Result]]:
    return {c: [Result(rps, p50, p99)] for c, (rps, p50, p99) in points.items()}


def test_the_verdict_takes_the_worst_p99_at_or_below_half_the_maximum():
    points = sweep_points(_runs({1: (3_000, 0.3, 0.5), 4: (9_000, 0.4, 0.9), 8: (12_000, 0.6, 1.4),
                                 50: (20_000, 2.0, 6.0)}))
    peak, half, p99, verdict = sweep_verdict(points)
    assert (peak, half) == (20_000, 10_000)
    assert p99 == 0.9 and verdict == "PASS"
    # A spike at light load fails it, even when a heavier point below half is fine.
    points = sweep_points(_runs({1: (3_000, 0.3, 1.7), 4: (9_000, 0.4, 0.9), 50: (20_000, 2.0, 6.0)}))
    assert sweep_verdict(points)[2:] == (1.7, "SHORT")


def test_the_report_names_the_load_up_to_which_p99_stays_under_a_millisecond():
    sweep = {"SET": _runs({1: (3_000, 0.3, 0.5), 4: (9_000, 0.4, 0.9), 50: (20_000, 2.0, 6.0)}),
             "GET": _runs({1: (4_000, 0.2, 0.4), 50: (30_000, 1.0, 3.0)})}
    text = "\n".join(render_sweep(sweep, None, 60_000, 1))
    assert "| SET | 4 | 9,000 | 0.40 | 0.90 |" in text
    assert "SET: maximum 20,000 ops/s; half is 10,000 ops/s; worst p99 at or below half: 0.90 ms (PASS)" in text
    assert "p99 stays under 1 ms up to 9,000 ops/s (45% of the maximum)" in text
    assert "GET: maximum 30,000 ops/s; half is 15,000 ops/s; worst p99 at or below half: 0.40 ms (PASS)" in text
