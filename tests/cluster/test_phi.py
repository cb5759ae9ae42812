"""The phi-accrual failure detector as the node sees it: a peer beating every second stays up,
a silent one is suspected within a few seconds, one that comes back is up at once, and the
numbers never do anything surprising (docs/membership.md, "Failure detection")."""

from __future__ import annotations

import ast
import math
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ringkv.cluster.phi as phi_module
from ringkv.cluster.phi import FailureDetectors, PhiAccrualDetector, phi_of
from ringkv.errors import ConfigError, LimitError


def beating(
    count: int, interval_ms: float = 1000.0, jitter_ms: float = 0.0, seed: int = 0, **params
) -> tuple[PhiAccrualDetector, float]:
    """A detector that heard `count` heartbeats about `interval_ms` apart; (detector, last)."""
    rng = random.Random(seed)
    detector = PhiAccrualDetector(**params)
    now = 10_000.0
    for _ in range(count):
        detector.heartbeat(now)
        now += interval_ms + rng.uniform(-jitter_ms, jitter_ms)
    return detector, detector.last_heartbeat_ms


# --- the scenario the node lives ----------------------------------------------------------


@given(
    count=st.integers(2, 300),
    jitter_ms=st.floats(0.0, 200.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_peer_beating_every_second_is_up_at_one_second_and_suspected_after_a_few(
    count, jitter_ms, seed
):
    detector, last = beating(count, 1000.0, jitter_ms, seed)
    assert detector.phi(last + 1000.0) < 1.0
    assert detector.is_available(last + 1000.0)
    assert detector.phi(last + 4000.0) >= 8.0
    assert not detector.is_available(last + 4000.0)


def test_with_default_settings_a_steady_peer_is_suspected_about_half_a_second_late():
    detector, last = beating(100)
    crossing = next(t for t in range(0, 10_000, 10) if detector.phi(last + t) >= 8.0)
    # mean 1000 ms, std floored at 100 ms (the two bootstrap intervals are a little wider):
    # phi 8 is about 5.2 standard deviations past the mean.
    assert 1400 <= crossing <= 2500


def test_acceptable_pause_delays_suspicion_by_that_much():
    strict, last = beating(100)
    lenient, _ = beating(100, acceptable_heartbeat_pause_ms=3000.0)
    assert strict.phi(last + 3000.0) >= 8.0
    assert lenient.phi(last + 3000.0) < 1.0
    assert lenient.phi(last + 7000.0) >= 8.0


def test_a_peer_that_resumes_beating_is_up_again_at_once():
    detector, last = beating(50)
    back = last + 60_000.0
    assert not detector.is_available(back)
    mean_before = detector.mean_interval_ms
    detector.heartbeat(back)
    assert detector.is_available(back)
    assert detector.phi(back) < 0.1
    # The minute of silence is not a normal interval: the next outage is seen as fast.
    assert detector.mean_interval_ms == mean_before
    detector.heartbeat(back + 1000.0)
    assert detector.is_available(back + 2000.0)
    assert not detector.is_available(back + 5000.0)


def test_a_peer_never_heard_from_is_not_suspected():
    detector = PhiAccrualDetector()
    assert detector.phi(0.0) == 0.0
    assert detector.phi(1e12) == 0.0
    assert detector.is_available(1e12)
    assert detector.sample_count == 0


def test_first_heartbeat_bootstraps_mean_from_the_estimate_and_std_a_quarter_of_it():
    detector = PhiAccrualDetector(first_heartbeat_estimate_ms=2000.0)
    detector.heartbeat(5000.0)
    assert detector.sample_count == 2
    assert detector.mean_interval_ms == pytest.approx(2000.0)
    assert detector.std_deviation_ms == pytest.approx(500.0)
    # At the expected time the peer is as likely early as late: phi = -log10(1/2).
    assert detector.phi(7000.0) == pytest.approx(math.log10(2), rel=1e-9)
    assert detector.is_available(8000.0)
    assert not detector.is_available(12_000.0)


def test_clock_stepping_back_gives_phi_zero_and_restarts_the_silence():
    detector, last = beating(20)
    assert detector.phi(last - 5000.0) == 0.0
    count = detector.sample_count
    detector.heartbeat(last - 5000.0)  # the clock went back 5 s
    assert detector.sample_count == count  # no negative interval recorded
    assert detector.last_heartbeat_ms == last - 5000.0
    assert detector.is_available(last - 4000.0)


def test_two_heartbeats_in_the_same_millisecond_are_one():
    detector, last = beating(20)
    count = detector.sample_count
    detector.heartbeat(last)
    assert detector.sample_count == count


def test_window_keeps_only_the_newest_intervals():
    detector, _ = beating(100, window_size=5)
    assert detector.sample_count == 5
    # Bootstrap intervals are long gone; the window is five 1000 ms intervals.
    assert detector.mean_interval_ms == pytest.approx(1000.0)
    assert detector.std_deviation_ms == detector.min_std_deviation_ms


def test_running_sums_stay_exact_over_many_windows():
    detector, _ = beating(5000, interval_ms=1000.1, jitter_ms=300.0, seed=7, window_size=10)
    window = list(detector._intervals)
    mean = math.fsum(window) / len(window)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in window) / len(window))
    assert detector.mean_interval_ms == pytest.approx(mean, rel=1e-9)
    assert detector.std_deviation_ms == pytest.approx(max(std, 100.0), rel=1e-6)


# --- properties of phi --------------------------------------------------------------------

intervals = st.lists(st.floats(1.0, 100_000.0), max_size=50)


@given(
    history=intervals,
    window_size=st.integers(1, 20),
    min_std=st.floats(0.001, 1000.0),
    pause=st.floats(0.0, 10_000.0),
    estimate=st.floats(1.0, 100_000.0),
    t1=st.floats(-1e6, 1e9),
    dt=st.floats(0.0, 1e9),
)
def test_phi_is_finite_and_never_decreases_as_time_goes_on(
    history, window_size, min_std, pause, estimate, t1, dt
):
    detector = PhiAccrualDetector(
        window_size=window_size,
        min_std_deviation_ms=min_std,
        acceptable_heartbeat_pause_ms=pause,
        first_heartbeat_estimate_ms=estimate,
    )
    now = 0.0
    detector.heartbeat(now)
    for interval in history:
        now += interval
        detector.heartbeat(now)
    assert detector.sample_count <= window_size
    a, b = detector.phi(now + t1), detector.phi(now + t1 + dt)
    assert math.isfinite(a) and math.isfinite(b)
    assert 0.0 <= a <= b


def test_phi_never_decreases_across_the_mean_and_the_threshold_at_float_resolution():
    for mean, std in [(1000.0, 100.0), (933.3, 227.1), (1.0, 0.001)]:
        for center in (mean, mean + 5.2 * std, mean + 40 * std):
            x = center - 1e-6 * std
            previous = phi_of(x, mean, std)
            for i in range(20_000):
                x = math.nextafter(x, math.inf) if i % 2 else x + std * 1e-10
                value = phi_of(x, mean, std)
                assert value >= previous, (mean, std, x)
                previous = value


def test_phi_stays_finite_after_absurdly_long_silence():
    detector = PhiAccrualDetector(min_std_deviation_ms=1e-3)
    detector.heartbeat(0.0)
    for now in (1e15, 1e300, math.inf):
        assert math.isfinite(detector.phi(now))
    assert detector.phi(math.nan) == 0.0


# --- bad settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("threshold", 0.0),
        ("threshold", -1.0),
        ("threshold", math.inf),
        ("threshold", math.nan),
        ("threshold", "8"),
        ("window_size", 0),
        ("window_size", 1.5),
        ("window_size", True),
        ("window_size", 10**9),
        ("min_std_deviation_ms", 0.0),
        ("min_std_deviation_ms", math.nan),
        ("acceptable_heartbeat_pause_ms", -1.0),
        ("acceptable_heartbeat_pause_ms", math.inf),
        ("first_heartbeat_estimate_ms", 0),
        ("first_heartbeat_estimate_ms", None),
    ],
)
def test_bad_settings_are_refused_naming_the_field(field, bad):
    with pytest.raises(ConfigError) as e:
        PhiAccrualDetector(**{field: bad})
    assert e.value.field == field
    with pytest.raises(ConfigError) as e:
        FailureDetectors(**{field: bad})
    assert e.value.field == field


def test_bad_max_nodes_is_refused():
    with pytest.raises(ConfigError) as e:
        FailureDetectors(max_nodes=0)
    assert e.value.field == "max_nodes"


# --- the per-node map ---------------------------------------------------------------------


def test_unknown_nodes_are_up_until_heard_from_and_then_silent():
    detectors = FailureDetectors()
    assert detectors.is_up("n2", 0.0)
    assert detectors.phi("n2", 1e9) == 0.0
    assert "n2" not in detectors
    for t in range(0, 10_000, 1000):
        detectors.heartbeat("n2", float(t))
        detectors.heartbeat("n3", float(t))
    assert detectors.is_up("n2", 10_000.0)
    detectors.heartbeat("n3", 10_000.0)
    detectors.heartbeat("n3", 11_000.0)
    assert not detectors.is_up("n2", 15_000.0)
    assert detectors.is_up("n3", 12_000.0)
    assert detectors.down(15_000.0) == {"n2", "n3"}
    assert detectors.down(12_000.0) == {"n2"}
    assert detectors.nodes() == ["n2", "n3"]


def test_removed_nodes_are_forgotten():
    detectors = FailureDetectors()
    detectors.heartbeat("n2", 0.0)
    detectors.heartbeat("n2", 1000.0)
    assert not detectors.is_up("n2", 60_000.0)
    assert detectors.remove("n2")
    assert not detectors.remove("n2")
    assert detectors.is_up("n2", 60_000.0)
    assert len(detectors) == 0


def test_tracking_more_than_max_nodes_is_refused():
    detectors = FailureDetectors(max_nodes=3)
    for node in ("a", "b", "c"):
        detectors.heartbeat(node, 0.0)
    detectors.heartbeat("a", 1000.0)  # known nodes keep beating
    with pytest.raises(LimitError, match="max_nodes=3"):
        detectors.heartbeat("d", 1000.0)
    detectors.remove("b")
    detectors.heartbeat("d", 1000.0)
    assert detectors.nodes() == ["a", "c", "d"]


def test_detectors_share_settings():
    detectors = FailureDetectors(threshold=3.0, acceptable_heartbeat_pause_ms=500.0)
    detectors.heartbeat("n2", 0.0)
    detector = detectors.detector("n2")
    assert detector.threshold == 3.0
    assert detector.acceptable_heartbeat_pause_ms == 500.0


def test_the_module_imports_nothing_that_does_io_or_keeps_time():
    forbidden = {"asyncio", "socket", "time", "random", "os", "threading", "selectors"}
    tree = ast.parse(Path(phi_module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not forbidden & imported
