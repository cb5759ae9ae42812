"""Gossip and phi-accrual failure detection across real processes."""

from __future__ import annotations

import json
import time

import pytest
import redis

from ringkv.testing.launcher import LocalCluster
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(120)


def _down(r: redis.Redis) -> set[str]:
    value = r.info("ringkv").get("nodes_down", "")
    # redis-py turns a comma-separated INFO value into a list
    names = value if isinstance(value, list) else str(value).split(",")
    return {str(n) for n in names} - {""}


def test_a_paused_node_is_suspected_by_everyone_and_cleared_when_it_resumes(tmp_path):
    with LocalCluster(tmp_path, nodes=3, replicas=3, gossip_interval_ms=200,
                      phi_acceptable_pause_ms=200) as cluster:
        n1, n2, n3 = cluster.nodes
        r1, r2 = redis.Redis(port=n1.resp_port), redis.Redis(port=n2.resp_port)
        wait_until(lambda: r1.info("ringkv")["gossip_rounds"] >= 5, 30, "a few gossip rounds")
        assert _down(r1) == set() and _down(r2) == set()
        n3.pause()  # SIGSTOP: its sockets stay open, it just stops answering
        try:
            started = time.monotonic()
            wait_until(lambda: _down(r1) == {"n3"} and _down(r2) == {"n3"}, 20, "n3 suspected")
            detect_s = time.monotonic() - started
            # While n3 is known down, QUORUM writes do not wait for it at all.
            t = time.monotonic()
            for i in range(50):
                assert r1.set(f"k{i}", "v")
            assert time.monotonic() - t < 5  # 50 writes, none waiting out a 500 ms timeout
            status = json.loads(r1.execute_command("RINGKV.STATUS"))
            n3_status = next(n for n in status["nodes"] if n["node_id"] == "n3")
            assert n3_status["detector"] == "down" and n3_status["phi"] >= 8
        finally:
            n3.resume()
        wait_until(lambda: _down(r1) == set() and _down(r2) == set(), 20, "n3 up again")
        # Coming back up triggers hint delivery: n3 gets the 50 writes it missed.
        wait_until(lambda: r1.info("ringkv")["hints_pending"] == 0, 20, "hints delivered")
        assert detect_s < 15


def test_gossip_spreads_every_nodes_state(tmp_path):
    with LocalCluster(tmp_path, nodes=4, replicas=3, gossip_interval_ms=200) as cluster:
        r = redis.Redis(port=cluster.nodes[0].resp_port)

        seen: list = []

        def everyone_known() -> bool:
            status = json.loads(r.execute_command("RINGKV.STATUS"))
            seen[:] = [{k: n.get(k) for k in ("node_id", "detector", "heartbeat", "error")} for n in status["nodes"]]
            return all(n.get("heartbeat", 0) > 1 and n.get("detector") == "up" for n in status["nodes"])

        wait_until(everyone_known, 20, lambda: f"every node's heartbeat to reach n1; last status {seen}")


def test_two_halves_of_a_healed_partition_find_each_other_again(tmp_path):
    # The simulator found that halves of 2 or more nodes never gossiped again after a heal
    # (every member is a seed, so no member held down was ever picked); nodes now probe one.
    with LocalCluster(tmp_path, nodes=4, replicas=3, gossip_interval_ms=200,
                      phi_acceptable_pause_ms=200, fault_injection="true") as cluster:
        rs = [redis.Redis(port=n.resp_port) for n in cluster.nodes]
        wait_until(lambda: all(r.info("ringkv")["gossip_rounds"] >= 5 for r in rs), 30, "gossip rounds")
        for r, other_side in zip(rs, (["n3", "n4"], ["n3", "n4"], ["n1", "n2"], ["n1", "n2"])):
            r.execute_command("RINGKV.FAULT", "PARTITION", *other_side)
        wait_until(lambda: _down(rs[0]) == {"n3", "n4"} and _down(rs[3]) == {"n1", "n2"}, 30,
              "each half to hold the other down")
        for r in rs:
            r.execute_command("RINGKV.FAULT", "HEAL")
        wait_until(lambda: all(_down(r) == set() for r in rs), 30, "everyone up again after the heal")
