"""The failure detectors time heartbeats on the monotonic clock: a node whose wall clock jumps
(NTP stepping it, the chaos suite's skew fault) keeps holding its peers up, and a peer that
stops beating is still held down after its usual pause."""

from __future__ import annotations

import time

import msgspec

from ringkv.clock import Clock
from ringkv.node.gossiper import Gossiper, local_state


async def _no_call(node, body, timeout_ms):  # pragma: no cover - no round runs here
    raise AssertionError("no RPC in this test")


def _gossiper(clock: Clock) -> Gossiper:
    return Gossiper(local_state("n1", 1, ("127.0.0.1", 1), "", ""), ["n2"], _no_call, clock,
                    interval_ms=100, acceptable_pause_ms=200)


def test_a_wall_clock_jump_does_not_hold_peers_down():
    clock = Clock()
    g = _gossiper(clock)
    for version in range(1, 6):  # a few heartbeats 20 ms apart
        g.merge([_beat("n2", version)], sender="n2")
        time.sleep(0.02)
    assert g.is_up("n2")
    clock.skew_ms = 120_000  # two minutes ahead, as a stepped clock would be
    assert g.is_up("n2") and g.phi("n2") < 1.0 and g.down() == set()
    clock.skew_ms = -120_000
    assert g.is_up("n2")


def test_a_silent_peer_is_still_held_down():
    g = _gossiper(Clock())
    for version in range(1, 6):
        g.merge([_beat("n2", version)], sender="n2")
        time.sleep(0.02)
    time.sleep(1.5)  # many intervals past the acceptable pause
    assert not g.is_up("n2") and g.down() == {"n2"}


def _beat(node: str, version: int):
    return msgspec.structs.replace(local_state(node, 1, ("127.0.0.1", 2), "", ""), version=version)
