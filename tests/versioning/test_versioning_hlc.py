"""Hybrid logical clock: monotonic whatever physical time does, refuses skewed peers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.errors import ClockSkewError, ConfigError
from ringkv.versioning.hlc import (
    LOGICAL_MASK,
    MAX_PHYSICAL_MS,
    HybridLogicalClock,
    make_timestamp,
    split_timestamp,
    timestamp_ms,
)

T0 = 1_700_000_000_000  # a plausible "now" in ms since the epoch
MAX_OFFSET_MS = 500

# Physical times wander around T0, forwards and backwards, as NTP steps and VM pauses do.
physical_times = st.integers(T0 - 10_000, T0 + 10_000)
local_event = st.tuples(st.just("now"), physical_times)
remote_event = st.tuples(
    st.just("observe"), physical_times, st.integers(-20_000, 20_000), st.integers(0, LOGICAL_MASK)
)


@settings(max_examples=200)
@given(st.lists(st.one_of(local_event, remote_event), min_size=1, max_size=60))
def test_timestamps_strictly_increase_whatever_physical_time_does(events):
    clock = HybridLogicalClock(max_offset_ms=MAX_OFFSET_MS)
    previous = -1
    for event in events:
        physical_ms = event[1]
        if event[0] == "now":
            ts = clock.now(physical_ms)
        else:
            remote_ms = max(0, physical_ms + event[2])
            remote_ts = make_timestamp(remote_ms, event[3])
            try:
                ts = clock.observe(remote_ts, physical_ms)
            except ClockSkewError:
                assert remote_ms - physical_ms > MAX_OFFSET_MS
                assert clock.last_ts == max(previous, 0)
                continue
            assert remote_ms - physical_ms <= MAX_OFFSET_MS
            assert ts > remote_ts
        assert ts > previous
        assert timestamp_ms(ts) >= physical_ms
        assert clock.last_ts == ts
        previous = ts


def test_new_millisecond_resets_the_logical_counter():
    clock = HybridLogicalClock()
    assert split_timestamp(clock.now(T0)) == (T0, 0)
    assert split_timestamp(clock.now(T0)) == (T0, 1)
    assert split_timestamp(clock.now(T0 + 5)) == (T0 + 5, 0)


def test_physical_time_going_backwards_ticks_the_counter_on_the_last_millisecond():
    clock = HybridLogicalClock()
    clock.now(T0)
    assert split_timestamp(clock.now(T0 - 3_000)) == (T0, 1)


def test_observing_a_peer_slightly_ahead_moves_the_clock_past_it():
    clock = HybridLogicalClock(max_offset_ms=500)
    remote = make_timestamp(T0 + 200, 7)
    assert split_timestamp(clock.observe(remote, T0)) == (T0 + 200, 8)
    # Local events stay above what was observed until physical time passes it.
    assert split_timestamp(clock.now(T0 + 1)) == (T0 + 200, 9)
    assert split_timestamp(clock.now(T0 + 300)) == (T0 + 300, 0)


def test_peer_too_far_ahead_is_refused_and_leaves_the_clock_unchanged():
    clock = HybridLogicalClock(max_offset_ms=500)
    before = clock.now(T0)
    with pytest.raises(ClockSkewError, match="501 ms ahead") as info:
        clock.observe(make_timestamp(T0 + 501), T0)
    assert (info.value.remote_ms, info.value.physical_ms) == (T0 + 501, T0)
    assert clock.last_ts == before
    assert clock.now(T0) == before + 1


def test_peer_exactly_max_offset_ahead_is_accepted():
    clock = HybridLogicalClock(max_offset_ms=500)
    assert timestamp_ms(clock.observe(make_timestamp(T0 + 500), T0)) == T0 + 500


def test_counter_overflow_carries_into_the_millisecond():
    clock = HybridLogicalClock(last_ts=make_timestamp(T0, LOGICAL_MASK - 1))
    assert split_timestamp(clock.now(T0)) == (T0, LOGICAL_MASK)
    assert split_timestamp(clock.now(T0)) == (T0 + 1, 0)


def test_observing_a_peer_at_the_counter_limit_carries_too():
    clock = HybridLogicalClock()
    assert split_timestamp(clock.observe(make_timestamp(T0, LOGICAL_MASK), T0)) == (T0 + 1, 0)


def test_restarted_node_continues_above_its_persisted_timestamp():
    before_restart = HybridLogicalClock()
    last = before_restart.now(T0)
    after_restart = HybridLogicalClock(last_ts=last)
    assert after_restart.now(T0 - 1_000) > last


def test_timestamp_packs_milliseconds_above_the_counter():
    ts = make_timestamp(T0, 42)
    assert ts == (T0 << 16) | 42
    assert split_timestamp(ts) == (T0, 42)
    assert make_timestamp(T0, 1) > make_timestamp(T0 - 1, LOGICAL_MASK)


@pytest.mark.parametrize(
    ("physical_ms", "logical"), [(-1, 0), (MAX_PHYSICAL_MS + 1, 0), (0, LOGICAL_MASK + 1)]
)
def test_out_of_range_timestamp_parts_are_refused(physical_ms, logical):
    with pytest.raises(ValueError):
        make_timestamp(physical_ms, logical)


def test_negative_physical_time_is_refused():
    with pytest.raises(ValueError, match="physical_ms"):
        HybridLogicalClock().now(-1)


def test_negative_max_offset_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError, match="max_offset_ms"):
        HybridLogicalClock(max_offset_ms=-1)
