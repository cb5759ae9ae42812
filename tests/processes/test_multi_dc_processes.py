"""Two datacenters on one machine, 40 ms apart each way (emulated_wan_delay_ms), three replicas in
each: LOCAL_QUORUM answers without waiting on the WAN, a write crosses it once per datacenter
(one relay), and with dc2 cut off dc1 keeps serving at LOCAL_QUORUM while EACH_QUORUM refuses,
naming dc2; after healing every replica in both datacenters holds every write
(docs/multi-dc.md)."""

from __future__ import annotations

import statistics
import time

import httpx
import pytest
import redis

from ringkv.testing.launcher import LocalCluster

pytestmark = pytest.mark.timeout(180)

WAN_DELAY_MS = 40  # each way: a round trip between the datacenters takes 80 ms more
DC1, DC2 = ("n1", "n2", "n3"), ("n4", "n5", "n6")


def _cluster(tmp_path) -> LocalCluster:
    cluster = LocalCluster(tmp_path, nodes=6, dc_replicas="dc1=3,dc2=3", partitions=16,
                           emulated_wan_delay_ms=WAN_DELAY_MS, fault_injection="true", gossip_interval_ms=200,
                           replica_timeout_ms=1000, anti_entropy_interval_ms=0)
    # Each node on a rack of its own in its datacenter: n1-n3 in dc1, n4-n6 in dc2.
    members = ",".join(f"{n.node_id}@{n.host}:{n.rpc_port}/{'dc1' if n.node_id in DC1 else 'dc2'}/r{i % 3}"
                       for i, n in enumerate(cluster.nodes))
    for n in cluster.nodes:
        n.settings["members"] = members
    return cluster


def _timed_ms(fn, times: int = 15) -> float:
    """The median duration of `fn()` over `times` calls, in ms."""
    took = []
    for _ in range(times):
        started = time.perf_counter()
        fn()
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took)


def _local_copy(r: redis.Redis, key: str) -> list[bytes]:
    """The node's own copy: at LOCAL_ONE a replica answers from its store without a hop."""
    versions = r.execute_command("RINGKV.AT", "LOCAL_ONE", "RINGKV.GETV", key)
    return sorted(s[0] for s in versions[1]) if versions and versions[1] else []


def _cluster_stat(r: redis.Redis, name: str) -> int:
    return int(r.info("datacenters")[name])


def test_two_datacenters_local_levels_relays_and_an_outage_of_one(tmp_path):
    with _cluster(tmp_path) as cluster:
        clients = {n.node_id: redis.Redis(port=n.resp_port) for n in cluster.nodes}
        n1, n4 = clients["n1"], clients["n4"]

        # LOCAL_QUORUM waits on dc1 only; QUORUM (4 of 6) needs a copy from dc2: one round trip more.
        local_ms = _timed_ms(lambda: n1.execute_command("RINGKV.AT", "LOCAL_QUORUM", "SET", "k", "v"))
        quorum_ms = _timed_ms(lambda: n1.execute_command("RINGKV.AT", "QUORUM", "SET", "k", "v"))
        read_ms = _timed_ms(lambda: n1.execute_command("RINGKV.AT", "LOCAL_QUORUM", "GET", "k"))
        assert quorum_ms >= 2 * WAN_DELAY_MS, (local_ms, quorum_ms)
        assert local_ms < WAN_DELAY_MS and read_ms < WAN_DELAY_MS, (local_ms, read_ms, quorum_ms)

        assert n4.info("datacenters")["datacenter"] == "dc2"
        assert n1.info("datacenters")["dc_replicas"] == {"dc1": 3, "dc2": 3}
        # One message crosses to dc2 per write, to a relay that sends it on to the others there.
        sent, relayed = _cluster_stat(n1, "relays_sent"), sum(_cluster_stat(clients[n], "relayed_writes") for n in DC2)
        n1.execute_command("RINGKV.AT", "EACH_QUORUM", "SET", "relayed", "once")
        assert _cluster_stat(n1, "relays_sent") == sent + 1
        assert sum(_cluster_stat(clients[n], "relayed_writes") for n in DC2) == relayed + 1
        for node in DC1 + DC2:
            assert _local_copy(clients[node], "relayed") == [b"once"], node

        # The levels by every way a client names them: HTTP's header and the Python client.
        http = cluster.nodes[3]
        reply = httpx.put(f"http://{http.host}:{http.http_port}/api/v1/keys/h", json={"value": "from-dc2"},
                          headers={"Consistency-Level": "LOCAL_QUORUM"}, timeout=10)
        assert reply.status_code < 300, reply.text
        assert n4.execute_command("RINGKV.AT", "LOCAL_ONE", "GET", "h") == b"from-dc2"

        # dc2 cut off from dc1, both ways.
        for node in DC1:
            clients[node].execute_command("RINGKV.FAULT", "PARTITION", *DC2)
        for node in DC2:
            clients[node].execute_command("RINGKV.FAULT", "PARTITION", *DC1)
        n1.execute_command("RINGKV.CONSISTENCY", "LOCAL_QUORUM")
        during_ms = _timed_ms(lambda: n1.set("k", "v"))
        assert during_ms < WAN_DELAY_MS, (local_ms, during_ms)
        for i in range(20):
            assert n1.set(f"outage{i}", f"v{i}")
            assert n1.get(f"outage{i}") == f"v{i}".encode()
        with pytest.raises(redis.ResponseError, match="datacenter dc2: needed 2 replicas, 0 answered"):
            n1.execute_command("RINGKV.AT", "EACH_QUORUM", "SET", "each", "x")
        with pytest.raises(redis.ResponseError, match="datacenter dc2"):
            n1.execute_command("RINGKV.AT", "EACH_QUORUM", "GET", "k")
        # dc2 serves its own side at LOCAL_QUORUM too, and refuses QUORUM (it has 3 of 6).
        assert n4.execute_command("RINGKV.AT", "LOCAL_QUORUM", "SET", "dc2-side", "w")
        with pytest.raises(redis.ResponseError, match="needed 4 replicas"):
            n4.execute_command("RINGKV.AT", "QUORUM", "SET", "dc2-side", "w")

        # Healed: the hints kept for dc2 (and dc1) are handed off, and every replica converges.
        for client in clients.values():
            client.execute_command("RINGKV.FAULT", "HEAL")
        expected = {f"outage{i}": [f"v{i}".encode()] for i in range(20)} | {"dc2-side": [b"w"]}
        deadline = time.monotonic() + 60
        missing: list = []
        while time.monotonic() < deadline:
            missing = [(node, key) for key, want in expected.items() for node in DC1 + DC2
                       if _local_copy(clients[node], key) != want]
            if not missing:
                break
            time.sleep(0.5)
        assert not missing, missing[:10]
        assert n1.execute_command("RINGKV.AT", "EACH_QUORUM", "GET", "dc2-side") == b"w"


def test_anti_entropy_across_datacenters_keeps_to_its_bandwidth_bound(tmp_path):
    """dc2 misses 100 writes of 1 KB (hints expire at once, so only anti-entropy repairs them);
    a repair pushes them to dc2's three replicas (300 KB) at 50 KB/s: about six seconds, where
    the same repair within a datacenter takes a fraction of one."""
    rate = 50_000
    cluster = _cluster(tmp_path)
    for n in cluster.nodes:
        n.settings.update(anti_entropy_wan_bytes_per_s=str(rate), max_hint_window_ms="1", emulated_wan_delay_ms="0")
    with cluster:
        clients = {n.node_id: redis.Redis(port=n.resp_port) for n in cluster.nodes}
        n1 = clients["n1"]
        for node in DC1:
            clients[node].execute_command("RINGKV.FAULT", "PARTITION", *DC2)
        for node in DC2:
            clients[node].execute_command("RINGKV.FAULT", "PARTITION", *DC1)
        value = "x" * 1000
        for i in range(100):
            n1.execute_command("RINGKV.AT", "LOCAL_QUORUM", "SET", f"ae{i}", value)
        for client in clients.values():
            client.execute_command("RINGKV.FAULT", "HEAL")
        started = time.monotonic()
        summary = redis.Redis(port=cluster.nodes[0].resp_port, socket_timeout=60).execute_command("RINGKV.REPAIR")
        took = time.monotonic() - started
        assert b'"error_count": 0' in summary, summary
        assert took >= 300_000 / rate * 0.8, took
        assert float(n1.info("datacenters")["anti_entropy_wan_waited_s"]) >= 3
        for node in DC2:
            assert _local_copy(clients[node], "ae99") == [value.encode()], node
