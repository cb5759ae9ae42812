"""Hinted handoff with real processes: writes a dead replica missed reach it when it is back,
with no read in between (so read repair cannot be what heals it)."""

from __future__ import annotations

import json

import pytest
import redis

from ringkv.testing.launcher import LocalCluster
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(120)


def _wait(predicate, what: str):
    """A node that just restarted may refuse a connection or two: not yet."""
    return wait_until(predicate, 30, what, interval_s=0.2, ignore=(redis.RedisError,))


def _info(r: redis.Redis) -> dict:
    return r.info("ringkv")


def test_hints_reach_a_restarted_replica_and_survive_the_coordinators_restart(tmp_path):
    with LocalCluster(tmp_path, nodes=3, replicas=3, replica_timeout_ms=1000) as cluster:
        n1, n2, n3 = cluster.nodes
        r1 = redis.Redis(port=n1.resp_port)
        # At ALL, so n3 surely has it before it dies (a late ack would leave a hint for it).
        r1.execute_command("RINGKV.AT", "ALL", "SET", "before", "0")
        n3.kill()
        for i in range(100):
            assert r1.set(f"k{i}", f"v{i}")  # W=2: n1 and n2
        # One per key n3 missed, kept once every replica has answered (perhaps after the reply).
        _wait(lambda: _info(r1)["hints_pending"] == 100, "a hint for each of the 100 writes n3 missed")
        # The coordinator restarts too: its hints are on disk.
        n1.stop()
        n1.start()
        r1 = redis.Redis(port=n1.resp_port)
        assert _info(r1)["hints_pending"] == 100
        n3.start()
        _wait(lambda: _info(r1)["hints_pending"] == 0, "hints delivered")
        assert _info(r1)["hints_delivered"] >= 100
        # n3 alone must now hold every key: stop the others and read at ONE through it.
        n1.stop()
        n2.stop()
        r3 = redis.Redis(port=n3.resp_port)
        r3.execute_command("RINGKV.CONSISTENCY", "ONE")
        for i in range(100):
            assert r3.get(f"k{i}") == f"v{i}".encode()
        status = json.loads(r3.execute_command("RINGKV.STATUS"))
        me = next(n for n in status["nodes"] if n["node_id"] == "n3")
        assert me["keys"] == 101


def test_hints_older_than_the_window_are_dropped(tmp_path):
    with LocalCluster(tmp_path, nodes=3, replicas=3, max_hint_window_ms=1) as cluster:
        n1, _, n3 = cluster.nodes
        r1 = redis.Redis(port=n1.resp_port)
        n3.kill()
        for i in range(10):
            r1.set(f"k{i}", "v")
        # Stored, though delivery rounds may already be dropping them (the window is 1 ms).
        _wait(lambda: _info(r1)["hints_stored"] == 10, "a hint for each of the 10 writes n3 missed")
        n3.start()
        _wait(lambda: _info(r1)["hints_pending"] == 0, "hints dropped")
        info = _info(r1)
        assert info["hints_expired"] == 10
        assert info["hints_delivered"] == 0


def _key_outside(ring_members: list[str], outsider: str) -> tuple[bytes, tuple[str, ...]]:
    """A key whose three replicas do not include `outsider`, and those replicas."""
    from ringkv.cluster.ring import Member, Ring

    ring = Ring([Member(m) for m in ring_members], 1024, 3)
    for i in range(10_000):
        key = b"sloppy%d" % i
        pref = ring.preference_list(ring.partition_for_key(b"", key))
        if outsider not in pref:
            return key, pref
    raise AssertionError("no such key")


def test_sloppy_quorum_a_stand_in_takes_the_write_and_hands_it_over(tmp_path):
    with LocalCluster(tmp_path, nodes=4, replicas=3, replica_timeout_ms=1000) as cluster:
        key, pref = _key_outside([n.node_id for n in cluster.nodes], "n4")
        coordinator, *down = (cluster.node(n) for n in pref)
        n4 = cluster.node("n4")
        for node in down:
            node.kill()
        r = redis.Redis(port=coordinator.resp_port)
        # Strict: only the key's own replicas count, and only one is up.
        with pytest.raises(redis.ResponseError, match="needed 2 replicas, 1 answered"):
            r.execute_command("RINGKV.AT", "QUORUM", "STRICT", "SET", key, "strict")
        # Sloppy (the default): n4 stands in for one of them, holding a hint.
        assert r.set(key, "sloppy")
        r4 = redis.Redis(port=n4.resp_port)
        assert _info(r4)["hints_pending"] == 1
        assert _info(r)["cluster_stand_ins"] >= 1
        for node in down:
            node.start()
        _wait(lambda: _info(r4)["hints_pending"] == 0 and _info(r)["hints_pending"] == 0,
              "hints delivered by the stand-in and the coordinator")
        # Each formerly dead replica holds the write on its own.
        coordinator.stop()
        n4.stop()
        for node in down:
            rn = redis.Redis(port=node.resp_port)
            assert rn.execute_command("RINGKV.AT", "ONE", "GET", key) == b"sloppy"
