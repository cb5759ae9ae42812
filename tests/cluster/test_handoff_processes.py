"""Hinted handoff with real processes: writes a dead replica missed reach it when it is back,
with no read in between (so read repair cannot be what heals it)."""

from __future__ import annotations

import json
import time

import pytest
import redis

from ringkv.testing.launcher import LocalCluster

pytestmark = pytest.mark.timeout(120)


def _wait(predicate, timeout_s: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except redis.RedisError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def _info(r: redis.Redis) -> dict:
    return r.info("ringkv")


def test_hints_reach_a_restarted_replica_and_survive_the_coordinators_restart(tmp_path):
    with LocalCluster(tmp_path, nodes=3, replicas=3, replica_timeout_ms=1000) as cluster:
        n1, n2, n3 = cluster.nodes
        r1 = redis.Redis(port=n1.resp_port)
        r1.set("before", "0")
        n3.kill()
        for i in range(100):
            assert r1.set(f"k{i}", f"v{i}")  # W=2: n1 and n2
        assert _info(r1)["hints_pending"] == 100  # one per key n3 missed
        # The coordinator restarts too: its hints are on disk.
        n1.stop()
        n1.start()
        r1 = redis.Redis(port=n1.resp_port)
        assert _info(r1)["hints_pending"] == 100
        n3.start()
        _wait(lambda: _info(r1)["hints_pending"] == 0, what="hints delivered")
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
        assert _info(r1)["hints_pending"] == 10
        n3.start()
        _wait(lambda: _info(r1)["hints_pending"] == 0, what="hints dropped")
        info = _info(r1)
        assert info["hints_expired"] == 10
        assert info["hints_delivered"] == 0
