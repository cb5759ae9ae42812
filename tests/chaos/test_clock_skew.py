"""The skew nemesis moves a node's one clock (ringkv/clock.py) through RINGKV.FAULT
CLOCK_SKEW, so everything on that node that reads the time sees it, TTL expiry included, not
only the hybrid logical clock: a key with a TTL reads as expired through the skewed node
while it is still live through the others, and live again once the skew ends."""

from __future__ import annotations

import threading

import pytest
import redis

from ringkv.chaos.history import History
from ringkv.chaos.nemesis import Nemesis
from ringkv.chaos.schedule import FaultEvent
from ringkv.testing.launcher import LocalCluster
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(60)

TTL_MS = 60_000
SKEW_MS = 120_000  # two minutes ahead: past the TTL


def test_a_node_skewed_ahead_expires_a_ttl_early_and_only_there(tmp_path):
    with LocalCluster(tmp_path, nodes=2, replicas=2, partitions=16, gossip_interval_ms=200,
                      fault_injection="true") as cluster:
        skewed = redis.Redis(port=cluster.node("n1").resp_port, socket_timeout=5)
        other = redis.Redis(port=cluster.node("n2").resp_port, socket_timeout=5)
        assert other.set("session", "s", px=TTL_MS)
        history = History()
        # Skewed for 6 s: long enough that the reads below run inside it on a loaded machine.
        nemesis = Nemesis(cluster, history, [FaultEvent(0.0, 6.0, "skew", ("n1",), skew_ms=SKEW_MS)],
                          log=lambda line: None)
        stop = threading.Event()
        thread = threading.Thread(target=nemesis.run, args=(stop,), daemon=True)
        thread.start()
        try:
            wait_until(lambda: nemesis.applied == 1, 5, "the skew to be applied")
            # n1's clock is two minutes ahead: the 60 s TTL is over there...
            assert skewed.get("session") is None
            assert skewed.pttl("session") == -2
            # ...and not on n2, reading the same replicas.
            assert other.get("session") == b"s"
            assert 0 < other.pttl("session") <= TTL_MS
        finally:
            thread.join(20)
            stop.set()
        # The skew is over: n1 agrees again (the value was expired, not deleted).
        assert skewed.get("session") == b"s"
        assert nemesis.begun == nemesis.applied == 1 and nemesis.not_applied() == []
        actions = [(f.action, f.detail, f.ok) for f in history.faults]
        assert actions == [("skew", f"{SKEW_MS} ms", True), ("unskew", "", True)]
